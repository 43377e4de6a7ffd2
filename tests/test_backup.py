"""Backup while a scan writes, restore and verify; export/import across a moved volume."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kvtest import run_cli, write

from kvmedia import BusyError, Library, UsageError
from kvmedia.pathbytes import get_field


def _b(p: Path) -> bytes:
    return os.fsencode(p)


def test_backup_during_scan_then_restore(tmp_path: Path, tree: Path, data_dir: Path) -> None:
    for d in range(40):
        for f in range(100):
            write(tree / f"d{d:02d}" / f"f{f:03d}.jpg", b"%d" % f)
    with Library.open(data_dir) as lib:  # a share key and a trashed item: only-kvmedia data
        write(tree / "keep.mp3", b"k")
        lib.scan([tree / "d00"])
        lib.upsert_paths([_b(tree / "keep.mp3")])
        token = lib.share_id(_b(tree / "keep.mp3"))
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir), KVMEDIA_SCAN_BATCH_FILES="50")
    scan = subprocess.Popen([sys.executable, "-m", "kvmedia", "scan", str(tree)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    backups = []
    with Library.open(data_dir) as lib:
        try:
            while scan.poll() is None and len(backups) < 20:
                count = lib.count()
                if 100 < count:
                    dest = tmp_path / f"bk{len(backups)}"
                    backups.append((lib.backup(str(dest)), scan.poll() is None))
        finally:
            scan.wait(timeout=120)
    assert scan.returncode == 0, scan.stderr.read() if scan.stderr else b""
    assert backups, "the scan finished before any backup could be taken"
    for n, (info, _during) in enumerate(backups):
        target = tmp_path / f"restored{n}"
        Library.restore_backup(target, info["dest"])
        with Library.open(target) as restored:
            report = restored.doctor(repair=False)
            assert report["clean"], report["problems"]
            assert report["records"] == info["records"]
            assert restored.resolve_share(token)["name"] == "keep.mp3"
    # At least one copy caught the scan half-way (a real mid-write snapshot).
    assert any(0 < info["records"] < 4001 and during for info, during in backups)


def test_restore_refused_while_open_elsewhere(tmp_path: Path, tree: Path, data_dir: Path) -> None:
    write(tree / "a.jpg", b"a")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.backup(str(tmp_path / "bk"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom kvmedia import Library\n"
         "lib = Library.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
         str(data_dir)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == b"ready"
        with pytest.raises(BusyError):
            Library.restore_backup(data_dir, str(tmp_path / "bk"))
        proc = run_cli(data_dir, "restore-backup", str(tmp_path / "bk"))
        assert proc.returncode == 4
    finally:
        holder.kill()
        holder.wait()
    info = Library.restore_backup(data_dir, str(tmp_path / "bk"))
    assert info["records"] == 1 and os.path.isdir(info["previous"])
    with pytest.raises(UsageError):
        with Library.open(data_dir) as lib:
            lib.backup(str(tmp_path / "bk"))  # not empty


def test_backup_cli(tmp_path: Path, tree: Path, data_dir: Path) -> None:
    write(tree / "a.jpg", b"a")
    run_cli(data_dir, "scan", str(tree), check=True)
    info = orjson.loads(run_cli(data_dir, "backup", str(tmp_path / "b"), "--json",
                                check=True).stdout)
    assert info["records"] == 1 and oct(os.stat(tmp_path / "b/data.mdb").st_mode)[-3:] == "600"
    other = tmp_path / "other"
    out = run_cli(other, "restore-backup", str(tmp_path / "b"), "--json", check=True).stdout
    assert orjson.loads(out)["records"] == 1
    assert run_cli(other, "count", check=True).stdout.strip() == b"1"


def test_export_import_moved_volume(tmp_path: Path, tree: Path, data_dir: Path) -> None:
    write(tree / "music/só.mp3", b"song")
    write(tree / "music/x.flac", b"flac")
    write(_b(tree) + b"/bad\xff.jpg", b"img")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        rec = lib.resolve(_b(tree / "music/x.flac"))
        # Metadata only kvmedia knows: a cached duration and a trashed item.
        lib.probe()
        probed = lib.get(rec["uuid"])["probe"]
        assert lib.trash([_b(tree / "music/só.mp3")])[0].ok
        out = io.BytesIO()
        assert lib.export(out, relative_to=_b(tree)) == {"exported": 3, "skipped": 0}
        absolute = io.BytesIO()
        lib.export(absolute)
    lines = out.getvalue().splitlines()
    assert orjson.loads(lines[0])["kvmedia_export"] == 1
    assert all(not get_field(orjson.loads(x), "path").startswith(b"/") for x in lines[1:])
    moved = tmp_path / "newmount"
    os.rename(tree, moved)  # the volume is mounted elsewhere now (same inodes)
    for source in (out, absolute):
        target = tmp_path / f"lib-{id(source)}"
        with Library.open(target) as lib2:
            summary = lib2.import_records(io.BytesIO(source.getvalue()), root=_b(moved))
            assert (summary.imported, summary.failed) == (3, 0)
            got = lib2.get(rec["uuid"])
            assert get_field(got, "path") == _b(moved / "music/x.flac")
            assert got["probe"] == probed
            scan = lib2.scan([moved])[0]
            assert (scan.added, scan.updated, scan.removed, scan.unchanged) == (0, 0, 0, 2)
            again = lib2.probe()
            assert again.fresh == again.total == 2  # nothing re-probed
            trashed = lib2.list_media(trash=True)
            assert [get_field(r, "original_path") for r in trashed] == [_b(moved / "music/só.mp3")]
            assert lib2.restore([trashed[0]["uuid"]])[0].ok
            assert (moved / "music/só.mp3").read_bytes() == b"song"
            assert lib2.trash([trashed[0]["uuid"]])[0].ok
            assert lib2.doctor(repair=False)["clean"]


def test_import_rejects_bad_lines(tmp_path: Path, lib: Library) -> None:
    good = {"uuid": "0" * 8 + "-0000-5000-8000-" + "0" * 12, "path": "/mnt/v/a.jpg",
            "type": "image", "size": 1, "mtime_ns": 5}
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps(dict(good, uuid="nope")),
        orjson.dumps(dict(good, uuid=good["uuid"][:-1] + "1", path="/mnt/v/../etc/passwd")),
        orjson.dumps(dict(good, uuid=good["uuid"][:-1] + "2", path="relative/x.jpg")),
    ]
    summary = lib.import_records(io.BytesIO(b"\n".join(lines)))
    assert (summary.imported, summary.failed) == (1, 4)
    assert [e["line"] for e in summary.errors] == [2, 3, 4, 5]
    header = orjson.dumps({"kvmedia_export": 1, "relative_to": "/x"})
    with pytest.raises(UsageError, match="--root"):
        lib.import_records(io.BytesIO(header + b"\n" + orjson.dumps(good)))
    assert lib.doctor(repair=False)["clean"]


def test_cli_export_import(tmp_path: Path, tree: Path, data_dir: Path) -> None:
    write(tree / "a.jpg", b"a")
    write(tmp_path / "elsewhere/b.jpg", b"b")
    run_cli(data_dir, "scan", str(tree), str(tmp_path / "elsewhere"), check=True)
    dump = tmp_path / "dump.jsonl"
    proc = run_cli(data_dir, "export", "--relative-to", str(tree), "-o", str(dump), check=True)
    assert b"1 records outside" in proc.stderr
    other = tmp_path / "lib2"
    out = run_cli(other, "import", str(dump), "--root", str(tree), "--json", check=True).stdout
    assert orjson.loads(out)["imported"] == 1
    listed = run_cli(other, "list", "--json", check=True).stdout.splitlines()
    assert [get_field(orjson.loads(x), "path") for x in listed] == [_b(tree / "a.jpg")]


def test_restore_drops_the_search_index_of_the_newer_library(tmp_path: Path, tree: Path,
                                                             data_dir: Path) -> None:
    """Index segments written after the backup must not answer for the restored records."""
    write(tree / "kept.jpg")
    write(tree / "before.jpg")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        info = lib.backup(str(tmp_path / "bk"))
        os.rename(tree / "before.jpg", tree / "after.jpg")
        write(tree / "newcomer.jpg")
        lib.scan([tree])
        lib.optimize()  # the renamed and the new file now live in an index segment
        assert {h["name"] for h in lib.search("newcomer").hits} == {"newcomer.jpg"}
    Library.restore_backup(data_dir, info["dest"])
    with Library.open(data_dir) as lib:
        assert lib.search("newcomer").hits == []
        assert lib.search("after").hits == []
        assert {h["name"] for h in lib.search("before").hits} == {"before.jpg"}
        assert {h["name"] for h in lib.search("jpg").hits} == {"kept.jpg", "before.jpg"}
