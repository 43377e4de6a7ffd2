"""Sidecar files: which names are sidecars, which media they belong to, what they say.

A sidecar is a small file next to a media file that describes it. By extension:

    xmp            photo edits, rating, keywords, title (Adobe/darktable/digiKam)
    srt ass ssa vtt  subtitles                      lrc   synchronised lyrics
    cue            CD sheet (album, performer, track list)
    nfo            Kodi/scene info (XML: title, plot, genres, tags; else plain text)
    aae            Apple Photos edit instructions (a plist)

Ownership is by name (its "stems"): `IMG_1.xmp` belongs to every media file named `IMG_1.*`,
`IMG_1.CR2.xmp` only to `IMG_1.CR2`, `movie.en.srt` to `movie.*` (a short inner suffix is a
language tag), `IMG_O1234.AAE` (edited original) to `IMG_1234.*`. A media file looks itself
up by its full name and by its name without the extension.

Parsers read at most MAX_SIDECAR_BYTES, never raise for bad content (a broken sidecar just
contributes nothing) and decode text by BOM, then UTF-8, then cp1252.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from ..records import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS
from . import safexml

SIDECAR_KINDS: dict[str, str] = {
    "xmp": "xmp", "srt": "subtitle", "ass": "subtitle", "ssa": "subtitle", "vtt": "subtitle",
    "lrc": "lyrics", "cue": "cue", "nfo": "nfo", "aae": "aae",
}
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS | AUDIO_EXTS
MAX_SIDECAR_BYTES = 4 << 20
MAX_TEXT_CHARS = 20_000
LANG_MAX = 8

NS_DC = "http://purl.org/dc/elements/1.1/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DIGIKAM = "http://www.digikam.org/ns/1.0/"

_AAE_ORIGINAL = re.compile(rb"^(IMG_)O(\d+)$", re.IGNORECASE)


def _ext(name: bytes) -> str:
    dot = name.rfind(b".")
    return name[dot + 1:].decode("ascii", "replace").lower() if dot > 0 else ""


_KIND_BY_EXT = {ext.encode(): kind for ext, kind in SIDECAR_KINDS.items()}


def sidecar_kind(name: bytes) -> str | None:
    """The sidecar kind of a file name, or None when it is not a sidecar. On bytes (ASCII
    case folding, as `_ext`): a scan asks this of every file it sees."""
    dot = name.rfind(b".")
    return _KIND_BY_EXT.get(name[dot + 1:].lower()) if dot > 0 else None


def sidecar_stems(name: bytes) -> list[bytes]:
    """The media names (without extension, or whole) this sidecar belongs to."""
    dot = name.rfind(b".")
    if dot <= 0:
        return []
    stem = name[:dot]
    out = [stem]
    inner = stem.rfind(b".")
    if inner > 0:
        suffix = stem[inner + 1:].decode("ascii", "replace").lower()
        if suffix not in MEDIA_EXTS and 0 < len(suffix) <= LANG_MAX:
            out.append(stem[:inner])  # movie.en.srt -> movie
    m = _AAE_ORIGINAL.match(stem)
    if m and sidecar_kind(name) == "aae":
        out.append(m.group(1) + m.group(2))
    return out


def media_stems(name: bytes) -> list[bytes]:
    """The stems under which a media file's sidecars are filed: its name, and without ext."""
    dot = name.rfind(b".")
    return [name, name[:dot]] if dot > 0 else [name]


# -- decoding ---------------------------------------------------------------------------------

def decode_text(data: bytes) -> str:
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                       (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _clip(text: str) -> str:
    return " ".join(text.split())[:MAX_TEXT_CHARS]


# -- parsers: bytes -> record fields ------------------------------------------------------------

def parse_xmp(data: bytes) -> dict[str, Any]:
    """dc:subject + lr:hierarchicalSubject -> user_tags, xmp:Rating -> rating, dc:title,
    dc:description, xmp:Label."""
    root = safexml.parse(data)
    tags: list[str] = []
    out: dict[str, Any] = {}
    for el in root.iter():
        for key, value in el.attrs.items():  # simple properties written as attributes
            if key == f"{NS_XMP} Rating":
                _rating(out, value)
            elif key == f"{NS_XMP} Label" and value.strip():
                out["color_label"] = value.strip()
        ns, _, local = el.tag.rpartition(" ")
        if ns == NS_DC and local == "subject":
            tags.extend(_li(el))
        elif ns == NS_LR and local == "hierarchicalSubject":
            for item in _li(el):
                tags.extend(p.strip() for p in item.split("|"))
        elif ns == NS_DIGIKAM and local == "TagsList":
            for item in _li(el):
                tags.extend(p.strip() for p in item.split("/"))
        elif ns == NS_XMP and local == "Rating":
            _rating(out, el.all_text())
        elif ns == NS_XMP and local == "Label" and el.all_text().strip():
            out["color_label"] = el.all_text().strip()
        elif ns == NS_DC and local in ("title", "description"):
            items = _li(el) or [el.all_text().strip()]
            if items and items[0]:
                out[f"xmp_{local}"] = items[0][:1000]
    tags = [t[:100] for t in dict.fromkeys(t for t in tags if t)]
    if tags:
        out["user_tags"] = tags[:200]
    return out


def _li(el: safexml.Element) -> list[str]:
    return [li.all_text().strip() for li in el.iter()
            if li.tag == f"{NS_RDF} li" and li.all_text().strip()]


def _rating(out: dict[str, Any], raw: str) -> None:
    try:
        value = round(float(raw.strip()))
    except ValueError:
        return
    if -1 <= value <= 5:
        out["rating"] = value


_TIMECODE = re.compile(r"^\s*\d{1,2}:\d{2}(:\d{2})?[.,]\d{1,3}\s*-->")
_TAGS = re.compile(r"<[^>]{0,200}>")


def parse_subtitle(data: bytes, ext: str) -> dict[str, Any]:
    """Spoken text of .srt / .vtt / .ass / .ssa, without numbers, timecodes and styling."""
    text = decode_text(data)
    lines: list[str] = []
    if ext in ("ass", "ssa"):
        for line in text.splitlines():
            if line.startswith("Dialogue:"):
                body = line.split(",", 9)[-1]
                body = re.sub(r"\{[^}]*\}", "", body).replace("\\N", " ").replace("\\n", " ")
                lines.append(body)
    else:
        skip_block = False
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                skip_block = False
                continue
            if skip_block or line.isdigit() or _TIMECODE.match(line) or line == "WEBVTT":
                continue
            if ext == "vtt" and line.startswith(("NOTE", "STYLE", "REGION", "WEBVTT ")):
                skip_block = True
                continue
            lines.append(_TAGS.sub("", line))
    body = _clip(" ".join(lines))
    return {"sidecar_text": body} if body else {}


_LRC_TAG = re.compile(r"^\[(ar|ti|al|by|au|length|offset|re|ve):(.*)\]\s*$", re.IGNORECASE)
_LRC_TIME = re.compile(r"\[\d{1,3}:\d{2}(?:[.:]\d{1,3})?\]")


def parse_lrc(data: bytes) -> dict[str, Any]:
    lines = []
    out: dict[str, Any] = {}
    for raw in decode_text(data).splitlines():
        m = _LRC_TAG.match(raw.strip())
        if m:
            key = {"ar": "lyrics_artist", "ti": "lyrics_title"}.get(m.group(1).lower())
            if key and m.group(2).strip():
                out[key] = m.group(2).strip()[:300]
            continue
        line = _LRC_TIME.sub("", raw).strip()
        line = re.sub(r"<\d{1,3}:\d{2}(?:[.:]\d{1,3})?>", "", line)  # enhanced LRC word times
        if line:
            lines.append(line)
    body = _clip(" ".join(lines))
    if body:
        out["sidecar_text"] = body
    return out


_CUE_LINE = re.compile(r'^\s*(TRACK|TITLE|PERFORMER|INDEX)\s+(.*?)\s*$', re.IGNORECASE)


def parse_cue(data: bytes) -> dict[str, Any]:
    """Album TITLE/PERFORMER and the track list with start times (INDEX 01)."""
    out: dict[str, Any] = {}
    tracks: list[dict[str, Any]] = []
    for raw in decode_text(data).splitlines():
        m = _CUE_LINE.match(raw)
        if not m:
            continue
        word, value = m.group(1).upper(), m.group(2).strip().strip('"')
        if word == "TRACK":
            num = value.split()[0] if value.split() else ""
            tracks.append({"track": int(num) if num.isdigit() else len(tracks) + 1})
        elif word in ("TITLE", "PERFORMER"):
            key = word.lower()
            if tracks:
                tracks[-1][key] = value[:300]
            else:
                out[f"cue_{key}"] = value[:300]
        elif word == "INDEX" and tracks:
            parts = value.split()
            if len(parts) == 2 and parts[0] == "01":
                mm_ss_ff = parts[1].split(":")
                if len(mm_ss_ff) == 3 and all(p.isdigit() for p in mm_ss_ff):
                    mm, ss, ff = (int(p) for p in mm_ss_ff)
                    tracks[-1]["start_sec"] = round(mm * 60 + ss + ff / 75, 3)
    if tracks:
        out["cue_tracks"] = tracks[:200]
    return out


def parse_nfo(data: bytes) -> dict[str, Any]:
    """Kodi XML NFO: title, plot, genres and tags; a scene (text) NFO: its text."""
    head = data.lstrip()[:1]
    if head == b"<":
        try:
            root = safexml.parse(data)
        except ValueError:
            return {}
        out: dict[str, Any] = {}
        tags: list[str] = []
        for el in root.iter():
            text = " ".join(el.all_text().split())
            if not text:
                continue
            if el.local == "title" and "nfo_title" not in out:
                out["nfo_title"] = text[:300]
            elif el.local in ("plot", "outline") and "sidecar_text" not in out:
                out["sidecar_text"] = text[:MAX_TEXT_CHARS]
            elif el.local in ("genre", "tag"):
                tags.append(text[:100])
            elif el.local == "userrating" and text.isdigit():
                out["rating"] = max(0, min(5, round(int(text) / 2)))  # Kodi: 0-10
        if tags:
            out["user_tags"] = list(dict.fromkeys(tags))
        return out
    body = _clip(decode_text(data))
    return {"sidecar_text": body} if body else {}


def parse_aae(data: bytes) -> dict[str, Any]:
    """Apple edit plist: which editor made the adjustments (the edit itself is opaque)."""
    try:
        root = safexml.parse(data)
    except ValueError:
        return {"apple_edits": {"format": None}}
    items = [el for el in root.iter() if el.local in ("key", "string", "integer", "data")]
    info: dict[str, Any] = {"format": None}
    for key, value in zip(items, items[1:], strict=False):
        if key.local != "key":
            continue
        name = key.all_text().strip()
        if name == "adjustmentFormatIdentifier":
            info["format"] = value.all_text().strip()[:200]
        elif name == "adjustmentFormatVersion":
            info["version"] = value.all_text().strip()[:20]
        elif name == "adjustmentData" and value.local == "data":
            try:
                info["bytes"] = len(base64.b64decode("".join(value.all_text().split())))
            except ValueError:
                pass
    return {"apple_edits": info}


def parse_sidecar(data: bytes, name: bytes) -> dict[str, Any]:
    """Record fields one sidecar contributes; {} when it says nothing or cannot be read."""
    kind = sidecar_kind(name)
    try:
        if kind == "xmp":
            return parse_xmp(data)
        if kind == "subtitle":
            return parse_subtitle(data, _ext(name))
        if kind == "lyrics":
            return parse_lrc(data)
        if kind == "cue":
            return parse_cue(data)
        if kind == "nfo":
            return parse_nfo(data)
        if kind == "aae":
            return parse_aae(data)
    except ValueError:  # malformed or refused XML: this sidecar contributes nothing
        return {}
    return {}


def read_sidecar(path: bytes) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_SIDECAR_BYTES)
    except OSError:
        return None
