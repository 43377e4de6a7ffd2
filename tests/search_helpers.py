"""Helpers shared by the search tests: records written straight into a library, and the
brute-force oracle answer for a query."""

from __future__ import annotations

import os
import sys
from typing import Any

from kvmedia import Library
from kvmedia.index.docs import doc_from_record
from kvmedia.search import oracle
from kvmedia.search.query import apply_options, parse_query
from kvmedia.store.recordstore import RecordStore

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import gen_corpus  # noqa: E402


def put_paths(lib: Library, items: list[tuple[bytes, int, int]], first_ino: int = 1000
              ) -> list[str]:
    """Write records for (path, size, mtime_ns) items; returns their uuids."""
    recs = [gen_corpus.record_for(p, s, m, first_ino + i, b"/mnt/vol1")
            for i, (p, s, m) in enumerate(items)]

    def fn(txn: Any) -> None:
        w = lib.store.writer(txn)
        for rec in recs:
            old = RecordStore.get(txn, rec["uuid"])
            w.put(rec, old)
        w.finish()

    lib.env.write(fn)
    return [r["uuid"] for r in recs]


def delete_uuids(lib: Library, uuids: list[str]) -> None:
    def fn(txn: Any) -> None:
        w = lib.store.writer(txn)
        for u in uuids:
            rec = RecordStore.get(txn, u)
            if rec is not None:
                w.delete(rec)
        w.finish()

    lib.env.write(fn)


def oracle_answer(lib: Library, query: str, **opts: Any) -> tuple[int, list[str]]:
    q = apply_options(parse_query(query), **opts)
    with lib.env.read() as txn:
        rows = [doc_from_record(r) for r in RecordStore.iter_records(txn)]
    total, hits = oracle.scan(rows, q)
    end = None if q.limit is None else q.offset + q.limit
    return total, [row.uuid for _k, row in hits[q.offset:end]]


def assert_same(lib: Library, query: str, **opts: Any) -> Any:
    result = lib.search(query, **opts)
    total, uuids = oracle_answer(lib, query, **opts)
    got = [h["uuid"] for h in result.hits]
    assert (result.total, got) == (total, uuids), (query, opts, result.mode)
    return result
