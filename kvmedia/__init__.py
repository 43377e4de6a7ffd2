"""kvmedia: a media-library index for NAS boxes and home servers.

Public API: `Library` (open a library, scan, list, search) and the error classes.
"""

from .errors import (
    BusyError,
    DamagedError,
    KvmediaError,
    NotFoundError,
    StorageError,
    UsageError,
)
from .library import Library

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "DamagedError",
    "KvmediaError",
    "Library",
    "NotFoundError",
    "StorageError",
    "UsageError",
    "__version__",
]
