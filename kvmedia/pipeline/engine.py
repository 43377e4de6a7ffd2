"""`AssetPipeline`: sidecars as dependencies, dirty marks, and re-derivation.

Sidecar files are not records: the scan hands each one to `ingest_sidecar`, which keeps a
sidecar node (deps.py) with its stamp instead. So "records == media files on disk" and
"sidecar nodes == sidecar files on disk" can both be checked, and listings, counts and search
never show a sidecar as media.

Marking happens inside the write transaction of the change that causes it:
- a sidecar is new or its stamp changed, or it is gone  -> its owners and their dependents
- a media record is added or moved and has sidecars or a Live-Photo partner -> itself
- a record's content changed, or it was deleted         -> its dependents
Re-derivation (`process_dirty`) runs after the scan / upsert: dirty records are gathered in a
read transaction, their sidecars parsed with no transaction open, and the results written in
one transaction per batch, only when the record did not move meanwhile. A record whose fields
changed marks its own dependents, so chains settle; a fixpoint ends every cycle and
MAX_DERIVES_PER_RUN bounds a pathological one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

import lmdb

from ..pathbytes import dir_prefix, get_field
from ..store.env import Env
from ..store.recordstore import Record, RecordStore, RecordWriter
from . import deps as D
from .derive import (
    SIDECAR_FIELDS,
    STILL_EXTS,
    VIDEO_EXTS,
    apply_fields,
    derive,
    gather,
    has_inputs,
    live_partner,
    owners_by_name,
)
from .sidecars import sidecar_kind, sidecar_stems

BATCH = 64
_STEMS = "pipeline.stems"  # writer.scratch key: (this, folder) -> folder has stem keys
_LIVE_EXTS = frozenset(STILL_EXTS) | frozenset(VIDEO_EXTS)
MAX_DERIVES_PER_RUN = 8
"""A record re-derived this many times in one run is left clean as it is (cycle guard)."""


@dataclass
class DeriveReport:
    derived: int = 0
    changed: int = 0
    rounds: int = 0
    gave_up: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "op": "derive", **self.__dict__}


def _sidecar_fields_of(rec: Record) -> dict[str, Any]:
    return {k: rec[k] for k in SIDECAR_FIELDS if k in rec}


class AssetPipeline:
    """Registered on the RecordStore as a listener; also called by the scan for sidecars."""

    def __init__(self, env: Env, store: RecordStore) -> None:
        self.env = env
        self.store = store

    # -- inside the change's write transaction -------------------------------------------------

    def __call__(self, writer: RecordWriter, old: Record | None, new: Record | None) -> None:
        txn = writer.txn
        if new is None:
            if old is not None:
                node = D.record_node(old["uuid"])
                D.mark_dirty(txn, [node], "dependency deleted", include_sources=False)
                D.drop_node(txn, node)
            return
        if old is None and not self._may_have_inputs(writer, new):
            return  # the common case of a scan: a new file with nothing to derive from
        node = D.record_node(new["uuid"])
        moved = old is not None and (get_field(old, "path") != get_field(new, "path")
                                     or bool(old.get("is_trash")) != bool(new.get("is_trash")))
        if old is None or moved:
            if (old is not None and "sidecar" in old) or has_inputs(txn, self.store, new):
                D.mark_dirty(txn, [node], "added" if old is None else "moved")
            elif moved and D.needed_by(txn, node):
                D.mark_dirty(txn, [node], "moved", include_sources=False)
            return
        if (old.get("size"), old.get("mtime_ns")) != (new.get("size"), new.get("mtime_ns")):
            if D.needed_by(txn, node):
                D.mark_dirty(txn, [node], "dependency changed", include_sources=False)

    @staticmethod
    def _may_have_inputs(writer: RecordWriter, rec: Record) -> bool:
        """False only when `has_inputs` is surely False: not a Live-Photo extension and no
        sidecar stem key anywhere under the record's folder (one cursor look per folder and
        transaction, cached in the writer; `ingest_sidecar` drops the cached answer)."""
        path = get_field(rec, "path") or b""
        parent = path[:path.rfind(b"/") + 1]
        if len(parent) >= D.STEM_KEY_MAX:
            return True
        key = (_STEMS, parent)
        found = writer.scratch.get(key)
        if found is None:
            prefix = D.P_STEM + parent
            cur = writer.txn.cursor()
            found = bool(cur.set_range(prefix) and cur.key().startswith(prefix))
            writer.scratch[key] = found
        if found:
            return True
        name = path[len(parent):]
        dot = name.rfind(b".")
        if dot > 0 and name[dot + 1:].decode("ascii", "replace") in _LIVE_EXTS:
            return live_partner(writer.txn, writer.store, path) is not None
        return False

    @staticmethod
    def claims(name: bytes) -> bool:
        """Whether a scanned file is a sidecar (kept as a dependency, not as a record)."""
        return sidecar_kind(name) is not None

    def ingest_sidecar(self, w: RecordWriter, path: bytes, name: bytes, size: int,
                       mtime_ns: int, ino: int, legacy_uuid: str | None = None) -> str:
        """A sidecar file seen by a scan or upsert: keep its node, mark its owners when it is
        new or changed. A record left for it by an older version is removed. Returns the
        outcome for the scan's counters: "updated" or "unchanged"."""
        txn = w.txn
        w.scratch.pop((_STEMS, path[:path.rfind(b"/") + 1]), None)  # may gain a stem key
        if legacy_uuid is not None:
            rec = self.store.get(txn, legacy_uuid)
            if rec is not None and get_field(rec, "path") == path:
                w.delete(rec)
        kind = sidecar_kind(name) or "other"
        sid, changed = D.put_sidecar(txn, path, kind, sidecar_stems(name), size, mtime_ns, ino)
        if not changed:
            return "unchanged"
        owners = [D.record_node(u) for u in owners_by_name(txn, path)]
        D.mark_dirty(txn, [D.sidecar_node(sid), *owners], "sidecar changed")
        return "updated"

    def sidecar_gone(self, txn: lmdb.Transaction, path: bytes) -> bool:
        """Forget a sidecar that is no longer on disk; its owners become dirty."""
        sid = D.sidecar_id(path)
        if D.get_sidecar(txn, sid) is None:
            return False
        owners = [D.record_node(u) for u in owners_by_name(txn, path)]
        D.mark_dirty(txn, [D.sidecar_node(sid), *owners], "sidecar removed")
        D.drop_node(txn, D.sidecar_node(sid))
        D.drop_sidecar(txn, sid, sidecar_stems(path[path.rfind(b"/") + 1:]))
        return True

    # -- after the change ---------------------------------------------------------------------

    def sweep(self, prefixes: list[bytes]) -> int:
        """Forget sidecars under these paths (files or directories) that are gone."""
        gone: list[bytes] = []
        with self.env.read() as txn:
            for prefix in prefixes:
                candidates = D.sidecars_under(txn, dir_prefix(prefix))
                exact = D.get_sidecar(txn, D.sidecar_id(prefix))
                if exact is not None:
                    candidates.append((D.sidecar_id(prefix), prefix))
                for _sid, path in candidates:
                    try:
                        if stat.S_ISREG(os.lstat(path).st_mode):
                            continue
                    except OSError:
                        pass
                    gone.append(path)
        if not gone:
            return 0

        def fn(txn: lmdb.Transaction) -> int:
            return sum(self.sidecar_gone(txn, path) for path in gone)

        return self.env.write(fn)

    def process_dirty(self, *, limit_rounds: int = 1000) -> DeriveReport:
        """Re-derive every dirty record until none is left (or a cycle guard trips)."""
        report = DeriveReport()
        counts: dict[str, int] = {}
        while report.rounds < limit_rounds:
            with self.env.read() as txn:
                marks = D.dirty(txn, BATCH)
                if not marks:
                    break
                plans = []
                for uuid, mark in marks:
                    rec = self.store.get(txn, uuid)
                    plans.append((uuid, mark, gather(txn, self.store, rec) if rec else None))
            report.rounds += 1
            results = []
            for uuid, mark, plan in plans:
                counts[uuid] = counts.get(uuid, 0) + 1
                if plan is None or counts[uuid] > MAX_DERIVES_PER_RUN:
                    if plan is not None:
                        report.gave_up.append(uuid)
                    results.append((uuid, mark, None, None))
                    continue
                results.append((uuid, mark, plan, derive(plan)))
            report.derived += sum(1 for r in results if r[2] is not None)
            report.changed += self.env.write(lambda txn, rs=results: self._store(txn, rs))
        return report

    def _store(self, txn: lmdb.Transaction, results: list[Any]) -> int:
        from ..analyze import queue as analyze_queue

        w = self.store.writer(txn)
        changed = 0
        settled: list[tuple[str, Record, dict[str, Any]]] = []
        # Edges and marks of the whole batch first, then the writes and their new marks: a
        # record re-derived from a partner that changes later in this batch is marked again.
        for uuid, mark, plan, fields in results:
            cur = self.store.get(txn, uuid)
            if plan is None or cur is None:
                D.clear_dirty(txn, uuid, mark)
                continue
            if (get_field(cur, "path") != get_field(plan.rec, "path")
                    or bool(cur.get("is_trash")) != bool(plan.rec.get("is_trash"))):
                continue  # moved meanwhile: stays dirty, the next round sees the new place
            D.set_depends(txn, D.record_node(uuid), plan.depends_on())
            D.clear_dirty(txn, uuid, mark)
            if _sidecar_fields_of(cur) != fields:
                settled.append((uuid, cur, fields))
        for uuid, cur, fields in settled:
            cur = self.store.get(txn, uuid) or cur
            new = apply_fields(cur, fields)
            if cur.get("sidecar_text") != new.get("sidecar_text") and not new.get("is_trash"):
                new.pop("analysis", None)  # the analyzers read sidecar text: analyze again
                analyze_queue.enqueue(txn, uuid)
            w.put(new, cur)
            changed += 1
            D.mark_dirty(txn, [D.record_node(uuid)], "dependency re-derived",
                         include_sources=False)
        w.finish()
        return changed
