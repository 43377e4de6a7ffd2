"""What every handler shares: the one Library of the process, the job runner, the watcher,
the guard; and `blocking()`, which runs a library call on the thread pool so the event loop
keeps serving (LMDB read transactions are cheap and run in parallel across threads)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import KvmediaError
from ..forking import usable_cores
from .auth import Guard
from .errors import from_library
from .jobs import JobRunner

if TYPE_CHECKING:
    from ..library import Library
    from .searchers import SearcherPool
    from .watching import BackgroundWatcher

T = TypeVar("T")


@dataclass
class ServeState:
    lib: Library
    guard: Guard
    jobs: JobRunner = field(default_factory=JobRunner)
    watcher: BackgroundWatcher | None = None
    searchers: SearcherPool | None = None
    sse_interval_s: float = 0.25

    @property
    def token_required(self) -> bool:
        return self.guard.token is not None

    def features(self) -> dict[str, bool]:
        """Optional library features present in this build (the page and clients adapt)."""
        return {
            "semantic": has_semantic(self.lib),
            "similar": has_semantic(self.lib),
            "thumbnails": callable(getattr(self.lib, "thumbnail", None)),
            "watcher": self.watcher is not None,
        }


def has_semantic(lib: Any) -> bool:
    """True when the Library has the semantic-search facade (`lib.semantic`); checked on the
    class so asking does not load an embedding model."""
    return hasattr(type(lib), "semantic")


def server(request: Request) -> ServeState:
    state: ServeState = request.app.state.kvmedia
    return state


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on the thread pool; library errors become API errors."""
    try:
        return await run_in_threadpool(functools.partial(fn, *args, **kwargs))
    except KvmediaError as exc:
        raise from_library(exc) from exc


CPU_SLOTS = threading.BoundedSemaphore(usable_cores())
"""Searches running at once, one per core the process may use. More threads than cores only
fight over the interpreter lock: measured with 8 search-as-you-type clients on 2 cores at 1M
records, 2 slots gave 241-254 requests/s and p95 55-62 ms against 209-226 and 72-74 ms
with no limit (a request waits for a slot in the pool thread, not in the event loop)."""


def _in_cpu_slot(fn: Callable[[], T]) -> T:
    with CPU_SLOTS:
        return fn()


async def cpu_bound(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`blocking`, for the short CPU-heavy library calls of interactive use (search, list,
    count): at most CPU_SLOTS of them run at once. Slow calls that wait on disks or other
    programs (thumbnails, probes) stay on `blocking`, so they never hold up a search."""
    return await blocking(_in_cpu_slot, functools.partial(fn, *args, **kwargs))
