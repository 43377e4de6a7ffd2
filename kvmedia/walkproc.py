"""Run a `Walker` in a forked child so the walk and the scanner's merge use two cores.

A rescan is a walk (readdir + lstat, half of it in the kernel) plus, per file, a compare with
the stored key. In one process the two add up; with the walk in a child process they overlap
and an unchanged rescan costs about the walk alone. Threads would not do: the walk's
Python half and the merge contend for the GIL.

The child yields exactly the items the walker yields in-process, in the same order. Pipe
protocol, one frame per chunk of items:

    u32 little-endian length | pickle of (items, counters, done)

`items`: FileEntry as a plain 7-tuple (path, name, ino, dev, size, mtime_ns, ctime_ns),
KeepPrefix / Warning_ as themselves. `counters`: the walker's WalkCounters fields after the
chunk. `done`: True on the last frame only. A stream that ends without it (the child was
killed, ran out of memory, crashed) marks the walk incomplete, so the scan deletes nothing.

Used only where a fork is safe (forking.py: a platform with fork, a process with no other
threads).
"""

from __future__ import annotations

import os
import pickle
import struct
import time
from collections.abc import Iterator
from dataclasses import astuple, fields

from . import crashpoints
from .forking import fork_writer, reap
from .walk import FileEntry, WalkCounters, Walker, WalkItem

CHUNK_ITEMS = 1024
"""Items per frame: large enough that pickling is per-chunk work, not per-file work."""
CHUNK_SECONDS = 0.25
"""A partial chunk is sent after this long, so progress and batch deadlines keep moving on a
slow volume."""
PIPE_BYTES = 1 << 20
_FRAME = struct.Struct("<I")
_COUNTER_FIELDS = tuple(f.name for f in fields(WalkCounters))


class ForkedWalk:
    """Iterate like `walker`, the walking done by a child process. `complete` tells, after
    the iteration ended, whether the child walked to the end; `close()` stops it early."""

    def __init__(self, walker: Walker) -> None:
        self.walker = walker
        self.counters = walker.counters
        self.complete = False
        self._pid = 0
        self._stream = None

    def excludes(self, path: bytes, *, is_dir: bool = False) -> bool:
        return self.walker.excludes(path, is_dir=is_dir)

    def __iter__(self) -> Iterator[WalkItem]:
        self._pid, self._stream = fork_writer(
            lambda fd: _send_walk(self.walker, fd), only_pipe=True, pipe_bytes=PIPE_BYTES)
        try:
            yield from self._receive()
        finally:
            self.close()

    def _receive(self) -> Iterator[WalkItem]:
        stream = self._stream
        assert stream is not None
        counters = self.counters
        entry = FileEntry
        while True:
            head = stream.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return  # EOF before `done`: incomplete
            (length,) = _FRAME.unpack(head)
            body = stream.read(length)
            if len(body) < length:
                return
            items, values, done = pickle.loads(body)
            for name, value in zip(_COUNTER_FIELDS, values, strict=True):
                setattr(counters, name, value)
            for item in items:
                yield entry(*item) if type(item) is tuple else item
            if done:
                self.complete = True
                return

    def close(self) -> None:
        """Stop the child (if still walking) and reap it."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._pid:
            reap(self._pid)
            self._pid = 0


def _send_walk(walker: Walker, fd: int) -> None:
    """The child's side: walk and write frames until the end, then a `done` frame."""
    out = os.fdopen(fd, "wb", buffering=1 << 20)
    counters = walker.counters
    chunk: list[object] = []
    deadline = time.monotonic() + CHUNK_SECONDS

    def send(done: bool) -> None:
        body = pickle.dumps((chunk, astuple(counters), done), pickle.HIGHEST_PROTOCOL)
        out.write(_FRAME.pack(len(body)))
        out.write(body)
        out.flush()
        chunk.clear()

    for item in walker:
        if type(item) is FileEntry:
            chunk.append((item.path, item.name, item.ino, item.dev, item.size, item.mtime_ns,
                          item.ctime_ns))
        else:
            chunk.append(item)
        if len(chunk) >= CHUNK_ITEMS or (not len(chunk) & 31 and time.monotonic() > deadline):
            send(False)
            crashpoints.hit("walkproc.frame_sent")
            deadline = time.monotonic() + CHUNK_SECONDS
    send(True)
    out.close()
