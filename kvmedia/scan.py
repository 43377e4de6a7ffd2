"""Scan & sync: make the records under a root equal what is on disk.

The walk (walk.py) yields files in path-key byte order; `Scanner` merge-joins that stream with
the stored `media:path:` keys under the root, batch by batch:

- walk only           -> new file: resolve its identity (a moved file keeps its uuid), put.
- both, same stamp    -> unchanged: no write at all (the stamp lives in the path key's value).
- both, other stamp   -> changed: update the record in place, keeping every other field.
- stored only         -> removal candidate. Candidates are deleted only after the walk finished
                         uninterrupted, and only after re-checking that the file is really gone.
                         Keys under unreadable directories and trashed records are never
                         candidates.

A root that is missing, empty where it held files, or now on another filesystem is marked
offline and nothing under it is deleted. Each batch is one LMDB write transaction.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import lmdb
import orjson

from . import crashpoints
from . import records as R
from .forking import can_fork
from .identity import FsUuidResolver, uuid_for_hardlink, uuid_from_triplet
from .pathbytes import dir_prefix, display, get_field, is_under, set_field
from .progress import NullProgress, Progress
from .store import keys as K
from .store.audit import AuditLog
from .store.env import Env
from .store.recordstore import Record, RecordStore, RecordWriter
from .walk import FileEntry, KeepPrefix, Walker, WalkRules, Warning_
from .walkproc import ForkedWalk

BATCH_FILES = 8000
"""Most walk entries per write transaction (`scan.batch_files`). Each commit fsyncs the pages
its batch dirtied, so larger batches write each page fewer times: an unchanged or 1%-changed
rescan is mostly compares, and takes this many at once."""
BATCH_WRITES = 3000
"""Most files written (added, changed, moved) per transaction: a new file dirties ~14 pages
all over the tree (uuid, type and index-delta keys), and LMDB keeps the buffers of a
transaction's dirty pages in its heap for reuse until the library closes, so the largest
batch sets the scan's heap (1M-file first scan, peak RSS and time: 2,000 a batch 601 MB,
173 s; 3,000: 645 MB, 168 s; 8,000: 797 MB, 131 s)."""
BATCH_SECONDS = 1.0
"""A batch is also committed after the walk spent this long collecting it, and the next
batch is sized from the last one's write time to take about this long, so other writers
(a watcher) never wait much longer for the write lock."""
MIN_BATCH_FILES = 256
MAX_WARNINGS_KEPT = 200
WALK_PROCESS_MIN_FILES = 10_000
"""`scan.walk_process=auto` forks a walk process for roots this big: below, the fork and the
pipe cost about what the overlap saves."""
RELEASE_EVERY = 500
"""Written files between two `Env.release_pages` inside a batch: each new file touches ~14
pages of a large tree, so RSS stays near 500 * 14 * 4 KiB of mapped pages."""


@dataclass
class ScanSummary:
    root: bytes
    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    offline: bool = False
    offline_reason: str | None = None
    warnings: list[tuple[bytes, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["type"] = "summary"
        set_field(out, "root", self.root)
        out["warnings"] = [{"path": display(p), "message": m} for p, m in self.warnings]
        return out


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


P_DISPLACED = b"scan:displaced:"
"""scan:displaced:<uuid> -> path: the record lost its path key to another file in a committed
batch and waits for the removal pass (remove_if_gone). Written in the batch's transaction, so a
scan killed or stopped before its removals leaves it for the next complete scan; until then
the record keeps its stale path (doctor/fsck treat it as pending, not damaged)."""


def _gone(rec: Record) -> bool:
    """True when the file a record describes is no longer at its recorded path."""
    path = get_field(rec, "path")
    st = _lstat(path) if path is not None else None
    return st is None or st.st_ino != rec.get("ino")


def _same_stamp(current: K.PathValue, entry: FileEntry) -> bool:
    return (current.ino, current.size, current.mtime_ns, current.ctime_ns) == (
        entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns)


def _relook(entry: FileEntry) -> FileEntry | None:
    """`entry` as the file is now, inside the batch's write transaction (None: gone or no
    longer a regular file). A batch commits up to BATCH_SECONDS after the walk looked, and a
    watcher may have recorded a newer state meanwhile: the older look must never overwrite it
    (a stale size, or a record for a file deleted or renamed away since)."""
    st = _lstat(entry.path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    if (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (
            entry.ino, entry.dev, entry.size, entry.mtime_ns, entry.ctime_ns):
        return entry
    return replace(entry, ino=st.st_ino, dev=st.st_dev, size=st.st_size,
                   mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def build_record(entry: FileEntry, fs_uuid: str, uuid: str, root: bytes | None,
                 old: Record | None) -> Record:
    """The stored record for `entry`: `old` with the scanner's fields replaced, others kept."""
    rec: Record = dict(old) if old else {}
    ctime_s = entry.ctime_ns // 1_000_000_000
    ext = R.extension(entry.name)
    rec.update(
        uuid=uuid,
        fs_uuid=fs_uuid,
        ino=entry.ino,
        ctime=ctime_s,
        ctime_ns=entry.ctime_ns,
        ext=ext,
        size=entry.size,
        mtime=entry.mtime_ns / 1e9,
        mtime_ns=entry.mtime_ns,
        type=_TYPE_OF_EXT.get(ext) or R.infer_type(entry.name),
        is_trash=False,
        trash_path=None,
        deleted_at=None,
        indexed_at=R.now_iso(),
    )
    if old is None and entry.path.isascii() and entry.name.isascii():
        # the common case, without set_field's pops and UTF-8 checks
        rec["path"] = rec["original_path"] = entry.path.decode("ascii")
        rec["name"] = entry.name.decode("ascii")
    else:
        set_field(rec, "path", entry.path)
        set_field(rec, "original_path", entry.path)
        set_field(rec, "name", entry.name)
    if root is not None or "root" not in rec:
        set_field(rec, "root", root)
    return rec


_TYPE_OF_EXT: dict[str, str] = {
    **dict.fromkeys(R.AUDIO_EXTS, "audio"), **dict.fromkeys(R.VIDEO_EXTS, "video"),
    **dict.fromkeys(R.IMAGE_EXTS, "image")}
"""infer_type as one lookup (same precedence: image, then video, then audio)."""


class Ingest:
    """Apply single file observations inside a write transaction (shared by scan and upsert)."""

    def __init__(self, store: RecordStore, audit: AuditLog, resolver: FsUuidResolver) -> None:
        self.store = store
        self.audit = audit
        self.resolver = resolver
        # Optional collaborators set by the Library: sidecar files become dependency nodes
        # instead of records (pipeline/engine.py); new ids kept in xattrs (persistids.py).
        self.sidecars: Any = None
        self.persist: Any = None

    def resolve_identity(self, txn: lmdb.Transaction, entry: FileEntry, fs_uuid: str
                         ) -> tuple[str, Record | None]:
        """(uuid, record to replace) for a file whose path is new or now holds another inode.

        Order: exact fid (same inode, same ctime) -> same inode with the old path gone and the
        same size+mtime (a rename) -> the uuid minted from the triplet. A second name of a live
        inode (hardlink) gets its own uuid, and so does a new file that reused the inode of a
        deleted one within the same ctime second (same triplet, other size or mtime).
        """
        ctime_s = entry.ctime_ns // 1_000_000_000
        fids = self.store.fids_by_inode(txn, fs_uuid, entry.ino)
        exact = K.fid_key(fs_uuid, entry.ino, ctime_s)
        for key, uuid in fids:
            if key == exact:
                found = self._claim(txn, entry, fs_uuid, ctime_s, uuid)
                if found is not None:
                    return found
                break
        for _key, uuid in fids:
            rec = self.store.get(txn, uuid)
            if (
                rec is not None
                and not rec.get("is_trash")
                and rec.get("size") == entry.size
                and rec.get("mtime_ns") == entry.mtime_ns
                and _gone(rec)
            ):
                return uuid, rec
        uuid = uuid_from_triplet(fs_uuid, entry.ino, ctime_s)
        return self._claim(txn, entry, fs_uuid, ctime_s, uuid) or (uuid, None)

    def _claim(self, txn: lmdb.Transaction, entry: FileEntry, fs_uuid: str, ctime_s: int,
               uuid: str) -> tuple[str, Record | None] | None:
        """`uuid` belongs to this inode's triplet. Take its record over when it is this path or
        its old path is gone with the same size+mtime (a rename); when a live name (hardlink)
        or a deleted file holds it, derive another id. None: no record holds `uuid`."""
        rec = self.store.get(txn, uuid)
        if rec is None:
            return None
        if get_field(rec, "path") == entry.path:
            return uuid, rec
        if (_gone(rec) and rec.get("size") == entry.size
                and rec.get("mtime_ns") == entry.mtime_ns):
            return uuid, rec
        return self._hardlink(txn, entry, fs_uuid, ctime_s)

    def _hardlink(self, txn: lmdb.Transaction, entry: FileEntry, fs_uuid: str, ctime_s: int
                  ) -> tuple[str, Record | None]:
        """An id derived from the path, for a second holder of a triplet already taken."""
        uuid = uuid_for_hardlink(fs_uuid, entry.ino, ctime_s, entry.path)
        return uuid, self.store.get(txn, uuid)

    def apply(self, w: RecordWriter, entry: FileEntry, current: K.PathValue | None,
              root: bytes | None) -> tuple[str, Record | None]:
        """Write `entry`. Returns (outcome, displaced record) with outcome one of
        added | updated | moved | unchanged. A displaced record lost its path to this file and
        must be re-checked as a removal candidate."""
        txn = w.txn
        if self.sidecars is not None and self.sidecars.claims(entry.name):
            outcome = self.sidecars.ingest_sidecar(
                w, entry.path, entry.name, entry.size, entry.mtime_ns, entry.ino,
                current.uuid if current is not None else None)
            return outcome, None
        fs_uuid = self.resolver.fs_uuid(entry.path, entry.dev)
        displaced: Record | None = None
        old: Record | None = None
        if current is not None:
            if (
                current.ino == entry.ino
                and current.size == entry.size
                and current.mtime_ns == entry.mtime_ns
                and current.ctime_ns == entry.ctime_ns
                and not current.flags & K.FLAG_TRASH
            ):
                return "unchanged", None
            at_path = self.store.get(txn, current.uuid)
            if at_path is not None and at_path.get("ino") == entry.ino and (
                at_path.get("fs_uuid") == fs_uuid
            ):
                old = at_path  # same file, modified or its metadata changed: keep the uuid
            else:
                displaced = at_path
                if at_path is not None:  # settled by remove_if_gone, even after a crash
                    txn.put(P_DISPLACED + at_path["uuid"].encode("ascii"),
                            get_field(at_path, "path") or b"")
        adopted: dict[str, Any] = {}
        if old is None:
            uuid, old = self.resolve_identity(txn, entry, fs_uuid)
            if old is None and self.persist is not None:
                uuid, entry, adopted = self.persist.adopt(txn, entry, fs_uuid, uuid)
                old = self.store.get(txn, uuid) if adopted.get("restored") else None
        else:
            uuid = old["uuid"]
        new = build_record(entry, fs_uuid, uuid, root, old)
        new.update(adopted.get("fields") or {})
        if old is None:
            outcome = "added"
        elif get_field(old, "path") != entry.path:
            outcome = "moved"
        else:
            outcome = "updated"
        w.put(new, old)
        extra = {"from": display(get_field(old, "path"))} if outcome == "moved" and old else None
        self.audit.later(w, path=entry.path, status="ok", op=outcome, uuid=uuid, extra=extra)
        return outcome, displaced

    def remove_if_gone(self, w: RecordWriter, uuid: str, path: bytes,
                       excluded: Callable[[bytes], bool] | None = None) -> bool:
        """Delete the record `uuid` if it still claims `path` and that file is really gone,
        or is still there but now skipped by the walk's rules (`excluded`)."""
        w.txn.delete(P_DISPLACED + uuid.encode("ascii"))
        rec = self.store.get(w.txn, uuid)
        if rec is None or rec.get("is_trash") or get_field(rec, "path") != path:
            return False
        if not _gone(rec) and not (excluded is not None and excluded(path)):
            return False
        w.delete(rec)
        self.audit.later(w, path=path, status="ok", op="removed", uuid=uuid)
        return True


class Scanner:
    """Scan roots into the store. One instance per scan command."""

    def __init__(
        self,
        env: Env,
        store: RecordStore,
        audit: AuditLog,
        *,
        rules: WalkRules | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        resolver: FsUuidResolver | None = None,
        batch_files: int = BATCH_FILES,
        walk_process: str = "no",
    ) -> None:
        """walk_process: "yes" / "auto" / "no", walk in a forked child where that is safe
        (walkproc.py); auto: when the root's last scan saw WALK_PROCESS_MIN_FILES or more."""
        self.env = env
        self.store = store
        self.audit = audit
        self.rules = rules or WalkRules()
        self.progress = progress or NullProgress()
        self.stop = stop or threading.Event()
        self.resolver = resolver or FsUuidResolver()
        self.ingest = Ingest(store, audit, self.resolver)
        self.batch_files = batch_files
        self.write_chunk = min(batch_files, BATCH_WRITES)
        """Files written per transaction where every one is a write (removals, deferred)."""
        self.walk_process = walk_process

    # -- roots -------------------------------------------------------------------------------

    def root_info(self, root: bytes) -> dict[str, Any] | None:
        with self.env.read() as txn:
            raw = txn.get(K.P_ROOT + root)
        return orjson.loads(raw) if raw else None

    def _has_records_under(self, root: bytes) -> bool:
        prefix = K.path_key(dir_prefix(root))
        with self.env.read() as txn:
            cur = txn.cursor()
            return bool(cur.set_range(prefix) and cur.key().startswith(prefix))

    def _offline_reason(self, root: bytes, info: dict[str, Any] | None) -> str | None:
        """Why `root` must not be synced now (its records are kept), or None."""
        known = info is not None or self._has_records_under(root)
        st = _lstat(root)
        if st is None:
            return "root is missing (volume not mounted?)" if known else None
        if not known:
            return None
        if info and info.get("fs_uuid"):
            fs_uuid = self.resolver.fs_uuid(root, st.st_dev)
            if fs_uuid != info["fs_uuid"]:
                return f"root is now on another filesystem ({fs_uuid}, was {info['fs_uuid']})"
        try:
            with os.scandir(root) as it:
                empty = next(iter(it), None) is None
        except OSError:
            return None  # unreadable root: the walk reports it and keeps everything
        if empty and self._has_records_under(root):
            return "root is empty but held files (volume not mounted?)"
        return None

    def _save_root(self, root: bytes, **fields: Any) -> None:
        def fn(txn: lmdb.Transaction) -> None:
            raw = txn.get(K.P_ROOT + root)
            info = orjson.loads(raw) if raw else {}
            went_offline = bool(fields.get("offline")) and not info.get("offline")
            set_field(info, "path", root)
            info.update(fields)
            txn.put(K.P_ROOT + root, orjson.dumps(info))
            if went_offline:  # tell the change feed (and any listener that cares), same txn
                for listener in self.store.listeners:
                    notice = getattr(listener, "root_offline", None)
                    if notice is not None:
                        notice(txn, root, str(fields.get("offline_reason") or "offline"))

        self.env.write(fn)

    # -- the scan ----------------------------------------------------------------------------

    def scan(self, root_arg: bytes, *, force: bool = False) -> ScanSummary:
        started = time.monotonic()
        root = os.path.realpath(root_arg) if _lstat(root_arg) is not None else os.path.abspath(
            root_arg
        )
        summary = ScanSummary(root=root)
        info = self.root_info(root)
        reason = None if force else self._offline_reason(root, info)
        if reason is not None:
            summary.offline = True
            summary.offline_reason = reason
            self._save_root(root, offline=True, offline_reason=reason, checked_at=R.now_iso())
            summary.seconds = time.monotonic() - started
            return summary
        st = _lstat(root)
        if st is None or not os.path.isdir(root):
            from .errors import NotFoundError

            raise NotFoundError(f"not a directory: {display(root)}", path=root)
        fs_uuid = self.resolver.fs_uuid(root, st.st_dev)
        fork = self.walk_process == "yes" or (
            self.walk_process == "auto"
            and int((info or {}).get("files") or 0) >= WALK_PROCESS_MIN_FILES)
        complete, files = self._sync(root, summary, fork=fork)
        summary.seconds = time.monotonic() - started
        fields: dict[str, Any] = {
            "fs_uuid": fs_uuid, "offline": False, "offline_reason": None,
            "last_scan_at": R.now_iso(),
        }
        if complete:
            fields["files"] = files
        if complete:
            fields["last_complete_scan_at"] = fields["last_scan_at"]
        self._save_root(root, **fields)

        def log_summary(txn: lmdb.Transaction) -> None:
            self.audit.append(
                txn, path=root, status="ok" if complete else "failed", op="scan",
                error=None if complete else "interrupted",
                extra={"added": summary.added, "updated": summary.updated,
                       "moved": summary.moved, "unchanged": summary.unchanged,
                       "removed": summary.removed, "errors": summary.errors},
            )

        self.env.write(log_summary)
        return summary

    def _sync(self, root: bytes, summary: ScanSummary, *, fork: bool = False
              ) -> tuple[bool, int]:
        """Merge-join walk and stored keys, the walk in a child process when `fork` (and that
        is safe). Returns (True when the walk was not interrupted, files walked)."""
        prefix = K.path_key(dir_prefix(root))
        walker: Walker | ForkedWalk = Walker(root, self.rules)
        if fork and can_fork():
            walker = ForkedWalk(walker)
        candidates: list[tuple[str, bytes]] = []  # (uuid, path) stored but not seen
        long_seen: set[bytes] = set()
        long_stored: list[tuple[str, bytes]] = []
        lo: bytes | None = None  # merge position: stored keys <= lo are handled
        batch: list[FileEntry | KeepPrefix] = []
        deadline = time.monotonic() + BATCH_SECONDS
        keep: list[bytes] = []
        deferred: list[FileEntry] = []  # new files at a path held by a record (_displaces)
        interrupted = False

        limit = self.write_chunk  # entries in the next batch (sized from the last one)

        def flush(hi: bytes | None) -> None:
            nonlocal lo, limit
            if not batch and hi is not None:
                return
            started = time.monotonic()
            result = self.env.write(
                lambda txn: self._apply_batch(txn, root, prefix, batch, lo, hi, keep)
            )
            stats, cands, lstored, held = result
            limit = self._next_batch_size(len(batch), time.monotonic() - started, stats)
            deferred.extend(held)
            for key_name in ("added", "updated", "moved", "unchanged"):
                setattr(summary, key_name, getattr(summary, key_name) + stats[key_name])
            candidates.extend(cands)
            long_stored.extend(lstored)
            lo = hi
            batch.clear()
            crashpoints.hit("scan.batch_committed")
            self.env.release_pages()  # keep RSS flat: the batch's pages are not needed again

        stopped = self.stop.is_set
        seen = 0
        try:
            for item in walker:
                if stopped():
                    interrupted = True
                    break
                kind = type(item)
                if kind is Warning_:
                    summary.errors += 1
                    if len(summary.warnings) < MAX_WARNINGS_KEPT:
                        summary.warnings.append((item.path, item.message))
                    continue
                if kind is FileEntry and len(item.path) > K.PATH_KEY_MAX:
                    long_seen.add(item.path)
                batch.append(item)
                seen += 1
                if len(batch) >= limit or time.monotonic() > deadline:
                    flush(self._batch_hi(batch))
                    deadline = time.monotonic() + BATCH_SECONDS
                if not seen & 127:
                    self.progress.update(
                        {"phase": "scan", "files": walker.counters.files,
                         "current": walker.counters.current_dir, "added": summary.added}
                    )
        finally:
            if isinstance(walker, ForkedWalk):
                walker.close()
        if isinstance(walker, ForkedWalk) and not interrupted and not walker.complete:
            interrupted = True  # the walk process died: what it did not report is unknown
            if not stopped():  # a Ctrl-C on a terminal stops the child too: no error then
                summary.errors += 1
                summary.warnings.append((root, "the walk process ended early: nothing removed"))
        if interrupted:
            flush(self._batch_hi(batch) if batch else lo)
            summary.interrupted = True
        else:
            flush(None)  # to the end of the root's keys
            candidates.extend(self._apply_deferred(root, deferred, summary))
            for uuid, path in long_stored:
                if path not in long_seen:
                    candidates.append((uuid, path))
            candidates.extend(self._displaced_under(root))
            self._remove(candidates, summary, walker.excludes)
        self.progress.done({"phase": "scan", "files": walker.counters.files})
        return not interrupted, walker.counters.files

    def _next_batch_size(self, entries: int, seconds: float, stats: dict[str, int]) -> int:
        """Walk entries for the next batch, judged by the last one: about BATCH_SECONDS of
        writing and at most BATCH_WRITES files written, within [MIN_BATCH_FILES, batch_files]."""
        entries = max(entries, 1)
        written = stats["added"] + stats["updated"] + stats["moved"]
        by_time = BATCH_SECONDS * entries / max(seconds, 1e-6)
        by_writes = BATCH_WRITES * entries / max(written, 1)
        return max(min(self.batch_files, MIN_BATCH_FILES),
                   min(self.batch_files, int(by_time), int(by_writes)))

    @staticmethod
    def _batch_hi(batch: list[FileEntry | KeepPrefix]) -> bytes | None:
        for item in reversed(batch):
            if isinstance(item, FileEntry) and len(item.path) <= K.PATH_KEY_MAX:
                return K.path_key(item.path)
            if isinstance(item, KeepPrefix):
                return K.path_key(item.prefix)
        return None

    def _apply_batch(
        self,
        txn: lmdb.Transaction,
        root: bytes,
        prefix: bytes,
        batch: list[FileEntry | KeepPrefix],
        lo: bytes | None,
        hi: bytes | None,
        keep: list[bytes],
    ) -> tuple[dict[str, int], list[tuple[str, bytes]], list[tuple[str, bytes]],
               list[FileEntry]]:
        """One write transaction: the walk items of `batch` against stored keys in (lo, hi].
        Returns (outcome counts, removal candidates, long stored keys, deferred entries).

        Re-runnable (Env.write may call it again after growing the map): all effects are in
        `txn` or in the returned values; `keep` only ever gains prefixes already implied.
        """
        stats = dict.fromkeys(("added", "updated", "moved", "unchanged"), 0)
        cands: list[tuple[str, bytes]] = []
        long_stored: list[tuple[str, bytes]] = []
        w = self.store.writer(txn)
        release = self._release_pages
        w.between_chunks = release
        stored = self._stored_keys(txn, prefix, lo, hi)
        pos = 0
        deferred: list[FileEntry] = []
        done = 0

        def drain_until(key: bytes | None) -> None:
            """Stored keys before `key` (all, when None) were not seen by the walk."""
            nonlocal pos
            while pos < len(stored) and (key is None or stored[pos][0] < key):
                skey, raw = stored[pos]
                pv = K.PathValue.unpack(raw)
                pos += 1
                spath = skey[len(K.P_PATH):]
                if pv.flags & K.FLAG_TRASH or any(spath.startswith(p) for p in keep):
                    continue
                if b"\0" in spath:
                    long_stored.append((pv.uuid, b""))
                    continue
                cands.append((pv.uuid, spath))

        claims = self.ingest.sidecars.claims if self.ingest.sidecars is not None else None
        pack_stamp = K.pack_stamp
        for item in batch:
            if isinstance(item, KeepPrefix):
                drain_until(K.path_key(item.prefix))
                if item.prefix not in keep:
                    keep.append(item.prefix)
                continue
            if len(item.path) > K.PATH_KEY_MAX:
                current = self.store.path_value(txn, item.path)
            else:
                key = K.P_PATH + item.path
                if pos < len(stored) and stored[pos][0] < key:
                    drain_until(key)
                current = None
                if pos < len(stored) and stored[pos][0] == key:
                    raw = stored[pos][1]
                    pos += 1
                    # The unchanged file (the bulk of a rescan): its stamp bytes, not trashed.
                    if raw[K.UUID_LEN:] == pack_stamp(item.ino, item.size, item.mtime_ns,
                                                      item.ctime_ns, 0) and (
                            claims is None or not claims(item.name)):
                        stats["unchanged"] += 1
                        continue
                    current = K.PathValue.unpack(raw)
            if current is None or not _same_stamp(current, item):
                fresh = _relook(item)  # another writer may have recorded a newer look
                if fresh is None:  # gone since the walk: a removal candidate, not a record
                    if current is not None and not current.flags & K.FLAG_TRASH:
                        cands.append((current.uuid, item.path))
                    continue
                item = fresh
            if current is not None and (claims is None or not claims(item.name)) and (
                    self._displaces(txn, item, current)):
                deferred.append(item)
                continue
            outcome, displaced = self.ingest.apply(w, item, current, root)
            stats[outcome] += 1
            if displaced is not None:
                cands.append((displaced["uuid"], get_field(displaced, "path") or b""))
            done += 1
            if not done % RELEASE_EVERY:
                release()
        drain_until(None)
        # Long stored keys: resolve their real paths from the records.
        resolved = []
        for uuid, _ in long_stored:
            rec = self.store.get(txn, uuid)
            if rec is not None:
                resolved.append((uuid, get_field(rec, "path") or b""))
        w.finish()
        return stats, cands, resolved, deferred

    def _release_pages(self) -> None:
        """Inside a batch: drop mapped pages only (malloc_trim waits for the commit)."""
        self.env.release_pages(trim=False)

    def _displaces(self, txn: lmdb.Transaction, entry: FileEntry, current: K.PathValue
                   ) -> bool:
        """True when another inode now sits at a path whose record is for a different file.
        That record may have moved further on in this walk: writing the newcomer now would
        leave two records claiming the path if the scan stopped before reaching it, so the
        newcomer waits for the end of an uninterrupted walk (`_apply_deferred`)."""
        at_path = self.store.get(txn, current.uuid)
        if at_path is None:
            return False
        return not (at_path.get("ino") == entry.ino
                    and at_path.get("fs_uuid") == self.resolver.fs_uuid(entry.path, entry.dev))

    def _apply_deferred(self, root: bytes, deferred: list[FileEntry], summary: ScanSummary
                        ) -> list[tuple[str, bytes]]:
        """Write the files `_displaces` held back, after the walk: a record that moved away
        from their path has been moved by now. Returns removal candidates."""
        cands: list[tuple[str, bytes]] = []
        for start in range(0, len(deferred), self.write_chunk):
            chunk = deferred[start:start + self.write_chunk]

            def fn(txn: lmdb.Transaction, chunk: list[FileEntry] = chunk
                   ) -> tuple[dict[str, int], list[tuple[str, bytes]]]:
                stats = dict.fromkeys(("added", "updated", "moved", "unchanged"), 0)
                out: list[tuple[str, bytes]] = []
                w = self.store.writer(txn)
                for entry in chunk:
                    current = self.store.path_value(txn, entry.path)
                    fresh = _relook(entry)
                    if fresh is None:
                        if current is not None and not current.flags & K.FLAG_TRASH:
                            out.append((current.uuid, entry.path))
                        continue
                    outcome, displaced = self.ingest.apply(w, fresh, current, root)
                    stats[outcome] += 1
                    if displaced is not None:
                        out.append((displaced["uuid"], get_field(displaced, "path") or b""))
                w.finish()
                return stats, out

            stats, out = self.env.write(fn)
            for key_name, value in stats.items():
                setattr(summary, key_name, getattr(summary, key_name) + value)
            cands.extend(out)
            self.env.release_pages()
        return cands

    @staticmethod
    def _stored_keys(txn: lmdb.Transaction, prefix: bytes, lo: bytes | None, hi: bytes | None
                     ) -> list[tuple[bytes, bytes]]:
        """Stored path keys under `prefix` in (lo, hi] and their raw PathValues, hi=None
        meaning to the end."""
        out: list[tuple[bytes, bytes]] = []
        cur = txn.cursor()
        if not cur.set_range(lo if lo is not None else prefix):
            return out
        for key, value in cur:
            if not key.startswith(prefix) or (hi is not None and key > hi):
                break
            if lo is not None and key <= lo:
                continue
            out.append((key, value))
        return out

    def _displaced_under(self, root: bytes) -> list[tuple[str, bytes]]:
        """Displaced records left by a scan that died or stopped before its removals."""
        with self.env.read() as txn:
            return [(k[len(P_DISPLACED):].decode("ascii"), bytes(v))
                    for k, v in self.store.iter_prefix(txn, P_DISPLACED)
                    if is_under(bytes(v), root)]

    def _remove(self, candidates: list[tuple[str, bytes]], summary: ScanSummary,
                excluded: Callable[[bytes], bool]) -> None:
        for start in range(0, len(candidates), self.write_chunk):
            chunk = candidates[start:start + self.write_chunk]

            def fn(txn: lmdb.Transaction, chunk: list[tuple[str, bytes]] = chunk) -> int:
                w = self.store.writer(txn)
                removed = sum(self.ingest.remove_if_gone(w, uuid, path, excluded)
                              for uuid, path in chunk)
                w.finish()
                return removed

            summary.removed += self.env.write(fn)
            self.progress.update({"phase": "remove", "files": summary.removed, "current": b""})


def _root_for(path: bytes, roots: Iterable[bytes]) -> bytes | None:
    """The longest known scan root holding `path`."""
    best: bytes | None = None
    for root in roots:
        if is_under(path, root) and (best is None or len(root) > len(best)):
            best = root
    return best


def stored_under(txn: lmdb.Transaction, store: RecordStore, prefix: bytes
                 ) -> list[tuple[str, bytes]]:
    """(uuid, path) of every record whose path starts with the directory prefix `prefix`."""
    out: list[tuple[str, bytes]] = []
    for key, raw in store.iter_prefix(txn, K.path_key(prefix)):
        uuid = raw[:K.UUID_LEN].decode("ascii")
        path = K.path_from_key(key)
        if path is None:  # a hashed long key: the record has the real path
            rec = store.get(txn, uuid)
            path = get_field(rec, "path") if rec is not None else None
        if path is not None:
            out.append((uuid, path))
    return out


def _through_symlink(path: bytes) -> bool:
    """True when a folder on the way to `path` is a symlink (or `..` leads elsewhere)."""
    parent = os.path.dirname(path)
    return os.path.realpath(parent) != parent


def _looks_unmounted(env: Env, resolver: FsUuidResolver, root: bytes) -> bool:
    """The root is missing, or on another file system than when it was scanned: its volume
    is not mounted (the mount point left behind), as Scanner._offline_reason judges it."""
    st = _lstat(root)
    if st is None:
        return True
    with env.read() as txn:
        raw = txn.get(K.P_ROOT + root)
    stored = orjson.loads(raw).get("fs_uuid") if raw else None
    return stored is not None and resolver.fs_uuid(root, st.st_dev) != stored


def upsert_paths(env: Env, ingest: Ingest, paths: Iterable[bytes], rules: WalkRules | None = None,
                 *, roots: Iterable[bytes] = (), outcomes: list[tuple[bytes, str]] | None = None
                 ) -> dict[str, int]:
    """Bring the records of individual paths up to date (watcher, `kvmedia notify`).

    A path that is a directory stands for everything under it: it is walked with the scan's
    rules and records under it the walk did not see are removal candidates. A path that is
    gone removes its record and, when it was a directory, every record under it (not when its
    parent is gone too: that looks like an unmounted volume, which only a scan may judge).
    Everything is ONE write transaction, new paths first and removals after, so both halves
    of a move land together and a moved file keeps its uuid (rename detection by inode).

    `roots`: the known scan roots; a new record gets the longest one holding it.
    `outcomes`: when given, receives (path, added|updated|moved|unchanged|removed) per file.
    """
    from .walk import CLUTTER_NAMES

    rules = rules or WalkRules()
    roots = list(roots)
    entries: dict[bytes, FileEntry] = {}
    gone: list[bytes] = []
    walked: list[tuple[bytes, set[bytes], list[bytes]]] = []  # (dir prefix, seen, keep prefixes)
    unmounted: dict[bytes, bool] = {}
    for raw in paths:
        path = os.path.abspath(raw)
        st = _lstat(path)
        if st is not None and _through_symlink(path):
            st = None  # reached through a symlinked folder: never followed, as in the walk
        root = _root_for(path, roots)
        if root is not None and root not in unmounted:
            unmounted[root] = _looks_unmounted(env, ingest.resolver, root)
        if root is not None and unmounted[root]:
            continue  # records under an unmounted volume are kept; only a scan may judge
        scope = Walker(root, rules) if root is not None else None
        if scope is not None and st is not None and scope.excludes(
                path, is_dir=stat.S_ISDIR(st.st_mode)):
            continue  # hidden, clutter, .nomedia, ignore patterns: what a scan would skip
        if st is not None and stat.S_ISDIR(st.st_mode):
            seen: set[bytes] = set()
            keep: list[bytes] = []
            specs = scope.inherited_specs(path) if scope is not None else None
            for item in Walker(path, rules, specs=specs):
                if isinstance(item, FileEntry):
                    entries[item.path] = item
                    seen.add(item.path)
                elif isinstance(item, KeepPrefix):
                    keep.append(item.prefix)
            walked.append((dir_prefix(path), seen, keep))
            continue
        if st is None or not stat.S_ISREG(st.st_mode):
            gone.append(path)
            continue
        name = os.path.basename(path)
        if name.startswith(b".") or name in CLUTTER_NAMES or not rules.allows_file(path):
            continue
        entries[path] = FileEntry(path, name, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns,
                                  st.st_ctime_ns)

    def fn(txn: lmdb.Transaction) -> dict[str, int]:
        stats = dict.fromkeys(("added", "updated", "moved", "unchanged", "removed"), 0)
        if outcomes is not None:
            del outcomes[:]  # Env.write may run this again from scratch
        w = ingest.store.writer(txn)

        def remove(uuid: str, path: bytes) -> None:
            if ingest.remove_if_gone(w, uuid, path):
                stats["removed"] += 1
                if outcomes is not None:
                    outcomes.append((path, "removed"))

        for entry in entries.values():
            current = ingest.store.path_value(txn, entry.path)
            outcome, displaced = ingest.apply(w, entry, current, _root_for(entry.path, roots))
            stats[outcome] += 1
            if outcomes is not None:
                outcomes.append((entry.path, outcome))
            if displaced is not None:
                remove(displaced["uuid"], get_field(displaced, "path") or b"")
        for prefix, seen, keep in walked:
            for uuid, spath in stored_under(txn, ingest.store, prefix):
                if spath not in seen and not any(spath.startswith(k) for k in keep):
                    remove(uuid, spath)
        for path in gone:
            pv = ingest.store.path_value(txn, path)
            if pv is not None:
                remove(pv.uuid, path)
            if os.path.isdir(os.path.dirname(path)):
                for uuid, spath in stored_under(txn, ingest.store, dir_prefix(path)):
                    remove(uuid, spath)
        w.finish()
        return stats

    return env.write(fn)
