"""One exception root for everything kvmedia raises on purpose.

    KvmediaError                  exit 2   generic / bad input
    ├── UsageError                exit 2   a malformed argument or query
    ├── NotFoundError             exit 3   an id or path that is not in the library
    ├── BusyError                 exit 4   the data dir is locked by another process
    ├── StorageError              exit 5   I/O or LMDB trouble (disk full, permissions)
    │   └── DamagedError          exit 6   a file failed its checksum / format check
    └── InterruptedError_         exit 130 SIGINT / SIGTERM stopped the work cleanly

Messages end with what to do about it. Errors carry context (`.path`) where they have one.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NO_RESULTS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BUSY = 4
EXIT_IO = 5
EXIT_DAMAGED = 6
EXIT_INTERRUPTED = 130


class KvmediaError(Exception):
    """Root of every error kvmedia raises on purpose."""

    exit_code = EXIT_USAGE
    code = "error"

    def __init__(self, message: str, *, path: bytes | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class UsageError(KvmediaError):
    exit_code = EXIT_USAGE
    code = "usage"


class NotFoundError(KvmediaError):
    exit_code = EXIT_NOT_FOUND
    code = "not_found"


class BusyError(KvmediaError):
    exit_code = EXIT_BUSY
    code = "busy"


class StorageError(KvmediaError):
    exit_code = EXIT_IO
    code = "io"


class DamagedError(StorageError):
    exit_code = EXIT_DAMAGED
    code = "damaged"


class InterruptedError_(KvmediaError):  # noqa: N801 - the builtin name is taken
    exit_code = EXIT_INTERRUPTED
    code = "interrupted"
