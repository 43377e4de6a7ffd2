"""One model's vector index: a FAISS file under `vectors/` plus the delta still in LMDB.

Readers see every committed embedding at once: the file answers for the vector ids below its
`next_vid`, and ids at or above it (the delta) are scored by brute force from the stored
embeddings. A hit counts only when its id is still the item's current one (`sem:vid:`), so
re-embedded, deleted and trashed items never come back stale; `accept` (the caller's filter)
sees the record. `refresh()` folds the delta into a new file (or rebuilds it from the stored
embeddings when the kind should change or too much of it is stale) — never re-embedding.

Writers (the embed pipeline) call `store_embedding` inside their record's write transaction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb
import numpy as np

from ..errors import DamagedError
from ..records import now_iso
from ..store import keys as SK
from ..store.env import Env
from . import keys as V
from .ann import EXACT_MAX, AnnIndex, backend_name, build, choose_kind
from .snapshot import read_snapshot, write_snapshot

STALE_REBUILD_FRACTION = 0.25
IVF_REGROW = 4
Accept = Callable[[lmdb.Transaction, str], Any]


# -- write side (inside the caller's write transaction) --------------------------------------

def load_embedding(txn: lmdb.Transaction, model_id: str, digest: bytes) -> np.ndarray | None:
    raw = txn.get(V.emb_key(model_id, digest))
    return np.frombuffer(raw, dtype="<f4").astype(np.float32) if raw is not None else None


def cache_embedding(txn: lmdb.Transaction, model_id: str, digest: bytes, vec: np.ndarray) -> None:
    txn.put(V.emb_key(model_id, digest), np.asarray(vec, dtype="<f4").tobytes())


def current_vid(txn: lmdb.Transaction, uuid: str) -> V.VidValue | None:
    raw = txn.get(V.vid_key(uuid))
    return V.VidValue.unpack(raw) if raw is not None else None


def store_embedding(txn: lmdb.Transaction, uuid: str, model_id: str, digest: bytes,
                    vec: np.ndarray | None = None) -> int:
    """Make (model, text digest) the item's vector; a new vector id unless it already is."""
    if vec is not None:
        cache_embedding(txn, model_id, digest, vec)
    slug = V.model_slug(model_id)
    cur = current_vid(txn, uuid)
    if cur is not None and cur.digest == digest and cur.model == slug:
        return cur.vid
    vid = int(txn.get(V.K_VNEXT) or b"1")
    txn.put(V.K_VNEXT, b"%d" % (vid + 1))
    value = V.VidValue(vid, digest, uuid, slug).pack()
    txn.put(V.vid_key(uuid), value)
    txn.put(V.vuuid_key(vid), value)
    return vid


def current_vid_matches(txn: lmdb.Transaction, uuid: str, model_id: str, digest: bytes) -> bool:
    cur = current_vid(txn, uuid)
    return cur is not None and cur.digest == digest and cur.model == V.model_slug(model_id)


def forget_item(txn: lmdb.Transaction, uuid: str) -> None:
    """The item has no vector any more (its stale ids are filtered until the next refresh)."""
    txn.delete(V.vid_key(uuid))


# -- read side -------------------------------------------------------------------------------

@dataclass
class Hit:
    uuid: str
    score: float
    payload: Any  # what `accept` returned (the record)


_CACHE: dict[str, tuple[tuple[int, int, int], AnnIndex, dict[str, Any]]] = {}
_CACHE_LOCK = threading.Lock()


class VectorIndex:
    def __init__(self, env: Env, data_dir: str, model_id: str, dim: int, *,
                 exact_max: int = EXACT_MAX, compact: bool = False) -> None:
        self.env = env
        self.model_id = model_id
        self.slug = V.model_slug(model_id)
        self.dim = dim
        self.exact_max = exact_max
        self.compact = compact
        self.path = os.path.join(data_dir, "vectors", self.slug + ".kvv")
        self.damaged: str | None = None

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> tuple[AnnIndex | None, dict[str, Any]]:
        """The file's index and header (cached per process while the file is unchanged)."""
        empty: dict[str, Any] = {"next_vid": 0, "stale": 0, "count": 0, "kind": None}
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None, empty
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        with _CACHE_LOCK:
            hit = _CACHE.get(self.path)
            if hit is not None and hit[0] == sig:
                return hit[1], hit[2]
        try:
            header, payload = read_snapshot(self.path)
            if header.get("dim") != self.dim or header.get("model") != self.model_id:
                raise DamagedError(f"{self.path} holds another model", path=self.path)
            ann = AnnIndex.deserialize(header["kind"], self.dim, int(header["count"]), payload)
        except (DamagedError, ImportError, KeyError, RuntimeError, ValueError) as exc:
            # Never a wrong answer: without a usable file every vector is "delta" (a scan).
            self.damaged = str(exc)
            return None, empty
        except FileNotFoundError:
            return None, empty
        self.damaged = None
        with _CACHE_LOCK:
            _CACHE[self.path] = (sig, ann, header)
        return ann, header

    def _delta(self, txn: lmdb.Transaction, from_vid: int) -> tuple[list[str], np.ndarray]:
        """Current vectors of this model with ids >= from_vid: (uuids, matrix)."""
        uuids: list[str] = []
        rows: list[np.ndarray] = []
        cur = txn.cursor()
        if not cur.set_range(V.vuuid_key(max(from_vid, 0))):
            return uuids, np.zeros((0, self.dim), np.float32)
        for key, raw in cur:
            if not key.startswith(V.P_VUUID):
                break
            vv = V.VidValue.unpack(raw)
            if vv.model != self.slug or txn.get(V.vid_key(vv.uuid)) != raw:
                continue
            vec = load_embedding(txn, self.model_id, vv.digest)
            if vec is not None and len(vec) == self.dim:
                uuids.append(vv.uuid)
                rows.append(vec)
        return uuids, (np.vstack(rows) if rows else np.zeros((0, self.dim), np.float32))

    # -- search ------------------------------------------------------------------------------

    def search(self, query: np.ndarray, want: int, accept: Accept,
               exclude: frozenset[str] = frozenset()) -> list[Hit]:
        """The `want` best items that `accept(txn, uuid)` admits (returns non-None), best first."""
        if want <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        ann, header = self.load()
        found: dict[str, Hit] = {}
        with self.env.read() as txn:
            uuids, mat = self._delta(txn, int(header["next_vid"]) if ann is not None else 0)
            if uuids:
                scores = mat @ q
                for i in np.argsort(-scores, kind="stable"):
                    uuid = uuids[int(i)]
                    if uuid in exclude:
                        continue
                    payload = accept(txn, uuid)
                    if payload is not None:
                        found[uuid] = Hit(uuid, float(scores[int(i)]), payload)
                        if len(found) >= want:
                            break
            if ann is not None and ann.count:
                self._search_file(txn, ann, q, want, accept, exclude, found)
        hits = sorted(found.values(), key=lambda h: (-h.score, h.uuid))
        return hits[:want]

    def _search_file(self, txn: lmdb.Transaction, ann: AnnIndex, q: np.ndarray, want: int,
                     accept: Accept, exclude: frozenset[str], found: dict[str, Hit]) -> None:
        seen: set[int] = set()
        taken = 0
        k = max(2 * want, want + 32)
        while True:
            scores, ids = ann.search(q, k)
            for score, vid in zip(scores.tolist(), ids.tolist(), strict=True):
                if vid in seen:
                    continue
                seen.add(vid)
                raw = txn.get(V.vuuid_key(vid))
                if raw is None:
                    continue
                uuid = V.VidValue.unpack(raw).uuid
                if uuid in exclude or uuid in found or txn.get(V.vid_key(uuid)) != raw:
                    continue  # a stale vector (re-embedded or forgotten item)
                payload = accept(txn, uuid)
                if payload is not None:
                    found[uuid] = Hit(uuid, float(score), payload)
                    taken += 1
            if taken >= want or k >= ann.count:
                return
            k *= 4

    # -- maintenance -------------------------------------------------------------------------

    def _current(self, txn: lmdb.Transaction) -> tuple[list[int], list[bytes], list[str]]:
        """(vids, digests, gone uuids) of every item whose current vector is of this model."""
        vids: list[int] = []
        digests: list[bytes] = []
        gone: list[str] = []
        cur = txn.cursor()
        if not cur.set_range(V.P_VID):
            return vids, digests, gone
        for key, raw in cur:
            if not key.startswith(V.P_VID):
                break
            vv = V.VidValue.unpack(raw)
            if vv.model != self.slug:
                continue
            if txn.get(SK.uuid_key(vv.uuid)) is None:
                gone.append(vv.uuid)
                continue
            vids.append(vv.vid)
            digests.append(vv.digest)
        return vids, digests, gone

    def refresh(self, *, full: bool = False) -> dict[str, Any]:
        """Fold the delta into the file, or rebuild it from stored embeddings. Returns status."""
        ann, header = self.load() if not full else (None, {})
        with self.env.read() as txn:
            next_vid = int(txn.get(V.K_VNEXT) or b"1")
            vids, digests, gone = self._current(txn)
            old_next = int(header.get("next_vid", 0)) if ann is not None else 0
            in_file = sum(1 for v in vids if v < old_next)
            stale = (ann.count - in_file) if ann is not None else 0
            kind = choose_kind(len(vids), exact_max=self.exact_max, compact=self.compact)
            rebuild = (ann is None or kind != ann.kind
                       or (not ann.can_remove and stale > STALE_REBUILD_FRACTION * ann.count)
                       or (kind.startswith("ivf")  # lists trained for a quarter of the data
                           and len(vids) > IVF_REGROW * int(header.get("trained_for") or 0)))
            pick = range(len(vids)) if rebuild else [i for i, v in enumerate(vids)
                                                     if v >= old_next]
            ids = np.array([vids[i] for i in pick], dtype=np.int64)
            mat = np.zeros((len(ids), self.dim), np.float32)
            keep = np.ones(len(ids), bool)
            for row, i in enumerate(pick):
                vec = load_embedding(txn, self.model_id, digests[i])
                if vec is None or len(vec) != self.dim:
                    keep[row] = False
                else:
                    mat[row] = vec
            ids, mat = ids[keep], mat[keep]
        if gone:
            self.env.write(lambda t: [forget_item(t, u) for u in gone])
        trained_for = int(header.get("trained_for") or 0)
        if rebuild:
            ann = build(kind, self.dim, ids, mat)
            stale = 0
            trained_for = len(ids)
        else:
            assert ann is not None
            if stale and ann.can_remove:
                ann.remove(np.setdiff1d(ann.ids(), np.array(vids, np.int64)))
                stale = 0
            ann.add(ids, mat)
        header = {"model": self.model_id, "dim": self.dim, "kind": ann.kind, "count": ann.count,
                  "next_vid": next_vid, "stale": stale, "trained_for": trained_for,
                  "built_at": now_iso(),
                  "backend": backend_name()}
        write_snapshot(self.path, header, ann.serialize())
        with _CACHE_LOCK:
            _CACHE.pop(self.path, None)
        return {**header, "rebuilt": rebuild, "added": int(len(ids)), "forgotten": len(gone)}

    def status(self) -> dict[str, Any]:
        ann, header = self.load()
        with self.env.read() as txn:
            pending = len(self._delta(txn, int(header["next_vid"]) if ann else 0)[0])
        return {"model": self.model_id, "dim": self.dim, "path": self.path,
                "kind": header.get("kind"), "count": header.get("count", 0),
                "stale": header.get("stale", 0), "pending": pending,
                "backend": backend_name(), "damaged": self.damaged}
