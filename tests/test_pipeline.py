"""Sidecars as dependencies of real media files in a real library: fields, dirty propagation
through chains and cycles, `deps`, and records == files on disk."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from kvtest import run_cli, write
from PIL import Image

from kvmedia import Library
from kvmedia.pathbytes import get_field
from kvmedia.pipeline import deps as D
from kvmedia.scan import Scanner
from tests.test_pipeline_sidecars import xmp

SRT = b"1\n00:00:01,000 --> 00:00:02,000\nhello world\n"


def jpeg(path: Path, size: tuple[int, int] = (32, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, "JPEG")
    return path


def rec_at(lib: Library, path: Path) -> dict:
    rec = lib.find_by_path(str(path))
    assert rec is not None, path
    return rec


def bump(path: Path, data: bytes) -> None:
    """Rewrite a file so its size and mtime both change."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def files_on_disk(root: Path) -> set[bytes]:
    out = set()
    for dirpath, _dirs, names in os.walk(os.fsencode(root)):
        out.update(os.path.join(dirpath, n) for n in names)
    return out


def test_sidecars_feed_records_and_are_not_media(lib: Library, tree: Path) -> None:
    jpeg(tree / "photos" / "IMG_1.JPG")
    write(tree / "photos" / "IMG_1.xmp", xmp("4", ("Beach", "Đà Lạt"), title="Sunset"))
    write(tree / "films" / "clip.mkv", b"\0" * 64)
    write(tree / "films" / "clip.en.srt", SRT)
    write(tree / "films" / "clip.ass", b"[Events]\nDialogue: 0,0:00:01.00,0:00:02.00,D,,0,0,0,,"
          b"second track\n")  # sorts before clip.mkv: the owner is not stored yet
    write(tree / "music" / "song.mp3", b"\0" * 64)
    write(tree / "music" / "song.lrc", b"[00:01.00]la la land\n")
    lib.scan([tree])

    assert lib.count() == 3  # media only: sidecars are not listed as items
    assert {r["ext"] for r in lib.list_media()} == {"jpg", "mkv", "mp3"}
    photo = rec_at(lib, tree / "photos" / "IMG_1.JPG")
    assert photo["user_tags"] == ["Beach", "Đà Lạt"] and photo["rating"] == 4
    assert photo["xmp_title"] == "Sunset"
    clip = rec_at(lib, tree / "films" / "clip.mkv")
    assert "hello world" in clip["sidecar_text"] and "second track" in clip["sidecar_text"]
    assert clip["subtitle_langs"] == ["en"]
    assert rec_at(lib, tree / "music" / "song.mp3")["sidecar_text"] == "la la land"

    assert [r["uuid"] for r in lib.search("tag:beach").hits] == [photo["uuid"]]
    assert lib.search('tag:"da lat"').total == 1  # diacritic- and case-insensitive
    assert lib.search("rating:>=4").total == 1 and lib.search("rating:5").total == 0
    assert lib.search("sunset").total == 0  # the title is a field, not a name
    for word in ("srt", "xmp", "lrc", "IMG_1"):  # no hit is a sidecar (fuzzy hits are media)
        assert {r["ext"] for r in lib.search(word).hits} <= {"jpg", "mkv", "mp3"}

    # records == media files, sidecar nodes == sidecar files: together, the files on disk
    with lib.env.read() as txn:
        sidecars = {p for _s, p in D.sidecars_under(txn, os.fsencode(tree) + b"/")}
    records = {get_field(r, "path") for r in lib.list_media()}
    assert records | sidecars == files_on_disk(tree) and not records & sidecars


def test_sidecar_change_add_and_delete_rederive(lib: Library, tree: Path) -> None:
    photo = jpeg(tree / "IMG_2.JPG")
    side = tree / "IMG_2.xmp"
    write(side, xmp("3", ("one",)))
    lib.scan([tree])
    assert rec_at(lib, photo)["rating"] == 3

    bump(side, xmp("5", ("two", "three")))
    lib.scan([tree])
    rec = rec_at(lib, photo)
    assert rec["rating"] == 5 and rec["user_tags"] == ["two", "three"]
    assert lib.search("tag:one").total == 0 and lib.search("tag:three").total == 1

    side.unlink()
    lib.upsert_paths([side])  # the watcher's path: a gone sidecar
    rec = rec_at(lib, photo)
    assert "rating" not in rec and "user_tags" not in rec and "sidecar" not in rec
    assert lib.search("rating:>=0").total == 0

    write(side, xmp("1", ("back",)))
    lib.upsert_paths([side])
    assert rec_at(lib, photo)["user_tags"] == ["back"]
    side.unlink()
    lib.scan([tree])  # a scan sweeps gone sidecars too
    assert "user_tags" not in rec_at(lib, photo)
    with lib.env.read() as txn:
        assert D.dirty(txn) == []


def test_live_photo_chain_and_cycle(lib: Library, tree: Path) -> None:
    still = jpeg(tree / "IMG_7.JPG")
    video = write(tree / "IMG_7.MOV", b"\0" * 128)
    side = tree / "IMG_7.JPG.xmp"  # belongs to the still only
    write(side, xmp("4", ("pier",)))
    lib.scan([tree])
    s, v = rec_at(lib, still), rec_at(lib, video)
    assert s["live_photo"] == {"video": v["uuid"]} and v["live_photo"] == {"still": s["uuid"]}
    assert s["user_tags"] == ["pier"]
    assert v["user_tags"] == ["pier"] and v["rating"] == 4  # inherited from the still

    deps_s, deps_v = lib.deps(s["uuid"]), lib.deps(v["uuid"])
    assert {n["kind"] for n in deps_s["depends_on"]} == {"sidecar", "record"}
    assert [n["uuid"] for n in deps_v["depends_on"]] == [s["uuid"]]
    assert [n["uuid"] for n in deps_s["needed_by"]] == [v["uuid"]]  # the cycle

    # chain: xmp -> still -> video, through a cycle, settles
    bump(side, xmp("2", ("harbour",)))
    report_before = lib.scan([tree])[0]
    assert report_before.updated == 1
    s, v = rec_at(lib, still), rec_at(lib, video)
    assert s["user_tags"] == ["harbour"] and v["user_tags"] == ["harbour"] and v["rating"] == 2

    os.unlink(video)
    lib.scan([tree])
    s = rec_at(lib, still)
    assert "live_photo" not in s and s["user_tags"] == ["harbour"]
    assert lib.deps(s["uuid"])["needed_by"] == []


def test_dirty_propagation_is_transitive_and_cycle_safe(lib: Library) -> None:
    a, b, c, d, e = (f"0000000{i}-0000-5000-8000-000000000000" for i in range(5))
    n = {u: D.record_node(u) for u in (a, b, c, d, e)}

    def graph(txn) -> list[str]:
        D.set_depends(txn, n[b], [n[a]])        # b needs a
        D.set_depends(txn, n[c], [n[b]])        # c needs b
        D.set_depends(txn, n[a], [n[c]])        # a needs c: a cycle a -> c -> b -> a
        D.set_depends(txn, n[d], [n[c], n[a]])  # d needs c and a
        return D.mark_dirty(txn, [n[a]], "test", include_sources=False)

    marked = lib.env.write(graph)
    assert marked == [b, d, c]  # breadth first, each once, the source not marked
    with lib.env.read() as txn:
        depth = {u: orjson.loads(m)["depth"] for u, m in D.dirty(txn)}
        assert depth == {b: 1, d: 1, c: 2}
        assert sorted(D.needed_by(txn, n[c])) == sorted([n[a], n[d]])
    lib.process_dirty()  # uuids without records: marks are simply cleared
    with lib.env.read() as txn:
        assert D.dirty(txn) == []
        assert e not in marked


def test_legacy_sidecar_records_are_folded_away(lib: Library, tree: Path) -> None:
    jpeg(tree / "IMG_3.JPG")
    write(tree / "IMG_3.xmp", xmp("4"))
    Scanner(lib.env, lib.store, lib.audit).scan(os.fsencode(tree))  # no sidecar hook: old way
    assert lib.count() == 2
    lib.scan([tree])
    assert lib.count() == 1 and rec_at(lib, tree / "IMG_3.JPG")["rating"] == 4


def test_moved_media_follows_its_new_sidecars(lib: Library, tree: Path) -> None:
    jpeg(tree / "a" / "IMG_4.JPG")
    write(tree / "a" / "IMG_4.xmp", xmp("4", ("old place",)))
    write(tree / "b" / "IMG_4.xmp", xmp("1", ("new place",)))
    lib.scan([tree])
    uuid = rec_at(lib, tree / "a" / "IMG_4.JPG")["uuid"]
    os.rename(tree / "a" / "IMG_4.JPG", tree / "b" / "IMG_4.JPG")
    lib.scan([tree])
    rec = rec_at(lib, tree / "b" / "IMG_4.JPG")
    assert rec["uuid"] == uuid and rec["user_tags"] == ["new place"] and rec["rating"] == 1


def test_cli_deps(data_dir: Path, tree: Path) -> None:
    jpeg(tree / "IMG_5.JPG")
    write(tree / "IMG_5.xmp", xmp("4"))
    run_cli(data_dir, "scan", str(tree), check=True)
    proc = run_cli(data_dir, "deps", "--json", str(tree / "IMG_5.JPG"), check=True)
    out = orjson.loads(proc.stdout)
    assert out["depends_on"][0]["sidecar_kind"] == "xmp" and out["dirty"] is False
    text = run_cli(data_dir, "deps", str(tree / "IMG_5.JPG"), check=True).stdout.decode()
    assert "IMG_5.xmp" in text and "needed by (0)" in text
    missing = run_cli(data_dir, "deps", str(tree / "nope.jpg"))
    assert missing.returncode == 3
