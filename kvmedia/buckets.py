"""Buckets: the folders holding media, each with its item count and most recent items.

A bucket is the parent directory of a live (not trashed) file. Its id is the FNV-1a 32-bit
hash of the directory path bytes, printed in decimal (as PlainNAS). Two ways in, neither a
scan of the record bodies of the whole corpus:

- a type given: walk that type's `moddesc` keys and read only those records, so the first
  items seen per folder are already its most recent ones;
- all types: walk the `media:path:` keys, whose values carry uuid, mtime and the trash flag,
  so no record is decoded at all (except the rare hashed long-path keys).

Order: item count descending, then folder name (case-folded), then path.
"""

from __future__ import annotations

import heapq
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import lmdb

from .pathbytes import get_field, set_field
from .store import keys as K
from .store.recordstore import RecordStore

TOP_ITEMS = 4
_MTIME = struct.Struct(">q")
_PV_MIN = K.UUID_LEN + 33
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def bucket_id(directory: bytes) -> str:
    """The bucket id of a directory path: FNV-1a 32-bit, decimal."""
    return str(fnv1a_32(directory))


@dataclass
class _Bucket:
    path: bytes
    count: int = 0
    # min-heap of (mtime_ns, uuid, path): the TOP_ITEMS most recent items
    top: list[tuple[int, str, bytes]] = field(default_factory=list)

    def add(self, mtime_ns: int, uuid: str, path: bytes) -> None:
        self.count += 1
        top = self.top
        if len(top) < TOP_ITEMS:
            heapq.heappush(top, (mtime_ns, uuid, path))
        elif mtime_ns >= top[0][0] and (mtime_ns, uuid, path) > top[0]:
            heapq.heapreplace(top, (mtime_ns, uuid, path))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "bucket", "id": bucket_id(self.path)}
        set_field(out, "name", os.path.basename(self.path) or self.path)
        set_field(out, "path", self.path)
        out["count"] = self.count
        items = []
        for mtime_ns, uuid, path in sorted(self.top, reverse=True):
            item: dict[str, Any] = {"uuid": uuid, "mtime_ns": mtime_ns}
            set_field(item, "path", path)
            items.append(item)
        out["items"] = items
        return out


def _sort_key(b: _Bucket) -> tuple[int, str, bytes]:
    name = os.path.basename(b.path).decode("utf-8", "surrogateescape").casefold()
    return (-b.count, name, b.path)


def list_buckets(txn: lmdb.Transaction, store: RecordStore, media_type: str | None = None
                 ) -> list[dict[str, Any]]:
    """Every bucket (of `media_type`, or of all live media), ordered as the module says."""
    found: dict[bytes, _Bucket] = {}

    def add(path: bytes, uuid: str, mtime_ns: int) -> None:
        directory = os.path.dirname(path)
        bucket = found.get(directory)
        if bucket is None:
            bucket = found[directory] = _Bucket(directory)
        bucket.add(mtime_ns, uuid, path)

    if media_type and media_type != K.ALL:
        for key, _ in store.iter_prefix(txn, K.type_prefix(media_type, False, "moddesc")):
            rec = store.get(txn, K.uuid_from_type_key(key))
            if rec is None:
                continue
            path = get_field(rec, "original_path") or get_field(rec, "path") or b""
            add(path, rec["uuid"], int(rec.get("mtime_ns") or 0))
    else:
        skip = len(K.P_PATH)
        for key, value in store.iter_prefix(txn, K.P_PATH):
            # PathValue layout (keys.py): uuid | ino u64 | size u64 | mtime_ns i64 | ctime | flags
            if len(value) < _PV_MIN or value[-1] & K.FLAG_TRASH:
                continue
            uuid = value[:K.UUID_LEN].decode("ascii")
            (mtime_ns,) = _MTIME.unpack_from(value, K.UUID_LEN + 16)
            path = key[skip:]
            if b"\0" in path:  # a hashed long path: the record holds the real one
                rec = store.get(txn, uuid)
                if rec is None or rec.get("is_trash"):
                    continue
                path = get_field(rec, "path") or b""
            cut = path.rfind(b"/")
            bucket = found.get(path[:cut])
            if bucket is None:
                bucket = found[path[:cut]] = _Bucket(path[:cut] or b"/")
            bucket.add(mtime_ns, uuid, path)
    return [b.to_json() for b in sorted(found.values(), key=_sort_key)]
