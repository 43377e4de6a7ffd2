"""The analysis cache: analyzer output by content, in LMDB (`sem:acache:`, see vectors/keys).

Key: content hash ("xxh3_128:<hex>", hashing.py) + analyzer cache name + version. Nothing
but a new analyzer version invalidates an entry; entries are kept when records go away, so a
file that comes back (restored backup, other disk, rebuilt library) is never re-analyzed.
"""

from __future__ import annotations

from typing import Any

import lmdb
import orjson

from ..vectors import keys as V


def get(txn: lmdb.Transaction, content_hash: str, cache_name: str, version: int
        ) -> dict[str, Any] | None:
    raw = txn.get(V.acache_key(content_hash, cache_name, version))
    return orjson.loads(raw) if raw is not None else None


def put(txn: lmdb.Transaction, content_hash: str, cache_name: str, version: int,
        output: dict[str, Any]) -> None:
    txn.put(V.acache_key(content_hash, cache_name, version), orjson.dumps(output))


def count(txn: lmdb.Transaction) -> int:
    n = 0
    cur = txn.cursor()
    if cur.set_range(V.P_ACACHE):
        for key in cur.iternext(values=False):
            if not key.startswith(V.P_ACACHE):
                break
            n += 1
    return n
