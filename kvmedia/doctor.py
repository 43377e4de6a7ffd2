"""Full consistency check of the record store: every record has exactly its keys, no key
points at a record that does not claim it, per-type stats equal the records. With `repair`,
wrong keys are deleted, missing ones written and stats recomputed, in batched transactions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from .pathbytes import display, get_field
from .scan import P_DISPLACED
from .store import keys as K
from .store.recordstore import record_fid_key, record_path_value, record_type_keys

if TYPE_CHECKING:
    from .library import Library

OPS_PER_TXN = 20_000


def check_and_repair(lib: Library, *, repair: bool) -> dict[str, Any]:
    from .library import SCHEMA_VERSION

    puts: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    problems: list[str] = []
    stats: dict[bytes, list[int]] = defaultdict(lambda: [0, 0])
    records = 0

    def note(message: str) -> None:
        if len(problems) < 100:
            problems.append(message)

    with lib.env.read() as txn:
        fid_owner: dict[bytes, str] = {}
        for _key, raw in lib.store.iter_prefix(txn, K.P_UUID):
            rec = orjson.loads(raw)
            records += 1
            uuid = rec["uuid"]
            path = get_field(rec, "path") or b""
            pkey = K.path_key(path)
            want = record_path_value(rec)
            have = txn.get(pkey)
            if have != want and have is not None and have[:K.UUID_LEN] != uuid.encode() and (
                    txn.get(P_DISPLACED + uuid.encode()) is not None):
                pass  # displaced by another file; the next complete scan settles it
            elif have != want:
                note(f"path key of {uuid} ({display(path)}) {'wrong' if have else 'missing'}")
                puts.append((pkey, want))
            fid = record_fid_key(rec)
            if fid is not None:
                owner = txn.get(fid)
                if owner is None:
                    note(f"fid key of {uuid} missing")
                    puts.append((fid, uuid.encode()))
                    fid_owner[fid] = uuid
            for tkey in record_type_keys(rec):
                if txn.get(tkey) is None:
                    note(f"type key of {uuid} missing")
                    puts.append((tkey, b""))
            size = int(rec.get("size") or 0)
            for media_type in (rec.get("type") or "other", K.ALL):
                slot = stats[K.stats_key(media_type, bool(rec.get("is_trash")))]
                slot[0] += 1
                slot[1] += size

        def claims(uuid: str) -> dict[str, Any] | None:
            raw = txn.get(K.uuid_key(uuid))
            return orjson.loads(raw) if raw is not None else None

        for key, value in lib.store.iter_prefix(txn, K.P_PATH):
            pv = K.PathValue.unpack(value)
            rec = claims(pv.uuid)
            if rec is None or K.path_key(get_field(rec, "path") or b"") != key:
                note(f"orphan path key {display(key[len(K.P_PATH):])}")
                deletes.append(key)
        for key, value in lib.store.iter_prefix(txn, K.P_FID):
            rec = claims(value.decode("ascii", "replace"))
            if rec is None or (record_fid_key(rec) != key and fid_owner.get(key) is None):
                note(f"orphan fid key {key.decode('ascii', 'replace')}")
                deletes.append(key)
        for key, _ in lib.store.iter_prefix(txn, K.P_TYPE):
            try:
                uuid = K.uuid_from_type_key(key)
            except (UnicodeDecodeError, IndexError):
                uuid = ""
            rec = claims(uuid) if uuid else None
            if rec is None or key not in record_type_keys(rec):
                note(f"orphan type key for {uuid or '?'}")
                deletes.append(key)
        for key, value in lib.store.iter_prefix(txn, K.P_STATS):
            if key not in stats and K.unpack_stats(value) != (0, 0):
                note(f"stats {key.decode()} wrong")
                deletes.append(key)
        for key, (count, total) in stats.items():
            if K.unpack_stats(txn.get(key)) != (count, total):
                note(f"stats {key.decode()} wrong")
                puts.append((key, K.pack_stats(count, total)))
        schema_ok = txn.get(K.K_SCHEMA) == str(SCHEMA_VERSION).encode()

    fixed = len(puts) + len(deletes)
    if repair and (fixed or not schema_ok) and not lib.env.readonly:
        ops: list[tuple[bytes, bytes | None]] = [(k, None) for k in deletes] + list(puts)
        for start in range(0, len(ops), OPS_PER_TXN):
            chunk = ops[start:start + OPS_PER_TXN]

            def fn(txn: lmdb.Transaction, chunk: list[tuple[bytes, bytes | None]] = chunk) -> None:
                for key, value in chunk:
                    if value is None:
                        txn.delete(key)
                    else:
                        txn.put(key, value)

            lib.env.write(fn)
        lib.env.write(lambda txn: txn.put(K.K_SCHEMA, str(SCHEMA_VERSION).encode()))
    return {
        "type": "doctor",
        "records": records,
        "missing_keys": len(puts),
        "orphan_keys": len(deletes),
        "repaired": bool(repair and fixed),
        "clean": fixed == 0,
        "problems": problems,
    }
