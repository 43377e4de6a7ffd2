"""The built-in analyzer: turns what kvmedia already knows about a file into words.

Name and folder words (split at separators, camelCase and digit runs; camera counters such as
IMG_0042 dropped), the date as words ("2023 july summer"), camera make and model, audio tags,
sidecar titles, tags and text (XMP, NFO, subtitles, lyrics), a duration class, orientation.
Folder names carry the places and events people file things under ("Da Lat 2023",
"Wedding"), so they are kept whole. No I/O: it reads the record only.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..pathbytes import get_field
from .base import Record

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
SEASONS = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
           "autumn", "autumn", "autumn", "winter")
TYPE_WORDS = {"image": "photo image picture", "video": "video clip movie",
              "audio": "audio sound recording", "other": "file document"}
NOISE = frozenset({"img", "dsc", "dscn", "dscf", "pxl", "vid", "mvimg", "wp", "mov", "mvi",
                   "gopr", "dji", "screenshot_", "copy", "final", "new", "tmp", "file"})
_SPLIT = re.compile(r"[\W_]+", re.UNICODE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
SIDECAR_CHARS = 600  # subtitles / lyrics / NFO text from sidecar files (pipeline/derive.py)
SKIP_DIRS = frozenset({"", "mnt", "media", "volume1", "volume2", "home", "share", "data",
                       "srv", "nas", "users", "storage", "sdcard", "dcim", "camera"})


def _is_year(digits: str) -> bool:
    return len(digits) == 4 and 1900 <= int(digits) <= 2099


def words(text: str) -> list[str]:
    out: list[str] = []
    for chunk in _SPLIT.split(text):
        for part in _CAMEL.split(chunk):
            part = part.lower()
            if not part or part in NOISE or (part.isdigit() and not _is_year(part)):
                continue  # counters such as 0042 say nothing; a year does
            out.append(part)
    return out


def _decode(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def date_words(rec: Record) -> list[str]:
    when: dt.datetime | None = None
    taken = rec.get("taken_at")
    if isinstance(taken, str):
        try:
            when = dt.datetime.fromisoformat(taken.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None and rec.get("mtime"):
        try:
            when = dt.datetime.fromtimestamp(float(rec["mtime"]), dt.UTC)
        except (OverflowError, OSError, ValueError):
            return []
    if when is None:
        return []
    return [str(when.year), MONTHS[when.month - 1], SEASONS[when.month - 1]]


def duration_words(seconds: Any) -> list[str]:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return []
    if s < 30:
        return ["short"]
    if s < 600:
        return ["medium length"]
    if s < 3600:
        return ["long"]
    return ["very long", "hours"]


def describe(rec: Record) -> str:
    name = _decode(get_field(rec, "name"))
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    path = _decode(get_field(rec, "original_path") or get_field(rec, "path"))
    root = _decode(get_field(rec, "root"))
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if root and folder.startswith(root):
        folder = folder[len(root):]
    dirs = [d for d in folder.split("/") if d.lower() not in SKIP_DIRS][-3:]
    parts: list[str] = []
    parts.append(" ".join(words(stem)))
    parts.extend(" ".join(words(d)) for d in reversed(dirs))
    media_type = rec.get("type") or "other"
    parts.append(TYPE_WORDS.get(media_type, "file"))
    if rec.get("ext"):
        parts.append(str(rec["ext"]))
    parts.extend(date_words(rec))
    for key in ("camera_make", "camera_model", "artist", "album", "title", "xmp_title",
                "xmp_description", "nfo_title", "lyrics_title"):
        if isinstance(rec.get(key), str):
            parts.append(rec[key])
    if isinstance(rec.get("user_tags"), list):
        parts.append(" ".join(str(t) for t in rec["user_tags"][:32]))
    if isinstance(rec.get("sidecar_text"), str):
        parts.append(rec["sidecar_text"][:SIDECAR_CHARS])
    if media_type in ("audio", "video"):
        parts.extend(duration_words(rec.get("duration_sec")))
    width, height = rec.get("width"), rec.get("height")
    if isinstance(width, int) and isinstance(height, int) and width and height:
        parts.append("landscape" if width > height else "portrait" if height > width else
                     "square")
    seen: set[str] = set()
    out: list[str] = []
    for part in parts:
        part = " ".join(part.split())
        if part and part.lower() not in seen:
            seen.add(part.lower())
            out.append(part)
    return " ".join(out)


class OfflineAnalyzer:
    name = "offline"
    version = 1
    media_types: frozenset[str] = frozenset()
    extensions: frozenset[str] = frozenset()
    uses_content = False
    cache_name = "offline"

    def analyze(self, rec: Record, path: bytes) -> Record:
        return {"keywords": describe(rec)}
