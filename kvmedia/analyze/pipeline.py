"""Analyze library items: run their analyzers, store the fields with the record, queue failures.

Per batch: records are read, analyzers run with no transaction open (remote calls take
seconds; scans and the watcher keep writing meanwhile), then one write transaction stores
the cache entries and every record whose basis (path, size, mtime, metadata) did not change
in between, through `RecordWriter.put` so the search index and change feed see the new
text. A failed remote analyzer leaves the offline fields stored, the stamp's `pending`
listing it and the item in the queue (queue.py) with its retry time.

The stamp `analysis` = {"v": ANALYSIS_VERSION, "by": ["offline@1", ...], "basis": hex,
"pending": [cache names], "at": ISO}. An item needs analysis when its stamp is missing or
differs from what its analyzers and basis would give now, or something is pending.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import xxhash

from ..errors import KvmediaError
from ..hashing import hash_file, valid_hash
from ..pathbytes import display, get_field
from ..progress import NullProgress, Progress
from ..records import now_iso
from ..store.env import Env
from ..store.recordstore import Record, RecordStore
from . import cache, queue
from .apiclient import ApiError
from .base import ANALYSIS_FIELDS, Analyzer, clean_output
from .registry import AnalyzerRegistry

ANALYSIS_VERSION = 1
BATCH = 16
BASIS_FIELDS = ("path", "path_bytes", "original_path", "original_path_bytes", "root",
                "root_bytes", "size", "mtime_ns", "type", "ext", "taken_at", "camera_make",
                "camera_model", "artist", "album", "title", "duration_sec", "width", "height",
                "xmp_title", "xmp_description", "nfo_title", "lyrics_title", "user_tags",
                "sidecar_text")


def basis(rec: Record) -> str:
    """Digest of everything analysis reads from a record: same basis, same analysis."""
    return xxhash.xxh3_64_hexdigest(orjson.dumps([rec.get(k) for k in BASIS_FIELDS]))


def needs_analysis(rec: Record, names: list[str]) -> bool:
    if rec.get("is_trash"):
        return False
    stamp = rec.get("analysis")
    return not (isinstance(stamp, dict) and stamp.get("v") == ANALYSIS_VERSION
                and stamp.get("by") == names and stamp.get("basis") == basis(rec)
                and not stamp.get("pending"))


def merge(outputs: list[Record]) -> Record:
    out: Record = {}
    for part in outputs:
        for key, value in part.items():
            if key == "tags" and "tags" in out:
                out["tags"] = list(dict.fromkeys([*out["tags"], *value]))
            else:
                out[key] = value
    return out


@dataclass
class AnalyzeReport:
    considered: int = 0
    analyzed: int = 0
    unchanged: int = 0
    cache_hits: int = 0
    calls: int = 0          # analyzer runs that read file content (remote requests etc.)
    queued: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "op": "analyze", **self.__dict__}


@dataclass
class _Item:
    rec: Record
    fields: Record
    pending: list[str]
    error: ApiError | None = None
    hash_fields: Record | None = None
    cache_puts: list[tuple[str, str, int, Record]] = field(default_factory=list)


class AnalyzePipeline:
    def __init__(self, env: Env, store: RecordStore, registry: AnalyzerRegistry, *,
                 progress: Progress | None = None, stop: threading.Event | None = None) -> None:
        self.env = env
        self.store = store
        self.registry = registry
        self.progress = progress or NullProgress()
        self.stop = stop

    def names_for(self, rec: Record) -> list[str]:
        return [f"{a.cache_name}@{a.version}" for a in self.registry.for_record(rec)]

    # -- selection ---------------------------------------------------------------------------

    def select(self, uuids: list[str] | None, *, everything: bool) -> list[str]:
        """uuids given: those. everything: every item needing analysis. Else: the due queue.
        Items waiting out a retry delay are skipped unless named explicitly."""
        now = time.time()
        with self.env.read() as txn:
            if uuids is not None:
                return list(dict.fromkeys(uuids))
            waiting = {u for u, e in queue.entries(txn) if float(e.get("next_at") or 0) > now}
            if not everything:
                return [u for u in queue.due(txn, now)]
            out = []
            for rec in self.store.iter_records(txn):
                if rec["uuid"] not in waiting and needs_analysis(rec, self.names_for(rec)):
                    out.append(rec["uuid"])
            return out

    # -- running -----------------------------------------------------------------------------

    def run(self, uuids: list[str] | None = None, *, everything: bool = False,
            force: bool | None = None) -> AnalyzeReport:
        """force (default: when uuids are named) re-runs fresh items too; caches still apply."""
        report = AnalyzeReport()
        force = uuids is not None if force is None else force
        todo = self.select(uuids, everything=everything)
        for start in range(0, len(todo), BATCH):
            if self.stop is not None and self.stop.is_set():
                report.interrupted = True
                break
            self._batch(todo[start : start + BATCH], force, report)
            self.progress.update({"phase": "analyze", "files": report.considered,
                                  "total": len(todo), "current": b""})
        self.progress.done({"phase": "analyze", "files": report.considered})
        return report

    def _batch(self, uuids: list[str], force: bool, report: AnalyzeReport) -> None:
        with self.env.read() as txn:
            recs = [r for r in (self.store.get(txn, u) for u in uuids) if r is not None]
        items: list[_Item] = []
        missing = set(uuids) - {r["uuid"] for r in recs}
        for rec in recs:
            report.considered += 1
            if rec.get("is_trash") or (not force and not needs_analysis(rec, self.names_for(rec))):
                report.unchanged += 1
                missing.add(rec["uuid"])  # nothing to do: leave the queue
                continue
            items.append(self._analyze(rec, report))
        now = time.time()

        def fn(txn: Any) -> None:
            writer = self.store.writer(txn)
            for uuid in missing:
                queue.done(txn, uuid)
            for item in items:
                for h, name, version, out in item.cache_puts:
                    cache.put(txn, h, name, version, out)
                uuid = item.rec["uuid"]
                cur = self.store.get(txn, uuid)
                if cur is None or basis(cur) != basis(item.rec):
                    continue  # changed meanwhile: the next run sees the new version
                new = {k: v for k, v in cur.items() if k not in ANALYSIS_FIELDS}
                new.update(item.fields)
                if item.hash_fields and valid_hash(cur) is None:
                    new.update(item.hash_fields)
                new["analysis"] = {"v": ANALYSIS_VERSION, "by": self.names_for(cur),
                                   "basis": basis(cur), "pending": item.pending,
                                   "at": now_iso()}
                if item.pending:
                    err = item.error
                    queue.failed(txn, uuid, err.message if err else "pending", now,
                                 err.retry_at if err else None)
                else:
                    queue.done(txn, uuid)
                writer.put(new, cur)
            writer.finish()

        self.env.write(fn)
        for item in items:
            if item.pending:
                report.queued += 1
            else:
                report.analyzed += 1

    def _analyze(self, rec: Record, report: AnalyzeReport) -> _Item:
        path = get_field(rec, "path") or b""
        item = _Item(rec, {}, [])
        outputs: list[Record] = []
        content_hash: str | None = valid_hash(rec)
        for analyzer in self.registry.for_record(rec):
            if not analyzer.uses_content:
                outputs.append(clean_output(analyzer.analyze(rec, path)))
                continue
            try:
                if content_hash is None:
                    content_hash, size, mtime_ns = hash_file(path)
                    item.hash_fields = {"content_hash": content_hash,
                                        "hash_stamp": [size, mtime_ns]}
                    if [size, mtime_ns] != [rec.get("size"), rec.get("mtime_ns")]:
                        item.hash_fields = None  # the file changed since its scan
                outputs.append(self._content(analyzer, rec, path, content_hash, item, report))
            except ApiError as exc:
                item.pending.append(analyzer.cache_name)
                item.error = exc
                report.errors.append(f"{display(path)}: {exc.message}")
            except (KvmediaError, OSError) as exc:
                report.errors.append(f"{display(path)}: {getattr(exc, 'message', exc)}")
        item.fields = merge(outputs)
        return item

    def _content(self, analyzer: Analyzer, rec: Record, path: bytes, content_hash: str,
                 item: _Item, report: AnalyzeReport) -> Record:
        with self.env.read() as txn:
            hit = cache.get(txn, content_hash, analyzer.cache_name, analyzer.version)
        if hit is not None:
            report.cache_hits += 1
            return hit
        report.calls += 1
        out = clean_output(analyzer.analyze(rec, path))
        item.cache_puts.append((content_hash, analyzer.cache_name, analyzer.version, out))
        return out
