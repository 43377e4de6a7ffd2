"""The thumbnail cache on disk: `<data_dir>/thumbs/`, keyed by uuid, with a validity stamp.

Layout:

    thumbs/<uuid[:2]>/<uuid>.<stamp>.jpg    the thumbnail (JPEG)
    thumbs/<uuid[:2]>/<uuid>.<stamp>.none   empty: this version of the file has no thumbnail
                                            (not decodable, no cover art); not retried

`<stamp>` = first 16 hex digits of xxh3_64 over (size, mtime_ns, ino, THUMB_VERSION,
max_px) of the record: a changed file, a new builder version or another size gives another
name, so a stale thumbnail is never served; the old files of that uuid are removed when the
new one is written. Files are written to a temporary name and renamed into place.

LRU: a file's mtime is its last use (set on every hit; atime is unreliable under relatime).
When the cache grows past its budget, the least recently used files are deleted until it
is under LOW_WATER of the budget. The cache is a cache: deleting the directory loses nothing.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import xxhash

from .build import THUMB_VERSION

LOW_WATER = 0.9
CHECK_EVERY_FRACTION = 0.05
"""Eviction runs when this fraction of the budget was written since the last run."""


def thumb_stamp(rec: dict[str, Any], max_px: int) -> str:
    key = b"%d:%d:%d:%d:%d" % (int(rec.get("size") or 0), int(rec.get("mtime_ns") or 0),
                               int(rec.get("ino") or 0), THUMB_VERSION, max_px)
    return xxhash.xxh3_64_hexdigest(key)


class ThumbCache:
    def __init__(self, data_dir: str, max_bytes: int) -> None:
        self.dir = os.path.join(data_dir, "thumbs")
        self.max_bytes = max_bytes
        self._written_since_check = 0
        self._checked = False

    def _shard(self, uuid: str) -> str:
        return os.path.join(self.dir, uuid[:2])

    def path(self, uuid: str, stamp: str, ok: bool = True) -> str:
        return os.path.join(self._shard(uuid), f"{uuid}.{stamp}.{'jpg' if ok else 'none'}")

    def lookup(self, uuid: str, stamp: str) -> tuple[str, bytes | None] | None:
        """("hit", bytes) / ("none", None) for a cached answer; None when not cached."""
        path = self.path(uuid, stamp)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            if os.path.exists(self.path(uuid, stamp, ok=False)):
                return "none", None
            return None
        try:
            os.utime(path)  # last use, for the LRU
        except OSError:
            pass
        return "hit", data

    def store(self, uuid: str, stamp: str, data: bytes | None) -> str:
        """Write a thumbnail (or a "none" marker); drop the stale ones of this uuid."""
        shard = self._shard(uuid)
        os.makedirs(shard, mode=0o700, exist_ok=True)
        final = self.path(uuid, stamp, ok=data is not None)
        fd, tmp = tempfile.mkstemp(dir=shard, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data or b"")
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.remove(uuid, keep=os.path.basename(final))
        self._written_since_check += len(data or b"")
        if not self._checked or self._written_since_check > self.max_bytes * CHECK_EVERY_FRACTION:
            self.evict()
        return final

    def remove(self, uuid: str, keep: str | None = None) -> int:
        """Delete every cached file of `uuid` (but `keep`); returns how many."""
        shard = self._shard(uuid)
        removed = 0
        try:
            names = os.listdir(shard)
        except FileNotFoundError:
            return 0
        for name in names:
            if name.startswith(uuid + ".") and name != keep:
                try:
                    os.unlink(os.path.join(shard, name))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def entries(self) -> list[tuple[float, int, str]]:
        """(last use, bytes, path) of every cached file."""
        out = []
        try:
            shards = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for shard in shards:
            try:
                with os.scandir(os.path.join(self.dir, shard)) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue
                        try:
                            st = entry.stat()
                        except FileNotFoundError:
                            continue
                        out.append((st.st_mtime, st.st_size, entry.path))
            except (NotADirectoryError, FileNotFoundError):
                continue
        return out

    def usage(self) -> dict[str, int]:
        entries = self.entries()
        return {"files": len(entries), "bytes": sum(e[1] for e in entries),
                "max_bytes": self.max_bytes}

    def evict(self) -> int:
        """Delete least recently used files until under LOW_WATER of the budget."""
        self._checked = True
        self._written_since_check = 0
        entries = self.entries()
        total = sum(e[1] for e in entries)
        if total <= self.max_bytes:
            return 0
        target = self.max_bytes * LOW_WATER
        removed = 0
        for _used, size, path in sorted(entries):
            if total <= target:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            total -= size
            removed += 1
        return removed

    def prune(self, live: set[str]) -> int:
        """Delete cached files of uuids not in `live` (items deleted while no process with
        this cache open was around to see it)."""
        removed = 0
        for _used, _size, path in self.entries():
            uuid = os.path.basename(path).split(".", 1)[0]
            if uuid not in live:
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

