"""Every mutation is visible to the very next search in another process; damaged or missing
index files give correct answers (scan fallback) and are rebuilt; a merge killed with SIGKILL
at any step leaves a searchable index."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from kvtest import run_cli, write
from search_helpers import oracle_answer

from kvmedia import Library
from kvmedia.index import manifest as M


def cli_search(data_dir: Path, query: str, *extra: str, env: dict[str, str] | None = None
               ) -> tuple[int, list[str], str]:
    """(total, paths, mode) from `kvmedia search --json` in a separate process."""
    proc = run_cli(data_dir, "search", query, "--json", "--limit", "1000", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    head = lines[0]
    assert head["type"] == "total"
    assert (proc.returncode == 1) == (head["total"] == 0)
    return head["total"], sorted(rec["path"] for rec in lines[1:]), head["mode"]


def paths_of(data_dir: Path, query: str, *extra: str) -> list[str]:
    return cli_search(data_dir, query, *extra)[1]


def test_every_mutation_is_seen_by_another_process(tree: Path, data_dir: Path) -> None:
    write(tree / "Music" / "Beyoncé" / "Halo.mp3")
    write(tree / "Photos" / "2023" / "IMG_20230714.jpg")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
    assert paths_of(data_dir, "beyonce") == [str(tree / "Music/Beyoncé/Halo.mp3")]

    # upsert a new file
    new = write(tree / "Photos" / "2023" / "bãi biển.jpg")
    with Library.open(data_dir) as lib:
        lib.upsert_paths([new])
    assert paths_of(data_dir, "bai bien") == [str(new)]

    # rename (within the folder and to another folder)
    moved = tree / "Music" / "bien moved.jpg"
    os.rename(new, moved)
    with Library.open(data_dir) as lib:
        lib.upsert_paths([new, moved])
    assert paths_of(data_dir, "bai bien") == []
    assert paths_of(data_dir, "bien moved") == [str(moved)]
    assert paths_of(data_dir, "music bien") == [str(moved)]

    # trash and restore
    with Library.open(data_dir) as lib:
        [res] = lib.trash([str(moved)])
    assert paths_of(data_dir, "bien moved") == []
    total, trashed, _ = cli_search(data_dir, "bien moved", "--trash", "true")
    assert total == 1
    with Library.open(data_dir) as lib:
        uuid = lib.search("bien moved", trash=True).hits[0]["uuid"]
        lib.restore([uuid])
    assert paths_of(data_dir, "bien moved") == [str(moved)]

    # delete from disk, then upsert the gone path
    os.unlink(moved)
    with Library.open(data_dir) as lib:
        lib.upsert_paths([moved])
    assert paths_of(data_dir, "bien") == []

    # rescan after changes on disk
    write(tree / "TV" / "Dark" / "Dark.S01E02.mkv")
    os.unlink(tree / "Photos" / "2023" / "IMG_20230714.jpg")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
    assert paths_of(data_dir, "S01E02") == [str(tree / "TV/Dark/Dark.S01E02.mkv")]
    assert paths_of(data_dir, "20230714") == []

    # the same after folding everything into a segment (another process)
    assert run_cli(data_dir, "optimize").returncode == 0
    assert paths_of(data_dir, "S01E02") == [str(tree / "TV/Dark/Dark.S01E02.mkv")]
    assert paths_of(data_dir, "beyonce") == [str(tree / "Music/Beyoncé/Halo.mp3")]
    with Library.open(data_dir) as lib:
        lib.delete([str(tree / "Music/Beyoncé/Halo.mp3")])
    assert paths_of(data_dir, "beyonce") == []


def _library_with_segments(tree: Path, data_dir: Path, n: int = 60) -> None:
    for i in range(n):
        write(tree / f"dir{i % 5}" / f"Song {i} café.mp3")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.optimize()
        write(tree / "late" / "late café.mp3")
        lib.upsert_paths([tree / "late" / "late café.mp3"])


def _segment_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / M.DIR_NAME).glob("seg-*.kvs"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_dir",
                                    pytest.param("delete_segment", marks=pytest.mark.slow),
                                    pytest.param("manifest", marks=pytest.mark.slow)])
def test_damaged_index_falls_back_then_rebuilds(tree: Path, data_dir: Path, damage: str
                                                ) -> None:
    _library_with_segments(tree, data_dir)
    expected = paths_of(data_dir, "cafe")
    assert len(expected) == 61
    [seg] = _segment_files(data_dir)
    if damage == "truncate":
        os.truncate(seg, seg.stat().st_size // 2)
    elif damage == "flip":
        raw = bytearray(seg.read_bytes())
        raw[len(raw) // 3] ^= 0x01
        seg.write_bytes(bytes(raw))
    elif damage == "delete_segment":
        seg.unlink()
    elif damage == "delete_dir":
        for f in (data_dir / M.DIR_NAME).iterdir():
            f.unlink()
        (data_dir / M.DIR_NAME).rmdir()
    else:
        (data_dir / M.DIR_NAME / M.MANIFEST).write_bytes(b"garbage")
    total, got, mode = cli_search(data_dir, "cafe")
    assert (total, got, mode) == (61, expected, "scan")
    # the next writer rebuilds
    write(tree / "after" / "after café.mp3")
    with Library.open(data_dir) as lib:
        lib.upsert_paths([tree / "after" / "after café.mp3"])
    total, got, mode = cli_search(data_dir, "cafe")
    assert (total, mode) == (62, "index")
    assert run_cli(data_dir, "rebuild-index").returncode == 0
    assert cli_search(data_dir, "cafe")[::2] == (62, "index")


@pytest.mark.parametrize("command,point", [
    ("optimize", "segment.section:3"), ("optimize", "merge.manifest_written:1"),
    ("rebuild-index", "merge.segment_written:1"), ("rebuild-index", "merge.delta_trimmed:1"),
    pytest.param("optimize", "merge.delta_trimmed:1", marks=pytest.mark.slow),
    pytest.param("rebuild-index", "segment.section:9", marks=pytest.mark.slow),
])
def test_merge_killed_halfway_leaves_a_searchable_index(tree: Path, data_dir: Path, point: str,
                                                        command: str) -> None:
    _library_with_segments(tree, data_dir)
    write(tree / "new" / "fresh café.mp3")
    with Library.open(data_dir) as lib:
        lib.upsert_paths([tree / "new" / "fresh café.mp3"])
        lib.delete([str(tree / "dir0" / "Song 0 café.mp3")])
    env_data = dict(os.environ, KVMEDIA_CRASH_AT=point)
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "kvmedia", command],
                          env=dict(env_data, KVMEDIA_DATA_DIR=str(data_dir),
                                   KVMEDIA_CONFIG=str(data_dir) + ".toml"),
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Library.open(data_dir, readonly=False) as lib:
        for query in ("cafe", "fresh", "song 0", "song"):
            total, uuids = oracle_answer(lib, query, limit=None)
            result = lib.search(query, limit=None)
            assert result.mode == "index"
            assert (result.total, [h["uuid"] for h in result.hits]) == (total, uuids)
    total, got, mode = cli_search(data_dir, "cafe")
    assert total == 61 and mode == "index"
    assert run_cli(data_dir, "optimize").returncode == 0
    assert cli_search(data_dir, "cafe")[0] == 61
    left = {p.name for p in (data_dir / M.DIR_NAME).iterdir()}
    assert not any(name.endswith(".tmp") for name in left)


def test_reader_keeps_answering_across_a_merge_in_another_process(tree: Path, data_dir: Path
                                                                   ) -> None:
    _library_with_segments(tree, data_dir)
    with Library.open(data_dir) as reader:
        assert reader.search("cafe").total == 61
        assert run_cli(data_dir, "optimize").returncode == 0
        write(tree / "x" / "x café.mp3")
        assert run_cli(data_dir, "scan", str(tree)).returncode == 0
        assert reader.search("cafe").total == 62
        assert run_cli(data_dir, "rebuild-index").returncode == 0
        assert reader.search("cafe", explain=True).total == 62


def test_search_cli_errors_and_exit_codes(tree: Path, data_dir: Path) -> None:
    write(tree / "a.mp3")
    run_cli(data_dir, "scan", str(tree), check=True)
    assert run_cli(data_dir, "search", "a").returncode == 0
    assert run_cli(data_dir, "search", "zzz").returncode == 1
    bad = run_cli(data_dir, "search", 'size:>1Q')
    assert bad.returncode == 2 and b"column" in bad.stderr
    explain = run_cli(data_dir, "search", "a", "--explain")
    plan = json.loads(explain.stdout.splitlines()[0])
    assert plan["type"] == "explain" and plan["query"]["groups"][0][0]["text"] == "a"
