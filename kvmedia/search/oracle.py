"""Brute-force search: every document checked with the predicate. It is the fallback when the
index is missing or damaged, and the oracle the index is tested against."""

from __future__ import annotations

from collections.abc import Iterable

from ..index.docs import DocRow
from .predicate import NO_MATCH, DocView, passes_filters, sort_key, text_tier
from .query import Query


def fuzzy_words(views: list[DocView], q: Query) -> set[str]:
    """Plain words that match nothing anywhere (before filters): they are matched fuzzily."""
    out = set()
    for group in q.groups:
        for term in group:
            if term.plain and not term.fuzzy and not any(v.contains(term) for v in views):
                out.add(term.text)
    return out


def scan(rows: Iterable[DocRow], q: Query) -> tuple[int, list[tuple[tuple, DocRow]]]:
    """(total, [(sort key, row)] for the whole match set, in result order)."""
    views = [DocView(r) for r in rows]
    fuzzy = fuzzy_words(views, q) if q.groups else set()
    ids = {u: i for i, u in enumerate(q.ids)} if q.ids is not None else None
    sort = q.effective_sort()
    hits = []
    for view in views:
        row = view.row
        if ids is not None and row.uuid not in ids:
            continue
        if not passes_filters(row, q):
            continue
        tier = text_tier(view, q, fuzzy) if q.has_text else 0
        if tier == NO_MATCH:
            continue
        key = (ids[row.uuid],) if ids is not None else sort_key(row, sort, tier)
        hits.append((key, row))
    hits.sort(key=lambda h: h[0], reverse=ids is None and sort.endswith("desc"))
    return len(hits), hits
