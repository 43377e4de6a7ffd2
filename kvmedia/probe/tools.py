"""Which probing tools this machine has: ffprobe (Debian `ffmpeg`), Pillow, mutagen.

Each is optional. `KVMEDIA_FFPROBE` names the ffprobe binary, or `none` to go without it.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tools:
    ffprobe: str | None
    pillow: bool
    mutagen: bool

    def names(self) -> list[str]:
        out = []
        if self.ffprobe:
            out.append("ffprobe")
        if self.pillow:
            out.append("pillow")
        if self.mutagen:
            out.append("mutagen")
        return out


def find_tools() -> Tools:
    chosen = os.environ.get("KVMEDIA_FFPROBE")
    if chosen is not None and chosen.lower() in ("", "none", "0", "off"):
        ffprobe = None
    elif chosen:
        ffprobe = chosen if os.access(chosen, os.X_OK) else shutil.which(chosen)
    else:
        ffprobe = shutil.which("ffprobe")
    return Tools(
        ffprobe=ffprobe,
        pillow=_importable("PIL.Image"),
        mutagen=_importable("mutagen"),
    )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def describe(tools: Tools) -> dict[str, Any]:
    """For `kvmedia doctor`: what is present, and what to install for what is missing."""
    missing = []
    if not tools.ffprobe:
        missing.append({"tool": "ffprobe", "gives": "video size/fps/codecs, durations of most "
                        "formats", "install": "apt-get install ffmpeg"})
    if not tools.pillow:
        missing.append({"tool": "Pillow", "gives": "photo EXIF (date, camera, GPS) and sizes",
                        "install": "pip install 'kvmedia[media]'"})
    if not tools.mutagen:
        missing.append({"tool": "mutagen", "gives": "artist/album/title/track tags",
                        "install": "pip install 'kvmedia[media]'"})
    return {"present": tools.names(), "missing": missing}
