"""Thumbnails: built on demand or in bulk, cached on disk by uuid + validity stamp, served
from an in-process LRU when hot.

    build.py  one thumbnail (Pillow + EXIF orientation, ffmpeg frame, embedded cover art)
    cache.py  `<data_dir>/thumbs/` layout, validity stamps, size budget with LRU eviction
    hot.py    bounded in-memory LRUs of hot records and thumbnail bytes

`Thumbnails` ties them together for the Library. Its record-store listener removes an item's
cached files when the item is deleted (in the delete's transaction: a rolled-back delete only
costs a rebuild of a cache file).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from ..pathbytes import display, get_field
from ..progress import NullProgress, Progress
from ..store.env import Env
from ..store.recordstore import Record, RecordStore, RecordWriter
from .build import DEFAULT_MAX_PX, THUMB_VERSION, ThumbFailed, make_thumbnail
from .cache import ThumbCache, thumb_stamp
from .hot import HotCache

THUMB_TYPES = ("image", "video", "audio")
DEFAULT_BUDGET_BYTES = 512 << 20


@dataclass
class ThumbReport:
    total: int = 0
    built: int = 0
    cached: int = 0
    none: int = 0
    skipped: int = 0
    evicted: int = 0
    interrupted: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "op": "thumbs", **self.__dict__}


class Thumbnails:
    def __init__(self, env: Env, store: RecordStore, data_dir: str, *,
                 max_bytes: int = DEFAULT_BUDGET_BYTES, max_px: int = DEFAULT_MAX_PX) -> None:
        self.env = env
        self.store = store
        self.max_px = max_px
        self.cache = ThumbCache(data_dir, max_bytes)
        self.hot = HotCache(lambda: int(env.env.info()["last_txnid"]))

    # -- listener ------------------------------------------------------------------------------

    def __call__(self, writer: RecordWriter, old: Record | None, new: Record | None) -> None:
        if new is None and old is not None:
            self.cache.remove(old["uuid"])
            self.hot.forget(old["uuid"])

    # -- one ----------------------------------------------------------------------------------

    def _load(self, uuid: str) -> Record | None:
        with self.env.read() as txn:
            return self.store.get(txn, uuid)

    def record(self, uuid: str) -> Record | None:
        return self.hot.record(uuid, self._load)

    def get(self, rec: Record, *, build: bool = True) -> bytes | None:
        """JPEG bytes of `rec`'s thumbnail, or None when it has none (or build=False and it
        is not cached). Raises ThumbFailed only for a file that changed since its scan."""
        uuid = rec["uuid"]
        if rec.get("type") not in THUMB_TYPES:
            return None
        stamp = thumb_stamp(rec, self.max_px)
        data = self.hot.thumb(uuid, stamp)
        if data is not None:
            return data
        found = self.cache.lookup(uuid, stamp)
        if found is not None:
            if found[1] is not None:
                self.hot.put_thumb(uuid, stamp, found[1])
            return found[1]
        if not build:
            return None
        data = self._build(rec)
        self.cache.store(uuid, stamp, data)
        if data is not None:
            self.hot.put_thumb(uuid, stamp, data)
        return data

    def _build(self, rec: Record) -> bytes | None:
        path = get_field(rec, "path") or b""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ThumbFailed(f"cannot read {display(path)}: {exc.strerror}; rescan it",
                              path=path) from None
        if (st.st_size, st.st_mtime_ns) != (rec.get("size"), rec.get("mtime_ns")):
            raise ThumbFailed(f"{display(path)} changed since it was scanned; rescan it",
                              path=path)
        try:
            return make_thumbnail(path, rec["type"], self.max_px, rec.get("duration_sec"))
        except ThumbFailed:
            return None

    def is_fresh(self, rec: Record) -> bool:
        stamp = thumb_stamp(rec, self.max_px)
        return self.cache.lookup(rec["uuid"], stamp) is not None

    # -- many ---------------------------------------------------------------------------------

    def build_many(self, records: list[Record], *, force: bool = False,
                   progress: Progress | None = None, stop: threading.Event | None = None
                   ) -> ThumbReport:
        progress = progress or NullProgress()
        report = ThumbReport(total=len(records))
        todo = sorted((r for r in records if r.get("type") in THUMB_TYPES
                       and not r.get("is_trash")), key=lambda r: get_field(r, "path") or b"")
        report.skipped = len(records) - len(todo)
        for i, rec in enumerate(todo):
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            stamp = thumb_stamp(rec, self.max_px)
            if force:
                self.cache.remove(rec["uuid"])
            elif self.cache.lookup(rec["uuid"], stamp) is not None:
                report.cached += 1
                continue
            try:
                data = self._build(rec)
            except ThumbFailed as exc:
                if len(report.errors) < 100:
                    report.errors.append({"uuid": rec["uuid"], "error": exc.message})
                continue
            self.cache.store(rec["uuid"], stamp, data)
            if data is None:
                report.none += 1
            else:
                report.built += 1
            progress.update({"phase": "thumbs", "files": i + 1, "total": len(todo),
                             "current": get_field(rec, "path") or b""})
        report.evicted = self.cache.evict()
        progress.done({"phase": "thumbs", "files": report.built})
        return report


__all__ = ["THUMB_VERSION", "ThumbFailed", "ThumbReport", "Thumbnails"]
