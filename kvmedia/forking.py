"""When a helper process may be forked: the platform has fork and no other thread runs.

A forked copy of a threaded process may hold locks (the interpreter's, malloc's, a library's)
that no thread of the child will ever release, so the scan's walk process (walkproc.py) and
the second half of a full index build (index/parallel.py) are only forked by a process that
runs one thread; otherwise the work stays in-process.
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import signal
import threading
from collections.abc import Callable
from typing import Any, BinaryIO


def can_fork() -> bool:
    """True when a forked helper is safe here: fork exists and no other thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and `taskset` set),
    not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def fork_writer(work: Callable[[int], None], *, only_pipe: bool = False,
                pipe_bytes: int = 0) -> tuple[int, BinaryIO]:
    """Fork a child that runs `work(write_fd)` and exits (0 when it returned, 1 on any
    exception), without the parent's cleanups; returns (pid, a buffered reader of the pipe).

    In the child: no garbage collection (it would touch, and so copy, every page shared with
    the parent), SIGINT/SIGTERM back to their defaults, and with `only_pipe` every other
    descriptor closed (nothing of the library's, LMDB or locks, outlives the parent there).
    `pipe_bytes`: a pipe buffer to ask for (fewer wake-ups of either side)."""
    read_fd, write_fd = os.pipe()
    if pipe_bytes:
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, pipe_bytes)
        except (OSError, AttributeError):
            pass
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            gc.disable()
            if only_pipe:
                os.closerange(3, write_fd)
                os.closerange(write_fd + 1, _max_fd())
            else:
                os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            work(write_fd)
            status = 0
        except BaseException:  # noqa: BLE001 - any failure: the parent sees it in the stream
            pass
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, os.fdopen(read_fd, "rb", buffering=1 << 20)


class ForkedResult:
    """`fn()` computed in a forked child (fork_writer) and pickled back through the pipe:
    started at once, its value read by `result()`, which is None when the child died, exited
    non-zero or sent a truncated pickle (the caller then computes it itself: a failure costs
    time, never data). `close()` stops a child whose result is no longer wanted."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._pid, self._stream = fork_writer(lambda fd: _send(fd, fn()))

    def result(self) -> Any | None:
        try:
            data = self._stream.read()
        finally:
            self._stream.close()
        status = reap(self._pid, kill=False)
        self._pid = 0
        if status != 0:
            return None
        try:
            return pickle.loads(data)  # noqa: S301 - our own child, through our own pipe
        except Exception:  # noqa: BLE001 - truncated or damaged: the caller does the work
            return None

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()
        if self._pid:
            reap(self._pid)
            self._pid = 0


def _send(fd: int, value: Any) -> None:
    with os.fdopen(fd, "wb", buffering=1 << 20) as out:
        pickle.dump(value, out, pickle.HIGHEST_PROTOCOL)


def reap(pid: int, *, kill: bool = True) -> int:
    """Wait for child `pid` (killing it first when `kill`); its wait status."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return os.waitpid(pid, 0)[1]


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536
