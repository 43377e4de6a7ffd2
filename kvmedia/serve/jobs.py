"""Long library work started over HTTP (a scan, a rebuild of the index) runs on one background
thread, one job at a time per server, and is watched by polling `GET /api/job` or by the
server-sent events of `GET /api/job/events`.

A job as JSON:

    id            int     increasing per server process
    kind          str     scan | rebuild-index
    state         str     running | stopping | done | stopped | failed
    started_at    str     ISO-8601 UTC
    finished_at   str     ISO-8601 UTC, null while running
    progress      object  the latest progress fields (files, phase, current path, ...)
    result        any     the operation's summary once done (scan summaries, index report)
    error         object  {"code", "message", "position"} when failed, else null
    version       int     bumps on every change; SSE sends an event when it moves
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import KvmediaError
from ..pathbytes import display
from ..records import now_iso
from .errors import ApiError, item_error

JOB_KINDS = ("scan", "rebuild-index")
log = logging.getLogger("kvmedia.serve")

Work = Callable[["JobProgress", threading.Event], Any]


@dataclass
class Job:
    id: int
    kind: str
    state: str = "running"
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.state in ("done", "stopped", "failed")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "progress": dict(self.progress), "result": self.result, "error": self.error,
                "version": self.version}


class JobProgress:
    """A `progress.Progress` that keeps the latest fields on the job (bytes made readable)."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self.job = job
        self.lock = lock

    def _set(self, fields: dict[str, Any]) -> None:
        clean = {k: display(v) if isinstance(v, bytes) else v for k, v in fields.items()}
        with self.lock:
            self.job.progress = clean
            self.job.version += 1

    def update(self, fields: dict[str, Any]) -> None:
        self._set(fields)

    def done(self, fields: dict[str, Any]) -> None:
        self._set(fields)


class JobRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_id = 1

    def start(self, kind: str, work: Work, to_json: Callable[[Any], Any]) -> dict[str, Any]:
        """Start `work(progress, stop_event)` on a thread; ApiError(conflict) when one runs."""
        assert kind in JOB_KINDS, kind
        with self._lock:
            if self._job is not None and not self._job.finished:
                raise ApiError("conflict", f"a {self._job.kind} job is already running (job "
                               f"{self._job.id}); wait for it or POST /api/job/stop")
            job = self._job = Job(self._next_id, kind)
            self._next_id += 1
            self._stop = threading.Event()
            stop = self._stop
            self._thread = threading.Thread(target=self._run, args=(job, work, to_json, stop),
                                            name=f"kvmedia-{kind}", daemon=True)
            self._thread.start()
            return job.to_json()

    def _run(self, job: Job, work: Work, to_json: Callable[[Any], Any],
             stop: threading.Event) -> None:
        result: Any = None
        error: dict[str, Any] | None = None
        try:
            result = to_json(work(JobProgress(job, self._lock), stop))
        except KvmediaError as exc:
            error = item_error(exc)
        except Exception as exc:  # a bug: keep serving, say so in the job
            log.exception("%s job failed", job.kind)
            error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}; this is a "
                     "bug, please report it with the server log", "position": None}
        with self._lock:
            job.result = result
            job.error = error
            job.state = "failed" if error else ("stopped" if stop.is_set() else "done")
            job.finished_at = now_iso()
            job.version += 1

    def snapshot(self) -> dict[str, Any] | None:
        with self._lock:
            return self._job.to_json() if self._job is not None else None

    def stop(self) -> dict[str, Any]:
        with self._lock:
            job = self._job
            if job is None or job.finished:
                raise ApiError("not_found", "no job is running; start one with POST /api/scan")
            self._stop.set()
            job.state = "stopping"
            job.version += 1
            return job.to_json()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop a running job at its next safe point and wait for it (server shutdown)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
