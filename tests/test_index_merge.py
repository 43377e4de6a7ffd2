"""Merges and their delta trim: entries written after the merge read the delta survive the
trim, in batches of any size; merges and rebuilds with tiny batch and page-release intervals
give the same searchable index. (Memory is measured by the wide-directory tests in
tests/reliability/test_fsinputs.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmedia import Library
from kvmedia.index import merge as merge_mod
from kvmedia.index.delta import iter_delta, read_gen
from kvmedia.index.merge import DeltaSnapshot


def _tree(root: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        p = root / f"d{i % 3}" / f"holiday {i:03d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (i + 1))
        files.append(p)
    return files


@pytest.mark.parametrize("batch", [1, 3, 7, 50_000])
def test_trim_keeps_entries_changed_after_the_read(tree: Path, data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   batch: int) -> None:
    monkeypatch.setattr(merge_mod, "TRIM_BATCH", batch)
    files = _tree(tree, 20)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        maint = lib.search_engine.maintainer
        with lib.env.read() as txn:
            before = dict(iter_delta(txn))
        assert len(before) == 20
        snapshot = DeltaSnapshot()
        for uuid, value in before.items():
            snapshot.add(uuid, value)
        assert len(snapshot) == 20
        assert sorted(snapshot.uuids()) == sorted(before)
        # After the read: one file changes (new delta value), one is deleted (tombstone).
        files[4].write_bytes(b"changed, and longer than before")
        os.unlink(files[9])
        lib.upsert_paths([bytes(files[4]), bytes(files[9])])
        with lib.env.read() as txn:
            now = dict(iter_delta(txn))
        changed = {u for u in before if now.get(u) != before[u]}
        assert len(changed) == 2
        maint._trim(snapshot, 99)
        with lib.env.read() as txn:
            left = dict(iter_delta(txn))
            assert read_gen(txn) == 99
        assert set(left) == changed  # exactly the entries written after the read
        assert all(left[u] == now[u] for u in left)


def test_merge_then_search_sees_everything(tree: Path, data_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_mod, "TRIM_BATCH", 4)
    monkeypatch.setattr(merge_mod, "RELEASE_EVERY", 3)
    _tree(tree, 30)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        report = lib.search_engine.maintainer.merge()
        assert report.docs == 30
        with lib.env.read() as txn:
            assert dict(iter_delta(txn)) == {}
        assert lib.search("holiday").total == 30
        assert lib.search("holiday 017").total == 1
        report = lib.search_engine.maintainer.merge(full=True)
        assert (report.kind, report.docs) == ("rebuild", 30)
        assert lib.search("holiday").total == 30
