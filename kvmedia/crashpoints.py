"""Named crash points for crash tests: `KVMEDIA_CRASH_AT=name:N` kills the process with
SIGKILL the N-th time `hit(name)` runs. Unset (the normal case) it does nothing.

Why SIGKILL and not an exception: a test must see exactly what a power cut or `kill -9` leaves
on disk — no `finally`, no atexit, no buffered writes flushed.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("KVMEDIA_CRASH_AT")
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    if not name or not count.isdigit():
        return None
    return name, int(count)


def hit(name: str) -> None:
    """Count one pass through crash point `name`; die here if the environment asks for it."""
    target = _target()
    if target is None or target[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
