"""Make one thumbnail: a JPEG no larger than `max_px` on its longer side.

- images: Pillow, turned upright by the EXIF orientation tag (`ImageOps.exif_transpose`);
  decompression-bomb sized images are refused by Pillow's own limit.
- video:  one frame grabbed by ffmpeg at 10% of the duration (at most 10 s in; the first
  frame when that fails), with a timeout, `-nostdin`, the path given as `file:<path>` so it
  is never parsed as an option or protocol. ffmpeg applies the stream's rotation itself.
- audio:  the embedded cover art read with mutagen (ID3 APIC, MP4 covr, FLAC/Vorbis
  pictures), scaled with Pillow.

Every failure is a `ThumbFailed` with a short reason; nothing else escapes for bad media.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from typing import Any

from ..errors import KvmediaError

THUMB_VERSION = 1
DEFAULT_MAX_PX = 320
FFMPEG_TIMEOUT_S = 20.0
MAX_FRAME_BYTES = 32 << 20
JPEG_QUALITY = 82


class ThumbFailed(KvmediaError):
    code = "thumb_failed"


def _to_jpeg(img: Any, max_px: int) -> bytes:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def image_thumb(data_or_path: bytes, max_px: int, *, is_path: bool = True) -> bytes:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ThumbFailed("Pillow is not installed; pip install 'kvmedia[media]'") from exc
    try:
        src: Any = open(data_or_path, "rb") if is_path else io.BytesIO(data_or_path)  # noqa: SIM115
        with src, Image.open(src) as img:
            img.draft("RGB", (max_px * 2, max_px * 2))  # JPEG: decode at a smaller scale
            return _to_jpeg(img, max_px)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ThumbFailed(f"cannot decode image: {str(exc).splitlines()[0][:200]}") from None


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def video_thumb(path: bytes, max_px: int, duration_s: float | None,
                timeout_s: float = FFMPEG_TIMEOUT_S) -> bytes:
    binary = _ffmpeg()
    if binary is None:
        raise ThumbFailed("ffmpeg is not installed; apt-get install ffmpeg")
    at = min(10.0, duration_s / 10) if duration_s and duration_s > 0 else 1.0
    last = "no frame"
    for seek in (at, 0.0):
        cmd = [binary, "-nostdin", "-v", "error", "-ss", f"{seek:.3f}", "-i",
               b"file:" + path, "-frames:v", "1", "-an", "-sn", "-f", "image2pipe",
               "-vcodec", "mjpeg", "-"]
        try:
            proc = subprocess.run([c if isinstance(c, bytes) else c.encode() for c in cmd],
                                  capture_output=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise ThumbFailed(f"ffmpeg timed out after {timeout_s:.0f}s") from None
        except OSError as exc:
            raise ThumbFailed(f"cannot run ffmpeg: {exc.strerror or exc}") from None
        if proc.returncode == 0 and proc.stdout:
            return image_thumb(proc.stdout[:MAX_FRAME_BYTES], max_px, is_path=False)
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = lines[-1][:200] if lines else f"exit status {proc.returncode}"
    raise ThumbFailed(f"ffmpeg found no frame: {last}")


def cover_art(path: bytes) -> bytes | None:
    """The embedded front cover (or first picture) of an audio file, or None."""
    try:
        import mutagen
    except ImportError as exc:
        raise ThumbFailed("mutagen is not installed; pip install 'kvmedia[media]'") from exc
    try:
        audio = mutagen.File(path)
    except Exception:  # noqa: BLE001 - hostile files make mutagen raise anything
        return None
    if audio is None:
        return None
    pictures = getattr(audio, "pictures", None)  # FLAC
    if pictures:
        return bytes(pictures[0].data)
    tags = audio.tags
    if tags is None:
        return None
    if hasattr(tags, "getall"):  # ID3
        frames = tags.getall("APIC")
        frames.sort(key=lambda f: 0 if getattr(f, "type", 0) == 3 else 1)
        if frames:
            return bytes(frames[0].data)
    covers = tags.get("covr") if hasattr(tags, "get") else None  # MP4
    if covers:
        return bytes(covers[0])
    blocks = tags.get("metadata_block_picture") if hasattr(tags, "get") else None  # Ogg
    if blocks:
        from mutagen.flac import Picture

        try:
            return bytes(Picture(base64.b64decode(blocks[0])).data)
        except Exception:  # noqa: BLE001
            return None
    return None


def make_thumbnail(path: bytes, media_type: str, max_px: int = DEFAULT_MAX_PX,
                   duration_s: float | None = None) -> bytes:
    """JPEG bytes of the thumbnail; ThumbFailed when this file has none."""
    if media_type == "image":
        return image_thumb(path, max_px)
    if media_type == "video":
        return video_thumb(path, max_px, duration_s)
    if media_type == "audio":
        art = cover_art(path)
        if art is None:
            raise ThumbFailed("no embedded cover art")
        return image_thumb(art, max_px, is_path=False)
    raise ThumbFailed(f"no thumbnails for {media_type} files")
