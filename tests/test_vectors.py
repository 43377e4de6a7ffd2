"""Vector indexes: FAISS kinds against a brute-force oracle, the file format, and the
LMDB-backed VectorIndex (delta, tombstones, rebuild without re-embedding)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmedia.errors import DamagedError
from kvmedia.store.env import Env
from kvmedia.store.recordstore import RecordStore
from kvmedia.vectors import VectorIndex, ann, store_embedding
from kvmedia.vectors import keys as V
from kvmedia.vectors.snapshot import read_snapshot, write_snapshot

HAS_FAISS = ann.faiss_module() is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu not installed (extra [vector])")


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    scores = vecs @ q
    order = np.lexsort((ids, -scores))
    return ids[order[:k]].tolist()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), k=st.integers(1, 20), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["numpy", "flat"] if HAS_FAISS else ["numpy"]))
def test_exact_kinds_equal_brute_force(n: int, k: int, seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    dim = 16
    vecs = unit(rng, n, dim)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    index = ann.build(kind, dim, ids, vecs)
    q = unit(rng, 1, dim)[0]
    scores, got = index.search(q, k)
    want = oracle(vecs, ids, q, k)
    assert len(got) == len(want) == min(k, n)
    # equal as sets of scores (ties may order either way); ids equal where scores differ
    np.testing.assert_allclose(np.sort(scores)[::-1], np.sort(vecs @ q)[::-1][: len(want)],
                               rtol=1e-5, atol=1e-5)
    assert set(got.tolist()) == set(want) or np.unique(np.round(vecs @ q, 5)).size < n


@needs_faiss
@pytest.mark.parametrize("kind", ["sq8", "ivf", "ivf-sq8", "hnsw"])
def test_approximate_kinds_recall(kind: str) -> None:
    rng = np.random.default_rng(7)
    dim, n = 32, 3000
    centers = unit(rng, 30, dim)
    vecs = centers[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    index = ann.build(kind, dim, ids, vecs)
    assert index.kind == kind and index.count == n
    hits = 0
    for q in unit(rng, 50, dim):
        _, got = index.search(q, 10)
        hits += len(set(got.tolist()) & set(oracle(vecs, ids, q, 10)))
    assert hits / 500 >= 0.9


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "sq8", "ivf"])
def test_faiss_round_trip_and_remove(kind: str) -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 50, 8)
    ids = np.arange(50, dtype=np.int64) * 3
    index = ann.build(kind, 8, ids, vecs)
    assert index.remove(np.array([0, 3, 999], np.int64)) == 2
    again = ann.AnnIndex.deserialize(kind, 8, index.count, index.serialize())
    assert again.count == 48
    _, got = again.search(vecs[0], 50)
    assert 0 not in got.tolist() and 3 not in got.tolist()


def test_choose_kind_by_size() -> None:
    if not HAS_FAISS:
        assert ann.choose_kind(10) == "numpy"
        return
    assert ann.choose_kind(10, exact_max=100) == "flat"
    assert ann.choose_kind(10, exact_max=100, compact=True) == "sq8"
    assert ann.choose_kind(100, exact_max=100) == "ivf"
    assert ann.choose_kind(100, exact_max=100, compact=True) == "ivf-sq8"


def test_snapshot_checksum_detects_damage(tmp_path: Path) -> None:
    path = str(tmp_path / "v" / "m.kvv")
    write_snapshot(path, {"model": "m", "n": 1}, b"payload-bytes" * 100)
    header, payload = read_snapshot(path)
    assert header == {"model": "m", "n": 1} and bytes(payload) == b"payload-bytes" * 100
    assert os.listdir(tmp_path / "v") == ["m.kvv"]  # no temp file left
    data = bytearray(open(path, "rb").read())
    data[40] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(DamagedError, match="checksum"):
        read_snapshot(path)
    open(path, "wb").write(b"junk")
    with pytest.raises(DamagedError):
        read_snapshot(path)


# -- VectorIndex over LMDB ---------------------------------------------------------------------

DIM = 8
MODEL = "test-model:v1"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(str(tmp_path / "media.lmdb"))
    yield e
    e.close()


def put_item(env: Env, uuid: str, vec: np.ndarray, text: str, trash: bool = False) -> None:
    rec = {"uuid": uuid, "path": f"/v/{uuid}.jpg", "name": f"{uuid}.jpg", "type": "image",
           "size": 1, "mtime_ns": 1, "is_trash": trash}
    store = RecordStore()

    def fn(txn):  # type: ignore[no-untyped-def]
        w = store.writer(txn)
        w.put(rec, store.get(txn, uuid))
        w.finish()
        store_embedding(txn, uuid, MODEL, V.text_digest(text), vec)

    env.write(fn)


def uid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def accept_live(txn, uuid):  # type: ignore[no-untyped-def]
    rec = RecordStore.get(txn, uuid)
    return rec if rec is not None and not rec.get("is_trash") else None


@pytest.mark.parametrize("exact_max", [1000, 0])
def test_vector_index_delta_tombstones_and_rebuild(env: Env, tmp_path: Path,
                                                   exact_max: int) -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 40, DIM)
    for i in range(40):
        put_item(env, uid(i), vecs[i], f"text {i}")
    vi = VectorIndex(env, str(tmp_path), MODEL, DIM, exact_max=exact_max)
    q = vecs[5]
    # before any file exists every vector is delta: still exact
    assert vi.search(q, 1, accept_live)[0].uuid == uid(5)
    status = vi.refresh()
    assert status["count"] == 40 and status["rebuilt"]
    assert vi.search(q, 1, accept_live)[0].uuid == uid(5)
    # re-embed item 5 far away: its old vector in the file must not answer any more
    put_item(env, uid(5), -q, "text 5 changed")
    hits = vi.search(q, 40, accept_live)
    assert uid(5) == hits[-1].uuid and len(hits) == 40
    # trash item 6 and delete item 7's record: gone from results at once
    put_item(env, uid(6), vecs[6], "text 6", trash=True)
    store = RecordStore()

    def drop(txn):  # type: ignore[no-untyped-def]
        w = store.writer(txn)
        w.delete(store.get(txn, uid(7)))
        w.finish()

    env.write(drop)
    got = {h.uuid for h in vi.search(q, 100, accept_live)}
    assert uid(6) not in got and uid(7) not in got and len(got) == 38
    # fold the delta; answers unchanged; forgotten item's keys collected
    out = vi.refresh()
    assert out["forgotten"] == 1
    assert {h.uuid for h in vi.search(q, 100, accept_live)} == got
    # rebuild from stored embeddings after the directory is deleted
    for name in os.listdir(tmp_path / "vectors"):
        os.unlink(tmp_path / "vectors" / name)
    assert vi.refresh(full=True)["count"] == 39  # 40 items, one deleted (6 is only trashed)
    assert [h.uuid for h in vi.search(vecs[9], 1, accept_live)] == [uid(9)]


def test_damaged_file_falls_back_to_scan(env: Env, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vecs = unit(rng, 10, DIM)
    for i in range(10):
        put_item(env, uid(i), vecs[i], f"t{i}")
    vi = VectorIndex(env, str(tmp_path), MODEL, DIM)
    vi.refresh()
    with open(vi.path, "r+b") as fh:
        fh.seek(30)
        fh.write(b"\xff\xff\xff")
    hits = vi.search(vecs[2], 3, accept_live)
    assert hits[0].uuid == uid(2) and vi.damaged and "checksum" in vi.damaged
    assert vi.refresh()["rebuilt"]
    assert vi.search(vecs[2], 1, accept_live)[0].uuid == uid(2) and vi.damaged is None


def test_numpy_backend_without_faiss(env: Env, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_NO_FAISS", "1")
    ann.faiss_module.cache_clear()
    try:
        rng = np.random.default_rng(5)
        vecs = unit(rng, 20, DIM)
        for i in range(20):
            put_item(env, uid(i), vecs[i], f"t{i}")
        vi = VectorIndex(env, str(tmp_path), MODEL, DIM)
        assert vi.refresh()["kind"] == "numpy"
        assert [h.uuid for h in vi.search(vecs[11], 1, accept_live)] == [uid(11)]
        assert "numpy" in ann.backend_name()
    finally:
        monkeypatch.delenv("KVMEDIA_NO_FAISS")
        ann.faiss_module.cache_clear()


def test_vid_value_round_trip() -> None:
    vv = V.VidValue(2**40 + 5, b"\x01" * 16, uid(3), V.model_slug("api:text-embedding/3"))
    assert V.VidValue.unpack(vv.pack()) == vv
    assert ":" not in vv.model and "/" not in vv.model
    keys = [V.vuuid_key(i) for i in (1, 2, 255, 256, 2**33)]
    assert keys == sorted(keys) and [V.vid_from_vuuid_key(k) for k in keys] == \
        [1, 2, 255, 256, 2**33]


OPS = st.lists(st.tuples(st.sampled_from(["embed", "embed", "trash", "delete", "refresh"]),
                         st.integers(0, 11), st.integers(0, 2**16)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None)
@given(ops=OPS, exact_max=st.sampled_from([1000, 0]))
def test_vector_index_matches_brute_force_after_any_history(tmp_path_factory, ops,
                                                            exact_max) -> None:
    """Whatever mix of (re-)embeds, trashes, deletes and refreshes happened, K-NN over the
    file + delta equals brute force over the items as they are now."""
    root = tmp_path_factory.mktemp("vi")
    env = Env(str(root / "media.lmdb"))
    vi = VectorIndex(env, str(root), MODEL, DIM, exact_max=exact_max)
    live: dict[str, np.ndarray] = {}
    store = RecordStore()
    try:
        for op, item, seed in ops:
            uuid = uid(item)
            if op == "embed":
                vec = unit(np.random.default_rng(seed), 1, DIM)[0]
                put_item(env, uuid, vec, f"text {seed}")
                live[uuid] = vec
            elif op == "trash" and uuid in live:
                put_item(env, uuid, live.pop(uuid), "trashed", trash=True)
            elif op == "delete":
                def drop(txn, uuid=uuid):  # type: ignore[no-untyped-def]
                    rec = store.get(txn, uuid)
                    if rec is not None:
                        w = store.writer(txn)
                        w.delete(rec)
                        w.finish()

                env.write(drop)
                live.pop(uuid, None)
            elif op == "refresh":
                vi.refresh()
            q = unit(np.random.default_rng(seed + 1), 1, DIM)[0]
            got = [(h.uuid, round(h.score, 4)) for h in vi.search(q, 5, accept_live)]
            want = sorted(((u, round(float(v @ q), 4)) for u, v in live.items()),
                          key=lambda t: (-t[1], t[0]))[:5]
            assert [s for _, s in got] == [s for _, s in want]
            assert {u for u, _ in got} <= set(live)
    finally:
        env.close()


@needs_faiss
def test_ivf_is_retrained_when_the_library_grows(env: Env, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    vecs = unit(rng, 120, DIM)
    for i in range(20):
        put_item(env, uid(i), vecs[i], f"t{i}")
    vi = VectorIndex(env, str(tmp_path), MODEL, DIM, exact_max=0)
    first = vi.refresh()
    assert first["rebuilt"] and first["trained_for"] == 20
    for i in range(20, 50):  # 50 < 4 x 20: folded into the trained lists
        put_item(env, uid(i), vecs[i], f"t{i}")
    second = vi.refresh()
    assert not second["rebuilt"] and second["count"] == 50 and second["trained_for"] == 20
    for i in range(50, 120):  # 120 > 4 x 20: lists trained again
        put_item(env, uid(i), vecs[i], f"t{i}")
    third = vi.refresh()
    assert third["rebuilt"] and third["trained_for"] == 120
    assert vi.search(vecs[77], 1, accept_live)[0].uuid == uid(77)
