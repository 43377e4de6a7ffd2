"""The query as a predicate on one document: the slow path, used for the LMDB delta, the
brute-force oracle and the fallback scan. The planner answers the same question for a whole
segment at once; tests hold the two equal.

Tiers (lower ranks first) of a word in a document:

    0 the whole query equals the name without extension      (query level, see `exact_name`)
    1 exact term of the name     2 prefix of a name term     3 substring of the name
    4 exact term of the folder   5 prefix of a folder term   6 substring of the folder path
    7 one edit from a name term  8 one edit from a folder term

A document's tier is the worst over the AND groups of the best over each group's alternatives.
"""

from __future__ import annotations

import math
from typing import Any

from ..index import analysis as A
from ..index.docs import TYPE_CODES, DocRow
from ..pathbytes import is_under
from ..store.keys import name_sort_key
from .query import Cond, Query, Term

NO_MATCH = 255
TYPE_OF_CODE = {v: k for k, v in TYPE_CODES.items()}


class DocView:
    """A DocRow with its analysis done once (terms are computed on first use)."""

    __slots__ = ("row", "text", "_name_terms", "_dir_terms")

    def __init__(self, row: DocRow) -> None:
        self.row = row
        self.text = row.text
        self._name_terms: set[str] | None = None
        self._dir_terms: set[str] | None = None

    @property
    def name_terms(self) -> set[str]:
        if self._name_terms is None:
            self._name_terms = A.terms(A.decode(self.row.name), self.row.nname)
        return self._name_terms

    @property
    def dir_terms(self) -> set[str]:
        if self._dir_terms is None:
            self._dir_terms = A.terms(A.decode(self.row.dir), self.row.ndir)
        return self._dir_terms

    def contains(self, term: Term) -> bool:
        return term.text in (self.row.nname if term.field == "name" else self.text)


def word_tier(view: DocView, term: Term, fuzzy: bool) -> int:
    q = term.text
    row = view.row
    any_field = term.field == "any"
    if term.plain:
        if q in row.nname:
            names = view.name_terms
            if q in names:
                return 1
            return 2 if any(t.startswith(q) for t in names) else 3
        if any_field and q in row.ndir:
            dirs = view.dir_terms
            if q in dirs:
                return 4
            return 5 if any(t.startswith(q) for t in dirs) else 6
    else:
        if q in row.nname:
            return 3
        if any_field and q in view.text:
            return 6
    if fuzzy and term.plain and len(q) >= A.FUZZY_MIN_LEN:
        if any(A.within_one_edit(q, t) for t in view.name_terms):
            return 7
        if any_field and any(A.within_one_edit(q, t) for t in view.dir_terms):
            return 8
    return NO_MATCH


def text_tier(view: DocView, q: Query, fuzzy_words: set[str]) -> int:
    """Tier of the document for the query's text part; NO_MATCH when it does not match."""
    for term in q.excludes:
        if view.contains(term):
            return NO_MATCH
    worst = 0
    for group in q.groups:
        best = min(word_tier(view, t, t.fuzzy or t.text in fuzzy_words) for t in group)
        if best == NO_MATCH:
            return NO_MATCH
        worst = max(worst, best)
    exact = q.exact_name()
    if exact is not None and A.stem(view.row.nname) == exact:
        return 0
    return worst


def _check(value: float, conds: list[Cond]) -> bool:
    for op, bound in conds:
        if not (
            (op == ">=" and value >= bound) or (op == "<=" and value <= bound)
            or (op == ">" and value > bound) or (op == "<" and value < bound)
        ):
            return False
    return True


def passes_filters(row: DocRow, q: Query) -> bool:
    if q.trash is not None and row.trash != q.trash:
        return False
    if q.restrict is not None and row.uuid not in q.restrict:
        return False
    if q.types is not None and TYPE_OF_CODE.get(row.type_code) not in q.types:
        return False
    if q.exts is not None and row.ext not in q.exts:
        return False
    if q.paths is not None:
        folder = row.dir or b"/"
        if not any(is_under(folder, p) for p in q.paths):
            return False
    for name, conds in q.ranges.items():
        value = range_value(row, name)
        if math.isnan(value) or not _check(value, conds):
            return False
    return True


def range_value(row: DocRow, name: str) -> float:
    if name == "size":
        return row.size
    if name == "mtime":
        return row.mtime_ns
    if name == "dur":
        return row.dur
    value = row.width if name == "width" else row.height
    return value if value > 0 else math.nan  # 0 means "not probed"


def sort_key(row: DocRow, sort: str, tier: int) -> tuple[Any, ...]:
    """Global order of results; `*desc` sorts are applied as reverse=True of the asc key."""
    if sort == "relevance":
        return (tier, -row.mtime_ns, row.uuid)
    if sort in ("mod", "moddesc"):
        return (row.mtime_ns, row.uuid)
    if sort in ("size", "sizedesc"):
        return (row.size, row.uuid)
    return (name_sort_key(row.name), row.uuid)
