"""watchdog glue: inotify events become debounce-queue entries; trouble becomes callbacks.

Mapping (directories expand on apply, so watchdog's synthetic per-file events of a moved
directory are dropped):

    file created / modified / closed-after-write / attrib     -> the path
    file moved a -> b                                         -> b and a, as partners
    file deleted (or moved out of the watched tree)           -> the path
    directory moved a -> b                                    -> b (walked) and a, partners
    directory deleted (or moved out)                          -> the path (records under it go)
    directory created / modified, opened, closed-no-write     -> nothing (its files report)

Paths with a hidden or NAS-clutter component below the root, and the data dir itself, are
ignored: the scan skips them too, and the data dir would otherwise feed itself.

`WatchFD` is watchdog's inotify reader with two hooks watchdog keeps to itself: a kernel queue
overflow (events were lost) and a watch that could not be added (ENOSPC: the watch limit is
used up; watchdog skips such a subdirectory silently). Both are reported so the watcher can
sweep instead of missing changes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)

from ..pathbytes import is_under
from ..walk import CLUTTER_NAMES

EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent,
                FileMovedEvent, DirMovedEvent, DirDeletedEvent]
"""What the watcher asks inotify for: no IN_OPEN / IN_CLOSE_NOWRITE, so a media server
reading files costs the watcher nothing."""

Sink = Callable[[list[bytes], bool], None]  # sink(paths of one group, first is a dir to walk)


def ignored(path: bytes, root: bytes, data_dir: bytes) -> bool:
    """True for paths the library never holds: hidden or clutter components, the data dir."""
    if is_under(path, data_dir):
        return True
    rel = path[len(root.rstrip(b"/")) + 1:] if path != root else b""
    return any(part.startswith(b".") or part in CLUTTER_NAMES for part in rel.split(b"/") if part)


def _b(path: bytes | str) -> bytes:
    return os.fsencode(path)


class QueueingHandler(FileSystemEventHandler):
    """One per watched root: maps watchdog events to `sink` calls (see the module docstring)."""

    def __init__(self, root: bytes, data_dir: bytes, sink: Sink,
                 on_root_gone: Callable[[bytes], None]) -> None:
        self.root = root
        self.data_dir = data_dir
        self.sink = sink
        self.on_root_gone = on_root_gone

    def _keep(self, path: bytes) -> bool:
        return bool(path) and is_under(path, self.root) and not ignored(
            path, self.root, self.data_dir)

    def dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirModifiedEvent, DirCreatedEvent, FileOpenedEvent,
                              FileClosedNoWriteEvent)):
            return
        src = _b(event.src_path)
        if src == self.root:
            self.on_root_gone(self.root)  # the root itself: only a scan may judge (offline?)
            return
        if isinstance(event, (DirMovedEvent, FileMovedEvent)):
            if event.is_synthetic:
                return  # a file inside a moved directory: the directory's walk covers it
            dest = _b(event.dest_path)
            keep_src, keep_dest = self._keep(src), self._keep(dest)
            paths = [p for p, keep in ((dest, keep_dest), (src, keep_src)) if keep]
            if paths:
                self.sink(paths, keep_dest and isinstance(event, DirMovedEvent))
            return
        if isinstance(event, DirDeletedEvent) or not event.is_directory:
            if self._keep(src):
                self.sink([src], False)


class WatchFD(InotifyFD):
    """watchdog's inotify reader, reporting overflows and watches refused for lack of room."""

    def __init__(self, on_overflow: Callable[[], None],
                 on_watch_refused: Callable[[bytes], None]) -> None:
        super().__init__()
        self.on_overflow = on_overflow
        self.on_watch_refused = on_watch_refused

    def add_callback(self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId
                     ) -> WatchDescriptor:
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.on_watch_refused(path)
            raise

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)
        if event.is_queue_overflow:
            # Only now: watchdog has rebuilt the recursive watches above, so the rescan this
            # triggers starts with every directory watched again (nothing falls in between).
            self.on_overflow()


class WatchObserver(InotifyObserver):
    """An inotify observer over a `WatchFD`."""

    def __init__(self, fd: WatchFD, *, timeout: float = 0.5) -> None:
        self._inotify_fd = fd
        fd.start()
        BaseObserver.__init__(self, InotifyEmitter, timeout=timeout, inotify_fd=fd)
