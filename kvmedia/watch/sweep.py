"""Sweeps: finding changes without inotify (network mounts, watch limit used up).

Directory mtimes first. A directory's mtime moves whenever an entry is created, deleted or
renamed in it, so one `stat` per directory finds every added, removed and moved file; the
sweep then hands the watcher only the entries of the directories that changed: their files,
their new subdirectories (walked whole) and the stored paths no longer there. A file
rewritten in place changes no directory, so every `full_every`-th sweep is a full
incremental scan of the root instead (unchanged files still cost no write).

The first `dir_mtimes` pass is the baseline; take it *before* the scan-on-start, so a change
made during that scan is either seen by the scan or moves a directory mtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import lmdb

from ..pathbytes import dir_prefix
from ..store import keys as K
from ..walk import CLUTTER_NAMES


def _visible(directory: bytes, *, dirs: bool) -> list[bytes]:
    """Paths of the subdirectories (dirs=True) or regular files of `directory` the scan would
    look at: no hidden or NAS-clutter names, no symlinks; [] when it cannot be read."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(b".") or entry.name in CLUTTER_NAMES:
                    continue
                try:
                    if (entry.is_dir(follow_symlinks=False) if dirs
                            else entry.is_file(follow_symlinks=False)):
                        out.append(entry.path)
                except OSError:
                    continue
    except OSError:
        pass
    return out


def dir_mtimes(root: bytes) -> dict[bytes, int]:
    """mtime_ns of every directory the scan would enter under `root` (root included)."""
    out: dict[bytes, int] = {}
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            out[path] = os.lstat(path).st_mtime_ns
        except OSError:
            continue
        stack.extend(_visible(path, dirs=True))
    return out


def stored_children(txn: lmdb.Transaction, directory: bytes) -> set[bytes]:
    """Paths of the direct children (files, and subdirectories holding records) stored under
    `directory`. Skips over each subdirectory's keys with one seek instead of reading them."""
    prefix = K.path_key(dir_prefix(directory))
    out: set[bytes] = set()
    cur = txn.cursor()
    if not cur.set_range(prefix):
        return out
    while True:
        key = cur.key()
        if not key.startswith(prefix):
            break
        rest = key[len(prefix):].split(b"\0", 1)[0]
        slash = rest.find(b"/")
        if slash < 0:
            out.add(dir_prefix(directory) + rest)
            if not cur.next():
                break
            continue
        sub = rest[:slash]
        out.add(dir_prefix(directory) + sub)
        if not cur.set_range(prefix + sub + b"0"):  # b"0" follows b"/": past the subtree
            break
    return out


@dataclass
class DirSweeper:
    """The sweep state of one root."""

    root: bytes
    full_every: int = 10
    mtimes: dict[bytes, int] = field(default_factory=dict)
    sweeps: int = 0
    dev: int | None = None

    def baseline(self) -> None:
        self.dev = self._root_dev()
        self.mtimes = dir_mtimes(self.root)

    def _root_dev(self) -> int | None:
        try:
            return os.lstat(self.root).st_dev
        except OSError:
            return None

    def looks_unmounted(self) -> bool:
        """Root missing, on another device, or empty: only a full scan may judge (offline)."""
        dev = self._root_dev()
        if dev is None or dev != self.dev:
            return True
        try:
            with os.scandir(self.root) as it:
                return next(iter(it), None) is None
        except OSError:
            return True

    def due_full(self) -> bool:
        """Count a sweep; True when this one must be a full incremental scan."""
        self.sweeps += 1
        return self.sweeps % self.full_every == 0

    def changed(self, env_read: object) -> list[bytes] | None:
        """Paths to hand to `upsert_paths`: entries of directories whose mtime moved. None
        when the root looks unmounted: then a full scan must decide.

        `env_read` is `Env.read` (a context manager giving a read transaction)."""
        if self.looks_unmounted():
            return None
        now = dir_mtimes(self.root)
        old = self.mtimes
        paths: set[bytes] = set()
        changed_dirs = [d for d, m in now.items() if old.get(d) != m]
        new_dirs = {d for d in now if d not in old}
        gone_dirs = [d for d in old if d not in now]
        with env_read() as txn:  # type: ignore[operator]
            for directory in changed_dirs:
                if directory in new_dirs and os.path.dirname(directory) in new_dirs:
                    continue  # inside a new directory that is walked whole
                if directory in new_dirs:
                    paths.add(directory)
                    continue
                paths.update(self._entries(directory))
                paths.update(stored_children(txn, directory))
        for directory in gone_dirs:
            if os.path.dirname(directory) not in gone_dirs:
                paths.add(directory)  # gone: its records go (upsert_paths checks each)
        self.mtimes = now
        return sorted(paths)

    @staticmethod
    def _entries(directory: bytes) -> list[bytes]:
        return _visible(directory, dirs=False)
