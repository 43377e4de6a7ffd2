"""What a running watcher tells the outside: `state.json` and the rotated logs.

    <data dir>/state.json            rewritten atomically (temp file + rename), so a reader
                                     never sees a torn file, at least every few seconds and on
                                     exit. Fields (all always present):
        pid                  int     the watcher's pid
        started_at           str     ISO-8601 UTC
        updated_at           str     ISO-8601 UTC of this write
        running              bool    false in the final write on a clean exit
        mode                 str     inotify | poll | inotify+sweep (some roots swept)
        watch_paths          [str]   roots watched (display form)
        sweep_paths          [str]   roots swept periodically (poll mode, watch limit)
        debounce_seconds     float
        queue_length         int     paths waiting for debounce/settle
        processed_count      int     files applied since start
        batch_count          int     write transactions applied since start
        last_processed_at    str|None
        last_processed_path  str|None
        last_error           str|None   the latest error (details in watcher.err.log)
        overflows            int     kernel queue overflows seen (each followed by a rescan)
    <data dir>/logs/watcher.out.log  `[watcher] starting`, `processed <path> in <X>ms` (X: from
                                     the first event on the path to the commit), `skipped
                                     <path>` (unchanged), `scan-on-start: N files`, batches
    <data dir>/logs/watcher.err.log  warnings and errors, with stack traces
Both logs rotate by size (LOG_MAX_BYTES, LOG_BACKUPS old files), so they cannot fill a NAS
system partition.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from typing import Any

import orjson

from ..safefs import create_private

STATE_NAME = "state.json"
LOG_DIR = "logs"
LOG_MAX_BYTES = 5 << 20
LOG_BACKUPS = 3
LOGGER = "kvmedia.watch"


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """Logs name private media files: owner-only (0600), also each file a rotation opens."""

    def _open(self):  # type: ignore[no-untyped-def]
        stream = super()._open()
        os.chmod(self.baseFilename, 0o600)
        return stream


def state_path(data_dir: str) -> str:
    return os.path.join(data_dir, STATE_NAME)


def write_state(data_dir: str, state: dict[str, Any]) -> None:
    """Atomic replace: write a temp file beside it, fsync, rename over."""
    path = state_path(data_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    data = orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n"
    fd = create_private(tmp)  # never through a symlink planted at the temp name
    try:
        view = memoryview(data)
        while view:  # a full disk (or RLIMIT_FSIZE) gives short writes before an error
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # the old state.json stays as it was
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_state(data_dir: str) -> dict[str, Any] | None:
    try:
        with open(state_path(data_dir), "rb") as fh:
            value = orjson.loads(fh.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def setup_logs(data_dir: str, *, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS,
               echo: bool = False) -> logging.Logger:
    """The watcher's logger: info to watcher.out.log, warnings+ to watcher.err.log."""
    log_dir = os.path.join(data_dir, LOG_DIR)
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s [watcher] %(message)s")
    out = _PrivateRotatingHandler(
        os.path.join(log_dir, "watcher.out.log"), maxBytes=max_bytes, backupCount=backups,
        encoding="utf-8", errors="backslashreplace")
    out.setLevel(logging.INFO)
    out.addFilter(_BelowError())
    out.setFormatter(fmt)
    err = _PrivateRotatingHandler(
        os.path.join(log_dir, "watcher.err.log"), maxBytes=max_bytes, backupCount=backups,
        encoding="utf-8", errors="backslashreplace")
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(asctime)s [watcher] %(levelname)s %(message)s"))
    logger.addHandler(out)
    logger.addHandler(err)
    if echo:
        talk = logging.StreamHandler()
        talk.setLevel(logging.WARNING)
        talk.setFormatter(logging.Formatter("kvmedia: watch: %(message)s"))
        logger.addHandler(talk)
    # watchdog's own warnings (e.g. "Inotify queue overflowed") go to the error log too.
    wd_logger = logging.getLogger("watchdog")
    wd_logger.addHandler(err)
    wd_logger.setLevel(logging.WARNING)
    return logger


def close_logs() -> None:
    for name in (LOGGER, "watchdog"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
