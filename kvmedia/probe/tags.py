"""Audio tags with mutagen: artist, album, title, track, and the duration.

Formats: ID3v2 and ID3v1 (MP3, AIFF, WAV), Vorbis comments (FLAC, Ogg, Opus), MP4 atoms
(M4A/M4B/MP4), APEv2 (APE, WavPack, Musepack, or appended to an MP3), ASF (WMA).

Legacy encodings: ID3 frames marked Latin-1 (and all of ID3v1) often hold bytes in another
encoding. The Latin-1 text is turned back into its bytes and decoded as UTF-8 when that is
valid (the common case), else with `legacy_encoding` when given (e.g. "cp1251"), else
left as Latin-1 as the standard says.
"""

from __future__ import annotations

import os
from typing import Any

FIELDS = ("artist", "album", "title", "track")
ID3_FRAMES = {"TPE1": "artist", "TALB": "album", "TIT2": "title", "TRCK": "track"}
MP4_ATOMS = {"\xa9ART": "artist", "\xa9alb": "album", "\xa9nam": "title", "trkn": "track"}
ASF_NAMES = {"Author": "artist", "WM/AlbumTitle": "album", "Title": "title",
             "WM/TrackNumber": "track"}
PLAIN_NAMES = {"artist": "artist", "album": "album", "title": "title", "track": "track",
               "tracknumber": "track"}


def fix_legacy(text: str, legacy_encoding: str | None = None) -> str:
    """Undo mojibake in a Latin-1-marked tag (see the module docstring)."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return text
    if raw.isascii():
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if legacy_encoding:
        try:
            return raw.decode(legacy_encoding)
        except (UnicodeDecodeError, LookupError):
            pass
    return text


def _track(value: Any) -> int | None:
    if isinstance(value, tuple):
        value = value[0] if value else None
    if isinstance(value, int):
        return value if value > 0 else None
    head = str(value).split("/")[0].strip()
    return int(head) if head.isdigit() and 0 < int(head) < 100_000 else None


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple) and value and not isinstance(value, str):
        return value[0]
    return value


def _store(out: dict[str, Any], field: str, value: Any) -> None:
    value = _first(value)
    if value is None or field in out:
        return
    if field == "track":
        track = _track(value)
        if track is not None:
            out["track"] = track
        return
    text = str(getattr(value, "value", value)).strip("\x00 ").strip()
    if text:
        out[field] = text


def _from_tags(tags: Any, legacy_encoding: str | None) -> dict[str, Any]:
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3, Encoding

    out: dict[str, Any] = {}
    if tags is None:
        return out
    if isinstance(tags, ID3):
        for frame_id, field in ID3_FRAMES.items():
            frame = tags.get(frame_id)
            if frame is None or not frame.text:
                continue
            text = str(frame.text[0])
            if frame.encoding == Encoding.LATIN1:
                text = fix_legacy(text, legacy_encoding)
            _store(out, field, text)
        return out
    if isinstance(tags, APEv2):
        for key in tags.keys():
            field = PLAIN_NAMES.get(key.lower())
            if field:
                _store(out, field, str(tags[key]))
        return out
    names = {**MP4_ATOMS, **ASF_NAMES}
    for key in list(tags.keys()):
        field = names.get(key) or PLAIN_NAMES.get(str(key).lower())
        if field:
            _store(out, field, tags[key])
    return out


def _bare_tags(fname: str, legacy_encoding: str | None) -> dict[str, Any]:
    """Tags of a file whose audio stream mutagen cannot parse: ID3 (v2 or v1), then APEv2."""
    import mutagen
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3

    for kind in (ID3, APEv2):
        try:
            found = _from_tags(kind(fname), legacy_encoding)
        except (mutagen.MutagenError, OSError, ValueError):
            continue
        if found:
            return found
    return {}


def read(path: bytes, legacy_encoding: str | None = None) -> dict[str, Any]:
    """Tags and `duration_sec` of an audio (or MP4 video) file; raises when unreadable."""
    import mutagen
    from mutagen.apev2 import APENoHeaderError, APEv2

    fname = os.fsdecode(path)
    try:
        audio = mutagen.File(fname)
    except Exception:  # noqa: BLE001 - a damaged stream may still carry readable tags
        found = _bare_tags(fname, legacy_encoding)
        if found:
            return found
        raise
    if audio is None:
        raise ValueError("not a format mutagen knows")
    out = _from_tags(audio.tags, legacy_encoding)
    if not out:
        try:  # an APEv2 tag appended to a file whose main tag is missing (MP3 + APE)
            out = _from_tags(APEv2(fname), legacy_encoding)
        except (APENoHeaderError, mutagen.MutagenError, OSError):
            pass
    length = getattr(audio.info, "length", None)
    if isinstance(length, int | float) and length > 0 and length == length:
        out["duration_sec"] = round(float(length), 3)
    return out
