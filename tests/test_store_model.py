"""A stateful property test: random file-tree histories against a dict model of the tree.

Rules create, modify, touch, rename, move across directories, chmod and delete real files,
rescan (fully or interrupted part-way) and reopen the library. After every full rescan the
records equal the files on disk (exact bytes paths, size, mtime, inode), uuids are unique,
a file keeps its uuid unless it was both moved and rewritten, a new file never inherits the
uuid of another file, per-type stats equal a recount, and `doctor` finds nothing to repair.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvmedia import Library
from kvmedia.config import Config
from kvmedia.identity import uuid_from_triplet
from kvmedia.pathbytes import get_field
from kvmedia.records import MEDIA_TYPES, infer_type

NAMES = [b"a.jpg", b"A.JPG", b"b.mp4", b"\xff\xfe.mp3", "caf\u00e9.png".encode(),
         "cafe\u0301.png".encode(), b"photo 1.jpeg", b"x", b"x.y.flac", "\u65e5\u672c.mkv".encode(),
         b"a.jpg.txt", b"z\x01ctl.wav"]
SUBDIRS = [b"", b"a", b"a/deep", b"zz", b"\xfe\xff dir", b"a0"]


@dataclass
class FileModel:
    ino: int
    uuid: str | None = None
    moved: bool = False
    modified: bool = False


class StopAfter(threading.Event):
    """A stop event that reports itself set after `n` checks: the scan checks it once per
    walk item, so the scan stops after exactly `n` items, as on Ctrl-C."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0 or super().is_set()


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="kvm-model-").encode()
        self.root = os.path.join(self.tmp, b"vol")
        for sub in SUBDIRS:
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.data = os.path.join(self.tmp, b"data").decode()
        self.lib = Library.open(self.data)
        self.files: dict[bytes, FileModel] = {}
        self.dead: dict[str, tuple[bytes, int]] = {}  # uuid of a deleted file -> (path, ino)
        self.counter = 0
        self.mtime = 1_600_000_000 * 10**9

    def teardown(self) -> None:
        self.lib.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _content(self) -> bytes:
        """Every write gets a size never used before, so "same size" means "same content"."""
        self.counter += 1
        return b"c" * self.counter

    def _free(self, sub: bytes, name: bytes) -> bytes | None:
        path = os.path.join(self.root, sub, name) if sub else os.path.join(self.root, name)
        if path in self.files or os.path.lexists(path):
            return None
        return path

    def _pick(self, data: st.DataObject) -> bytes | None:
        """A random live file, or None when there is none (the rule then does nothing)."""
        if not self.files:
            return None
        return data.draw(st.sampled_from(sorted(self.files)))

    # -- file system rules -----------------------------------------------------------------

    @rule(sub=st.sampled_from(SUBDIRS), name=st.sampled_from(NAMES))
    def create(self, sub: bytes, name: bytes) -> None:
        path = self._free(sub, name)
        if path is None:
            return
        with open(path, "wb") as fh:
            fh.write(self._content())
        self.files[path] = FileModel(os.stat(path).st_ino)

    @rule(data=st.data())
    def modify(self, data: st.DataObject) -> None:
        path = self._pick(data)
        if path is None:
            return
        with open(path, "r+b") as fh:  # same inode, new size
            fh.truncate(0)
            fh.write(self._content())
        self.files[path].modified = True

    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        path = self._pick(data)
        if path is None:
            return
        self.mtime += 1_234_567
        os.utime(path, ns=(self.mtime, self.mtime))
        self.files[path].modified = True

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename(self, data: st.DataObject, name: bytes) -> None:
        path = self._pick(data)
        if path is None:
            return
        new = os.path.join(os.path.dirname(path), name)
        if new in self.files or os.path.lexists(new):
            return
        os.rename(path, new)
        self.files[new] = self.files.pop(path)
        self.files[new].moved = True

    @rule(data=st.data(), sub=st.sampled_from(SUBDIRS))
    def move(self, data: st.DataObject, sub: bytes) -> None:
        path = self._pick(data)
        if path is None:
            return
        new = self._free(sub, os.path.basename(path))
        if new is None:
            return
        os.rename(path, new)
        self.files[new] = self.files.pop(path)
        self.files[new].moved = True

    @rule(data=st.data(), mode=st.sampled_from([0o600, 0o644, 0o400]))
    def chmod(self, data: st.DataObject, mode: int) -> None:
        path = self._pick(data)
        if path is not None:
            os.chmod(path, mode)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        path = self._pick(data)
        if path is None:
            return
        model = self.files.pop(path)
        os.unlink(path)
        if model.uuid is not None:
            self.dead[model.uuid] = (path, model.ino)

    # -- library rules ---------------------------------------------------------------------

    @rule(batch_files=st.sampled_from([1, 2, 3, 2000]))
    def reopen(self, batch_files: int) -> None:
        """Reopen, with tiny write batches at times: every batch boundary of the merge-join
        is then exercised (under load a batch also ends after BATCH_SECONDS)."""
        self.lib.close()
        self.lib = Library.open(self.data, config=Config({"data_dir": self.data,
                                                          "scan.batch_files": batch_files}))

    @rule(n=st.integers(1, 6))
    def interrupted_scan(self, n: int) -> None:
        known = {p: m.uuid for p, m in self.files.items()
                 if m.uuid is not None and not m.moved and not m.modified}
        (summary,) = self.lib.scan([self.root], stop=StopAfter(n))
        if summary.interrupted:
            assert summary.removed == 0
        recs = self._records()
        for path, uuid in known.items():  # an interrupted scan loses nothing it knew
            assert path in recs and recs[path]["uuid"] == uuid
        self._check_store(recs)

    @rule()
    def rescan(self) -> None:
        (summary,) = self.lib.scan([self.root])
        assert not summary.interrupted and not summary.offline and summary.errors == 0
        recs = self._records()
        assert set(recs) == set(self.files), "records == files on disk"
        self._check_store(recs)
        for path, model in self.files.items():
            rec = recs[path]
            st_ = os.stat(path)
            assert (rec["ino"], rec["size"], rec["mtime_ns"]) == (
                st_.st_ino, st_.st_size, st_.st_mtime_ns)
            assert rec["type"] == infer_type(os.path.basename(path))
            assert get_field(rec, "name") == os.path.basename(path)
            if model.uuid is not None and not (model.moved and model.modified):
                assert rec["uuid"] == model.uuid, "a file keeps its uuid"
            if model.uuid is None and rec["uuid"] in self.dead:
                # A new file carries a deleted file's uuid only when rewritten in place (same
                # path and inode), or when it reused the inode within the same ctime second
                # after the old record was gone: the same triplet, so the same PlainNAS id.
                assert self.dead[rec["uuid"]] == (path, model.ino) or rec["uuid"] == (
                    uuid_from_triplet(rec["fs_uuid"], rec["ino"], rec["ctime"]))
            model.uuid = rec["uuid"]
            model.moved = model.modified = False
        live = {m.uuid for m in self.files.values()}
        self.dead = {u: v for u, v in self.dead.items() if u not in live}
        # Stats equal a recount of the model.
        stats = self.lib.stats()["types"]
        for media_type in MEDIA_TYPES:
            mine = [p for p in self.files if infer_type(os.path.basename(p)) == media_type]
            assert stats[media_type]["count"] == len(mine)
            assert stats[media_type]["bytes"] == sum(os.stat(p).st_size for p in mine)
        assert stats["all"]["count"] == len(self.files) == self.lib.count()
        # A second scan right away changes nothing.
        (again,) = self.lib.scan([self.root])
        assert again.unchanged == len(self.files)
        assert (again.added, again.updated, again.moved, again.removed) == (0, 0, 0, 0)

    # -- checks ----------------------------------------------------------------------------

    def _records(self) -> dict[bytes, dict[str, Any]]:
        out: dict[bytes, dict[str, Any]] = {}
        for rec in self.lib.list_media(sort="name"):
            path = get_field(rec, "path")
            assert path not in out, "two records for one path"
            out[path] = rec
        return out

    def _check_store(self, recs: dict[bytes, dict[str, Any]]) -> None:
        uuids = [r["uuid"] for r in recs.values()]
        assert len(set(uuids)) == len(uuids), "uuids are unique"
        report = self.lib.doctor(repair=False)
        assert report["clean"], report["problems"]
        assert report["records"] == len(recs)

    @invariant()
    def listing_orders_mirror(self) -> None:
        asc = [r["uuid"] for r in self.lib.list_media(sort="mod")]
        desc = [r["uuid"] for r in self.lib.list_media(sort="moddesc")]
        assert desc == asc[::-1]


TreeMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("KVMEDIA_MODEL_EXAMPLES", "60")), stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_tree_model = TreeMachine.TestCase
