"""Re-derive one record from its sidecars and its Live-Photo partner.

`gather` (LMDB reads only) finds what a record depends on now: the sidecars filed under its
stems and, for a still (HEIC/JPG) or a .MOV, the file of the same stem forming a Live Photo.
`derive` (file reads only, no transaction) parses those sidecars into record fields. The
caller writes the result in one transaction (see pipeline/engine.py).

Record fields written here (absent when no sidecar provides them):

    user_tags        list[str]  XMP dc:subject / lr:hierarchicalSubject, NFO genre/tag
    rating           int        XMP xmp:Rating (-1 rejected .. 5), else NFO userrating
    xmp_title, xmp_description, color_label   str   XMP dc:title, dc:description, xmp:Label
    sidecar_text     str        subtitle / lyrics / NFO text (feeds the analyzers)
    subtitle_langs   list[str]  language tags of subtitle files (`movie.en.srt` -> "en")
    lyrics_artist, lyrics_title, cue_title, cue_performer, nfo_title   str
    cue_tracks       list[{"track", "title", "performer", "start_sec"}]
    apple_edits      {"format", "version", "bytes"}  an Apple .AAE edit exists
    live_photo       {"video": uuid} on the still, {"still": uuid} on the video
    sidecar          stamp {"v": SIDECAR_VERSION, "files": [{"path"|"path_bytes", "kind",
                     "size", "mtime_ns"}]}: what the fields were derived from

A Live-Photo video takes the still's tags, rating and title when it has none of its own, so
it depends on the still; the still depends on the video for `live_photo`: a cycle by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lmdb

from ..pathbytes import get_field, set_field
from ..store import keys as K
from ..store.recordstore import Record, RecordStore
from . import deps as D
from .sidecars import (
    MAX_TEXT_CHARS,
    media_stems,
    parse_sidecar,
    read_sidecar,
    sidecar_kind,
    sidecar_stems,
)

SIDECAR_VERSION = 1
SIDECAR_FIELDS = (
    "user_tags", "rating", "xmp_title", "xmp_description", "color_label", "sidecar_text",
    "subtitle_langs", "lyrics_artist", "lyrics_title", "cue_title", "cue_performer",
    "cue_tracks", "nfo_title", "apple_edits", "live_photo", "sidecar",
)
INHERITED = ("user_tags", "rating", "xmp_title", "xmp_description", "color_label")
STILL_EXTS = ("HEIC", "heic", "HEIF", "heif", "JPG", "jpg", "JPEG", "jpeg")
VIDEO_EXTS = ("MOV", "mov")
KIND_ORDER = {"xmp": 0, "nfo": 1, "aae": 2, "cue": 3, "subtitle": 4, "lyrics": 5}


@dataclass
class Plan:
    """What one record's fields come from, read in one LMDB snapshot."""

    rec: Record
    sidecars: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pair: Record | None = None
    role: str | None = None  # "still" | "video" when `pair` is set

    def depends_on(self) -> list[str]:
        out = [D.sidecar_node(sid) for sid, _ in self.sidecars]
        if self.pair is not None:
            out.append(D.record_node(self.pair["uuid"]))
        return out


def split(path: bytes) -> tuple[bytes, bytes]:
    slash = path.rfind(b"/")
    return path[:slash + 1], path[slash + 1:]


def live_partner(txn: lmdb.Transaction, store: RecordStore, path: bytes
                 ) -> tuple[Record, str] | None:
    """The other half of a Live Photo (same folder and stem), with this file's role."""
    parent, name = split(path)
    dot = name.rfind(b".")
    if dot <= 0:
        return None
    stem, ext = name[:dot], name[dot + 1:].decode("ascii", "replace")
    if ext in STILL_EXTS:
        role, others = "still", VIDEO_EXTS
    elif ext in VIDEO_EXTS:
        role, others = "video", STILL_EXTS
    else:
        return None
    for other in others:
        rec = store.get_by_path(txn, parent + stem + b"." + other.encode())
        if rec is not None and not rec.get("is_trash"):
            return rec, role
    return None


def gather(txn: lmdb.Transaction, store: RecordStore, rec: Record) -> Plan:
    plan = Plan(rec)
    if rec.get("is_trash"):
        return plan  # a trashed file is away from its sidecars
    path = get_field(rec, "path") or b""
    parent, name = split(path)
    found: dict[str, dict[str, Any]] = {}
    for stem in media_stems(name):
        for sid, node in D.sidecars_for_stem(txn, parent + stem, sidecar_stems):
            found[sid] = node
    plan.sidecars = sorted(found.items(), key=lambda item: (
        KIND_ORDER.get(item[1].get("kind", ""), 9), get_field(item[1], "path") or b""))
    partner = live_partner(txn, store, path)
    if partner is not None:
        plan.pair, plan.role = partner
    return plan


def has_inputs(txn: lmdb.Transaction, store: RecordStore, rec: Record) -> bool:
    """Cheap check for a new record: is there anything to derive from at all?"""
    path = get_field(rec, "path") or b""
    parent, name = split(path)
    for stem in media_stems(name):
        cur = txn.cursor()
        prefix = D.P_STEM + D.stem_key(parent + stem) + b"\0"
        if cur.set_range(prefix) and cur.key().startswith(prefix):
            return True
    return live_partner(txn, store, path) is not None


def derive(plan: Plan) -> dict[str, Any]:
    """The sidecar fields of `plan.rec` as the files on disk say now (no LMDB access)."""
    out: dict[str, Any] = {}
    tags: list[str] = []
    texts: list[str] = []
    langs: list[str] = []
    files = []
    for _sid, node in plan.sidecars:
        path = get_field(node, "path") or b""
        data = read_sidecar(path)
        if data is None:
            continue  # vanished since the scan: the next sweep forgets it
        name = split(path)[1]
        entry = {"kind": node.get("kind"), "size": len(data), "mtime_ns": node.get("mtime_ns")}
        set_field(entry, "path", path)
        files.append(entry)
        fields = parse_sidecar(data, name)
        if sidecar_kind(name) == "subtitle":
            stems = sidecar_stems(name)
            if len(stems) > 1 and stems[0] != stems[1]:
                langs.append(stems[0][len(stems[1]) + 1:].decode("utf-8", "replace"))
        tags.extend(fields.pop("user_tags", []))
        text = fields.pop("sidecar_text", None)
        if text:
            texts.append(text)
        for key, value in fields.items():
            out.setdefault(key, value)  # earlier kinds (xmp first) win
    if tags:
        out["user_tags"] = list(dict.fromkeys(tags))
    if texts:
        out["sidecar_text"] = " ".join(texts)[:MAX_TEXT_CHARS]
    if langs:
        out["subtitle_langs"] = sorted(set(langs))
    if plan.pair is not None:
        other = plan.pair["uuid"]
        out["live_photo"] = {"video": other} if plan.role == "still" else {"still": other}
        if plan.role == "video":
            for key in INHERITED:
                if key not in out and plan.pair.get(key) is not None:
                    out[key] = plan.pair[key]
    if out or files:
        out["sidecar"] = {"v": SIDECAR_VERSION, "files": files}
    return out


def apply_fields(rec: Record, fields: dict[str, Any]) -> Record:
    """`rec` with its sidecar fields replaced by `fields`."""
    new = {k: v for k, v in rec.items() if k not in SIDECAR_FIELDS}
    new.update(fields)
    return new


def owners_by_name(txn: lmdb.Transaction, sidecar_path: bytes) -> list[str]:
    """uuids of the live media records whose stems this sidecar's name is filed under."""
    parent, name = split(sidecar_path)
    out: list[str] = []
    for stem in sidecar_stems(name):
        prefix = K.path_key(parent + stem)
        cur = txn.cursor()
        if not cur.set_range(prefix):
            continue
        for key, value in cur:
            if not key.startswith(prefix):
                break
            path = K.path_from_key(key)
            if path is None:
                continue
            other = split(path)[1]
            if b"/" in path[len(parent):] or sidecar_kind(other) is not None:
                continue
            if stem in media_stems(other) and not K.PathValue.unpack(value).flags & K.FLAG_TRASH:
                out.append(value[:K.UUID_LEN].decode("ascii"))
    return list(dict.fromkeys(out))
