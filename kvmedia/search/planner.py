"""One query against one segment, all at once with numpy: the fast twin of predicate.py.

A word becomes sets of doc ids, one per tier (predicate.py lists the tiers):
- a plain word is answered from the term dictionaries alone: exact term, prefix range, and
  every term containing it (one scan of the distinct term text) -> postings; folder terms give
  folder ids, expanded to their docs. Terms are substrings of words, so no text re-check.
- any other text (punctuation, spaces) is found by scanning the normalised name text and the
  folder text (each distinct folder once); text with "/" may also span folder + name, found as
  "folder ends with x" AND "name starts with y".
Sets are combined sparsely (sorted unique ids) or, when they are large, through one dense
uint8 tier array. Deleted and shadowed docs are dropped through the segment's live mask.
"""

from __future__ import annotations

import numpy as np
import xxhash

from ..index import analysis as A
from ..index.docs import TYPE_CODES
from ..index.segment import EMPTY, Segment
from .predicate import NO_MATCH
from .query import Query, Term

EMPTY_T = np.zeros(0, dtype=np.uint8)
WordMap = tuple[np.ndarray, np.ndarray]  # (doc ids ascending, tier per doc)


def combine(n: int, parts: list[tuple[np.ndarray, int]]) -> WordMap:
    """Union of tiered doc sets; a doc keeps its best (lowest) tier."""
    parts = [(d, t) for d, t in parts if len(d)]
    if not parts:
        return EMPTY, EMPTY_T
    total = sum(len(d) for d, _ in parts)
    if total * 8 > n:
        dense = np.full(n, NO_MATCH, dtype=np.uint8)
        for docs, tier in sorted(parts, key=lambda p: -p[1]):
            dense[docs] = tier
        docs = np.flatnonzero(dense != NO_MATCH)
        return docs, dense[docs]
    docs = np.concatenate([d.astype(np.int64, copy=False) for d, _ in parts])
    tiers = np.concatenate([np.full(len(d), t, dtype=np.uint8) for d, t in parts])
    order = np.lexsort((tiers, docs))
    docs, tiers = docs[order], tiers[order]
    first = np.ones(len(docs), dtype=bool)
    first[1:] = docs[1:] != docs[:-1]
    return docs[first], tiers[first]


def union_min(a: WordMap, b: WordMap, n: int) -> WordMap:
    return combine(n, [(a[0][a[1] == t], int(t)) for t in np.unique(a[1])]
                   + [(b[0][b[1] == t], int(t)) for t in np.unique(b[1])])


class SegmentPlan:
    """Evaluate queries on `seg` restricted to `live` docs (None: all docs are live)."""

    def __init__(self, seg: Segment, live: np.ndarray | None) -> None:
        self.seg = seg
        self.live = live
        self._words: dict[tuple[str, str, bool], WordMap] = {}
        self.strategies: dict[str, str] = {}

    def _live(self, wm: WordMap) -> WordMap:
        if self.live is None or not len(wm[0]):
            return wm
        keep = self.live[wm[0]]
        return wm[0][keep], wm[1][keep]

    def all_live(self) -> np.ndarray:
        if self.live is None:
            return np.arange(self.seg.n, dtype=np.int64)
        return np.flatnonzero(self.live)

    def _dirs_to_docs(self, dir_ids: np.ndarray) -> np.ndarray:
        return self.seg.docs_of_dirs(np.unique(dir_ids)) if len(dir_ids) else EMPTY

    def word(self, term: Term, fuzzy: bool) -> WordMap:
        key = (term.text, term.field, fuzzy)
        if key not in self._words:
            self._words[key] = self._live(self._word(term, fuzzy))
        return self._words[key]

    def _word(self, term: Term, fuzzy: bool) -> WordMap:
        seg = self.seg
        q = term.text
        qb = A.encode(q)
        any_field = term.field == "any"
        parts: list[tuple[np.ndarray, int]] = []
        names, dirs = seg.names, seg.dirs
        if term.plain:
            self.strategies[q] = "dictionary"
            i = names.find(qb)
            if i >= 0:
                parts.append((names.postings_range(i, i + 1), 1))
            lo, hi = names.prefix_range(qb)
            parts.append((names.postings_range(lo, hi), 2))
            parts.append((names.postings(names.containing(qb)), 3))
            if any_field:
                j = dirs.find(qb)
                if j >= 0:
                    parts.append((self._dirs_to_docs(dirs.postings_range(j, j + 1)), 4))
                lo, hi = dirs.prefix_range(qb)
                parts.append((self._dirs_to_docs(dirs.postings_range(lo, hi)), 5))
                parts.append((self._dirs_to_docs(dirs.postings(dirs.containing(qb))), 6))
        else:
            self.strategies[q] = "text-scan"
            parts.append((seg.name_text_hits(qb), 3))
            if any_field:
                parts.append((self._dirs_to_docs(seg.dir_text_hits(qb)), 6))
                if "/" in q:
                    parts.append((self._span(q), 6))
        if fuzzy and term.plain and len(q) >= A.FUZZY_MIN_LEN:
            self.strategies[q] += "+fuzzy"
            parts.append((names.postings(seg.fuzzy_ids(names, q)), 7))
            if any_field:
                parts.append((self._dirs_to_docs(dirs.postings(seg.fuzzy_ids(dirs, q))), 8))
        return combine(seg.n, parts)

    def _span(self, q: str) -> np.ndarray:
        """Docs whose folder ends with x and name starts with y, for each q = x + "/" + y."""
        from ..index import format as F

        seg = self.seg
        out = []
        for s, ch in enumerate(q):
            if ch != "/":
                continue
            x, y = A.encode(q[:s]), A.encode(q[s + 1:])
            if x:
                hits = seg.file.find_all(F.DIR_TEXT, x + b"\n")
                ends = np.asarray(hits, dtype=np.uint64) + np.uint64(len(x) + 1)
                dir_ids = np.searchsorted(seg.dir_off, ends, side="left")
                docs = self._dirs_to_docs(dir_ids - 1) if len(hits) else EMPTY
            else:
                docs = np.arange(seg.n, dtype=np.int64)
            if y and len(docs):
                pos = np.asarray(seg.file.find_all(F.NAME_TEXT, y), dtype=np.uint64)
                ids = np.searchsorted(seg.name_off, pos, side="right") - 1
                starts = ids[seg.name_off[ids] == pos] if len(pos) else EMPTY
                docs = np.intersect1d(docs, starts)
            out.append(docs)
        return np.unique(np.concatenate(out)) if out else EMPTY

    # -- the whole query --------------------------------------------------------------------

    def evaluate(self, q: Query, fuzzy_words: set[str]) -> WordMap:
        n = self.seg.n
        if not q.groups:
            docs = self.all_live()
            tiers = np.zeros(len(docs), dtype=np.uint8)
        else:
            docs = tiers = None
            for group in q.groups:
                gm = self.word(group[0], group[0].fuzzy or group[0].text in fuzzy_words)
                for term in group[1:]:
                    gm = union_min(gm, self.word(term, term.fuzzy or term.text in fuzzy_words), n)
                if docs is None:
                    docs, tiers = gm
                else:
                    docs, ia, ib = np.intersect1d(docs, gm[0], assume_unique=True,
                                                  return_indices=True)
                    tiers = np.maximum(tiers[ia], gm[1][ib])
                if not len(docs):
                    break
        assert docs is not None and tiers is not None
        for term in q.excludes:
            if not len(docs):
                break
            keep = np.isin(docs, self.word(term, False)[0], invert=True, assume_unique=True)
            docs, tiers = docs[keep], tiers[keep]
        if len(docs):
            keep = self.filter_mask(docs, q)
            docs, tiers = docs[keep], tiers[keep]
        exact = q.exact_name()
        if exact is not None and len(docs):
            tiers = tiers.copy()
            cand = np.flatnonzero(self.seg.stem[docs] == xxhash.xxh32_intdigest(A.encode(exact)))
            for i in cand:
                if A.stem(self.seg.nname(int(docs[i]))) == exact:
                    tiers[i] = 0
        return docs, tiers

    def filter_mask(self, docs: np.ndarray, q: Query) -> np.ndarray:
        seg = self.seg
        keep = np.ones(len(docs), dtype=bool)
        if q.restrict is not None:
            keep &= np.isin(docs, seg.lookup(sorted(q.restrict)))
        if q.trash is not None or q.types is not None:
            meta = seg.meta[docs]
            if q.trash is not None:
                keep &= ((meta >> 3) & 1) == int(q.trash)
            if q.types is not None:
                keep &= np.isin(meta & 7, [TYPE_CODES[t] for t in q.types])
        if q.exts is not None:
            ids = [i for i, e in enumerate(seg.exts) if e in q.exts]
            keep &= np.isin(seg.ext[docs], ids)
        if q.paths is not None:
            folder = seg.doc_dir[docs]
            inside = np.zeros(len(docs), dtype=bool)
            for p in q.paths:
                if p == b"/":
                    inside[:] = True
                    break
                exact = seg.dir_id(p)
                if exact >= 0:
                    inside |= folder == exact
                lo, hi = seg.dir_prefix_range(p + b"/")
                if hi > lo:
                    inside |= (folder >= lo) & (folder < hi)
            keep &= inside
        for name, conds in q.ranges.items():
            if name in ("width", "height"):
                values = getattr(seg, name)[docs].astype(np.float64)
                values[values == 0] = np.nan
            else:
                values = getattr(seg, name)[docs]
            if name == "dur":
                keep &= ~np.isnan(values)
            for op, bound in conds:
                if op == ">=":
                    keep &= values >= bound
                elif op == "<=":
                    keep &= values <= bound
                elif op == ">":
                    keep &= values > bound
                else:
                    keep &= values < bound
        return keep

    # -- ordering ---------------------------------------------------------------------------

    def top(self, docs: np.ndarray, tiers: np.ndarray, sort: str, k: int) -> np.ndarray:
        """Positions (into docs) of this segment's best `k` under `sort`, best first. For
        size sorts, all docs tied with the k-th are included (ties order by uuid)."""
        m = len(docs)
        if m == 0 or k <= 0:
            return EMPTY
        seg = self.seg
        desc = sort.endswith("desc")
        if sort == "relevance":
            key = (tiers.astype(np.int64) << 32) | docs
        elif sort in ("mod", "moddesc"):
            order = np.lexsort((docs, seg.mtime[docs]))
            return order[::-1][:k] if desc else order[:k]
        elif sort in ("name", "namedesc"):
            key = seg.name_rank[docs].astype(np.int64)
            if desc:
                key = -key
        else:
            sizes = seg.size[docs]
            if m <= k:
                return np.arange(m)
            kth = np.partition(-sizes if desc else sizes, k - 1)[k - 1]
            bound = -kth if desc else kth
            return np.flatnonzero(sizes >= bound) if desc else np.flatnonzero(sizes <= bound)
        if m > k:
            part = np.argpartition(key, k - 1)[:k]
            return part[np.argsort(key[part], kind="stable")]
        return np.argsort(key, kind="stable")
