"""Media metadata: probe one file, cache the answer in its record, probe many gently.

Record fields written here (absent when unknown):

    duration_sec  float  audio, video              width, height  int   image, video
    fps           float  video                     has_audio      bool  video
    video_codec   str    video                     audio_codec    str   audio, video
    rotation      int    video (degrees)           orientation    int   image (EXIF 1-8)
    taken_at      str    image, ISO 8601 from EXIF camera_make/camera_model  str  image
    gps_lat/gps_lon float image, degrees           artist/album/title str, track int  audio
    probe         {"size", "mtime_ns", "v", "ok", "error", "with"}: the validity stamp

The stamp says which version of the file (size + mtime) the fields describe, which prober
version and which tools produced them, and whether probing failed (failures are cached too,
so a broken file is not reopened on every listing). A stamp is stale when the record's size
or mtime changed, the prober version changed, or a tool appeared that was missing then.

Tools: ffprobe first for audio/video (subprocess with a timeout), Pillow for images, mutagen
for audio tags (and durations without ffprobe). Each is optional; less metadata without.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import ffprobe
from .tools import Tools, find_tools

PROBE_VERSION = 1
METADATA_FIELDS = (
    "duration_sec", "width", "height", "fps", "has_audio", "video_codec", "audio_codec",
    "rotation", "orientation", "taken_at", "camera_make", "camera_model", "gps_lat", "gps_lon",
    "artist", "album", "title", "track",
)
PROBED_TYPES = ("audio", "video", "image")
USEFUL_FIELDS = frozenset({"duration_sec", "width", "artist", "album", "title"})
"""A tool that found none of these found nothing: the file counts as unreadable."""
MP4_FAMILY = frozenset({"mp4", "m4v", "mov", "3gp", "3g2", "m4a", "m4b"})


@dataclass
class ProbeResult:
    fields: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    error: str | None = None
    used: list[str] = field(default_factory=list)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def probe_file(path: bytes, media_type: str, tools: Tools | None = None, *,
               ext: str = "", timeout_s: float = ffprobe.TIMEOUT_S,
               legacy_encoding: str | None = None) -> ProbeResult:
    """Everything the available tools can tell about one file. Never raises for bad media."""
    tools = tools or find_tools()
    result = ProbeResult()
    if media_type not in PROBED_TYPES:
        return result
    try:
        if os.stat(path).st_size == 0:
            return ProbeResult(ok=False, error="empty file")
    except OSError as exc:
        return ProbeResult(ok=False, error=f"cannot read: {exc.strerror or exc}")
    errors: list[str] = []

    def attempt(name: str, fn: Any) -> None:
        try:
            found = fn()
        except Exception as exc:  # noqa: BLE001 - hostile media may raise anything in a parser
            errors.append(f"{name}: {_short(exc)}")
            return
        if not set(found) & USEFUL_FIELDS:
            errors.append(f"{name}: no {media_type} stream found")
            return
        result.used.append(name)
        for key, value in found.items():
            result.fields.setdefault(key, value)

    if media_type == "image":
        if tools.pillow:
            from . import exif

            attempt("pillow", lambda: exif.read(path))
        if tools.ffprobe and "width" not in result.fields:
            binary = tools.ffprobe
            attempt("ffprobe", lambda: ffprobe.parse(ffprobe.run(binary, path, timeout_s),
                                                     media_type))
    else:
        if tools.ffprobe:
            binary = tools.ffprobe
            attempt("ffprobe", lambda: ffprobe.parse(ffprobe.run(binary, path, timeout_s),
                                                     media_type))
        if tools.mutagen and (media_type == "audio" or ext in MP4_FAMILY):
            from . import tags

            def read_tags() -> dict[str, Any]:
                found = tags.read(path, legacy_encoding)
                if media_type == "video":  # mutagen knows no video streams: duration only
                    return {k: v for k, v in found.items() if k == "duration_sec"}
                # tags from mutagen win over ffprobe's (legacy encodings handled)
                for key in ("artist", "album", "title", "track"):
                    if key in found:
                        result.fields.pop(key, None)
                return found

            attempt("mutagen", read_tags)
    if not result.used:
        result.ok = False
        result.error = "; ".join(errors) if errors else (
            "no available tool reads this file; install ffmpeg for more")
    return result


__all__ = ["METADATA_FIELDS", "PROBE_VERSION", "ProbeResult", "Tools", "find_tools",
           "probe_file"]
