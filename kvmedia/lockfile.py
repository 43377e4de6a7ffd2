"""Single-instance lock on a data dir: an fcntl lock, not a pid check (pids are reused).

    <data dir>/watcher.lock   mode 0600; text "<pid> <started_at ISO>\\n" of the holder

The kernel holds the lock (`flock(LOCK_EX)` on the open file) and drops it when the holder
exits for any reason, `kill -9` included, so a stale file never blocks a restart. The text
inside is only for messages and `kvmedia status`; the lock itself is the truth.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from .errors import BusyError, StorageError
from .records import now_iso

LOCK_NAME = "watcher.lock"
PROBE_RETRIES = 6


class DataDirLock:
    """An exclusive, non-blocking lock on one data dir. Use as a context manager."""

    def __init__(self, data_dir: str, name: str = LOCK_NAME) -> None:
        self.path = os.path.join(data_dir, name)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise BusyError naming the holder's pid."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc.strerror}; "
                               "check the data dir's permissions", path=self.path) from exc
        # A few tries: `is_locked` probes hold a shared lock for a moment.
        for attempt in range(PROBE_RETRIES + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StorageError(f"cannot lock {self.path}: {exc.strerror}",
                                       path=self.path) from exc
            if attempt == PROBE_RETRIES:
                os.close(fd)
                pid = holder_pid(self.path)
                who = f" (pid {pid})" if pid else ""
                raise BusyError(
                    f"another watcher{who} is already running on {os.path.dirname(self.path)};"
                    " stop it first, or see `kvmedia status`", path=self.path)
            time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {now_iso()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_pid(path: str) -> int | None:
    """The pid written by the current (or last) holder, if any."""
    try:
        with open(path, "rb") as fh:
            first = fh.read(64).split()
        return int(first[0]) if first else None
    except (OSError, ValueError):
        return None


def is_locked(data_dir: str, name: str = LOCK_NAME) -> bool:
    """True when some process holds the lock right now (probes without keeping it)."""
    path = os.path.join(data_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return False
