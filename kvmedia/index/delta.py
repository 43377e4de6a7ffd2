"""The index delta: what changed since the segments were written, kept inside LMDB and written
in the same transaction as the record, so a search never sees a stale answer.

LMDB keys (this module owns the `sidx:` prefix):

    sidx:d:<uuid>   -> DocRow.pack() of the record as it is now, or b"" when it was deleted.
                       A uuid present here is answered from this value; its copies in the
                       segments are ignored (shadowed).
    sidx:gen        -> ascii int: generation of the manifest the delta was last folded into.
                       Absent on a library that has records but no index yet (or lost it):
                       searches then fall back to the scan until `rebuild` runs.

A merge reads the delta in a snapshot, writes segments, switches the manifest, then deletes
exactly the delta entries whose value is unchanged since the snapshot and stores the new
generation — all in one write transaction. Readers take `sidx:gen` and the delta from one read
transaction and never use a manifest older than that generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb

from .docs import DocRow, doc_from_record

P_DELTA = b"sidx:d:"
K_GEN = b"sidx:gen"


def delta_key(uuid: str) -> bytes:
    return P_DELTA + uuid.encode("ascii")


class DeltaWriter:
    """The record-store listener: one `sidx:d:` put per record change, nothing else. Nothing
    reads the delta inside a write transaction, so the put waits for the writer's finish()
    (sorted with the other deferred keys)."""

    def __call__(self, writer: Any, old: dict[str, Any] | None, new: dict[str, Any] | None
                 ) -> None:
        put = getattr(writer, "put_later", None) or writer.txn.put
        if new is None:
            if old is not None:
                put(delta_key(old["uuid"]), b"")
            return
        put(delta_key(new["uuid"]), doc_from_record(new).pack())


def read_gen(txn: lmdb.Transaction) -> int | None:
    raw = txn.get(K_GEN)
    return int(raw) if raw is not None else None


def iter_delta(txn: lmdb.Transaction) -> Iterator[tuple[str, bytes]]:
    """(uuid, packed value or b"") for every delta entry, in uuid order."""
    cur = txn.cursor()
    if not cur.set_range(P_DELTA):
        return
    n = len(P_DELTA)
    for key, value in cur:
        if not key.startswith(P_DELTA):
            return
        yield key[n:].decode("ascii"), value


def count_delta(txn: lmdb.Transaction, stop_at: int | None = None) -> int:
    cur = txn.cursor()
    count = 0
    if not cur.set_range(P_DELTA):
        return 0
    for key in cur.iternext(keys=True, values=False):
        if not key.startswith(P_DELTA):
            break
        count += 1
        if stop_at is not None and count >= stop_at:
            break
    return count


class DeltaCache:
    """Unpacked delta rows keyed by (uuid, packed value), so a long-lived process (a server, a
    benchmark) decodes each changed record once, not on every search."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[bytes, DocRow]] = {}

    def rows(self, txn: lmdb.Transaction) -> tuple[dict[str, DocRow | None], int]:
        """uuid -> DocRow (None for a deletion) for the whole delta, and the stored gen."""
        gen = read_gen(txn)
        out: dict[str, DocRow | None] = {}
        fresh: dict[str, tuple[bytes, DocRow]] = {}
        for uuid, value in iter_delta(txn):
            if not value:
                out[uuid] = None
                continue
            cached = self._rows.get(uuid)
            if cached is not None and cached[0] == value:
                row = cached[1]
            else:
                row = DocRow.unpack(uuid, value)
            fresh[uuid] = (value, row)
            out[uuid] = row
        self._rows = fresh
        return out, -1 if gen is None else gen


def init_gen(env: Any) -> None:
    """A library with no records gets generation 0: the empty index, nothing to build.
    LMDB only (no numpy), so opening a library for a quick listing stays light."""
    with env.read() as txn:
        if read_gen(txn) is not None:
            return

    def fn(txn: lmdb.Transaction) -> None:
        cur = txn.cursor()
        has_records = bool(cur.set_range(b"media:uuid:") and cur.key().startswith(b"media:uuid:"))
        if txn.get(K_GEN) is None and not has_records:
            txn.put(K_GEN, b"0")

    env.write(fn)
