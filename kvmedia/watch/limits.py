"""Inotify limits: how many watches the library needs, how many the kernel allows.

inotify watches one directory per watch, recursively every directory under a root (hidden
and NAS clutter directories too: the kernel cannot skip them). `fs.inotify.max_user_watches`
is per user and shared with every other program of that user, so the watcher takes at most
WATCH_SHARE of what is left, and roots that do not fit are swept instead (see sweep.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..pathbytes import display

WATCH_SHARE = 0.8
PROC_INOTIFY = "/proc/sys/fs/inotify"


def read_limit(name: str, base: str = PROC_INOTIFY) -> int | None:
    try:
        with open(os.path.join(base, name)) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def max_user_watches() -> int | None:
    """The watch limit in force: `fs.inotify.max_user_watches`, or the (lower) per user
    namespace `user.max_inotify_watches` inside a container."""
    found = [v for v in (read_limit("max_user_watches"),
                         read_limit("max_inotify_watches", "/proc/sys/user")) if v is not None]
    return min(found) if found else None


def _inotify_watches(proc: str) -> int:
    """Watches held by the inotify fds of one process (`/proc/<pid>` or `/proc/self`)."""
    total = 0
    try:
        fds = os.listdir(f"{proc}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"{proc}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"{proc}/fdinfo/{fd}") as fh:
                total += sum(1 for line in fh if line.startswith("inotify wd:"))
        except OSError:
            continue
    return total


def own_watches() -> int:
    """Inotify watches held by this process."""
    return _inotify_watches("/proc/self")


def watches_in_use(uid: int | None = None) -> int:
    """Inotify watches held right now by processes of `uid` (default: ours), from /proc."""
    uid = os.getuid() if uid is None else uid
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    total = 0
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        total += _inotify_watches(f"/proc/{pid}")
    return total


def count_dirs(root: bytes, stop_after: int | None = None) -> int:
    """Directories inotify would watch under `root` (itself included); symlinks not followed.

    Stops counting past `stop_after` (the answer is then "more than that")."""
    count = 0
    stack = [root]
    while stack:
        path = stack.pop()
        count += 1
        if stop_after is not None and count > stop_after:
            return count
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
    return count


def watch_budget() -> int | None:
    """Watches this process may take: WATCH_SHARE of the limit, minus what is in use."""
    limit = max_user_watches()
    if limit is None:
        return None
    return max(0, int(limit * WATCH_SHARE) - watches_in_use())


@dataclass
class WatchReport:
    max_user_watches: int | None
    in_use: int
    needed: int
    roots: list[dict[str, Any]]
    recommended_max_user_watches: int
    enough: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": "inotify", **asdict(self)}

    def lines(self) -> list[str]:
        limit = self.max_user_watches
        out = [f"inotify: the watcher needs {self.needed:,} watches (one per directory); "
               f"max_user_watches is {limit if limit is not None else 'unknown'}, "
               f"{self.in_use:,} in use by this user"]
        if not self.enough:
            out.append(f"inotify: raise it to at least {self.recommended_max_user_watches:,}: "
                       f"sysctl fs.inotify.max_user_watches="
                       f"{self.recommended_max_user_watches}; until then the watcher sweeps "
                       "the roots that do not fit")
        return out


def watch_report(roots: Iterable[bytes]) -> WatchReport:
    """What `kvmedia doctor` prints: watches needed for the roots vs the kernel limit."""
    per_root = []
    needed = 0
    for root in roots:
        n = count_dirs(root) if os.path.isdir(root) else 0
        per_root.append({"root": display(root), "dirs": n})
        needed += n
    limit = max_user_watches()
    in_use = watches_in_use()
    recommended = int(math.ceil((needed + in_use) / WATCH_SHARE))
    enough = limit is not None and needed <= int(limit * WATCH_SHARE) - in_use
    return WatchReport(limit, in_use, needed, per_root, recommended, enough)
