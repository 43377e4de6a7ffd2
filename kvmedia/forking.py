"""When a helper process may be forked: the platform has fork and no other thread runs.

A forked copy of a threaded process may hold locks (the interpreter's, malloc's, a library's)
that no thread of the child will ever release, so the scan's walk process (walkproc.py) and
the second half of a full index build (index/parallel.py) are only forked by a process that
runs one thread; otherwise the work stays in-process.
"""

from __future__ import annotations

import os
import threading


def can_fork() -> bool:
    """True when a forked helper is safe here: fork exists and no other thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1
