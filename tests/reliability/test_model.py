"""A hypothesis state machine against a dict model: create, modify, rename, case-only rename,
trash, restore, delete, close-and-reopen, rescan. After every step the file system equals the
model, the records equal the file system (after the rescan rule), fsck is clean and searches
equal the brute-force oracle."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rel_helpers import assert_search_correct, fs_files, records

from kvmedia import Library
from kvmedia.fsck import fsck
from kvmedia.pathbytes import get_field
from kvmedia.trash import TRASH_DIR, restore_names

NAMES = [b"beach.jpg", b"Beach.JPG", b"song 2023.mp3", b"clip.mkv", b"caf\xc3\xa9.png",
         b"raw\xff.jpg", b"a.txt"]
DIRS = [b"", b"d1/", b"d1/sub/", b"d2/"]


class LibraryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="kvm-model-").encode()
        self.tree = self.base + b"/vol"
        os.mkdir(self.tree)
        self.lib = Library.open(os.fsdecode(self.base + b"/data"))
        self.live: dict[bytes, bytes] = {}   # path -> content of every live file
        self.trashed: dict[str, bytes] = {}  # uuid -> content of every trashed file
        self.scanned = True
        self.counter = 0

    def teardown(self) -> None:
        self.lib.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def _content(self) -> bytes:
        self.counter += 1
        return b"c%d" % self.counter

    @rule(d=st.sampled_from(DIRS), name=st.sampled_from(NAMES))
    def create(self, d: bytes, name: bytes) -> None:
        path = self.tree + b"/" + d + name
        if path in self.live:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = self._content()
        with open(path, "wb") as fh:
            fh.write(data)
        self.live[path] = data
        self.scanned = False

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100))
    def modify(self, i: int) -> None:
        path = sorted(self.live)[i % len(self.live)]
        data = self._content() + b"-modified"
        with open(path, "wb") as fh:
            fh.write(data)
        self.live[path] = data
        self.scanned = False

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100), d=st.sampled_from(DIRS), name=st.sampled_from(NAMES),
          case_only=st.booleans())
    def rename(self, i: int, d: bytes, name: bytes, case_only: bool) -> None:
        src = sorted(self.live)[i % len(self.live)]
        dst = (os.path.join(os.path.dirname(src), os.path.basename(src).swapcase())
               if case_only else self.tree + b"/" + d + name)
        if dst in self.live or dst == src:
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)
        self.live[dst] = self.live.pop(src)
        self.scanned = False

    @rule()
    def rescan(self) -> None:
        self.lib.scan([self.tree])
        self.scanned = True

    @rule()
    def reopen(self) -> None:
        self.lib.close()
        self.lib = Library.open(os.fsdecode(self.base + b"/data"))

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100))
    def trash(self, i: int) -> None:
        self.rescan()  # the file must have a record first
        path = sorted(self.live)[i % len(self.live)]
        (res,) = self.lib.trash([path])
        assert res.ok, res.error
        self.trashed[res.record["uuid"]] = self.live.pop(path)
        event("trash")

    @precondition(lambda self: self.trashed)
    @rule(i=st.integers(0, 100))
    def restore(self, i: int) -> None:
        self.rescan()
        uuid = sorted(self.trashed)[i % len(self.trashed)]
        original = get_field(self.lib.get(uuid), "original_path")
        (res,) = self.lib.restore([uuid])
        assert res.ok, res.error
        path = get_field(res.record, "path")
        assert os.path.dirname(path) == os.path.dirname(original)
        assert os.path.basename(path) in restore_names(os.path.basename(original))
        assert path not in self.live
        self.live[path] = self.trashed.pop(uuid)
        event("restore" if path == original else "restore under a new name")

    @precondition(lambda self: self.trashed or self.live)
    @rule(i=st.integers(0, 100), trashed=st.booleans())
    def delete(self, i: int, trashed: bool) -> None:
        self.rescan()
        if trashed and self.trashed:
            uuid = sorted(self.trashed)[i % len(self.trashed)]
            (res,) = self.lib.delete([uuid])
            self.trashed.pop(uuid)
        elif self.live:
            path = sorted(self.live)[i % len(self.live)]
            (res,) = self.lib.delete([path])
            self.live.pop(path)
        else:
            return
        assert res.ok, res.error
        event("delete")

    @invariant()
    def files_equal_model(self) -> None:
        files = fs_files(self.tree)
        live = {p for p in files if b"/" + TRASH_DIR + b"/" not in p}
        assert live == set(self.live)
        for path, data in self.live.items():
            with open(path, "rb") as fh:
                assert fh.read() == data
        in_trash = files - live
        assert len(in_trash) == len(self.trashed)

    @invariant()
    def records_agree(self) -> None:
        recs = records(self.lib)
        by_path = {get_field(r, "path"): r for r in recs}
        assert len(by_path) == len(recs)  # no duplicates
        trashed = {r["uuid"] for r in recs if r.get("is_trash")}
        assert trashed == set(self.trashed)
        for uuid in trashed:
            with open(get_field(self.lib.get(uuid), "path"), "rb") as fh:
                assert fh.read() == self.trashed[uuid]
        if self.scanned:
            assert {p for p, r in by_path.items() if not r.get("is_trash")} == set(self.live)
        report = fsck(self.lib)
        assert report["clean"], report["problems"]
        assert_search_correct(self.lib, ["", "beach", "song", "trash:any", "café", "~beech"])


TestModel = LibraryMachine.TestCase
TestModel.settings = settings(max_examples=int(os.environ.get("KVMEDIA_MODEL_EXAMPLES", "20")),
                              stateful_step_count=20, deadline=None,
                              suppress_health_check=list(HealthCheck))


@pytest.mark.soak
def test_model_soak() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(LibraryMachine, settings=settings(
        max_examples=300, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck)))
