"""Probe many records: a small worker pool, files in path order, results committed in batches.

Gentle to a spinning disk: few workers (2 by default), files taken in path order (neighbours
on disk are read together), at most `4 * workers` probes in flight, and one write transaction
per BATCH results or per second. A file whose size or mtime differs from its record is
skipped ("changed": the next scan updates it), and a result is only stored when the record
still has the size and mtime that were probed, so a stale answer is never cached.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import lmdb

from ..pathbytes import display, get_field
from ..progress import NullProgress, Progress
from ..store.env import Env
from ..store.recordstore import Record, RecordStore
from . import ProbeResult, probe_file
from .cache import needs_probe, with_probe
from .tools import Tools

BATCH = 64
BATCH_SECONDS = 1.0
DEFAULT_WORKERS = 2


@dataclass
class ProbeSummary:
    total: int = 0
    probed: int = 0
    failed: int = 0
    fresh: int = 0
    changed: int = 0
    interrupted: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["type"] = "summary"
        return out


Outcome = tuple[str, str, ProbeResult | None, int, int]  # (kind, uuid, result, size, mtime_ns)


def _stamp(path: bytes) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def probe_one(rec: Record, tools: Tools) -> Outcome:
    """Probe the file of `rec` if it is still the version the record describes."""
    path = get_field(rec, "path") or b""
    want = (rec.get("size"), rec.get("mtime_ns"))
    before = _stamp(path)
    if before != want:
        return "changed", rec["uuid"], None, 0, 0
    result = probe_file(path, rec.get("type") or "other", tools, ext=rec.get("ext") or "")
    if _stamp(path) != before:
        return "changed", rec["uuid"], None, 0, 0
    return ("probed" if result.ok else "failed"), rec["uuid"], result, before[0], before[1]


def store_results(env: Env, store: RecordStore, outcomes: list[Outcome], tools: Tools
                  ) -> dict[str, Record]:
    """Write probe results whose stamp still matches the record; returns the new records."""

    def fn(txn: lmdb.Transaction) -> dict[str, Record]:
        w = store.writer(txn)
        written = {}
        for _kind, uuid, result, size, mtime_ns in outcomes:
            cur = store.get(txn, uuid)
            if result is None or cur is None or cur.get("is_trash"):
                continue
            if (cur.get("size"), cur.get("mtime_ns")) != (size, mtime_ns):
                continue
            new = with_probe(cur, result, size, mtime_ns, tools)
            w.put(new, cur)
            written[uuid] = new
        w.finish()
        return written

    return env.write(fn)


def probe_records(env: Env, store: RecordStore, records: list[Record], tools: Tools, *,
                  workers: int = DEFAULT_WORKERS, force: bool = False,
                  progress: Progress | None = None, stop: threading.Event | None = None
                  ) -> ProbeSummary:
    progress = progress or NullProgress()
    summary = ProbeSummary(total=len(records))
    todo = [r for r in records if force or needs_probe(r, tools)]
    todo = [r for r in todo if r.get("type") in ("audio", "video", "image")
            and not r.get("is_trash")]
    summary.fresh = len(records) - len(todo)
    todo.sort(key=lambda r: get_field(r, "path") or b"")
    pending: list[Outcome] = []
    deadline = time.monotonic() + BATCH_SECONDS
    done = 0

    def flush() -> None:
        if pending:
            store_results(env, store, pending, tools)
            pending.clear()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="probe") as pool:
        queue = iter(todo)
        in_flight: set[Future[Outcome]] = set()
        by_future: dict[Future[Outcome], Record] = {}
        while True:
            while len(in_flight) < 4 * max(1, workers) and not (stop and stop.is_set()):
                rec = next(queue, None)
                if rec is None:
                    break
                fut = pool.submit(probe_one, rec, tools)
                in_flight.add(fut)
                by_future[fut] = rec
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in finished:
                rec = by_future.pop(fut)
                kind, uuid, result, size, mtime_ns = fut.result()
                done += 1
                if kind == "changed":
                    summary.changed += 1
                else:
                    summary.probed += kind == "probed"
                    summary.failed += kind == "failed"
                    pending.append((kind, uuid, result, size, mtime_ns))
                    if kind == "failed" and len(summary.errors) < 100 and result is not None:
                        summary.errors.append({"uuid": uuid, "path": display(
                            get_field(rec, "path")), "error": result.error})
                progress.update({"phase": "probe", "files": done, "total": len(todo),
                                 "current": get_field(rec, "path") or b""})
            if len(pending) >= BATCH or time.monotonic() > deadline:
                flush()
                deadline = time.monotonic() + BATCH_SECONDS
    flush()
    summary.interrupted = bool(stop and stop.is_set() and done < len(todo))
    progress.done({"phase": "probe", "files": done, "total": len(todo)})
    return summary
