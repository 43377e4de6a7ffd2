"""Index builds on two cores: the documents of the upper half of the uuid space (records in a
full rebuild, delta entries in a merge) are added to a `SegmentBuilder` in a forked child
while this process adds the lower half.

Analysing a record (normalising its name and folder, splitting terms) is most of a rebuild's
time and is plain Python, so a second process is the only way to use the second core. The
child adds the documents whose keys end in a uuid from "8" on and sends its builder's
`state()` back; this process `absorb()`s it. The segment written is byte-for-byte the one a
single process writes.

The child reads through the read transaction it inherits, so both halves come from one
snapshot. That is sound for a read-only transaction: LMDB readers take no locks, the pages are
in the shared file mapping, and this process's reader slot keeps the snapshot's pages from
being reused until it ends the transaction, which it does only after the child has exited.
The child must never end that transaction (ending it would clear this process's reader slot),
so it holds a reference to it until `os._exit`, which runs no finalizer. (A child cannot open
the environment again: py-lmdb refuses a second open of a path in one process, and the
inherited handle counts.)

Pipe protocol (forking.ForkedResult): the child writes one pickle of `SegmentBuilder.state()`
and exits 0. A child that dies, exits non-zero or sends a truncated pickle is ignored and this
process adds the upper half itself, so a failure costs time, never a record.

The same test decides whether `SegmentBuilder.finish` builds the folder dictionary in a
child while this process writes the names (`should_fork`, passed by merge.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lmdb
import orjson

from .. import crashpoints
from ..forking import ForkedResult, can_fork, usable_cores
from ..store import keys as K
from ..store.env import Env
from .builder import SegmentBuilder
from .delta import P_DELTA
from .docs import DocRow

PARALLEL_MIN_DOCS = 50_000
"""Fewer documents than this are added in-process: forking and the hand-over cost ~0.1 s."""

Adder = Callable[[SegmentBuilder, bytes, bytes], None]
"""Adds the document of one (key, value) of a key family to a builder."""


def _add_record(builder: SegmentBuilder, key: bytes, raw: bytes) -> None:
    builder.add_record(orjson.loads(raw))


def _add_delta_doc(builder: SegmentBuilder, key: bytes, raw: bytes) -> None:
    if raw:  # b"": a deletion, nothing to index
        builder.add(DocRow.unpack(key[len(P_DELTA):].decode("ascii"), raw))


def should_fork(docs: int) -> bool:
    """A build of `docs` documents uses a second process: enough of them to pay for the fork
    and the hand-over, a second core, and a fork that is safe here."""
    return docs >= PARALLEL_MIN_DOCS and usable_cores() > 1 and can_fork()


def add_all_records(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction,
                    release_every: int) -> None:
    """Add every record of `txn` (a full rebuild); half of them in a child when that pays.
    `release_every`: documents between two `Env.release_pages`, in either process."""
    records = sum(K.unpack_stats(txn.get(K.stats_key(K.ALL, trash)))[0]
                  for trash in (False, True))
    _add_in_halves(builder, env, txn, K.P_UUID, _add_record, records, release_every)


def add_delta_docs(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction, entries: int,
                   release_every: int) -> None:
    """Add the live documents of the delta's `entries` entries (a merge)."""
    _add_in_halves(builder, env, txn, P_DELTA, _add_delta_doc, entries, release_every)


def _add_in_halves(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction, prefix: bytes,
                   add: Adder, docs: int, release_every: int) -> None:
    """Keys under `prefix` end in a uuid, so `prefix + "8"` halves them: the lower half here,
    the upper half in a child when there are enough and a fork is safe."""
    split = prefix + b"8"
    child = ForkedResult(lambda: _build_half(env, txn, prefix, split, add, release_every)
                         ) if should_fork(docs) else None
    try:
        add_range(builder, env, txn, prefix, prefix, split if child else None, add,
                  release_every)
        state = child.result() if child else None
        if child and state is None:  # the child failed: its half, here
            add_range(builder, env, txn, prefix, split, None, add, release_every)
        elif state is not None:
            builder.absorb(state)
    finally:
        if child:
            child.close()


def add_range(builder: SegmentBuilder, env: Env, txn: lmdb.Transaction, prefix: bytes,
              start: bytes, stop: bytes | None, add: Adder, release_every: int) -> None:
    """`add` every key under `prefix` in [start, stop) (stop None: to the last one)."""
    cur = txn.cursor()
    if not cur.set_range(start):
        return
    for i, (key, raw) in enumerate(cur, 1):
        if not key.startswith(prefix) or (stop is not None and key >= stop):
            return
        add(builder, key, raw)
        if i % release_every == 0:
            env.release_pages(trim=False)


def _build_half(env: Env, txn: lmdb.Transaction, prefix: bytes, split: bytes, add: Adder,
                release_every: int) -> tuple[Any, ...]:
    """The child's side: the keys from `split` on, read through the inherited `txn`; the
    builder's state, for the parent to absorb."""
    builder = SegmentBuilder()
    add_range(builder, env, txn, prefix, split, None, add, release_every)
    crashpoints.hit("index.parallel_child")
    return builder.state()
