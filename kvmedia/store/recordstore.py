"""The one write path for records: a record and ALL its keys change in one transaction.

`RecordWriter` wraps one LMDB write transaction. `put(new, old)` / `delete(old)` rewrite the
record, its path/fid keys, its twelve type keys (its own type and "all") and the per-type
stats, and then call every listener registered on the store with (writer, old, new) so the
search-index delta, change feed and audit log are written in the same transaction. Stats
deltas are accumulated and written once by `finish()`, together with the keys of write-only
families (`put_later`: type keys, the search delta), sorted into one putmulti, and the
entries listeners buffered for the batch (`at_finish`: change feed, audit log). Every
caller calls `finish()` before its commit.

Preconditions: `old` is the record as currently stored (or None for a new one); the caller
has already resolved identity, so `new["uuid"] == old["uuid"]` when both are given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

import lmdb
import orjson

from ..identity import uuid_from_triplet
from ..pathbytes import get_field
from . import keys as K

Record = dict[str, Any]
PUT_CHUNK = 8192
_first = itemgetter(0)
Listener = Callable[["RecordWriter", "Record | None", "Record | None"], None]


def record_type_keys(rec: Record) -> list[bytes]:
    return K.type_keys(
        rec.get("type") or "other",
        bool(rec.get("is_trash")),
        get_field(rec, "name") or b"",
        int(rec.get("mtime_ns") or 0),
        int(rec.get("size") or 0),
        rec["uuid"],
    )


def record_path_value(rec: Record) -> bytes:
    return K.pack_path_value(
        rec["uuid"],
        rec.get("ino") or 0,
        rec.get("size") or 0,
        rec.get("mtime_ns") or 0,
        rec.get("ctime_ns") or 0,
        K.FLAG_TRASH if rec.get("is_trash") else 0,
    )


def record_fid_key(rec: Record) -> bytes | None:
    if not rec.get("fs_uuid"):
        return None
    return K.fid_key(rec["fs_uuid"], int(rec.get("ino") or 0), int(rec.get("ctime") or 0))


class RecordStore:
    """Reads records and owns the listener list of the write path."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    # -- reads (any transaction) -------------------------------------------------------------

    @staticmethod
    def get(txn: lmdb.Transaction, uuid: str) -> Record | None:
        raw = txn.get(K.uuid_key(uuid))
        return orjson.loads(raw) if raw is not None else None

    @staticmethod
    def path_value(txn: lmdb.Transaction, path: bytes) -> K.PathValue | None:
        raw = txn.get(K.path_key(path))
        return K.PathValue.unpack(raw) if raw is not None else None

    def get_by_path(self, txn: lmdb.Transaction, path: bytes) -> Record | None:
        pv = self.path_value(txn, path)
        if pv is None:
            return None
        rec = self.get(txn, pv.uuid)
        if rec is None or get_field(rec, "path") != path:
            return None
        return rec

    @staticmethod
    def uuid_by_fid(txn: lmdb.Transaction, fs_uuid: str, ino: int, ctime_s: int) -> str | None:
        raw = txn.get(K.fid_key(fs_uuid, ino, ctime_s))
        return raw.decode("ascii") if raw is not None else None

    @staticmethod
    def fids_by_inode(txn: lmdb.Transaction, fs_uuid: str, ino: int) -> list[tuple[bytes, str]]:
        """(fid key, uuid) of every record of this inode, whatever its ctime: the exact fid
        lookup and rename detection in one cursor pass."""
        prefix = K.fid_prefix(fs_uuid, ino)
        out = []
        cur = txn.cursor()
        if cur.set_range(prefix):
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                out.append((key, value.decode("ascii")))
        return out

    @staticmethod
    def iter_prefix(txn: lmdb.Transaction, prefix: bytes, start: bytes | None = None
                    ) -> Iterator[tuple[bytes, bytes]]:
        cur = txn.cursor()
        if not cur.set_range(start if start is not None else prefix):
            return
        for key, value in cur:
            if not key.startswith(prefix):
                return
            yield key, value

    @staticmethod
    def iter_records(txn: lmdb.Transaction) -> Iterator[Record]:
        for _key, raw in RecordStore.iter_prefix(txn, K.P_UUID):
            yield orjson.loads(raw)

    def writer(self, txn: lmdb.Transaction) -> RecordWriter:
        return RecordWriter(self, txn)


class RecordWriter:
    """All record mutations of one write transaction. Call `finish()` before commit."""

    def __init__(self, store: RecordStore, txn: lmdb.Transaction) -> None:
        self.store = store
        self.txn = txn
        self._stats: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
        # Write-only key families (type keys, the search delta) are never read inside a write
        # transaction, so their puts/deletes wait here (last op per key wins; None deletes)
        # and finish() applies them sorted: one C-level putmulti instead of a Python call per
        # key, and inserts that walk the B-tree in key order.
        self._later: dict[bytes, bytes | None] = {}
        # Per-transaction state of listeners (entries to append at finish(), caches) and the
        # callbacks finish() runs before the deferred keys are written.
        self.scratch: dict[Any, Any] = {}
        self._finishers: dict[Any, Callable[[RecordWriter], None]] = {}
        self.changes = 0
        # Called between chunks of the deferred keys (the scan drops mapped pages there, so
        # one big batch does not hold every leaf page it touched in RSS).
        self.between_chunks: Callable[[], None] | None = None

    def put_later(self, key: bytes, value: bytes) -> None:
        """Put `key` at finish(). Only for keys nothing reads in this transaction before."""
        self._later[key] = value

    def delete_later(self, key: bytes) -> None:
        self._later[key] = None

    def at_finish(self, token: Any, fn: Callable[[RecordWriter], None]) -> None:
        """Run `fn(writer)` once at finish() (per `token`), e.g. to append buffered entries."""
        if token not in self._finishers:
            self._finishers[token] = fn

    def put(self, new: Record, old: Record | None = None) -> None:
        txn = self.txn
        uuid = new["uuid"]
        new_type_keys = record_type_keys(new)
        old_type_keys: set[bytes] = set()
        if old is not None:
            assert old["uuid"] == uuid, "put() replaces a record with the same uuid"
            old_type_keys = set(record_type_keys(old))
            self._drop_keys(old, keep=new, old_type_keys=old_type_keys,
                            new_type_keys=set(new_type_keys))
            self._count(old, -1)
        txn.put(K.uuid_key(uuid), orjson.dumps(new))
        path = get_field(new, "path")
        assert path is not None
        txn.put(K.path_key(path), record_path_value(new))
        fid = record_fid_key(new)
        if fid is not None:
            txn.put(fid, uuid.encode("ascii"))
        ops = self._later
        for key in new_type_keys:
            if key not in old_type_keys:
                ops[key] = b""
        self._count(new, +1)
        self.changes += 1
        for listener in self.store.listeners:
            listener(self, old, new)

    def delete(self, old: Record) -> None:
        self._drop_keys(old, keep=None)
        self.txn.delete(K.uuid_key(old["uuid"]))
        self._count(old, -1)
        self.changes += 1
        for listener in self.store.listeners:
            listener(self, old, None)

    def _fid_heir(self, old: Record, fid: bytes) -> bytes | None:
        """Another record of the same (fs, inode, ctime) triplet that takes over the fid key
        `old` gives up: two names of one inode (hardlinks) share it. The first name recorded
        holds the triplet's own uuid, so that is the one looked for."""
        heir = uuid_from_triplet(old["fs_uuid"], int(old.get("ino") or 0),
                                 int(old.get("ctime") or 0))
        if heir == old["uuid"]:
            return None
        rec = RecordStore.get(self.txn, heir)
        return heir.encode("ascii") if rec is not None and record_fid_key(rec) == fid else None

    def _drop_keys(self, old: Record, keep: Record | None,
                   old_type_keys: set[bytes] | None = None,
                   new_type_keys: set[bytes] | None = None) -> None:
        """Delete `old`'s keys that `keep` does not share. Path/fid keys only if still ours."""
        txn = self.txn
        uuid = old["uuid"].encode("ascii")
        old_path = get_field(old, "path")
        if old_path is not None and (keep is None or get_field(keep, "path") != old_path):
            pkey = K.path_key(old_path)
            raw = txn.get(pkey)
            if raw is not None and raw[: K.UUID_LEN] == uuid:
                txn.delete(pkey)
        old_fid = record_fid_key(old)
        if old_fid is not None and (keep is None or record_fid_key(keep) != old_fid):
            if txn.get(old_fid) == uuid:
                heir = self._fid_heir(old, old_fid)
                if heir is None:
                    txn.delete(old_fid)
                else:
                    txn.put(old_fid, heir)
        if new_type_keys is None:
            new_type_keys = set(record_type_keys(keep)) if keep is not None else set()
        ops = self._later
        for key in old_type_keys if old_type_keys is not None else record_type_keys(old):
            if key not in new_type_keys:
                ops[key] = None

    def _count(self, rec: Record, sign: int) -> None:
        """Per (type, trash) deltas; finish() adds them to the type's and "all"'s stats."""
        slot = self._stats[(rec.get("type") or "other", bool(rec.get("is_trash")))]
        slot[0] += sign
        slot[1] += sign * int(rec.get("size") or 0)

    def finish(self) -> None:
        """Run the listeners' finish callbacks, then apply the deferred keys and the
        accumulated stats. Idempotent."""
        while self._finishers:
            finishers = list(self._finishers.values())
            self._finishers.clear()
            for fn in finishers:
                fn(self)
        if self._later:
            txn = self.txn
            puts = []
            for key, value in self._later.items():
                if value is None:
                    txn.delete(key)
                else:
                    puts.append((key, value))
            if puts:
                puts.sort(key=_first)  # bytes compares, not tuple compares
                cur = txn.cursor()
                for start in range(0, len(puts), PUT_CHUNK):
                    if start and self.between_chunks is not None:
                        self.between_chunks()
                    cur.putmulti(puts[start:start + PUT_CHUNK])
            self._later.clear()
        totals: dict[bytes, list[int]] = defaultdict(lambda: [0, 0])
        for (media_type, trash), (dcount, dbytes) in self._stats.items():
            for name in (media_type, K.ALL):
                slot = totals[K.stats_key(name, trash)]
                slot[0] += dcount
                slot[1] += dbytes
        for key, (dcount, dbytes) in totals.items():
            if dcount == 0 and dbytes == 0:
                continue
            count, total = K.unpack_stats(self.txn.get(key))
            self.txn.put(key, K.pack_stats(count + dcount, total + dbytes))
        self._stats.clear()
