"""The semantic layer of one library: analyze, embed, K-NN search, similar items, hybrid.

`Library.semantic` hands out one `Semantic` per open library. Queries take the text-search
grammar (kvmedia/search/query.py): its filters (type: ext: trash: path: size: mtime: ...,
ids:) and paging apply to vector hits exactly as to text hits; its words are what gets
embedded. Hybrid ranking fuses the text ranking and the vector ranking with reciprocal rank
fusion (score = sum of 1 / (RRF_K + rank)), which needs no score calibration between the two
— e5 cosine scores live in a narrow band and are never compared across models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from ..analyze import queue
from ..analyze.pipeline import AnalyzePipeline, AnalyzeReport
from ..analyze.registry import AnalyzerRegistry, default_registry
from ..errors import NotFoundError, UsageError
from ..index.docs import doc_from_record
from ..progress import Progress
from ..search.predicate import passes_filters
from ..search.query import Query, apply_options, parse_query
from ..store.env import Env
from ..store.recordstore import Record, RecordStore
from ..vectors import VectorIndex, backend_name, load_embedding
from ..vectors import keys as V
from ..vectors.vindex import current_vid
from . import registry
from .base import Embedder
from .pipeline import EmbedPipeline, EmbedReport
from .settings import SemanticSettings

RRF_K = 60
HYBRID_WINDOW = 100
MODES = ("text", "semantic", "hybrid")


@dataclass
class SemanticResult:
    hits: list[Record]
    scores: list[float]
    offset: int
    limit: int | None
    mode: str
    model: str
    seconds: float = 0.0
    total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"type": "total", "total": self.total, "offset": self.offset,
                "limit": self.limit, "mode": self.mode, "model": self.model,
                "returned": len(self.hits), "ms": round(self.seconds * 1000, 3)}


def _query_words(q: Query) -> str:
    return " ".join(t.raw for group in q.groups for t in group)


class Semantic:
    def __init__(self, env: Env, store: RecordStore, data_dir: str, config: Any,
                 text_search: Callable[..., Any] | None = None) -> None:
        self.env = env
        self.store = store
        self.data_dir = data_dir
        self.settings = SemanticSettings.from_config(config)
        self.text_search = text_search
        self._embedder: Embedder | None = None
        self._vindex: VectorIndex | None = None
        self._registry: AnalyzerRegistry | None = None
        self._lock = threading.Lock()

    # -- parts -------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = registry.get_embedder(self.settings)
            return self._embedder

    @property
    def vindex(self) -> VectorIndex:
        emb = self.embedder
        with self._lock:
            if self._vindex is None or self._vindex.model_id != emb.model_id:
                self._vindex = VectorIndex(self.env, self.data_dir, emb.model_id, emb.dim,
                                           exact_max=self.settings.exact_max,
                                           compact=self.settings.compact)
            return self._vindex

    @property
    def analyzers(self) -> AnalyzerRegistry:
        if self._registry is None:
            self._registry = default_registry(self.settings)
        return self._registry

    # -- work --------------------------------------------------------------------------------

    def analyze(self, uuids: list[str] | None = None, *, everything: bool = False,
                progress: Progress | None = None, stop: threading.Event | None = None
                ) -> AnalyzeReport:
        """Analyze the named items, or every item needing it, or (neither) the due queue."""
        return AnalyzePipeline(self.env, self.store, self.analyzers, progress=progress,
                               stop=stop).run(uuids, everything=everything)

    def embed(self, uuids: list[str] | None = None, *, progress: Progress | None = None,
              stop: threading.Event | None = None, refresh: str = "always") -> EmbedReport:
        """Embed the named items (default: every item whose vector is missing or stale)."""
        return EmbedPipeline(self.env, self.store, self.embedder, self.vindex,
                             progress=progress, stop=stop).run(uuids, refresh=refresh)

    def rebuild_index(self) -> dict[str, Any]:
        """Write the vector file again from the stored embeddings (no embedding happens)."""
        return self.vindex.refresh(full=True)

    def enqueue(self, uuids: list[str]) -> None:
        """Queue items for background analysis (the watcher calls this; never blocks long)."""
        def fn(txn: lmdb.Transaction) -> None:
            for uuid in uuids:
                queue.enqueue(txn, uuid)

        if uuids:
            self.env.write(fn)

    def queued(self) -> list[tuple[str, dict[str, Any]]]:
        with self.env.read() as txn:
            return queue.entries(txn)

    # -- queries -----------------------------------------------------------------------------

    def _parse(self, query: str, options: dict[str, Any]) -> Query:
        q = apply_options(parse_query(query), **options)
        if q.limit is None:
            q.limit = 100
        return q

    def _accept(self, q: Query) -> Callable[[lmdb.Transaction, str], Record | None]:
        ids = set(q.ids) if q.ids else None

        def accept(txn: lmdb.Transaction, uuid: str) -> Record | None:
            if ids is not None and uuid not in ids:
                return None
            rec = self.store.get(txn, uuid)
            if rec is None or not passes_filters(doc_from_record(rec), q):
                return None
            return rec

        return accept

    def search(self, query: str, **options: Any) -> SemanticResult:
        """K-NN over the query's words, with its filters and paging."""
        started = time.perf_counter()
        q = self._parse(query, options)
        words = _query_words(q)
        if not words:
            raise UsageError("a semantic search needs words to look for, e.g. "
                             "`kvmedia search --semantic 'beach sunset'`")
        qvec = self.embedder.query(words)
        want = q.offset + int(q.limit or 0)
        hits = self.vindex.search(qvec, want, self._accept(q))
        page = hits[q.offset : want]
        return SemanticResult([h.payload for h in page], [h.score for h in page], q.offset,
                              q.limit, "semantic", self.embedder.model_id,
                              time.perf_counter() - started, total=len(hits))

    def similar(self, ref: str, query: str = "", **options: Any) -> SemanticResult:
        """Items whose vectors are nearest to this item's (itself excluded)."""
        started = time.perf_counter()
        q = self._parse(query, options)
        model = self.embedder.model_id
        with self.env.read() as txn:
            if self.store.get(txn, ref) is None:
                raise NotFoundError(f"not in the library: {ref}; use a uuid from "
                                    "`kvmedia search --json`")
            cur = current_vid(txn, ref)
            vec = (load_embedding(txn, model, cur.digest)
                   if cur is not None and cur.model == V.model_slug(model) else None)
        if vec is None:
            raise NotFoundError(f"{ref} has no {model} embedding yet; run `kvmedia embed {ref}`")
        want = q.offset + int(q.limit or 0)
        hits = self.vindex.search(vec, want, self._accept(q), exclude=frozenset({ref}))
        page = hits[q.offset : want]
        return SemanticResult([h.payload for h in page], [h.score for h in page], q.offset,
                              q.limit, "similar", model, time.perf_counter() - started,
                              total=len(hits))

    def hybrid(self, query: str, **options: Any) -> SemanticResult:
        """Text hits and vector hits fused by reciprocal rank."""
        started = time.perf_counter()
        q = self._parse(query, options)
        want = q.offset + int(q.limit or 0)
        window = max(want, HYBRID_WINDOW)
        fused: dict[str, float] = {}
        records: dict[str, Record] = {}
        if self.text_search is not None:
            text_opts = {k: v for k, v in options.items() if k not in ("limit", "offset")}
            text = self.text_search(query, limit=window, offset=0, **text_opts)
            for rank, rec in enumerate(text.hits):
                fused[rec["uuid"]] = fused.get(rec["uuid"], 0.0) + 1.0 / (RRF_K + rank + 1)
                records[rec["uuid"]] = rec
        if _query_words(q):
            vec_hits = self.vindex.search(self.embedder.query(_query_words(q)), window,
                                          self._accept(q))
            for rank, hit in enumerate(vec_hits):
                fused[hit.uuid] = fused.get(hit.uuid, 0.0) + 1.0 / (RRF_K + rank + 1)
                records.setdefault(hit.uuid, hit.payload)
        order = sorted(fused, key=lambda u: (-fused[u], u))
        page = order[q.offset : want]
        return SemanticResult([records[u] for u in page], [fused[u] for u in page], q.offset,
                              q.limit, "hybrid", self.embedder.model_id,
                              time.perf_counter() - started, total=len(order))

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        out = registry.status(self.settings)
        out["vector_backend"] = backend_name()
        out["analyzers"] = [n for n in ("offline", "remote")
                            if n == "offline" or self.settings.analyzer_api_url]
        with self.env.read() as txn:
            out["queued"] = len(queue.entries(txn))
        return out


def semantic_status(settings: SemanticSettings | None = None) -> dict[str, Any]:
    """Embedder and vector backend in use, without loading a model (for `kvmedia doctor`)."""
    out = registry.status(settings)
    out["vector_backend"] = backend_name()
    return out
