"""A full index build on two cores: the records of the upper half of the uuid space are added
to a `SegmentBuilder` in a forked child while this process adds the lower half.

Analysing a record (normalising its name and folder, splitting terms) is most of a rebuild's
time and is plain Python, so a second process is the only way to use the second core. The
child adds the records with keys from `SPLIT` on and sends its builder's `state()` back; this
process `absorb()`s it. The segment written is byte-for-byte the one a single process writes.

The child reads through the read transaction it inherits, so both halves come from one
snapshot. That is sound for a read-only transaction: LMDB readers take no locks, the pages are
in the shared file mapping, and this process's reader slot keeps the snapshot's pages from
being reused until it ends the transaction, which it does only after the child has exited.
The child must never end that transaction (ending it would clear this process's reader slot),
so it holds a reference to it until `os._exit`, which runs no finalizer. (A child cannot open
the environment again: py-lmdb refuses a second open of a path in one process, and the
inherited handle counts.)

Pipe protocol: the child writes one pickle of `SegmentBuilder.state()` and exits 0. A child
that dies, exits non-zero or sends a truncated pickle is ignored and this process adds the
upper half itself, so a failure costs time, never a record.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import lmdb
import orjson

from .. import crashpoints
from ..forking import can_fork, fork_writer, reap
from ..store import keys as K
from ..store.env import Env
from .builder import SegmentBuilder

SPLIT = K.P_UUID + b"8"
"""Record keys below this go to this process, the others to the child: uuids are uniform hex."""
PARALLEL_MIN_RECORDS = 50_000
"""Fewer records than this are added in-process: forking and the hand-over cost ~0.1 s."""


def add_all_records(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction,
                    release_every: int) -> None:
    """Add every record of `txn` to `builder`; half of them in a child when that pays.
    `release_every`: records between two `Env.release_pages`, in either process."""
    child = _Child(env, txn, release_every) if _worth_forking(txn) else None
    try:
        add_records(builder, env, txn, K.P_UUID, SPLIT if child else None, release_every)
        state = child.result() if child else None
        if child and state is None:  # the child failed: its half, here
            add_records(builder, env, txn, SPLIT, None, release_every)
        elif state is not None:
            builder.absorb(state)
    finally:
        if child:
            child.close()


def add_records(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction, start: bytes,
                stop: bytes | None, release_every: int) -> None:
    """Add the records with keys in [start, stop) (stop None: to the last record)."""
    cur = txn.cursor()
    if not cur.set_range(start):
        return
    for i, (key, raw) in enumerate(cur, 1):
        if not key.startswith(K.P_UUID) or (stop is not None and key >= stop):
            return
        builder.add_record(orjson.loads(raw))
        if i % release_every == 0:
            env.release_pages(trim=False)


def _worth_forking(txn: lmdb.Transaction) -> bool:
    if not can_fork() or (os.cpu_count() or 1) < 2:
        return False
    records = sum(K.unpack_stats(txn.get(K.stats_key(K.ALL, trash)))[0]
                  for trash in (False, True))
    return records >= PARALLEL_MIN_RECORDS


class _Child:
    """The forked half of a build: started at once, its state read by `result()`."""

    def __init__(self, env: Env, txn: lmdb.Transaction, release_every: int) -> None:
        self._pid, self._stream = fork_writer(
            lambda fd: _build_upper_half(env, txn, release_every, fd))

    def result(self) -> tuple[Any, ...] | None:
        """The child's builder state, or None when it failed."""
        try:
            data = self._stream.read()
        finally:
            self._stream.close()
        status = reap(self._pid, kill=False)
        self._pid = 0
        if status != 0:
            return None
        try:
            return pickle.loads(data)  # noqa: S301 - our own child, through our own pipe
        except Exception:  # noqa: BLE001 - truncated or damaged: build the half here
            return None

    def close(self) -> None:
        """Stop the child if it still runs (this process failed or was interrupted)."""
        if not self._stream.closed:
            self._stream.close()
        if self._pid:
            reap(self._pid)
            self._pid = 0


def _build_upper_half(env: Env, txn: lmdb.Transaction, release_every: int, fd: int) -> None:
    """The child's side: the records from SPLIT on, read through the inherited `txn`; one
    pickle of the builder's state to `fd`."""
    builder = SegmentBuilder()
    add_records(builder, env, txn, SPLIT, None, release_every)
    crashpoints.hit("index.parallel_child")
    with os.fdopen(fd, "wb", buffering=1 << 20) as out:
        pickle.dump(builder.state(), out, pickle.HIGHEST_PROTOCOL)
