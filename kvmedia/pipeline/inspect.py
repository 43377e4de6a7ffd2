"""`kvmedia deps ID`: one record's place in the dependency graph, both directions."""

from __future__ import annotations

from typing import Any

import lmdb

from ..pathbytes import get_field, set_field
from ..store.recordstore import Record, RecordStore
from . import deps as D


def _node_json(txn: lmdb.Transaction, store: RecordStore, node: str) -> dict[str, Any]:
    uuid = D.node_uuid(node)
    out: dict[str, Any] = {"node": node}
    if uuid is not None:
        rec = store.get(txn, uuid)
        out.update(kind="record", uuid=uuid, exists=rec is not None)
        if rec is not None:
            set_field(out, "path", get_field(rec, "path"))
            out["media_type"] = rec.get("type")
        return out
    side = D.get_sidecar(txn, node[2:])
    out.update(kind="sidecar", exists=side is not None)
    if side is not None:
        set_field(out, "path", get_field(side, "path"))
        out["sidecar_kind"] = side.get("kind")
        out["size"] = side.get("size")
    return out


def describe_deps(txn: lmdb.Transaction, store: RecordStore, rec: Record) -> dict[str, Any]:
    node = D.record_node(rec["uuid"])
    out: dict[str, Any] = {"type": "deps", "uuid": rec["uuid"]}
    set_field(out, "path", get_field(rec, "path"))
    out["depends_on"] = [_node_json(txn, store, n) for n in D.depends_on(txn, node)]
    out["needed_by"] = [_node_json(txn, store, n) for n in D.needed_by(txn, node)]
    out["dirty"] = D.is_dirty(txn, rec["uuid"])
    stamp = rec.get("sidecar")
    out["sidecar_version"] = stamp.get("v") if isinstance(stamp, dict) else None
    return out
