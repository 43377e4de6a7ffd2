"""Secondary keys behind the `tag:` and `rating:` filters, kept in the record's transaction.

LMDB keys (this module owns the `stag:` prefix):

    stag:t:<norm(tag)>\\0<uuid>     -> b""   one per distinct normalised tag of a record
    stag:r:<rating + 1>:<uuid>      -> b""   rating -1 (rejected) .. 5 as one digit 0..6
    stag:built                      -> b"1"  set once every existing record has its keys

A record's tags are its `user_tags` (sidecars: XMP keywords, NFO genres) and its `tags`
(analyzers); `rating` comes from XMP. Tags are normalised like search words (analysis.norm:
case- and diacritic-insensitive) and cut to TAG_KEY_MAX bytes. The engine turns the filters
into the set of matching uuids once per query (`restrict`), which the fast path (planner)
and the slow path (predicate) both apply, so the oracle and the index keep agreeing.
"""

from __future__ import annotations

from typing import Any

import lmdb

from ..index import analysis as A
from .query import Cond, Query

P_TAG = b"stag:t:"
P_RATING = b"stag:r:"
K_BUILT = b"stag:built"
TAG_KEY_MAX = 300
_TAG_FIELDS = frozenset(("user_tags", "tags", "rating"))
RATINGS = range(-1, 6)


def norm_tag(tag: str) -> str:
    return " ".join(A.norm(str(tag)).split())


def record_tags(rec: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for field in ("user_tags", "tags"):
        value = rec.get(field)
        if isinstance(value, list):
            out.update(t for t in (norm_tag(v) for v in value if isinstance(v, str)) if t)
    return out


def record_rating(rec: dict[str, Any]) -> int | None:
    value = rec.get("rating")
    if isinstance(value, int) and not isinstance(value, bool) and value in RATINGS:
        return value
    return None


def _tag_prefix(tag: str) -> bytes:
    return P_TAG + tag.encode("utf-8", "surrogatepass")[:TAG_KEY_MAX] + b"\0"


def record_keys(rec: dict[str, Any] | None) -> set[bytes]:
    if rec is None:
        return set()
    uuid = rec["uuid"].encode("ascii")
    keys = {_tag_prefix(t) + uuid for t in record_tags(rec)}
    rating = record_rating(rec)
    if rating is not None:
        keys.add(P_RATING + b"%d:" % (rating + 1) + uuid)
    return keys


class TagKeysWriter:
    """The record-store listener: rewrite only the keys that differ."""

    def __call__(self, writer: Any, old: dict[str, Any] | None, new: dict[str, Any] | None
                 ) -> None:
        if old is None and new is not None and not _TAG_FIELDS.intersection(new):
            return  # a new record without tags or rating (every file of a first scan)
        before, after = record_keys(old), record_keys(new)
        if before == after:
            return
        txn = writer.txn
        for key in before - after:
            txn.delete(key)
        for key in after - before:
            txn.put(key, b"")


def ensure_built(env: Any) -> None:
    """Write the keys of records stored before this index existed (once per library)."""
    import orjson

    from ..store import keys as K

    with env.read() as txn:
        if txn.get(K_BUILT) is not None:
            return

    def fn(txn: lmdb.Transaction) -> None:
        cur = txn.cursor()
        puts = []
        if cur.set_range(K.P_UUID):
            for key, raw in cur:
                if not key.startswith(K.P_UUID):
                    break
                if b'"tags"' in raw or b'"user_tags"' in raw or b'"rating"' in raw:
                    puts.extend(record_keys(orjson.loads(raw)))
        for key in puts:
            txn.put(key, b"")
        txn.put(K_BUILT, b"1")

    env.write(fn)


def _uuids(txn: lmdb.Transaction, prefix: bytes) -> set[str]:
    out = set()
    cur = txn.cursor()
    if cur.set_range(prefix):
        for key in cur.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                break
            out.add(key[-36:].decode("ascii"))
    return out


def _passes(value: int, conds: list[Cond]) -> bool:
    return all((op == ">=" and value >= b) or (op == "<=" and value <= b)
               or (op == ">" and value > b) or (op == "<" and value < b) for op, b in conds)


def resolve(txn: lmdb.Transaction, q: Query) -> set[str] | None:
    """uuids passing the query's tag and rating filters; None when it has neither."""
    if not q.tags and not q.rating:
        return None
    result: set[str] | None = None
    for alternatives in q.tags:
        found: set[str] = set()
        for tag in alternatives:
            found |= _uuids(txn, _tag_prefix(tag))
        result = found if result is None else result & found
    if q.rating:
        found = set()
        for r in RATINGS:
            if _passes(r, q.rating):
                found |= _uuids(txn, P_RATING + b"%d:" % (r + 1))
        result = found if result is None else result & found
    return result if result is not None else set()
