"""Merges and rebuilds: fold the LMDB delta (and small segments) into a new segment, or write
the whole index again from the records; then switch the manifest and trim the delta.

Order (each step leaves a usable index if the process dies right after it):

 1. lock `.lock`; read the manifest and, in one LMDB read transaction, the delta and `sidx:gen`
 2. write the new segment file and new deleted-doc bitmaps (tmp + fsync + rename)
 3. write the new manifest (tmp + fsync + rename + dir fsync)     <- the switch
 4. one LMDB write: drop delta entries unchanged since step 1, store the new `sidx:gen`
 5. delete files no manifest names

Before 3 readers use the old manifest + the full delta; between 3 and 4 they use the new one
and the delta still shadows what it already holds (same answers). Crash points (crashpoints.py):
`merge.segment_written`, `merge.manifest_written`, `merge.delta_trimmed`, `segment.section`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import numpy as np
import xxhash

from .. import crashpoints
from ..errors import DamagedError, StorageError
from ..store.env import Env
from ..store.recordstore import RecordStore
from . import manifest as M
from .builder import SegmentBuilder
from .delta import K_GEN, delta_key, iter_delta, read_gen
from .parallel import add_all_records, add_delta_docs, should_fork
from .segment import Segment
from .status import DAMAGED_MARK, MERGE_DELTA_DOCS
from .status import needs_rebuild as _needs_rebuild

SMALL_SEGMENT_DOCS = 50_000
"""Segments with fewer live docs than this (or than the delta) are rewritten by a merge."""
MAX_SEGMENTS = 6
RELEASE_EVERY = 1_000
"""Docs read between two `Env.release_pages` (~0.5 ms each). Reading a record faults in its
leaf page and the kernel maps up to 15 cached neighbours with it (fault-around: ~27 KB of RSS
a record read in uuid order at 1M, whose leaves lie all over the file); released every 1,000,
a merge's mapped LMDB pages stay near 30 MB (every 5,000: 150 MB)."""
TRIM_BATCH = 50_000
"""Delta entries dropped per write transaction after a merge."""
UUID_LEN = 36


@dataclass
class MergeReport:
    kind: str            # "merge" | "rebuild" | "none"
    docs: int = 0        # docs written to the new segment
    segments: int = 0    # segments in the new manifest
    seconds: float = 0.0
    gen: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__, type="index")


class IndexMaintainer:
    def __init__(self, env: Env, data_dir: str) -> None:
        self.env = env
        self.index_dir = os.path.join(data_dir, M.DIR_NAME)
        self.merge_delta_docs = MERGE_DELTA_DOCS
        self.small_segment_docs = SMALL_SEGMENT_DOCS

    # -- state ------------------------------------------------------------------------------

    def mark_damaged(self, why: str) -> None:
        try:
            os.makedirs(self.index_dir, mode=0o700, exist_ok=True)
            with open(os.path.join(self.index_dir, DAMAGED_MARK), "w") as fh:
                fh.write(why + "\n")
        except OSError:
            pass

    def needs_rebuild(self) -> bool:
        """Cheap check (no checksums): missing index, damage mark, missing files."""
        return _needs_rebuild(self.env, self.index_dir)

    def init_empty(self) -> None:
        """A library with no records gets generation 0 (see delta.init_gen)."""
        from .delta import init_gen

        init_gen(self.env)

    def maintain(self) -> MergeReport:
        """What a writer calls after its work: rebuild a damaged/missing index, fold a large
        delta. Skips (kind "none") when another process holds the merge lock."""
        from ..errors import BusyError
        from .delta import count_delta

        try:
            if self.needs_rebuild():
                return self.merge(full=True, wait=False)
            with self.env.read() as txn:
                limit = self.merge_delta_docs
                big = count_delta(txn, stop_at=limit) >= limit
            return self.merge(wait=False) if big else MergeReport("none")
        except BusyError:
            return MergeReport("none")

    # -- merging ----------------------------------------------------------------------------

    def merge(self, *, full: bool = False, optimize: bool = False, wait: bool = True
              ) -> MergeReport:
        """Fold the delta into a new segment (`full`: rebuild everything from the records;
        `optimize`: merge every segment into one)."""
        started = time.monotonic()
        with M.merge_lock(self.index_dir, wait=wait):
            try:
                man = M.read_manifest(self.index_dir)
            except DamagedError:
                man, full = None, True
            if not full and self.needs_rebuild():
                full = True
            man = man or M.Manifest()
            builder = SegmentBuilder()
            snapshot = DeltaSnapshot()
            with self.env.read() as txn:
                if read_gen(txn) is None:
                    full = True
                for uuid, value in iter_delta(txn):
                    snapshot.add(uuid, value)
                    if len(snapshot) % RELEASE_EVERY == 0:
                        self.env.release_pages(trim=False)
                if not full:
                    add_delta_docs(builder, self.env, txn, len(snapshot), RELEASE_EVERY)
                if full:
                    add_all_records(builder, self.env, txn, RELEASE_EVERY)
                    keep: list[M.SegmentEntry] = []
                else:
                    keep = self._fold(txn, man, snapshot, builder, optimize)
            self.env.release_pages(trim=False)
            new_gen = max(man.gen, self._lmdb_gen()) + 1
            entries = list(keep)
            try:
                docs = len(builder)
                if docs:
                    name = f"seg-{new_gen:06d}.kvs"
                    size = builder.finish(os.path.join(self.index_dir, name), crashpoints.hit,
                                          fork=should_fork(docs))
                    entries.append(M.SegmentEntry(name, docs, size))
                del builder
                crashpoints.hit("merge.segment_written")
                M.write_manifest(self.index_dir, M.Manifest(new_gen, entries))
            except OSError as exc:  # disk full, quota, I/O: the old index stays in force
                self._abandon(new_gen)
                raise StorageError(f"cannot write the search index in {self.index_dir}: "
                                   f"{exc.strerror or exc}; free some space and retry",
                                   path=self.index_dir) from exc
            crashpoints.hit("merge.manifest_written")
            self._trim(snapshot, new_gen)
            crashpoints.hit("merge.delta_trimmed")
            if full:
                try:
                    os.unlink(os.path.join(self.index_dir, DAMAGED_MARK))
                except FileNotFoundError:
                    pass
            M.remove_unreferenced(self.index_dir, M.Manifest(new_gen, entries))
        return MergeReport("rebuild" if full else "merge", docs, len(entries),
                           time.monotonic() - started, new_gen)

    def _abandon(self, gen: int) -> None:
        """Remove what a failed merge of generation `gen` wrote, unless the manifest on disk
        already names it (the failure came after the switch)."""
        try:
            named = (M.read_manifest(self.index_dir) or M.Manifest()).files()
        except DamagedError:
            return
        for name in (f"seg-{gen:06d}.kvs", f"seg-{gen:06d}.kvs.tmp", M.MANIFEST + ".tmp"):
            if name not in named:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.index_dir, name))

    def _lmdb_gen(self) -> int:
        with self.env.read() as txn:
            gen = read_gen(txn)
        return gen or 0

    def _fold(self, txn: lmdb.Transaction, man: M.Manifest, snapshot: DeltaSnapshot,
              builder: SegmentBuilder, optimize: bool) -> list[M.SegmentEntry]:
        """Add the live docs of the segments folded away to `builder`; return the segments
        kept (with updated deleted bitmaps)."""
        live = [s for s in man.segments if s.docs - s.dead_count > 0]
        threshold = max(self.small_segment_docs, len(snapshot))
        fold = [s for s in live if optimize or s.docs - s.dead_count < threshold]
        if len(live) - len(fold) + 1 > MAX_SEGMENTS:
            fold = live
        changed = snapshot.uuids() if live else []
        keep = []
        for entry in live:
            seg = Segment(os.path.join(self.index_dir, entry.file), entry.file)
            dead = self._dead(entry)
            newly = seg.lookup(changed)  # shadowed by the delta: its rows are newer
            if entry in fold:
                alive = ~dead
                alive[newly] = False
                for i, doc in enumerate(np.flatnonzero(alive).tolist(), 1):
                    rec = RecordStore.get(txn, seg.uuid(doc))
                    if rec is not None:
                        builder.add_record(rec)
                    if i % RELEASE_EVERY == 0:
                        self.env.release_pages(trim=False)
                continue
            if len(newly) and not dead[newly].all():
                dead = dead.copy()
                dead[newly] = True
                name = f"{entry.file}.del-{self._next_name_gen(man):06d}"
                xxh = M.write_dead(os.path.join(self.index_dir, name), dead)
                entry = M.SegmentEntry(entry.file, entry.docs, entry.bytes, name, xxh,
                                       int(dead.sum()))
            keep.append(entry)
        return keep

    def _next_name_gen(self, man: M.Manifest) -> int:
        return max(man.gen, self._lmdb_gen()) + 1

    def _dead(self, entry: M.SegmentEntry) -> np.ndarray:
        if not entry.dead:
            return np.zeros(entry.docs, dtype=bool)
        return M.read_dead(os.path.join(self.index_dir, entry.dead), entry.docs, entry.dead_xxh3)

    def _trim(self, snapshot: DeltaSnapshot, new_gen: int) -> None:
        """Drop the delta entries the new segment holds, TRIM_BATCH per transaction (a
        transaction's dirty pages stay in memory until it commits); then store `new_gen`.
        Readers between two batches see the new segment with part of the delta still
        shadowing it: the same answers."""
        entries = snapshot.entries()
        while True:
            batch = list(itertools.islice(entries, TRIM_BATCH))

            def fn(txn: lmdb.Transaction, batch: list[tuple[str, bytes]] = batch) -> None:
                for i, (uuid, digest) in enumerate(batch, 1):
                    key = delta_key(uuid)
                    value = txn.get(key)
                    if value is not None and xxhash.xxh3_128_digest(value) == digest:
                        txn.delete(key)
                    if i % RELEASE_EVERY == 0:
                        self.env.release_pages(trim=False)
                if len(batch) < TRIM_BATCH:
                    txn.put(K_GEN, str(new_gen).encode())

            self.env.write(fn)
            if len(batch) < TRIM_BATCH:
                return


class DeltaSnapshot:
    """The delta entries a merge read, kept small (52 bytes an entry, no object each): the
    uuid text and a 128-bit digest of the value, so the trim drops exactly the entries left
    unchanged since the read."""

    def __init__(self) -> None:
        self._uuids = bytearray()    # 36 ASCII bytes an entry
        self._digests = bytearray()  # xxh3_128 of the value, 16 bytes an entry

    def __len__(self) -> int:
        return len(self._digests) // 16

    def add(self, uuid: str, value: bytes) -> None:
        raw = uuid.encode("ascii")
        if len(raw) != UUID_LEN:
            raise DamagedError(f"delta entry with a malformed uuid {uuid!r}; run "
                               "`kvmedia rebuild-index`")
        self._uuids += raw
        self._digests += xxhash.xxh3_128_digest(value)

    def uuids(self) -> list[str]:
        text = self._uuids.decode("ascii")
        return [text[i:i + UUID_LEN] for i in range(0, len(text), UUID_LEN)]

    def entries(self) -> Iterator[tuple[str, bytes]]:
        for i in range(len(self)):
            yield (self._uuids[i * UUID_LEN:(i + 1) * UUID_LEN].decode("ascii"),
                   bytes(self._digests[i * 16:(i + 1) * 16]))


def _txn_has_records(txn: lmdb.Transaction) -> bool:
    from ..store import keys as K

    cur = txn.cursor()
    return bool(cur.set_range(K.P_UUID) and cur.key().startswith(K.P_UUID))


def _has_records(env: Env) -> bool:
    with env.read() as txn:
        return _txn_has_records(txn)
