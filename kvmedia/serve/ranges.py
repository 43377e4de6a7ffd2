"""HTTP range requests (RFC 9110 §14) and content types by extension, as pure functions.

One range is served as 206 with `Content-Range`; a header this module does not understand, or
one asking for several ranges, is ignored and the whole file is sent (200) — both allowed by
the RFC, and what video players need (they ask for one open-ended range at a time). A range
that starts past the end is 416 with `Content-Range: bytes */<size>`.
"""

from __future__ import annotations

import mimetypes
import os

# Deterministic types for media (the system's mime.types differs between machines).
CONTENT_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "avif": "image/avif", "heic": "image/heic", "heif": "image/heif",
    "jxl": "image/jxl", "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff",
    "svg": "image/svg+xml", "mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime",
    "mkv": "video/x-matroska", "webm": "video/webm", "avi": "video/x-msvideo",
    "ts": "video/mp2t", "mts": "video/mp2t", "m2ts": "video/mp2t", "mpg": "video/mpeg",
    "mpeg": "video/mpeg", "3gp": "video/3gpp", "wmv": "video/x-ms-wmv", "mp3": "audio/mpeg",
    "m4a": "audio/mp4", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
    "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg", "wma": "audio/x-ms-wma",
    "aiff": "audio/aiff", "srt": "text/plain; charset=utf-8", "vtt": "text/vtt",
    "txt": "text/plain; charset=utf-8", "pdf": "application/pdf", "json": "application/json",
    "html": "text/html", "htm": "text/html",
}
OCTET_STREAM = "application/octet-stream"
# Types a browser would run or render as a document: always sent as attachments.
ACTIVE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml",
                "application/xml")


class Unsatisfiable(Exception):
    """The range starts at or past the end of the file: answer 416."""


def content_type(name: bytes) -> str:
    dot = name.rfind(b".")
    ext = name[dot + 1:].decode("ascii", "replace").lower() if dot > 0 else ""
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type("x." + ext) if ext else (None, None)
    return guessed or OCTET_STREAM


def is_active(ctype: str) -> bool:
    return ctype.split(";")[0].strip() in ACTIVE_TYPES


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, inclusive, of the one range asked for; None: send all.

    Raises Unsatisfiable for a well-formed range that selects nothing of a `size`-byte file.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (first_s.isdigit() or first_s == "") or not (
            last_s.isdigit() or last_s == "") or (first_s == "" and last_s == ""):
        return None
    if first_s == "":  # suffix: the last N bytes
        length = int(last_s)
        if length == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - length), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid: ignore the header
    if first >= size:
        raise Unsatisfiable
    return first, min(int(last_s), size - 1) if last_s else size - 1


def etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def range_applies(if_range: str | None, tag: str, last_modified: str) -> bool:
    """If-Range: the range holds only while the file is the one the client saw."""
    return if_range is None or if_range.strip() in (tag, last_modified)
