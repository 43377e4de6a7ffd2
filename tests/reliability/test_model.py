"""A hypothesis state machine against a dict model: create, modify, rename, case-only rename,
trash, restore, delete, close-and-reopen, rescan, crash-and-reopen (a `kvmedia scan`,
`optimize`, `trash`, `delete` or `restore` subprocess SIGKILLed at a named crash point or a
random instant, then a rescan) and an offline volume (the root renamed away or left as an
empty mount point, scanned, then back: nothing deleted while gone). After every step the file
system equals the model, the records equal the file system (after the rescan rule), fsck is
clean and searches equal the brute-force oracle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rel_helpers import assert_search_correct, cli_env, fs_files, records, run

from kvmedia import Library
from kvmedia.fsck import fsck
from kvmedia.pathbytes import get_field
from kvmedia.trash import TRASH_DIR, restore_names

NAMES = [b"beach.jpg", b"Beach.JPG", b"song 2023.mp3", b"clip.mkv", b"caf\xc3\xa9.png",
         b"raw\xff.jpg", b"a.txt"]
DIRS = [b"", b"d1/", b"d1/sub/", b"d2/"]
CRASHES = [("scan", "scan.batch_committed:1"), ("scan", None),  # None: a random instant
           ("optimize", "segment.section:1"), ("optimize", "merge.segment_written:1"),
           ("optimize", "merge.manifest_written:1"), ("optimize", "merge.delta_trimmed:1"),
           ("trash", "trash.before_rename:1"), ("trash", "trash.after_rename:1"),
           ("delete", "delete.before_unlink:1"), ("delete", "delete.after_unlink:1"),
           ("restore", "restore.before_rename:1"), ("restore", "restore.after_rename:1")]
SEARCHES = ["", "beach", "song", "trash:any", "café", "~beech"]


class LibraryMachine(RuleBasedStateMachine):
    max_crashes = 2  # subprocess steps per example (each costs a Python start-up)

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
        self.crashes = 0
        self.root_known = False  # scanned once: a missing root is then offline, not an error

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
        self.root_known = True

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

    @precondition(lambda self: self.crashes < self.max_crashes)
    @rule(which=st.sampled_from(CRASHES), i=st.integers(0, 100), delay=st.floats(0.0, 1.5))
    def crash_and_reopen(self, which: tuple[str, str | None], i: int, delay: float) -> None:
        """A writer in another process dies (SIGKILL); the library is reopened, must be clean
        and answer searches right as the crash left it, then a rescan catches up."""
        op, point = which
        if (op in ("trash", "delete") and not self.live) or (op == "restore"
                                                             and not self.trashed):
            op, point = "scan", None
        self.crashes += 1
        self.rescan()  # a file to trash / delete needs its record first
        target: bytes | str = self.tree
        uuid = ""
        if op in ("trash", "delete"):
            target = sorted(self.live)[i % len(self.live)]
            uuid = self.lib.find_by_path(target)["uuid"]  # type: ignore[index]
        elif op == "restore":
            target = uuid = sorted(self.trashed)[i % len(self.trashed)]
        self.lib.close()
        data_dir = os.fsdecode(self.base + b"/data")
        args = [op] if op == "optimize" else [op, target]
        if point is None:
            proc = subprocess.Popen([sys.executable, "-m", "kvmedia", *args],
                                    env=cli_env(data_dir), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
        else:
            code = run(data_dir, *args, crash_at=point).returncode
        event(f"crash: {op} at {point or 'a random instant'} "
              f"({'killed' if code == -signal.SIGKILL else 'finished first'})")
        self.lib = Library.open(data_dir)
        report = fsck(self.lib)
        assert report["clean"], report["problems"]
        assert_search_correct(self.lib, SEARCHES)
        self.rescan()  # recovers unfinished trash intents, then syncs
        if op in ("trash", "delete") and not os.path.lexists(target):
            data = self.live.pop(target)  # type: ignore[call-overload]
            if op == "trash":
                rec = self.lib.get(uuid)
                assert rec is not None and rec.get("is_trash"), "moved: its record says so"
                self.trashed[uuid] = data
            else:
                assert self.lib.get(uuid) is None, "unlinked: its record is gone"
        elif op == "restore":
            rec = self.lib.get(uuid)
            assert rec is not None
            if not rec.get("is_trash"):
                self.live[get_field(rec, "path")] = self.trashed.pop(uuid)

    @precondition(lambda self: self.root_known)
    @rule(empty_mount_point=st.booleans())
    def offline_volume(self, empty_mount_point: bool) -> None:
        """The volume goes away (renamed, or an empty mount point left behind): a scan marks
        it offline and deletes nothing; searches still answer; then it comes back."""
        before = {r["uuid"]: (get_field(r, "path"), r.get("is_trash")) for r in
                  records(self.lib)}
        away = self.base + b"/away"
        os.rename(self.tree, away)
        try:
            if empty_mount_point:
                os.mkdir(self.tree)
            (summary,) = self.lib.scan([self.tree])
            assert summary.offline or not before, summary
            assert summary.removed == 0
            after = {r["uuid"]: (get_field(r, "path"), r.get("is_trash")) for r in
                     records(self.lib)}
            assert after == before, "nothing deleted while the volume is gone"
            report = fsck(self.lib)
            assert report["clean"], report["problems"]
            assert_search_correct(self.lib, SEARCHES)
        finally:
            if empty_mount_point:
                os.rmdir(self.tree)
            os.rename(away, self.tree)
        event("offline volume" + (" (empty mount point)" if empty_mount_point else ""))

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
        assert_search_correct(self.lib, SEARCHES)


TestModel = LibraryMachine.TestCase
TestModel.settings = settings(max_examples=int(os.environ.get("KVMEDIA_MODEL_EXAMPLES", "20")),
                              stateful_step_count=20, deadline=None,
                              suppress_health_check=list(HealthCheck))


class SoakMachine(LibraryMachine):
    max_crashes = 3


@pytest.mark.soak
def test_model_soak() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(SoakMachine, settings=settings(
        max_examples=300, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck)))
