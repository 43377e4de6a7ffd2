"""The change feed: one entry per committed change, in the change's own transaction."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmedia import Library
from kvmedia.changefeed import ChangeFeed, classify
from kvmedia.pathbytes import get_field, set_field
from kvmedia.store.keys import path_key


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _ops(lib: Library, since: int = 0) -> list[tuple[str, str | None]]:
    return [(e["op"], e.get("path")) for e in lib.events(since).entries]


def test_scan_upsert_and_removal_write_matching_entries(lib: Library, tree: Path) -> None:
    a = _write(tree / "a.jpg", b"a")
    b = _write(tree / "b.mp3", b"b")
    lib.scan([tree])
    assert sorted(_ops(lib)) == [("added", str(a)), ("added", str(b))]
    cursor = lib.events().cursor
    assert cursor == 2

    a.write_bytes(b"longer")
    os.rename(b, tree / "c.mp3")
    lib.upsert_paths([a, tree / "c.mp3", b])
    page = lib.events(cursor)
    by_op = {e["op"]: e for e in page.entries}
    assert set(by_op) == {"modified", "moved"}
    assert by_op["modified"]["size"] == 6 and by_op["modified"]["path"] == str(a)
    assert by_op["moved"]["from"] == str(b) and by_op["moved"]["path"] == str(tree / "c.mp3")
    assert by_op["moved"]["media_type"] == "audio"

    a.unlink()
    lib.scan([tree])
    assert _ops(lib, page.cursor) == [("deleted", str(a))]
    assert lib.events(lib.events().latest).entries == []


def test_non_utf8_paths_round_trip(lib: Library, tree: Path) -> None:
    raw = os.fsencode(tree) + b"/caf\xe9.jpg"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    lib.scan([tree])
    (entry,) = lib.events().entries
    assert "path" not in entry and get_field(entry, "path") == raw


def test_trash_and_restore_through_the_record_writer(lib: Library, tree: Path) -> None:
    f = _write(tree / "t.jpg")
    lib.scan([tree])
    rec = lib.find_by_path(os.fsencode(f))
    assert rec is not None

    def flip(trash: bool) -> None:
        def fn(txn: object) -> None:
            w = lib.store.writer(txn)  # type: ignore[arg-type]
            old = lib.store.get(txn, rec["uuid"])  # type: ignore[arg-type]
            new = dict(old)
            new["is_trash"] = trash
            w.put(new, old)
            w.finish()

        lib.env.write(fn)

    flip(True)
    flip(False)
    assert [e["op"] for e in lib.events().entries] == ["added", "trashed", "restored"]


def test_a_rolled_back_change_leaves_no_entry(lib: Library, tree: Path) -> None:
    f = _write(tree / "r.jpg")
    lib.scan([tree])
    rec = lib.find_by_path(os.fsencode(f))

    def fn(txn: object) -> None:
        w = lib.store.writer(txn)  # type: ignore[arg-type]
        w.delete(rec)  # type: ignore[arg-type]
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        lib.env.write(fn)
    assert [e["op"] for e in lib.events().entries] == ["added"]


def test_a_root_going_offline_is_reported_once(lib: Library, tree: Path, tmp_path: Path) -> None:
    _write(tree / "o.jpg")
    lib.scan([tree])
    hidden = tmp_path / "unmounted"
    os.rename(tree, hidden)
    lib.scan([tree])
    lib.scan([tree])
    offline = [e for e in lib.events().entries if e["op"] == "offline"]
    assert len(offline) == 1
    assert offline[0]["path"] == str(tree) and "missing" in offline[0]["reason"]
    os.rename(hidden, tree)
    lib.scan([tree])
    assert [e["op"] for e in lib.events().entries] == ["added", "offline"]


def test_the_feed_is_bounded_and_reports_a_gap(data_dir: Path, tree: Path) -> None:
    lib = Library.open(data_dir)
    try:
        lib.feed.max_entries = 300
        for i in range(1100):
            _write(tree / f"f{i:04d}.jpg")
        lib.scan([tree])
        page = lib.events(0)
        assert page.latest == 1100
        assert page.gap and page.oldest > 1
        assert len(page.entries) <= 300 + 256
        assert [e["seq"] for e in page.entries] == list(range(page.oldest, 1101))
        fresh = lib.events(page.oldest - 1)
        assert not fresh.gap and fresh.entries == page.entries
        assert lib.events(1100).entries == [] and not lib.events(1100).gap
        assert lib.events(1095, limit=3).cursor == 1098
    finally:
        lib.close()


def test_classify() -> None:
    base = {"uuid": "u", "is_trash": False}
    set_field(base, "path", b"/a")
    moved = dict(base)
    set_field(moved, "path", b"/b")
    trashed = dict(base, is_trash=True)
    assert classify(None, base) == "added"
    assert classify(base, None) == "deleted"
    assert classify(base, dict(base, size=3)) == "modified"
    assert classify(base, moved) == "moved"
    assert classify(base, trashed) == "trashed"
    assert classify(trashed, base) == "restored"


# -- property: replaying the feed rebuilds exactly the live records -------------------------

ACTIONS = st.lists(
    st.tuples(st.sampled_from(["create", "modify", "rename", "delete", "mvdir", "rmdir"]),
              st.integers(0, 5), st.integers(0, 5)),
    min_size=1, max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_replaying_the_feed_equals_the_records(tmp_path_factory: pytest.TempPathFactory,
                                               actions: list[tuple[str, int, int]]) -> None:
    base = tmp_path_factory.mktemp("feedprop")
    root = base / "vol"
    root.mkdir()
    lib = Library.open(base / "data")
    try:
        lib.scan([root])
        for action, i, j in actions:
            src = root / f"d{i % 2}" / f"f{i}.jpg"
            changed: list[Path] = []
            before = {get_field(r, "path"): r["uuid"] for r in lib.list_media()}
            renames: dict[bytes, bytes] = {}  # new path -> old path
            if action == "create":
                _write(src, b"c" * (j + 1))
                changed = [src]
            elif action == "modify" and src.exists():
                src.write_bytes(b"m" * (j + 7))
                changed = [src]
            elif action == "rename" and src.exists():
                dst = root / f"d{j % 3}" / f"g{j}.jpg"
                dst.parent.mkdir(exist_ok=True)
                if not dst.exists():
                    os.rename(src, dst)
                    changed = [dst, src]
                    renames[os.fsencode(dst)] = os.fsencode(src)
            elif action == "delete" and src.exists():
                src.unlink()
                changed = [src]
            elif action == "mvdir" and (root / f"d{i % 2}").exists():
                dst = root / f"moved{j}"
                if not dst.exists():
                    old_dir = os.fsencode(root / f"d{i % 2}")
                    os.rename(old_dir, dst)
                    changed = [dst, root / f"d{i % 2}"]
                    for p in dst.rglob("*"):
                        new = os.fsencode(p)
                        renames[new] = old_dir + new[len(os.fsencode(dst)):]
            elif action == "rmdir" and (root / f"d{i % 2}").exists():
                shutil.rmtree(root / f"d{i % 2}")
                changed = [root / f"d{i % 2}"]
            if changed:
                lib.upsert_paths(changed)
            for new, old in renames.items():  # both halves in one call: the uuid survives
                if old in before:
                    assert lib.find_by_path(new)["uuid"] == before[old]  # type: ignore[index]
        lib.scan([root])
        live: dict[str, bytes] = {}
        for e in lib.events(0).entries:
            path = get_field(e, "path")
            if e["op"] in ("added", "modified", "moved", "restored"):
                live[e["uuid"]] = path  # type: ignore[assignment]
            elif e["op"] in ("deleted", "trashed"):
                live.pop(e["uuid"], None)
        records = {r["uuid"]: get_field(r, "path") for r in lib.list_media()}
        assert live == records
        on_disk = {os.fsencode(p) for p in root.rglob("*") if p.is_file()}
        assert set(records.values()) == on_disk
        with lib.env.read() as txn:
            for path in on_disk:
                assert txn.get(path_key(path)) is not None
        assert isinstance(lib.feed, ChangeFeed)
    finally:
        lib.close()


def test_metadata_only_updates_make_no_entry() -> None:
    base = {"uuid": "u", "path": "/v/a.jpg", "size": 1, "mtime_ns": 5, "ino": 7,
            "fs_uuid": "f", "is_trash": False}
    assert classify(base, dict(base, duration_sec=3.5, keywords="beach")) is None
    assert classify(base, dict(base, mtime_ns=6)) == "modified"
    assert classify(base, dict(base, ino=8)) == "modified"
