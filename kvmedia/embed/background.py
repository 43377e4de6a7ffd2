"""Background analysis for the watcher: follow the change feed, queue, analyze, embed.

`start_background(lib)` starts a daemon thread; the watcher calls it once and `stop()`s it
on exit. Each step reads new change-feed entries after the cursor kept in LMDB
(`sem:feed_cursor`), queues added/modified/moved/restored items, then analyzes and embeds
at most `batch` due items — in their own short transactions, so scans and the watcher's own
writes are never held up — at a lower CPU priority (the thread's nice value), so searches
and the watcher come first. Items whose analysis fails stay queued with a retry time.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import lmdb

from ..analyze import queue
from ..vectors import keys as V

QUEUE_OPS = frozenset({"added", "modified", "moved", "restored"})
NICE = 10  # below the watcher and any search: analysis is background work


class SemanticWorker(threading.Thread):
    def __init__(self, lib: Any, *, interval_s: float = 2.0, batch: int = 32) -> None:
        super().__init__(name="kvmedia-semantic", daemon=True)
        self.lib = lib
        self.interval_s = interval_s
        self.batch = batch
        self.stopping = threading.Event()
        self.steps = 0
        self.last_error: str | None = None

    def stop(self, timeout_s: float | None = 30.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        try:  # Linux nice values are per thread: only this worker yields the CPU
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (AttributeError, OSError):
            pass
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a worker must outlive one bad step
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.stopping.wait(self.interval_s)

    def follow_feed(self) -> int:
        """Queue what changed since the cursor; returns how many items were queued."""
        with self.lib.env.read() as txn:
            since = int(txn.get(V.K_FEED_CURSOR) or b"0")
        page = self.lib.events(since, limit=5000)
        uuids = [e["uuid"] for e in page.entries if e.get("op") in QUEUE_OPS and e.get("uuid")]

        def fn(txn: lmdb.Transaction) -> None:
            for uuid in uuids:
                queue.enqueue(txn, uuid)
            txn.put(V.K_FEED_CURSOR, b"%d" % page.cursor)

        if page.cursor != since or uuids:
            self.lib.env.write(fn)
        return len(uuids)

    def step(self) -> dict[str, Any]:
        queued = self.follow_feed()
        sem = self.lib.semantic
        with self.lib.env.read() as txn:
            due = queue.due(txn, time.time())[: self.batch]
        out: dict[str, Any] = {"queued": queued, "due": len(due)}
        if due:
            from ..analyze.pipeline import AnalyzePipeline

            pipe = AnalyzePipeline(self.lib.env, self.lib.store, sem.analyzers,
                                   stop=self.stopping)
            out["analyze"] = pipe.run(due, force=False).to_json()
            out["embed"] = sem.embed(due, refresh="auto").to_json()
        self.steps += 1
        return out


def start_background(lib: Any, **kwargs: Any) -> SemanticWorker:
    """Start analysis + embedding of queued items in a daemon thread; returns the worker."""
    worker = SemanticWorker(lib, **kwargs)
    worker.start()
    return worker
