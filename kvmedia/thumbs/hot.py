"""In-process LRU caches bounded in bytes: hot records and hot thumbnails.

`BoundedLRU` keeps at most `max_bytes` (by the size each entry is charged) and `max_items`
entries, evicting the least recently used first; an entry bigger than a quarter of the
budget is not kept at all (it would flush everything else).

`HotCache` pairs one for records and one for thumbnail bytes. Records can change in any
process, so the record LRU is only trusted while LMDB's last committed transaction id is the
one seen when it was filled: `env.info()["last_txnid"]` reads the shared meta page (no
transaction, no disk read), and any commit anywhere empties the record LRU. Thumbnail bytes
are keyed by (uuid, validity stamp), so they stay right across commits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    def __init__(self, max_bytes: int, max_items: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: K, value: V, nbytes: int) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if nbytes > self.max_bytes // 4:
                return
            self._data[key] = (value, nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes or len(self._data) > self.max_items:
                _key, (_value, size) = self._data.popitem(last=False)
                self.bytes -= size

    def discard(self, key: K) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0

    def stats(self) -> dict[str, int]:
        return {"items": len(self._data), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses}


class HotCache:
    """Hot records (valid until the next commit anywhere) and thumbnails (by stamp)."""

    def __init__(self, generation: Callable[[], int], *, record_bytes: int = 8 << 20,
                 thumb_bytes: int = 24 << 20) -> None:
        self._generation = generation
        self._gen = -1
        self.records: BoundedLRU[str, dict[str, Any]] = BoundedLRU(record_bytes)
        self.thumbs: BoundedLRU[tuple[str, str], bytes] = BoundedLRU(thumb_bytes)

    def _fresh(self) -> None:
        gen = self._generation()
        if gen != self._gen:
            self.records.clear()
            self._gen = gen

    def record(self, uuid: str, load: Callable[[str], dict[str, Any] | None]
               ) -> dict[str, Any] | None:
        """The record from memory while nothing was committed since; else `load(uuid)`.
        Callers must not mutate it."""
        self._fresh()
        rec = self.records.get(uuid)
        if rec is not None:
            return rec
        gen = self._gen
        rec = load(uuid)
        if rec is not None and self._generation() == gen:
            self.records.put(uuid, rec, len(orjson.dumps(rec)) + 64)
        return rec

    def thumb(self, uuid: str, stamp: str) -> bytes | None:
        return self.thumbs.get((uuid, stamp))

    def put_thumb(self, uuid: str, stamp: str, data: bytes) -> None:
        self.thumbs.put((uuid, stamp), data, len(data) + 64)

    def forget(self, uuid: str) -> None:
        self.records.discard(uuid)

    def stats(self) -> dict[str, Any]:
        return {"records": self.records.stats(), "thumbs": self.thumbs.stats()}
