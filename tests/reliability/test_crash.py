"""SIGKILL at every named crash point (crashpoints.py: `KVMEDIA_CRASH_AT=name:N`) and at random
instants of a scan, a state save and a vector-file save. After each: the next open recovers,
fsck is clean, records equal the file system after a scan, nothing is duplicated, searches
equal the brute-force oracle (rel_helpers.assert_consistent)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rel_helpers import assert_consistent, fs_files, make_tree, records, run, spawn

from kvmedia import Library
from kvmedia.pathbytes import get_field

# verb, whether the file is trashed first
TRASH_POINTS = {
    "trash.before_rename": "trash", "trash.after_rename": "trash",
    "restore.before_rename": "restore", "restore.after_rename": "restore",
    "delete.before_unlink": "delete", "delete.after_unlink": "delete",
}
# scan.batch_committed: test_kill_between_scan_batches
MERGE_POINTS = ["merge.segment_written:1", "merge.manifest_written:1", "merge.delta_trimmed:1",
                "segment.section:1", "segment.section:3", "segment.section:25"]


def _records_equal_files(data_dir: Path, tree: Path) -> None:
    """Without any scan: every file has exactly one record that agrees (path, trash flag)."""
    with Library.open(data_dir) as lib:
        recs = records(lib)
    paths = sorted(get_field(r, "path") for r in recs)
    assert paths == sorted(fs_files(tree))
    for r in recs:
        assert bool(r.get("is_trash")) == (b"/.nas-trash/" in get_field(r, "path"))


def _setup(tree: Path, data_dir: Path, n: int = 40) -> list[bytes]:
    files = make_tree(tree, n)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.rebuild_index()
    return files


@pytest.mark.parametrize("point", sorted(TRASH_POINTS))
def test_kill_in_trash_ops(tree: Path, data_dir: Path, point: str, figures) -> None:
    files = _setup(tree, data_dir, 12)
    verb = TRASH_POINTS[point]
    target = files[3]
    if verb != "trash":
        assert run(data_dir, "trash", target).returncode == 0
    proc = run(data_dir, verb, target, crash_at=f"{point}:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    figures.add("crash", "kill points tried")
    _records_equal_files(data_dir, tree)  # the move and the record change did not split
    got = assert_consistent(data_dir, tree)
    figures.add("crash", "lost", got["lost"])
    figures.add("crash", "duplicated", got["duplicated"])


@pytest.mark.parametrize("command", ["optimize", "rebuild-index"])
@pytest.mark.parametrize("point", MERGE_POINTS)
def test_kill_in_merge_and_rebuild(tree: Path, data_dir: Path, point: str, command: str,
                                   figures) -> None:
    _setup(tree, data_dir, 30)
    make_tree(tree, 10, seed=100)  # a delta for the merge to fold
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        victim = records(lib)[0]
        lib.delete([victim["uuid"]])  # and a deletion it must not resurrect
    proc = run(data_dir, command, crash_at=point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    figures.add("crash", "kill points tried")
    _records_equal_files(data_dir, tree)
    with Library.open(data_dir) as lib:
        assert lib.get(victim["uuid"]) is None
    got = assert_consistent(data_dir, tree)
    figures.add("crash", "lost", got["lost"])
    figures.add("crash", "duplicated", got["duplicated"])


@pytest.mark.parametrize("batch,n", [(1, 1), (1, 3), (1, 6), (1, 10), (3, 1), (3, 2)])
def test_kill_between_scan_batches(tree: Path, data_dir: Path, n: int, batch: int,
                                   figures) -> None:
    """Killed after a batch commit, before the removals: a file renamed over another one's
    path must not leave the displaced record behind as a second record for that path."""
    files = _setup(tree, data_dir, 12)
    (Path(str(data_dir) + ".toml")).write_text(f"[scan]\nbatch_files = {batch}\n")
    os.rename(files[0], files[5])  # files[5]'s record is displaced
    os.rename(files[7], files[7] + b".moved.jpg")
    os.unlink(files[9])
    proc = run(data_dir, "scan", str(tree), crash_at=f"scan.batch_committed:{n}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    figures.add("crash", "kill points tried")
    got = assert_consistent(data_dir, tree)
    figures.add("crash", "lost", got["lost"])
    figures.add("crash", "duplicated", got["duplicated"])


def _kill_scan_at_random(tree: Path, data_dir: Path, rng: random.Random, figures) -> None:
    # Change the tree between kills: new files, removed files, renamed files.
    make_tree(tree, rng.randint(20, 120), seed=rng.randint(0, 10_000))
    files = sorted(fs_files(tree))
    for path in rng.sample(files, min(len(files), 15)):
        if rng.random() < 0.5:
            os.unlink(path)
        else:
            os.rename(path, path + b".renamed.jpg")
    proc = spawn(data_dir, "scan", str(tree))
    time.sleep(rng.uniform(0.2, 1.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    figures.add("crash", "random kills of a scan")
    figures.add("crash", "kill points tried")
    got = assert_consistent(data_dir, tree)
    figures.add("crash", "lost", got["lost"])
    figures.add("crash", "duplicated", got["duplicated"])


def test_kill_scan_at_random_instants(tree: Path, data_dir: Path, figures) -> None:
    rng = random.Random(1)
    _setup(tree, data_dir, 50)
    for _ in range(3):
        _kill_scan_at_random(tree, data_dir, rng, figures)


@pytest.mark.soak
def test_kill_scan_at_random_instants_soak(tree: Path, data_dir: Path, figures) -> None:
    rng = random.Random(int(os.environ.get("KVMEDIA_SOAK_SEED", "7")))
    _setup(tree, data_dir, 200)
    for _ in range(100):
        _kill_scan_at_random(tree, data_dir, rng, figures)


_WRITER = """
import sys, time
from kvmedia.watch.runlog import write_state
from kvmedia.vectors.snapshot import write_snapshot
d = sys.argv[1]
i = 0
while True:
    i += 1
    write_state(d, {"pid": i, "running": True, "pad": "x" * (i % 5000)})
    write_snapshot(d + "/vectors/m.kvv", {"model": "m", "dim": 4, "kind": "numpy",
                   "count": 0, "i": i}, b"y" * (i % 70000))
    print(i, flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_kill_during_state_and_vector_saves(tree: Path, data_dir: Path, delay: float,
                                            figures) -> None:
    """state.json and vector files are replaced atomically: a kill leaves one whole file."""
    _setup(tree, data_dir, 3)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(data_dir)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # at least one of each written
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    figures.add("crash", "kill points tried")
    from kvmedia.fsck import fsck

    with Library.open(data_dir) as lib:
        report = fsck(lib)
    assert report["clean"], report["problems"]
    leftovers = [n for n in os.listdir(data_dir) if n.endswith(".tmp")]
    assert all(n.startswith("state.json.") for n in leftovers)
