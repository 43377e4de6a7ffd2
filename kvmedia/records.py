"""The media record: one JSON object per file, and the media type of a file name. No I/O.

A record is a plain dict (it *is* the JSON stored under `media:uuid:<uuid>` and the object
`--json` prints). Byte-valued fields (`path`, `name`, `original_path`, `trash_path`) follow
`pathbytes.set_field`: text when valid UTF-8, else `<field>_bytes` in base64.

Fields written by the scanner (all other fields are preserved on update, so cached metadata
such as `duration_sec` survives a rescan):

    uuid          str    stable id (see identity.py)
    fs_uuid       str    filesystem id of the volume holding the file
    ino           int    inode number
    ctime         int    inode change time, whole seconds (part of the identity triplet)
    ctime_ns      int    inode change time, nanoseconds
    path          bytes  current physical path (inside .nas-trash when trashed)
    original_path bytes  path before trashing (== path when not trashed)
    name          bytes  last path component of original_path
    ext           str    lower-case extension without the dot ("" when none)
    size          int    bytes
    mtime         float  modification time, unix seconds (for display)
    mtime_ns      int    modification time, nanoseconds (exact; used for sorting and change checks)
    type          str    audio | video | image | other
    root          bytes  the scan root the file was found under
    is_trash      bool
    trash_path    bytes|None
    deleted_at    str|None   ISO-8601 UTC when trashed
    indexed_at    str        ISO-8601 UTC of the last write
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from .pathbytes import get_field

MEDIA_TYPES = ("audio", "video", "image", "other")

IMAGE_EXTS = frozenset(
    """jpg jpeg jpe jfif png gif bmp webp heic heif avif tif tiff svg ico jxl
    dng arw cr2 cr3 nef nrw orf rw2 raf srw pef raw rwl 3fr erf kdc mrw x3f""".split()
)
VIDEO_EXTS = frozenset(
    """mp4 m4v mkv mov avi webm wmv flv f4v 3gp 3g2 ts m2ts mts mpg mpeg mpe m2v vob ogv
    rm rmvb asf divx mxf""".split()
)
AUDIO_EXTS = frozenset(
    """mp3 wav flac aac m4a m4b ogg oga opus wma amr aiff aif aifc ape alac wv dsf dff mka
    mid midi ac3 dts""".split()
)

BYTE_FIELDS = ("path", "original_path", "name", "trash_path", "root")


def extension(name: bytes) -> str:
    """Lower-case extension of a file name, without the dot; "" when there is none."""
    dot = name.rfind(b".")
    if dot <= 0:
        return ""
    return name[dot + 1 :].decode("utf-8", "replace").lower()


def infer_type(name: bytes) -> str:
    """Media type from the file name's extension; unknown extensions are `other`."""
    ext = extension(name)
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    return "other"


_last_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """Current UTC time, ISO-8601 with milliseconds (formatted once per millisecond)."""
    global _last_iso
    ms = time.time_ns() // 1_000_000
    if ms != _last_iso[0]:
        stamp = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
        _last_iso = (ms, stamp.isoformat(timespec="milliseconds"))
    return _last_iso[1]


def path_of(record: dict[str, Any]) -> bytes:
    value = get_field(record, "path")
    assert value is not None, "record without path"
    return value


def name_of(record: dict[str, Any]) -> bytes:
    return get_field(record, "name") or b""
