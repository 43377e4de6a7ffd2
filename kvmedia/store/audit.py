"""A bounded audit log in LMDB: what happened to which file, and when.

    audit:<seq %016d> -> {"seq", "at", "path"|"path_bytes", "status", "error", "uuid", "op"}
    meta:audit_next   -> next seq (ascii int)

`status` is ok | skipped | failed. Entries are appended inside the caller's write transaction;
once more than `AUDIT_MAX` entries exist, the oldest ones are dropped in the same transaction.
"""

from __future__ import annotations

from typing import Any

import lmdb
import orjson

from ..pathbytes import set_field
from ..records import now_iso

P_AUDIT = b"audit:"
K_NEXT = b"meta:audit_next"
AUDIT_MAX = 100_000


class AuditLog:
    def __init__(self, max_entries: int = AUDIT_MAX) -> None:
        self.max_entries = max_entries

    def append(
        self,
        txn: lmdb.Transaction,
        *,
        path: bytes | None,
        status: str,
        op: str,
        error: str | None = None,
        uuid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        seq = int(txn.get(K_NEXT) or b"0")
        entry: dict[str, Any] = {"seq": seq, "at": now_iso(), "op": op, "status": status}
        set_field(entry, "path", path)
        entry["uuid"] = uuid
        entry["error"] = error
        if extra:
            entry.update(extra)
        txn.put(P_AUDIT + b"%016d" % seq, orjson.dumps(entry))
        txn.put(K_NEXT, b"%d" % (seq + 1))
        self._trim(txn, seq + 1 - self.max_entries)

    def later(self, writer: Any, *, path: bytes | None, status: str, op: str,
              error: str | None = None, uuid: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
        """Like append(), but the entry is written by `writer.finish()` (same transaction)
        together with the others of the batch: one seq read and one putmulti per batch."""
        entry: dict[str, Any] = {"op": op, "status": status}
        set_field(entry, "path", path)
        entry["uuid"] = uuid
        entry["error"] = error
        if extra:
            entry.update(extra)
        writer.scratch.setdefault(self, []).append(entry)
        writer.at_finish(self, self._flush)

    def _flush(self, writer: Any) -> None:
        entries = writer.scratch.pop(self, None)
        if entries:
            self.append_many(writer.txn, entries)

    def append_many(self, txn: lmdb.Transaction, entries: list[dict[str, Any]]) -> None:
        """Append `entries` (dicts without seq/at) in order, with one timestamp."""
        first = int(txn.get(K_NEXT) or b"0")
        at = now_iso()
        dumps = orjson.dumps
        txn.cursor().putmulti([(P_AUDIT + b"%016d" % seq, dumps({"seq": seq, "at": at, **e}))
                               for seq, e in enumerate(entries, first)])
        nxt = first + len(entries)
        txn.put(K_NEXT, b"%d" % nxt)
        self._trim(txn, nxt - self.max_entries)

    def _trim(self, txn: lmdb.Transaction, drop_below: int) -> None:
        if drop_below <= 0:
            return
        cur = txn.cursor()
        if cur.set_range(P_AUDIT):
            while cur.key().startswith(P_AUDIT) and int(cur.key()[len(P_AUDIT):]) < drop_below:
                if not cur.delete():
                    break

    @staticmethod
    def tail(txn: lmdb.Transaction, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` entries, oldest first."""
        out: list[dict[str, Any]] = []
        cur = txn.cursor()
        if not cur.set_range(P_AUDIT + b"\xff"):
            if not cur.last():
                return out
        else:
            cur.prev()
        while len(out) < limit and cur.key().startswith(P_AUDIT):
            out.append(orjson.loads(cur.value()))
            if not cur.prev():
                break
        out.reverse()
        return out
