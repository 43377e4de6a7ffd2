"""Truncated and bit-flipped index segments, deleted-doc bitmaps, manifests and vector files,
and files from a future format version: every mutation is detected before use (fsck says
damaged; a text search is answered by the fallback scan, never from the bad file), search
results equal the oracle meanwhile, and the rebuild that follows leaves fsck clean."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from rel_helpers import assert_search_correct, make_tree

from kvmedia import Library
from kvmedia.fsck import fsck
from kvmedia.index import format as F
from kvmedia.index import manifest as M
from kvmedia.vectors import VectorIndex, store_embedding
from kvmedia.vectors import keys as V

DIM = 8
KINDS = ["segment", "dead", "manifest", "vectors"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A library with two segments (one with a deleted-doc bitmap), a delta and vectors."""
    base = tmp_path_factory.mktemp("pristine")
    tree, data = base / "vol", base / "data"
    make_tree(tree, 60)
    with Library.open(data) as lib:
        lib.scan([tree])
        lib.rebuild_index()
        maint = lib.search_engine.maintainer
        maint.small_segment_docs = 1  # keep the first segment: the merge writes a bitmap
        lib.delete([r["uuid"] for r in lib.list_media(limit=5)])
        make_tree(tree, 8, seed=500)
        lib.scan([tree])
        maint.merge()
        make_tree(tree, 4, seed=900)  # left in the delta
        lib.scan([tree])
        rng = np.random.default_rng(0)
        uuids = [r["uuid"] for r in lib.list_media()]

        def fn(txn: Any) -> None:
            for i, uuid in enumerate(uuids):
                vec = rng.standard_normal(DIM).astype(np.float32)
                store_embedding(txn, uuid, "m", i.to_bytes(16, "big"), vec / np.linalg.norm(vec))

        lib.env.write(fn)
        vi = VectorIndex(lib.env, str(data), "m", DIM)
        vi.refresh(full=True)
        query = rng.standard_normal(DIM).astype(np.float32)
        expect = [h.uuid for h in vi.search(query, 10, lambda _t, u: u)]
        assert fsck(lib)["clean"]
    index = data / M.DIR_NAME
    files = {"segment": sorted(index.glob("seg-*.kvs")), "dead": sorted(index.glob("*.del-*")),
             "manifest": [index / M.MANIFEST], "vectors": [data / "vectors" / "m.kvv"]}
    assert all(files.values()), files
    return {"data": data, "tree": tree, "files": files, "query": query, "expect": expect}


def _mutations(rng: random.Random, size: int, n: int) -> list[tuple[str, int, int]]:
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(("truncate", rng.randrange(0, size), 0))
        else:
            out.append(("flip", rng.randrange(0, size), 1 << rng.randrange(8)))
    return out


def _apply(path: Path, op: str, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    if op == "truncate":
        raw = raw[:offset]
    else:
        raw[offset] ^= bit
    path.write_bytes(bytes(raw))


def _check_one(pristine: dict[str, Any], work: Path, kind: str, mutate: Any) -> None:
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(pristine["data"], data)
    rel = [p.relative_to(pristine["data"]) for p in pristine["files"][kind]]
    mutate(data / rel[len(rel) - 1 if kind == "segment" else 0])
    with Library.open(data) as lib:
        report = fsck(lib)
        assert not report["clean"], "mutation not detected"
        area = "vectors" if kind == "vectors" else "index"
        assert any(p.startswith(area + ":") for p in report["problems"]), report["problems"]
        if kind == "vectors":
            vi = VectorIndex(lib.env, str(data), "m", DIM)
            got = [h.uuid for h in vi.search(pristine["query"], 10, lambda _t, u: u)]
            assert vi.damaged and got == pristine["expect"]
            vi.refresh(full=True)
        else:
            assert lib.search("beach").mode == "scan"  # detected before use
            assert_search_correct(lib)
            assert lib.search_engine.maintainer.maintain().kind == "rebuild"
            assert lib.search("beach").mode == "index"
            assert_search_correct(lib)
        report = fsck(lib)
        assert report["clean"], report["problems"]


def _run_kind(pristine: dict[str, Any], tmp_path: Path, kind: str, n: int, figures) -> None:
    rng = random.Random(hash(kind) & 0xFFFF)
    files = pristine["files"][kind]
    size = files[len(files) - 1 if kind == "segment" else 0].stat().st_size
    failures = []
    for op, offset, bit in _mutations(rng, size, n):
        figures.add("corruption", f"{kind} injected")
        try:
            _check_one(pristine, tmp_path, kind, lambda p, a=(op, offset, bit): _apply(p, *a))
        except AssertionError as exc:
            failures.append((op, offset, bit, str(exc)[:200]))
            continue
        figures.add("corruption", f"{kind} detected")
    assert not failures, failures


@pytest.mark.parametrize("kind", KINDS)
def test_mutations_detected_and_rebuilt(pristine, tmp_path: Path, kind: str, figures) -> None:
    _run_kind(pristine, tmp_path, kind, 12, figures)


@pytest.mark.soak
@pytest.mark.parametrize("kind", KINDS)
def test_mutations_detected_and_rebuilt_soak(pristine, tmp_path: Path, kind: str,
                                             figures) -> None:
    _run_kind(pristine, tmp_path, kind, 150, figures)


def _future_segment(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 8, F.FORMAT_VERSION + 1)
    table_offset, _digest, end = F.FOOTER.unpack_from(raw, len(raw) - F.FOOTER.size)
    table = bytes(raw[table_offset:len(raw) - F.FOOTER.size])
    digest = xxhash.xxh3_64_intdigest(bytes(raw[:F.HEADER.size]) + table)
    F.FOOTER.pack_into(raw, len(raw) - F.FOOTER.size, table_offset, digest, end)
    path.write_bytes(bytes(raw))


def _future_manifest(path: Path) -> None:
    body = path.read_bytes().rpartition(b"\n")[0] + b"\n"
    body = body.replace(M.MANIFEST_MAGIC, b"KVMSIDX-MANIFEST 2\n", 1)
    path.write_bytes(body + xxhash.xxh3_64_hexdigest(body).encode())


def _future_vectors(path: Path) -> None:
    raw = bytearray(path.read_bytes())[:-8]
    raw[7] = 2
    path.write_bytes(bytes(raw) + struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(raw))))


@pytest.mark.parametrize("kind,mutate", [("segment", _future_segment),
                                         ("manifest", _future_manifest),
                                         ("vectors", _future_vectors)])
def test_future_format_version_refused_and_rebuilt(pristine, tmp_path: Path, kind: str,
                                                   mutate: Any, figures) -> None:
    figures.add("corruption", "future-version files injected")
    _check_one(pristine, tmp_path, kind, mutate)
    figures.add("corruption", "future-version files detected")


def test_vector_id_file_of_other_model_not_used(pristine, tmp_path: Path) -> None:
    """A vector file holding another model's vectors is refused (never mixed into results)."""
    data = tmp_path / "data"
    shutil.copytree(pristine["data"], data)
    os.rename(data / "vectors" / "m.kvv", data / "vectors" / "other.kvv")
    with Library.open(data) as lib:
        vi = VectorIndex(lib.env, str(data), "other", DIM)
        assert vi.load()[0] is None and vi.damaged
        with lib.env.read() as txn:
            assert txn.get(V.K_VNEXT) is not None
