"""Nearest-neighbour indexes over unit vectors (inner product = cosine): FAISS or numpy.

Kinds, chosen by `choose_kind` from the number of vectors:

    flat      exact, FAISS IndexFlatIP                  (below `exact_max` vectors)
    sq8       exact scan of 8-bit codes, a quarter of the RAM of flat (below, compact=True)
    ivf       approximate, IndexIVFFlat: 2*sqrt(n) k-means lists, IVF_NPROBE probed per query
    ivf-sq8   approximate over 8-bit codes              (from `exact_max` on, compact=True)
    hnsw      approximate, IndexHNSWFlat M=32: not chosen automatically (its build takes
              minutes per 100k vectors on 2 cores and it cannot remove ids), kept for peers
    numpy     exact brute force; used for every size when faiss is not importable

IVF over HNSW: on a 2-core box IVF builds 1M vectors in about a minute, answers in a few ms
at recall@10 >= 0.95 (benchmarks/bench_vector.py), supports `remove_ids`, and 8-bit codes
drop its RAM to a quarter. Flat, SQ8 and HNSW sit in an `IndexIDMap2` and IVF lists hold
ids natively, so every index speaks our int64 vector ids. FAISS searches run on one thread
(on a 2-core NAS the other core serves the rest); builds use all cores.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 96
IVF_NPROBE = 32
IVF_TRAIN_PER_LIST = 50
EXACT_MAX = 50_000
KINDS = ("flat", "sq8", "ivf", "ivf-sq8", "hnsw", "numpy")


def ivf_lists(count: int) -> int:
    return int(min(65536, max(16, 2 * np.sqrt(max(count, 1)))))


@lru_cache(maxsize=1)
def faiss_module() -> Any | None:
    """The faiss module, or None when it is missing or disabled (KVMEDIA_NO_FAISS=1)."""
    if os.environ.get("KVMEDIA_NO_FAISS") == "1":
        return None
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    return faiss


def backend_name() -> str:
    faiss = faiss_module()
    return f"faiss {faiss.__version__}" if faiss is not None else "numpy (faiss-cpu not installed)"


def choose_kind(count: int, *, exact_max: int = EXACT_MAX, compact: bool = False) -> str:
    if faiss_module() is None:
        return "numpy"
    if count < exact_max:
        return "sq8" if compact and count > 0 else "flat"
    return "ivf-sq8" if compact else "ivf"


class AnnIndex:
    """One index of `dim`-dimensional unit vectors keyed by int64 ids."""

    def __init__(self, kind: str, dim: int, impl: Any, ids: np.ndarray | None = None,
                 vecs: np.ndarray | None = None) -> None:
        self.kind = kind
        self.dim = dim
        self._impl = impl  # the FAISS index (None for numpy)
        self._ids = ids if ids is not None else np.zeros(0, np.int64)
        self._vecs = vecs if vecs is not None else np.zeros((0, dim), np.float32)

    @property
    def count(self) -> int:
        return int(self._impl.ntotal) if self._impl is not None else len(self._ids)

    @property
    def can_remove(self) -> bool:
        return self.kind != "hnsw"

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids):
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self._impl is not None:
            self._impl.add_with_ids(vecs, ids)
        else:
            self._ids = np.concatenate([self._ids, ids])
            self._vecs = np.concatenate([self._vecs, vecs])

    def remove(self, ids: np.ndarray) -> int:
        """Drop these ids (exact kinds only); returns how many were present."""
        if not len(ids):
            return 0
        assert self.can_remove, f"{self.kind} cannot remove ids"
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self._impl is not None:
            return int(self._impl.remove_ids(ids))
        keep = ~np.isin(self._ids, ids)
        removed = int(len(self._ids) - keep.sum())
        self._ids, self._vecs = self._ids[keep], self._vecs[keep]
        return removed

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest, best first; fewer when the index is smaller."""
        k = min(k, self.count)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if self._impl is not None:
            faiss = faiss_module()
            if self.kind == "hnsw":
                faiss.downcast_index(self._impl.index).hnsw.efSearch = max(HNSW_EF_SEARCH, k)
            elif self.kind.startswith("ivf"):
                # a caller digging deep (selective filters) gets every list: exact again
                self._impl.nprobe = IVF_NPROBE if 8 * k < self.count else self._impl.nlist
            scores, ids = self._impl.search(q, k)
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        scores = self._vecs @ q[0]
        if k < len(scores):
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top], self._ids[top]

    def ids(self) -> np.ndarray:
        """Every id held (any order)."""
        if self._impl is None:
            return self._ids
        faiss = faiss_module()
        if not self.kind.startswith("ivf"):
            return faiss.vector_to_array(self._impl.id_map).astype(np.int64)
        lists = self._impl.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(lists.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # -- persistence -------------------------------------------------------------------------

    def serialize(self) -> bytes:
        if self._impl is not None:
            return faiss_module().serialize_index(self._impl).tobytes()
        return self._ids.astype("<i8").tobytes() + self._vecs.astype("<f4").tobytes()

    @classmethod
    def deserialize(cls, kind: str, dim: int, count: int, payload: memoryview | bytes
                    ) -> AnnIndex:
        if kind == "numpy":
            ids = np.frombuffer(payload, dtype="<i8", count=count).astype(np.int64)
            vecs = np.frombuffer(payload, dtype="<f4", offset=8 * count,
                                 count=count * dim).reshape(count, dim).astype(np.float32)
            return cls(kind, dim, None, ids, vecs)
        faiss = faiss_module()
        if faiss is None:
            raise ImportError("this vector index needs faiss-cpu")
        impl = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        return cls(kind, dim, impl)


def build(kind: str, dim: int, ids: np.ndarray, vecs: np.ndarray) -> AnnIndex:
    """A new index of `kind` holding these vectors (rows of `vecs`, ids aligned)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(ids), dim)
    if kind == "numpy":
        return AnnIndex(kind, dim, None, ids.copy(), vecs.copy())
    faiss = faiss_module()
    if faiss is None:
        raise ImportError("FAISS index kinds need faiss-cpu; use kind 'numpy'")
    ip = faiss.METRIC_INNER_PRODUCT
    qt8 = faiss.ScalarQuantizer.QT_8bit
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "sq8":
        inner = faiss.IndexScalarQuantizer(dim, qt8, ip)
    elif kind == "ivf":
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_lists(len(ids)), ip)
    elif kind == "ivf-sq8":
        inner = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, ivf_lists(len(ids)),
                                              qt8, ip)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, ip)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    big = len(ids) > 10_000
    if big:
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building is batch work: all cores
    try:
        if not inner.is_trained:
            if kind.startswith("ivf"):
                inner.cp.min_points_per_centroid = 1  # small trees: no "too few points" noise
            inner.train(_training_sample(kind, inner, vecs))
        # IVF lists store our ids themselves (and remove by them); IndexIDMap2's removal
        # assumes an index that renumbers, which IVF does not.
        index = inner if kind.startswith("ivf") else faiss.IndexIDMap2(inner)
        out = AnnIndex(kind, dim, index)
        out.add(ids, vecs)
    finally:
        if big:
            faiss.omp_set_num_threads(1)
    return out


def _training_sample(kind: str, inner: Any, vecs: np.ndarray) -> np.ndarray:
    """IVF: k-means needs a few dozen points per list (a deterministic random sample).
    8-bit codes: per-dimension ranges learnt from the data; later additions outside them are
    clipped. With too little data, unit-vector bounds [-1, 1] stand in."""
    dim = vecs.shape[1]
    if kind.startswith("ivf"):
        want = IVF_TRAIN_PER_LIST * inner.nlist
        if len(vecs) > want:
            rows = np.random.default_rng(0).choice(len(vecs), want, replace=False)
            return np.ascontiguousarray(vecs[np.sort(rows)])
        if len(vecs) >= inner.nlist:
            return vecs
        extra = np.random.default_rng(0).standard_normal((inner.nlist, dim)).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        return np.vstack([vecs, extra])
    sample = vecs[:: max(1, len(vecs) // 65536)]
    if len(sample) < 2:
        sample = np.vstack([sample, np.full((1, dim), -1.0, np.float32),
                            np.full((1, dim), 1.0, np.float32)])
    return sample
