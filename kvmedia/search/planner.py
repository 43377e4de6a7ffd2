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
from ..index.segment import EMPTY, Segment, TermDict, gather, sorted_unique
from .predicate import NO_MATCH
from .query import Query, Term

EMPTY_T = np.zeros(0, dtype=np.uint8)
WordMap = tuple[np.ndarray, np.ndarray]  # (doc ids ascending, tier per doc)
AnyMap = WordMap | np.ndarray
"""A word's (or a query's) matches: sparse, or dense — a uint8 tier for every doc of the
segment, NO_MATCH where it does not match. Words matching a large share of the docs come
back dense, and a query with a dense part is evaluated densely to the end: no array of a
million doc ids is built only to be filtered and ranked."""


def map_size(m: AnyMap) -> int:
    return int(np.count_nonzero(m != NO_MATCH)) if isinstance(m, np.ndarray) else len(m[0])


def to_dense(m: AnyMap, n: int) -> np.ndarray:
    if isinstance(m, np.ndarray):
        return m
    dense = np.full(n, NO_MATCH, dtype=np.uint8)
    dense[m[0]] = m[1]
    return dense


Tiers = int | np.ndarray


def combine(n: int, parts: list[tuple[np.ndarray, Tiers]]) -> WordMap:
    """Union of tiered doc sets; a doc keeps its best (lowest) tier. A part's tier is one
    number, or one per doc (then its docs must be unique, in any order, and parts with
    per-doc tiers must not overlap in tier range with parts they share docs with: name
    tiers 1-3, folder 4-6).

    Large unions go through one dense tier array (a fixed ~1 ms at a million docs); small
    ones sort (doc << 4 | tier) keys (~25 ns per element), whichever is cheaper."""
    parts = [(d, t) for d, t in parts if len(d)]
    if not parts:
        return EMPTY, EMPTY_T
    if len(parts) == 1 and not isinstance(parts[0][1], int):
        docs, tiers = parts[0][0].astype(np.int64, copy=False), parts[0][1].astype(np.uint8)
        if len(docs) > 1 and not (docs[1:] > docs[:-1]).all():
            keys = np.sort((docs << 4) | tiers)  # a sort of keys: ~3x faster than argsort
            docs, tiers = keys >> 4, (keys & 15).astype(np.uint8)
        return docs, tiers
    if len(parts) == 1:
        docs = sorted_unique(parts[0][0].astype(np.int64))
        return docs, np.full(len(docs), parts[0][1], dtype=np.uint8)
    total = sum(len(d) for d, _ in parts)
    if total * 16 > n:
        dense = np.full(n, NO_MATCH, dtype=np.uint8)
        for docs, tier in sorted(parts, key=lambda p: -int(np.min(p[1]))):
            dense[docs] = tier
        docs = np.flatnonzero(dense != NO_MATCH)
        return docs, dense[docs]
    return best_tier_per_doc(np.concatenate(
        [(d.astype(np.int64) << 4) | t for d, t in parts]))


def best_tier_per_doc(keys: np.ndarray) -> WordMap:
    """(doc << 4 | tier) keys, any order and repeats -> docs ascending, each with its lowest
    tier: one sort, then the first key of each doc."""
    keys = np.sort(keys)
    docs = keys >> 4
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(docs[1:], docs[:-1], out=first[1:])
    return docs[first], (keys[first] & 15).astype(np.uint8)


WORD_CACHE_MIN_DOCS = 4096
"""A word's map goes into the segment's cache when it matches at least this many docs (or
is dense): below that it is built in well under a millisecond."""

DENSE_FOLDER_DOCS = 16
"""A word's folder matches become one tier a doc when their docs are more than 1/16 of the
segment (sorting that many doc ids costs more than a pass over all docs)."""

FIRST_CHUNK = 1 << 16
"""Positions looked at per step when collecting a tier's first docs (most tiers that fill a
page fill it within the first chunk)."""


def first_by_tier(tiers: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best `k` entries of a tier array (NO_MATCH = none), best first: all
    of the lowest tier in position order (docs ascend by recency), then the next tier...
    Each tier is found by a min over the tiers still above it and read chunk by chunk only
    as far as the page needs: ~0.1 ms at a million docs, where a histogram (bincount) and a
    flatnonzero per tier cost ~2 ms."""
    out: list[np.ndarray] = []
    need = k
    n = len(tiers)
    floor = -1
    while need > 0 and n:
        above = tiers > floor if floor >= 0 else None
        t = int(tiers.min(where=above, initial=NO_MATCH)) if above is not None else int(
            tiers.min())
        if t >= NO_MATCH:
            break
        for lo in range(0, n, FIRST_CHUNK):
            pos = np.flatnonzero(tiers[lo:lo + FIRST_CHUNK] == t)[:need]
            if len(pos):
                out.append(pos + lo)
                need -= len(pos)
                if need <= 0:
                    break
        floor = t
    return np.concatenate(out).astype(np.int64) if out else EMPTY


def tiered_postings(d: TermDict, ids: np.ndarray, exact: int, lo: int, hi: int, base: int,
                    n_targets: int) -> WordMap | np.ndarray:
    """Targets of the terms `ids` (sorted unique) with their best tier: `base` for the
    exact term, base + 1 for a term in the prefix range [lo, hi), base + 2 for the rest.
    Sparse (targets ascending, tiers) or, when the postings are many, a dense tier per
    target (NO_MATCH where none), which avoids sorting millions of entries."""
    if not len(ids):
        return EMPTY, EMPTY_T
    lens = d.post_off[ids + 1].astype(np.int64) - d.post_off[ids].astype(np.int64)
    many = int(lens.sum()) * 12 > n_targets  # dense costs ~3 ms a million; sorting ~40 ns each
    if len(ids) == 1 and not many:
        tier = base if ids[0] == exact else base + 1 if lo <= ids[0] < hi else base + 2
        targets = d.postings_range(int(ids[0]), int(ids[0]) + 1).astype(np.int64)
        return targets, np.full(len(targets), tier, dtype=np.uint8)
    in_prefix = (ids >= lo) & (ids < hi)
    is_exact = ids == exact
    groups = [(ids[~in_prefix & ~is_exact], base + 2), (ids[in_prefix & ~is_exact], base + 1),
              (ids[is_exact], base)]
    if many:
        dense = np.full(n_targets, NO_MATCH, dtype=np.uint8)
        for g, tier in groups:  # worst tier first: better ones overwrite it
            if len(g):
                dense[gather(d.post_off, d.post, g)] = tier
        return dense
    return best_tier_per_doc(np.concatenate(
        [(gather(d.post_off, d.post, g).astype(np.int64) << 4) | tier
         for g, tier in groups if len(g)]))


def member_of(codes: np.ndarray, wanted: list[int], n_codes: int) -> np.ndarray:
    """`np.isin(codes, wanted)` for small codes (types, extensions) through a table of
    n_codes flags: one gather, where np.isin sorts (~0.25 ms for 30,000 docs)."""
    table = np.zeros(max(n_codes, int(codes.max(initial=0)) + 1), dtype=bool)
    table[wanted] = True
    return table[codes]


def sorted_intersect(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (ia, ib) of the common values of two sorted unique id arrays: binary
    searches of the smaller in the larger (np.intersect1d sorts both again)."""
    if not len(a) or not len(b):
        return EMPTY, EMPTY
    if len(a) > len(b):
        ib, ia = sorted_intersect(b, a)
        return ia, ib
    pos = np.searchsorted(b, a)
    np.minimum(pos, len(b) - 1, out=pos)
    hit = np.flatnonzero(b[pos] == a)
    return hit, pos[hit]


def union_min(a: AnyMap, b: AnyMap, n: int) -> AnyMap:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(to_dense(a, n), to_dense(b, n))
    return combine(n, [(a[0][a[1] == t], int(t)) for t in np.unique(a[1])]
                   + [(b[0][b[1] == t], int(t)) for t in np.unique(b[1])])


class SegmentPlan:
    """Evaluate queries on `seg` restricted to `live` docs (None: all docs are live)."""

    def __init__(self, seg: Segment, live: np.ndarray | None) -> None:
        self.seg = seg
        self.live = live
        self._words: dict[tuple[str, str, bool], AnyMap] = {}
        self.strategies: dict[str, str] = {}

    def _live(self, wm: AnyMap) -> AnyMap:
        if isinstance(wm, np.ndarray):
            if self.live is not None:
                wm[~self.live] = NO_MATCH  # a fresh array from _word: safe to change
            return wm
        if self.live is None or not len(wm[0]):
            return wm
        keep = self.live[wm[0]]
        return wm[0][keep], wm[1][keep]

    def all_live(self) -> np.ndarray:
        if self.live is None:
            return np.arange(self.seg.n, dtype=np.int64)
        return np.flatnonzero(self.live)

    def _dirs_to_docs(self, dir_ids: np.ndarray) -> np.ndarray:
        return self.seg.docs_of_dirs(sorted_unique(dir_ids)) if len(dir_ids) else EMPTY

    def word(self, term: Term, fuzzy: bool) -> AnyMap:
        key = (term.text, term.field, fuzzy)
        if key not in self._words:
            self._words[key] = self._live(self._cached_word(term, fuzzy))
        return self._words[key]

    def _cached_word(self, term: Term, fuzzy: bool) -> AnyMap:
        """`_word`, through the segment's cache for words matching many docs (their maps
        cost milliseconds to build and are what every search-as-you-type starts with). The
        cached map is the segment's, before deletes: a copy gets the live mask."""
        key = ("word", term.text, term.field, fuzzy)
        hit = self.seg.cache.get(key)
        if hit is not None:
            self.strategies.setdefault(term.text, "cache")
            return hit[0].copy() if len(hit) == 1 else (hit[0].astype(np.int64), hit[1])
        wm = self._word(term, fuzzy)
        if isinstance(wm, np.ndarray):
            self.seg.cache.put(key, (wm.copy(),))
        elif len(wm[0]) >= WORD_CACHE_MIN_DOCS:
            self.seg.cache.put(key, (wm[0].astype(np.uint32), wm[1].copy()))
        return wm

    def _word(self, term: Term, fuzzy: bool) -> AnyMap:
        seg = self.seg
        q = term.text
        qb = A.encode(q)
        any_field = term.field == "any"
        parts: list[tuple[np.ndarray, Tiers]] = []
        names, dirs = seg.names, seg.dirs
        if term.plain:
            # The terms containing q include the exact term and the prefix range, so one
            # pass over their postings gives every tier (1 exact, 2 prefix, 3 substring).
            self.strategies[q] = "dictionary"
            dense_parts: list[np.ndarray] = []
            named = tiered_postings(names, names.containing(qb), names.find(qb),
                                    *names.prefix_range(qb), 1, seg.n)
            (dense_parts if isinstance(named, np.ndarray) else parts).append(named)
            if any_field:
                folder_map = tiered_postings(dirs, dirs.containing(qb), dirs.find(qb),
                                             *dirs.prefix_range(qb), 4, seg.n_dirs)
                if isinstance(folder_map, np.ndarray):
                    dense_parts.append(np.take(folder_map, seg.doc_dir))  # folder tier of each doc
                elif len(folder_map[0]):
                    folders, ftiers = folder_map
                    starts = seg.dirdoc_off[folders].astype(np.int64)
                    lens = seg.dirdoc_off[folders + 1].astype(np.int64) - starts
                    if int(lens.sum()) * DENSE_FOLDER_DOCS > seg.n:
                        # Few folders, many docs (`ph`: every Photos folder): a tier per
                        # folder spread to every doc (~1 ms at a million) beats sorting
                        # their docs (~25 ms for 400,000).
                        per_dir = np.full(seg.n_dirs, NO_MATCH, dtype=np.uint8)
                        per_dir[folders] = ftiers
                        dense_parts.append(np.take(per_dir, seg.doc_dir))
                    else:
                        # A doc is in one folder: unique docs, sorted by combine if need be.
                        parts.append((seg.docs_of_dirs(folders).astype(np.int64),
                                      np.repeat(ftiers, lens)))
            if dense_parts:
                return self._dense_union(dense_parts, parts, fuzzy, term)
        else:
            words = [A.encode(w) for w in A.words(q)]
            name_hits, how = seg.text_hits(qb, words, False)
            parts.append((name_hits, 3))
            if any_field:
                dir_hits, dir_how = seg.text_hits(qb, words, True)
                parts.append((self._dirs_to_docs(dir_hits), 6))
                how = how if how == dir_how else f"{how}/{dir_how}"
                if "/" in q:
                    parts.append((self._span(q), 6))
            self.strategies[q] = how
        if fuzzy and term.plain and len(q) >= A.FUZZY_MIN_LEN:
            parts += self._fuzzy_parts(term)
        return combine(seg.n, parts)

    def _fuzzy_parts(self, term: Term) -> list[tuple[np.ndarray, Tiers]]:
        seg, q = self.seg, term.text
        self.strategies[q] += "+fuzzy"
        parts: list[tuple[np.ndarray, Tiers]] = [
            (seg.names.postings(seg.fuzzy_ids(seg.names, q)), 7)]
        if term.field == "any":
            parts.append((self._dirs_to_docs(seg.dirs.postings(seg.fuzzy_ids(seg.dirs, q))), 8))
        return parts

    def _dense_union(self, dense_parts: list[np.ndarray], parts: list[tuple[np.ndarray, Tiers]],
                     fuzzy: bool, term: Term) -> np.ndarray:
        """The word's map when some part came back dense (a word matching most docs)."""
        dense = dense_parts[0].copy()
        for other in dense_parts[1:]:
            np.minimum(dense, other, out=dense)
        if fuzzy and term.plain and len(term.text) >= A.FUZZY_MIN_LEN:
            parts = parts + self._fuzzy_parts(term)
        for docs, tier in parts:  # docs unique within a part: plain fancy indexing works
            if len(docs):
                dense[docs] = np.minimum(dense[docs], tier)
        return dense

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
        return sorted_unique(np.concatenate(out)) if out else EMPTY

    # -- the whole query --------------------------------------------------------------------

    def evaluate(self, q: Query, fuzzy_words: set[str]) -> AnyMap:
        n = self.seg.n
        maps: list[AnyMap] = []
        for group in q.groups:
            gm = self.word(group[0], group[0].fuzzy or group[0].text in fuzzy_words)
            for term in group[1:]:
                gm = union_min(gm, self.word(term, term.fuzzy or term.text in fuzzy_words), n)
            maps.append(gm)
            if not map_size(gm):
                return EMPTY, EMPTY_T
        if not maps or any(isinstance(m, np.ndarray) for m in maps):
            return self._evaluate_dense(q, maps)
        docs, tiers = maps[0]
        for gm in maps[1:]:
            ia, ib = sorted_intersect(docs, gm[0])
            docs, tiers = docs[ia], np.maximum(tiers[ia], gm[1][ib])
            if not len(docs):
                break
        for term in q.excludes:
            if not len(docs):
                break
            em = self.word(term, False)
            keep = (to_dense(em, n)[docs] == NO_MATCH) if isinstance(em, np.ndarray) else (
                np.ones(len(docs), dtype=bool))
            if not isinstance(em, np.ndarray):
                keep[sorted_intersect(docs, em[0])[0]] = False
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

    def _evaluate_dense(self, q: Query, maps: list[AnyMap]) -> np.ndarray:
        """`evaluate` over whole columns: AND is a max of tier arrays, filters are masks."""
        n = self.seg.n
        if maps:
            dense = to_dense(maps[0], n).copy()
            for m in maps[1:]:
                np.maximum(dense, to_dense(m, n), out=dense)
        else:
            dense = np.zeros(n, dtype=np.uint8)
            if self.live is not None:
                dense[~self.live] = NO_MATCH
        for term in q.excludes:
            em = self.word(term, False)
            if isinstance(em, np.ndarray):
                dense[em != NO_MATCH] = NO_MATCH
            else:
                dense[em[0]] = NO_MATCH
        keep = self.filter_mask(None, q)
        if keep is not None:
            dense[~keep] = NO_MATCH
        exact = q.exact_name()
        if exact is not None:
            cand = np.flatnonzero(self.seg.stem == xxhash.xxh32_intdigest(A.encode(exact)))
            for doc in cand[dense[cand] != NO_MATCH].tolist():
                if A.stem(self.seg.nname(doc)) == exact:
                    dense[doc] = 0
        return dense

    def filter_mask(self, docs: np.ndarray | None, q: Query) -> np.ndarray | None:
        """Which of `docs` pass the query's filters; with docs None, a mask over every doc
        of the segment (None when the query has no filter)."""
        seg = self.seg
        if docs is None and (q.restrict is None and q.trash is None and q.types is None
                             and q.exts is None and q.paths is None and not q.ranges):
            return None

        def col(a: np.ndarray) -> np.ndarray:
            return a if docs is None else a[docs]

        keep = np.ones(seg.n if docs is None else len(docs), dtype=bool)
        if q.restrict is not None:
            if docs is None:
                allowed = np.zeros(seg.n, dtype=bool)
                allowed[seg.lookup(sorted(q.restrict))] = True
                keep &= allowed
            else:
                keep &= np.isin(docs, seg.lookup(sorted(q.restrict)))
        if q.trash is not None or q.types is not None:
            meta = col(seg.meta)
            if q.trash is not None:
                keep &= ((meta >> 3) & 1) == int(q.trash)
            if q.types is not None:
                keep &= member_of(meta & 7, [TYPE_CODES[t] for t in q.types], 8)
        if q.exts is not None:
            ids = [i for i, e in enumerate(seg.exts) if e in q.exts]
            keep &= member_of(col(seg.ext), ids, len(seg.exts))
        if q.paths is not None:
            folder = col(seg.doc_dir)
            inside = np.zeros(len(keep), dtype=bool)
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
                values = col(getattr(seg, name)).astype(np.float64)
                values[values == 0] = np.nan
            else:
                values = col(getattr(seg, name))
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

    def top_dense(self, dense: np.ndarray, sort: str, k: int | None) -> WordMap:
        """(docs, tiers) of the best `k` (all when None) of a dense map, best first."""
        if sort == "relevance" and k is not None:
            docs = first_by_tier(dense, k)
            return docs, dense[docs]
        docs = np.flatnonzero(dense != NO_MATCH)
        tiers = dense[docs]
        best = self.top(docs, tiers, sort, len(docs) if k is None else k)
        return docs[best], tiers[best]

    def top(self, docs: np.ndarray, tiers: np.ndarray, sort: str, k: int) -> np.ndarray:
        """Positions (into docs) of this segment's best `k` under `sort`, best first. For
        size sorts, all docs tied with the k-th are included (ties order by uuid)."""
        m = len(docs)
        if m == 0 or k <= 0:
            return EMPTY
        seg = self.seg
        desc = sort.endswith("desc")
        if sort == "relevance":
            if m > 8 * k:  # docs ascend (recency): the best k are the first docs of each tier
                return first_by_tier(tiers, k)
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
