"""`SearchEngine`: answers a Query from segments + the LMDB delta, or by a scan when the
index is missing or damaged; owns the delta listener and the merge policy.

Consistency: one LMDB read transaction gives `sidx:gen`, the delta and the hit records; the
manifest used is never older than that generation (a newer one is fine: the delta shadows
what it already holds). A manifest change by another process is noticed by its stat.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np
import orjson

from ..errors import DamagedError
from ..index import manifest as M
from ..index.delta import DeltaWriter, iter_delta, read_gen
from ..index.docs import DocRow, doc_from_record
from ..index.merge import IndexMaintainer
from ..index.segment import CACHE_BYTES, Segment
from ..store import keys as K
from ..store.env import Env
from ..store.recordstore import Record, RecordStore
from . import oracle, tagkeys
from .planner import SegmentPlan, map_size
from .predicate import NO_MATCH, DocView, passes_filters, sort_key, text_tier
from .query import Query


@dataclass
class SearchResult:
    total: int
    hits: list[Record]
    offset: int
    limit: int | None
    sort: str
    mode: str                     # "index" | "type-keys" | "ids" | "scan"
    seconds: float = 0.0
    plan: dict[str, Any] | None = None
    tiers: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"type": "total", "total": self.total, "offset": self.offset,
                "limit": self.limit, "sort": self.sort, "mode": self.mode,
                "returned": len(self.hits), "ms": round(self.seconds * 1000, 3)}


class DeltaSet:
    """The LMDB delta as of one committed transaction, ready for many queries: the views,
    the shadowed uuids, and every view's text in one string, so a query word finds the few
    views that contain it with `str.find` instead of testing each view in Python."""

    def __init__(self, txn_id: int, delta: dict[str, DocView | None]) -> None:
        self.txn_id = txn_id
        self.delta = delta
        self.shadow = frozenset(delta)
        self.views = [v for v in delta.values() if v is not None]
        self._blob = "\n".join(v.text for v in self.views) + "\n"
        starts = [0]
        for v in self.views:
            starts.append(starts[-1] + len(v.text) + 1)
        self._starts = np.asarray(starts[:-1], dtype=np.int64)

    def containing(self, needle: str) -> set[int]:
        """Indexes of the views whose text ("folder/name", normalised) holds `needle`."""
        if "\n" in needle:
            return set()
        blob, out = self._blob, []
        pos = blob.find(needle)
        while pos >= 0:
            out.append(pos)
            pos = blob.find(needle, pos + 1)
        if not out:
            return set()
        return set((np.searchsorted(self._starts, out, side="right") - 1).tolist())

    def candidates(self, q: Query, fuzzy: set[str]) -> list[DocView]:
        """Views that may match `q`: each AND group with no fuzzy word must have one of its
        words in the view's text (a superset of the matches; text_tier decides)."""
        keep: set[int] | None = None
        for group in q.groups:
            if any(t.fuzzy or t.text in fuzzy for t in group):
                continue
            found: set[int] = set()
            for term in group:
                found |= self.containing(term.text)
            keep = found if keep is None else keep & found
            if not keep:
                return []
        if keep is None:
            return self.views
        return [self.views[i] for i in sorted(keep)]


@dataclass
class _State:
    stat_key: tuple[int, int, int] | None
    manifest: M.Manifest
    segments: list[tuple[Segment, np.ndarray | None]]  # (segment, dead mask or None)


MAPPED_BUDGET = 64 << 20
"""File pages (segments, LMDB) a searching process keeps mapped, above what stays mapped
after a release (shared libraries, other files), before it lets go of them.
A search maps the pages it reads, and the kernel maps neighbouring cached pages with each
fault; a server or a script running many searches would otherwise end up holding most of the
index and the records in its RSS. Released pages stay in the page cache: the next search
that needs one maps it again for a fraction of a microsecond (but a release of a big mapping
costs ~1 ms). The `search.mapped_mb` setting (KVMEDIA_SEARCH_MAPPED_MB) sets it."""
BUDGET_CHECK_EVERY = 1
"""Searches between two looks at /proc/self/statm (~10 us, 1 % of a fast search): every
one, so no burst of searches runs far past the budget between looks."""


RESULT_CACHE_ENTRIES = 1024
RESULT_CACHE_BYTES = 8 << 20
"""Answers a searching process keeps for the same query asked again while nothing changed:
the key holds the LMDB snapshot (the id of the last committed write, which every upsert,
trash and merge moves) and the segments, so an entry is never stale, only unreachable.
Search-as-you-type servers see the same first letters from every typist (`s`, `se`: 5-12 ms
each at a million names, ~0.1 ms from here). At most RESULT_CACHE_ENTRIES answers and
RESULT_CACHE_BYTES of their hits' JSON (an answer past an eighth of that, say a page of a
thousand records, is not kept): with 8 typists on a two-worker server, 1,024 (about 200 pages
of 50 hits fit in 8 MB) took 1.21-1.26 ms of worker CPU a keystroke against 1.26-1.33 for 128.
Off with the segment caches (`search.cache_mb` 0)."""


def _mapped_file_bytes() -> int:
    """Resident shared (file-backed) bytes of this process; 0 where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 0


class SearchEngine:
    def __init__(self, env: Env, data_dir: str, cache_bytes: int = CACHE_BYTES,
                 mapped_budget: int = MAPPED_BUDGET) -> None:
        self.env = env
        self.cache_bytes = cache_bytes  # per segment (index/segment.py CACHE_BYTES)
        self.mapped_budget = mapped_budget
        self._searches = 0
        self._mapped_floor = 0  # file bytes still mapped right after the last release
        self.maintainer = IndexMaintainer(env, data_dir)
        self.index_dir = self.maintainer.index_dir
        self.delta_writer = DeltaWriter()
        self._state: _State | None = None
        self._views: dict[str, tuple[bytes, DocView]] = {}
        self._delta_set: DeltaSet | None = None
        self._live: dict[str, tuple[frozenset[str], np.ndarray | None]] = {}
        self._results: OrderedDict[tuple[Any, ...], tuple[SearchResult, bytes]] = OrderedDict()
        self._results_bytes = 0
        self._results_lock = threading.Lock()  # a server searches on a thread pool

    # -- index state ------------------------------------------------------------------------

    def _manifest_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.index_dir, M.MANIFEST))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, gen: int) -> _State:
        """The current segments; DamagedError when they cannot serve generation `gen`."""
        for _attempt in range(5):
            key = self._manifest_stat()
            if self._state is not None and self._state.stat_key == key and (
                    self._state.manifest.gen >= gen):
                return self._state
            man = M.read_manifest(self.index_dir)
            if man is None:
                if gen > 0:
                    raise DamagedError("search index manifest is missing; run "
                                       "`kvmedia rebuild-index`", path=self.index_dir)
                man = M.Manifest()
            if man.gen < gen:
                raise DamagedError("search index is older than the library; run "
                                   "`kvmedia rebuild-index`", path=self.index_dir)
            try:
                segments = []
                for entry in man.segments:
                    seg = Segment(os.path.join(self.index_dir, entry.file), entry.file,
                                  cache_bytes=self.cache_bytes)
                    if seg.n != entry.docs:
                        raise DamagedError(f"segment {entry.file} holds {seg.n} docs, manifest "
                                           f"says {entry.docs}; run `kvmedia rebuild-index`")
                    dead = None
                    if entry.dead:
                        dead = M.read_dead(os.path.join(self.index_dir, entry.dead),
                                           entry.docs, entry.dead_xxh3)
                    segments.append((seg, dead))
            except FileNotFoundError:
                time.sleep(0.01)  # a merge replaced the files under us: read the new manifest
                continue
            self._state = _State(key, man, segments)
            self._live.clear()
            return self._state
        raise DamagedError("search index files keep disappearing; run `kvmedia rebuild-index`",
                           path=self.index_dir)

    def _delta_state(self, txn: lmdb.Transaction) -> DeltaSet:
        """The delta of `txn`, reused while no write has committed since (same txn id)."""
        cached = self._delta_set
        if cached is not None and cached.txn_id == txn.id():
            return cached
        self._delta_set = DeltaSet(txn.id(), self._delta(txn))
        return self._delta_set

    def _delta(self, txn: lmdb.Transaction) -> dict[str, DocView | None]:
        out: dict[str, DocView | None] = {}
        fresh: dict[str, tuple[bytes, DocView]] = {}
        for uuid, value in iter_delta(txn):
            if not value:
                out[uuid] = None
                continue
            cached = self._views.get(uuid)
            view = cached[1] if cached is not None and cached[0] == value else DocView(
                DocRow.unpack(uuid, value))
            fresh[uuid] = (value, view)
            out[uuid] = view
        self._views = fresh
        return out

    def _live_mask(self, seg: Segment, dead: np.ndarray | None, shadow: frozenset[str]
                   ) -> np.ndarray | None:
        cached = self._live.get(seg.name)
        if cached is not None and cached[0] == shadow:
            return cached[1]
        live = None if dead is None else ~dead
        docs = seg.lookup(sorted(shadow))
        if len(docs):
            live = np.ones(seg.n, dtype=bool) if live is None else live.copy()
            live[docs] = False
        self._live[seg.name] = (shadow, live)
        return live

    # -- search -----------------------------------------------------------------------------

    def search(self, q: Query, *, explain: bool = False) -> SearchResult:
        started = time.perf_counter()
        with self.env.read() as txn:
            q.restrict = tagkeys.resolve(txn, q)
            if q.ids is not None:
                result = self._scan(txn, q, [rec for u in dict.fromkeys(q.ids)
                                             if (rec := RecordStore.get(txn, u)) is not None],
                                    "ids")
            elif self._type_keys_ok(q):
                result = self._type_keys(txn, q)
            else:
                gen = read_gen(txn)
                try:
                    if gen is None:
                        raise DamagedError("no search index yet", path=self.index_dir)
                    result = self._indexed_cached(txn, q, self._load(gen), explain)
                except DamagedError as exc:
                    if gen is not None:
                        self.maintainer.mark_damaged(exc.message)
                    result = self._scan(txn, q, RecordStore.iter_records(txn), "scan")
                    if explain:
                        result.plan = {"fallback": exc.message}
        result.seconds = time.perf_counter() - started
        self._keep_mapped_pages_in_budget()
        if explain:
            result.plan = {"query": q.to_json(), "mode": result.mode, **(result.plan or {})}
        return result

    def _keep_mapped_pages_in_budget(self) -> None:
        self._searches += 1
        if self._searches % BUDGET_CHECK_EVERY or (
                _mapped_file_bytes() <= self._mapped_floor + self.mapped_budget):
            return
        self.env.release_pages(trim=False)
        if self._state is not None:
            for seg, _dead in self._state.segments:
                seg.file.release_pages()
        self._mapped_floor = _mapped_file_bytes()

    @staticmethod
    def _type_keys_ok(q: Query) -> bool:
        return (not q.has_text and q.trash is not None and q.exts is None and q.paths is None
                and not q.ranges and q.restrict is None
                and (q.types is None or len(q.types) == 1))

    def _type_keys(self, txn: lmdb.Transaction, q: Query) -> SearchResult:
        """Empty query with type/trash filters: the `media:type:` keys, no index work."""
        media_type = next(iter(q.types)) if q.types else K.ALL
        sort = q.effective_sort()
        assert q.trash is not None
        total = K.unpack_stats(txn.get(K.stats_key(media_type, q.trash)))[0]
        hits: list[Record] = []
        prefix = K.type_prefix(media_type, q.trash, sort)
        skipped = 0
        for key, _ in RecordStore.iter_prefix(txn, prefix):
            if skipped < q.offset:
                skipped += 1
                continue
            if q.limit is not None and len(hits) >= q.limit:
                break
            rec = RecordStore.get(txn, K.uuid_from_type_key(key))
            if rec is not None:
                hits.append(rec)
        return SearchResult(total, hits, q.offset, q.limit, sort, "type-keys")

    def _scan(self, txn: lmdb.Transaction, q: Query, records: Any, mode: str) -> SearchResult:
        recs: dict[str, Record] = {}
        rows = []
        for rec in records:
            recs[rec["uuid"]] = rec
            rows.append(doc_from_record(rec))
        total, hits = oracle.scan(rows, q)
        page = _page(hits, q)
        return SearchResult(total, [recs[row.uuid] for _k, row in page], q.offset, q.limit,
                            q.effective_sort(), mode,
                            tiers=[k[0] if q.effective_sort() == "relevance" and mode != "ids"
                                   else 0 for k, _ in page])

    def _indexed_cached(self, txn: lmdb.Transaction, q: Query, state: _State, explain: bool
                        ) -> SearchResult:
        """`_indexed`, answered from RESULT_CACHE_ENTRIES when this snapshot, these segments
        and this query were seen. The hits come back as new dicts (callers may change them)."""
        if explain or self.cache_bytes <= 0:
            return self._indexed(txn, q, state, explain)
        try:
            key = (txn.id(), state.manifest.gen, state.stat_key,
                   orjson.dumps(q.to_json(), option=orjson.OPT_SORT_KEYS))
        except TypeError:  # nothing in a query should fail this; if it does, no cache
            return self._indexed(txn, q, state, explain)
        with self._results_lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
        if hit is not None:
            kept, hits = hit
            return SearchResult(kept.total, orjson.loads(hits), kept.offset, kept.limit,
                                kept.sort, kept.mode, tiers=list(kept.tiers))
        result = self._indexed(txn, q, state, explain)
        try:
            hits = orjson.dumps(result.hits)
        except TypeError:
            return result
        if len(hits) > RESULT_CACHE_BYTES // 8:
            return result
        kept = SearchResult(result.total, [], result.offset, result.limit, result.sort,
                            result.mode, tiers=list(result.tiers))
        with self._results_lock:
            old = self._results.pop(key, None)  # another thread answered it meanwhile
            if old is not None:
                self._results_bytes -= len(old[1])
            self._results[key] = (kept, hits)
            self._results_bytes += len(hits)
            while (len(self._results) > RESULT_CACHE_ENTRIES
                   or self._results_bytes > RESULT_CACHE_BYTES):
                self._results_bytes -= len(self._results.popitem(last=False)[1][1])
        return result

    def _indexed(self, txn: lmdb.Transaction, q: Query, state: _State, explain: bool
                 ) -> SearchResult:
        dset = self._delta_state(txn)
        delta, shadow, views = dset.delta, dset.shadow, dset.views
        plans = [SegmentPlan(seg, self._live_mask(seg, dead, shadow))
                 for seg, dead in state.segments]
        fuzzy: set[str] = set()
        for group in q.groups:
            for term in group:
                if term.plain and not term.fuzzy and not any(
                        map_size(p.word(term, False)) for p in plans) and not any(
                        views[i].contains(term) for i in dset.containing(term.text)):
                    fuzzy.add(term.text)
        sort = q.effective_sort()
        k = None if q.limit is None else q.offset + q.limit
        total = 0
        cands: list[tuple[tuple[Any, ...], str, int]] = []  # (key, uuid, tier)
        need_names = sort in ("name", "namedesc")
        for plan in plans:
            found = plan.evaluate(q, fuzzy)
            seg = plan.seg
            if isinstance(found, np.ndarray):
                total += map_size(found)
                top_docs, top_tiers_a = plan.top_dense(found, sort, k)
            else:
                docs, tiers = found
                total += len(docs)
                best = plan.top(docs, tiers, sort, len(docs) if k is None else k)
                top_docs, top_tiers_a = docs[best], tiers[best]
            top_tiers = top_tiers_a.tolist()
            column = seg.size if sort in ("size", "sizedesc") else seg.mtime
            values = column[top_docs].tolist()
            for uuid, tier, value in zip(seg.uuids(top_docs), top_tiers, values, strict=True):
                if sort == "relevance":
                    key: tuple[Any, ...] = (tier, -value, uuid)
                elif sort in ("name", "namedesc"):
                    key = (b"", uuid)  # filled from the record below
                else:
                    key = (value, uuid)
                cands.append((key, uuid, tier))
        for view in dset.candidates(q, fuzzy) if q.has_text else views:
            if not passes_filters(view.row, q):
                continue
            tier = text_tier(view, q, fuzzy) if q.has_text else 0
            if tier == NO_MATCH:
                continue
            total += 1
            cands.append((sort_key(view.row, sort, tier), view.row.uuid, tier))
        records: dict[str, Record] = {}
        if need_names:
            named = []
            for _key, uuid, tier in cands:
                rec = RecordStore.get(txn, uuid)
                if rec is None:
                    continue
                records[uuid] = rec
                named.append((sort_key(doc_from_record(rec), sort, tier), uuid, tier))
            cands = named
        cands.sort(key=lambda c: c[0], reverse=sort.endswith("desc"))
        page = cands[q.offset:] if k is None else cands[q.offset:k]
        hits, tiers_out = [], []
        for _key, uuid, tier in page:
            rec = records.get(uuid) or RecordStore.get(txn, uuid)
            if rec is not None:
                hits.append(rec)
                tiers_out.append(tier)
        result = SearchResult(total, hits, q.offset, q.limit, sort, "index", tiers=tiers_out)
        if explain:
            result.plan = {
                "segments": [{"file": p.seg.name, "docs": p.seg.n,
                              "live": int(p.seg.n if p.live is None else p.live.sum()),
                              "strategies": p.strategies} for p in plans],
                "delta": {"entries": len(delta), "live": len(views)},
                "fuzzy_words": sorted(fuzzy),
            }
        return result


def _page(hits: list[tuple[Any, DocRow]], q: Query) -> list[tuple[Any, DocRow]]:
    end = None if q.limit is None else q.offset + q.limit
    return hits[q.offset:end]
