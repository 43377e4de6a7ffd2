"""Trash, restore and permanent delete: the file move and the record change never split.

Layout: a trashed file lives at `<volume>/.nas-trash/<uuid>/<name>`, where <volume> is the
scan root holding the file, or a mount point lying between that root and the file. One slot
directory per uuid keeps names exact (even 255-byte ones) and makes collisions impossible
except with stray files, which are refused with a per-item error. The walk never enters
`.nas-trash`; trashed records carry FLAG_TRASH in their path key, so scans never remove them.

Crash protocol (one item at a time, under an exclusive flock on `<data dir>/ops.lock`):

    1. write txn:  intent:<uuid> -> {op, uuid, src, dst, ino, record snapshot, pid, at}
    2. the file operation: renameat2(src, dst, NOREPLACE)  or  unlinkat(src)
    3. write txn:  the record change (RecordStore.writer put/delete) + delete the intent

`recover()` (run when a library opens writable, and before each scan) settles intents left
by a process that died between 1 and 3, judged by the file system alone: for a move, the
inode at `dst` means step 2 happened, so step 3 is finished from the snapshot (even if a
scan dropped the record meanwhile); otherwise the intent is dropped (rolled back). For a
delete, the inode gone from `src` means finish, else roll back. Recovery only runs when it
can take the flock without waiting, i.e. when no other process is mid-operation.

Path safety: every directory is opened from the volume root one component at a time with
O_NOFOLLOW (safefs.py); stored paths with `..`, paths outside their volume, trash paths not
shaped `<volume>/.nas-trash/<uuid>/<name>` at a known root or mount point, and anything but
a regular file with the recorded inode are refused. Moves never cross file systems.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb
import orjson

from . import records as R
from .crashpoints import hit as crash_point
from .errors import KvmediaError, NotFoundError, StorageError, UsageError
from .identity import FsUuidResolver
from .pathbytes import display, get_field, is_under, set_field
from .safefs import (
    components,
    is_regular,
    lstat_at,
    open_child_dir,
    open_dirs,
    rename_noreplace,
    rmdir_if_empty,
)
from .store import keys as K
from .store.audit import AuditLog
from .store.env import Env
from .store.recordstore import Record, RecordStore

TRASH_DIR = b".nas-trash"
P_INTENT = b"intent:"
"""intent:<uuid> -> JSON intent (see the module docstring); at most one per uuid."""
LOCK_NAME = "ops.lock"
NAME_MAX = 255
MAX_RESTORE_NAMES = 10_000


@dataclass
class ItemResult:
    """The outcome of one item of a batch: the record after (or before, for delete) or an error."""

    ref: str | bytes
    record: Record | None = None
    error: KvmediaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def restore_names(name: bytes) -> Iterator[bytes]:
    """`name`, then `stem (restored).ext`, `stem (restored 2).ext`, ... each <= 255 bytes."""
    yield name
    dot = name.rfind(b".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, b"")
    for i in range(1, MAX_RESTORE_NAMES):
        tag = b" (restored)" if i == 1 else b" (restored %d)" % i
        cut = max(1, NAME_MAX - len(tag) - len(ext))
        short = stem[:cut]
        while len(short) < len(stem) and short and (stem[len(short)] & 0xC0) == 0x80:
            short = short[:-1]  # never split a UTF-8 sequence
        yield short + tag + ext


def _fs_error(exc: OSError, path: bytes) -> KvmediaError:
    """A typed, actionable error for an OSError met while moving `path`."""
    where = display(path)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UsageError(f"{where}: a directory on the way is a symlink or not a directory; "
                          "refusing to follow it (fix the folder and retry)", path=path)
    if exc.errno == errno.EXDEV:
        return StorageError(f"{where}: the trash is on another file system; kvmedia never "
                            "moves files across file systems", path=path)
    if exc.errno == errno.ENOENT:
        return NotFoundError(f"{where}: no longer on disk; run `kvmedia scan` to update "
                             "the library", path=path)
    if exc.errno == errno.EEXIST:
        return UsageError(f"{where}: the destination already exists; move it away and retry",
                          path=path)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"{where}: permission denied ({exc.strerror}); check the "
                            "volume's permissions", path=path)
    return StorageError(f"{where}: {exc.strerror or exc}; check the volume and retry", path=path)


def _join(vol: bytes, parts: list[bytes]) -> bytes:
    return b"/".join([vol.rstrip(b"/"), *parts]) if parts else vol


def _stat_fields(st: os.stat_result) -> dict[str, Any]:
    return {"ino": st.st_ino, "ctime": st.st_ctime_ns // 1_000_000_000,
            "ctime_ns": st.st_ctime_ns, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "mtime": st.st_mtime_ns / 1e9}


class TrashOps:
    """trash / restore / delete / recover for one library."""

    def __init__(self, env: Env, store: RecordStore, audit: AuditLog, data_dir: str,
                 resolver: FsUuidResolver, known_roots: Callable[[], list[bytes]]) -> None:
        self.env = env
        self.store = store
        self.audit = audit
        self.data_dir = data_dir
        self.resolver = resolver
        self.known_roots = known_roots

    # -- locking and intents -------------------------------------------------------------------

    @contextmanager
    def _locked(self, blocking: bool = True) -> Iterator[bool]:
        path = os.path.join(self.data_dir, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)

    def _put_intent(self, intent: dict[str, Any]) -> None:
        key = P_INTENT + intent["uuid"].encode("ascii")

        def fn(txn: lmdb.Transaction) -> None:
            if txn.get(key) is not None:
                raise UsageError(f"another operation on {intent['uuid']} is unfinished; "
                                 "reopen the library to settle it and retry")
            txn.put(key, orjson.dumps(intent))

        self.env.write(fn)

    def _drop_intent(self, uuid: str) -> None:
        self.env.write(lambda txn: txn.delete(P_INTENT + uuid.encode("ascii")))

    def pending(self) -> list[dict[str, Any]]:
        with self.env.read() as txn:
            return [orjson.loads(v) for _k, v in self.store.iter_prefix(txn, P_INTENT)]

    def _intent(self, op: str, rec: Record, src: bytes, dst: bytes, ino: int) -> dict[str, Any]:
        intent: dict[str, Any] = {"op": op, "uuid": rec["uuid"], "ino": ino, "record": rec,
                                  "pid": os.getpid(), "at": R.now_iso()}
        set_field(intent, "src", src)
        set_field(intent, "dst", dst)
        return intent

    # -- volumes ---------------------------------------------------------------------------------

    def volume_for(self, rec: Record, path: bytes, dev: int) -> bytes:
        """The volume root whose `.nas-trash` receives `path` (on device `dev`)."""
        def inside(base: bytes) -> bool:
            return is_under(path, base) and path.rstrip(b"/") != base.rstrip(b"/")

        rroot = get_field(rec, "root")
        base = rroot if rroot and inside(rroot) else None
        if base is None:
            roots = [r for r in self.known_roots() if inside(r)]
            base = max(roots, key=len) if roots else None
        mount = self.resolver.mount_for(path, dev)
        if mount is not None and inside(mount.mount_point) and (
            base is None or (is_under(mount.mount_point, base)
                             and len(mount.mount_point) > len(base.rstrip(b"/")))
        ):
            base = mount.mount_point
        if base is None:
            raise UsageError(f"{display(path)} is under no scanned root or mount; "
                             "scan its volume first", path=path)
        # A mount the mount table did not show: the first directory on the file's device.
        parts = components(path, base)[:-1]
        for depth in range(len(parts) + 1):
            candidate = _join(base, parts[:depth])
            try:
                st = os.lstat(candidate)
            except OSError as exc:
                raise _fs_error(exc, candidate) from exc
            if st.st_dev == dev:
                return candidate
        raise StorageError(f"{display(path)}: its volume root is on another file system; "
                           "kvmedia never moves files across file systems", path=path)

    def _is_volume_root(self, vol: bytes) -> bool:
        if vol in self.known_roots():
            return True
        mount = self.resolver.mount_for(vol)
        if mount is not None and mount.mount_point == vol:
            return True
        try:
            return os.lstat(vol).st_dev != os.lstat(os.path.dirname(vol)).st_dev
        except OSError:
            return False

    def _trash_location(self, rec: Record) -> tuple[bytes, bytes]:
        """(volume, name) of a trashed record, after checking the stored trash path's shape."""
        tpath = get_field(rec, "trash_path") or get_field(rec, "path") or b""
        slot_dir = os.path.dirname(tpath)
        trash_dir = os.path.dirname(slot_dir)
        vol = os.path.dirname(trash_dir)
        name = os.path.basename(tpath)
        if (os.path.basename(trash_dir) != TRASH_DIR
                or os.path.basename(slot_dir) != rec["uuid"].encode("ascii")
                or name in (b"", b".", b"..") or not vol.startswith(b"/")
                or components(tpath, vol) != [TRASH_DIR, rec["uuid"].encode("ascii"), name]):
            raise UsageError(f"stored trash path {display(tpath)} is not a .nas-trash slot; "
                             "refusing it (run `kvmedia delete` to drop the record)", path=tpath)
        if not self._is_volume_root(vol):
            raise UsageError(f"stored trash path {display(tpath)} is not at a volume root; "
                             "refusing it", path=tpath)
        return vol, name

    # -- reads -------------------------------------------------------------------------------

    def _get(self, uuid: str) -> Record:
        with self.env.read() as txn:
            rec = self.store.get(txn, uuid)
        if rec is None:
            raise NotFoundError(f"no record {uuid}; check the id with `kvmedia list`")
        return rec

    def trashed(self, older_than_s: float | None = None) -> list[Record]:
        """Trashed records, oldest first; only those deleted more than `older_than_s` ago."""
        cutoff = None
        if older_than_s is not None:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        out = []
        with self.env.read() as txn:
            for key, _ in self.store.iter_prefix(txn, K.type_prefix(K.ALL, True, "mod")):
                rec = self.store.get(txn, K.uuid_from_type_key(key))
                if rec is None:
                    continue
                if cutoff is not None:
                    try:
                        when = dt.datetime.fromisoformat(rec.get("deleted_at") or "")
                    except ValueError:
                        when = None
                    if when is not None and when > cutoff:
                        continue
                out.append(rec)
        return out

    # -- the three operations ------------------------------------------------------------------

    def trash(self, uuid: str) -> Record:
        with self._locked():
            rec = self._get(uuid)
            if rec.get("is_trash"):
                raise UsageError(f"{uuid} is already in the trash; use restore or delete")
            src = R.path_of(rec)
            try:
                dev = os.lstat(src).st_dev
            except OSError as exc:
                raise _fs_error(exc, src) from exc
            vol = self.volume_for(rec, src, dev)
            parts = components(src, vol)
            name = parts[-1]
            slot = uuid.encode("ascii")
            dst = _join(vol, [TRASH_DIR, slot, name])
            try:
                with open_dirs(vol, parts[:-1]) as src_fd, \
                        open_dirs(vol, [TRASH_DIR], create=True) as trash_fd:
                    st = lstat_at(src_fd, name)
                    self._check_file(rec, st, src)
                    assert st is not None
                    if os.fstat(trash_fd).st_dev != st.st_dev:
                        raise _fs_error(OSError(errno.EXDEV, "cross-device"), src)
                    slot_fd = open_child_dir(trash_fd, slot, create=True, mode=0o700)
                    try:
                        if lstat_at(slot_fd, name) is not None:
                            raise UsageError(f"{display(dst)} already exists in the trash; "
                                             "move it away and retry", path=dst)
                        intent = self._intent("trash", rec, src, dst, st.st_ino)
                        self._put_intent(intent)
                        crash_point("trash.before_rename")
                        try:
                            rename_noreplace(src_fd, name, slot_fd, name)
                        except OSError as exc:
                            self._drop_intent(uuid)
                            rmdir_if_empty(trash_fd, slot)
                            raise _fs_error(exc, src) from exc
                        crash_point("trash.after_rename")
                        done = lstat_at(slot_fd, name)
                    finally:
                        os.close(slot_fd)
            except OSError as exc:
                raise _fs_error(exc, src) from exc
            try:
                return self._commit(intent, done)
            except StorageError:  # e.g. the data dir is full: put the file back
                self._undo_move(vol, [TRASH_DIR, slot, name], parts, uuid)
                raise

    def _undo_move(self, vol: bytes, moved: list[bytes], back: list[bytes], uuid: str) -> None:
        """The record change after a move failed: move the file back and drop the intent.
        Whatever of this fails too is left to `recover()`, which judges by the file system
        (the file back at its source means the intent is rolled back)."""
        try:
            with open_dirs(vol, moved[:-1]) as from_fd, open_dirs(vol, back[:-1]) as to_fd:
                rename_noreplace(from_fd, moved[-1], to_fd, back[-1])
        except OSError:
            return
        try:
            self._drop_intent(uuid)
        except StorageError:
            pass
        self._cleanup_slot(_join(vol, moved if moved[0] == TRASH_DIR else back))

    def restore(self, uuid: str) -> Record:
        with self._locked():
            rec = self._get(uuid)
            if not rec.get("is_trash"):
                raise UsageError(f"{uuid} is not in the trash; nothing to restore")
            vol, name = self._trash_location(rec)
            orig = get_field(rec, "original_path") or b""
            oparts = components(orig, vol)
            slot = uuid.encode("ascii")
            tpath = _join(vol, [TRASH_DIR, slot, name])
            try:
                with open_dirs(vol, [TRASH_DIR, slot]) as slot_fd:
                    st = lstat_at(slot_fd, name)
                    if not is_regular(st) or st is None or st.st_ino != rec.get("ino"):
                        raise NotFoundError(f"the trash copy {display(tpath)} is gone or was "
                                            "replaced; run `kvmedia delete` to drop the record",
                                            path=tpath)
                    with open_dirs(vol, oparts[:-1], create=True) as dst_fd:
                        if os.fstat(dst_fd).st_dev != st.st_dev:
                            raise _fs_error(OSError(errno.EXDEV, "cross-device"), orig)
                        intent = self._restore_move(rec, slot_fd, name, dst_fd, vol, oparts, tpath)
                        done = lstat_at(dst_fd, os.path.basename(get_field(intent, "dst") or b""))
            except FileNotFoundError as exc:
                raise NotFoundError(f"the trash copy {display(tpath)} is gone; run "
                                    "`kvmedia delete` to drop the record", path=tpath) from exc
            except OSError as exc:
                raise _fs_error(exc, orig) from exc
            try:
                new = self._commit(intent, done)
            except StorageError:  # e.g. the data dir is full: back into the trash slot
                dst = get_field(intent, "dst") or b""
                self._undo_move(vol, components(dst, vol), [TRASH_DIR, slot, name], uuid)
                raise
            self._remove_slot(vol, slot)
            return new

    def _restore_move(self, rec: Record, slot_fd: int, name: bytes, dst_fd: int, vol: bytes,
                      oparts: list[bytes], tpath: bytes) -> dict[str, Any]:
        """Move the trash copy to the first free restore name; returns the committed intent."""
        for candidate in restore_names(oparts[-1]):
            if lstat_at(dst_fd, candidate) is not None:
                continue
            dst = _join(vol, [*oparts[:-1], candidate])
            intent = self._intent("restore", rec, tpath, dst, int(rec.get("ino") or 0))
            self._put_intent(intent)
            crash_point("restore.before_rename")
            try:
                rename_noreplace(slot_fd, name, dst_fd, candidate)
            except FileExistsError:
                self._drop_intent(rec["uuid"])
                continue
            except OSError:
                self._drop_intent(rec["uuid"])
                raise
            crash_point("restore.after_rename")
            return intent
        raise UsageError(f"no free name to restore {display(oparts[-1])}; clean up the folder")

    def delete(self, uuid: str) -> Record:
        with self._locked():
            rec = self._get(uuid)
            path = R.path_of(rec)
            if rec.get("is_trash"):
                vol, name = self._trash_location(rec)
                parts = [TRASH_DIR, uuid.encode("ascii"), name]
            else:
                try:
                    st0 = os.lstat(path)
                except FileNotFoundError:
                    return self._commit(self._intent("delete", rec, path, path, 0), None)
                except OSError as exc:
                    raise _fs_error(exc, path) from exc
                vol = self.volume_for(rec, path, st0.st_dev)
                parts = components(path, vol)
                name = parts[-1]
            intent = self._intent("delete", rec, path, path, int(rec.get("ino") or 0))
            try:
                with open_dirs(vol, parts[:-1]) as dir_fd:
                    st = lstat_at(dir_fd, name)
                    if st is not None:
                        self._check_file(rec, st, path)
                        self._put_intent(intent)
                        crash_point("delete.before_unlink")
                        try:
                            os.unlink(name, dir_fd=dir_fd)
                        except OSError:
                            self._drop_intent(uuid)
                            raise
                        crash_point("delete.after_unlink")
            except FileNotFoundError:
                pass  # the file (or its folder) is already gone: drop the record
            except OSError as exc:
                raise _fs_error(exc, path) from exc
            old = self._commit(intent, None)
            if rec.get("is_trash"):
                self._remove_slot(vol, uuid.encode("ascii"))
            return old

    @staticmethod
    def _check_file(rec: Record, st: os.stat_result | None, path: bytes) -> None:
        if st is None:
            raise NotFoundError(f"{display(path)} is no longer on disk; run `kvmedia scan` to "
                                "update the library", path=path)
        if not is_regular(st):
            raise UsageError(f"{display(path)} is not a regular file (a symlink or special "
                             "file took its place); left untouched", path=path)
        if st.st_ino != rec.get("ino"):
            raise UsageError(f"{display(path)} is another file than the one indexed; run "
                             "`kvmedia scan` and retry", path=path)

    def _remove_slot(self, vol: bytes, slot: bytes) -> None:
        try:
            with open_dirs(vol, [TRASH_DIR]) as trash_fd:
                rmdir_if_empty(trash_fd, slot)
        except OSError:
            pass

    # -- step 3, shared by the operations and recovery -------------------------------------------

    def _commit(self, intent: dict[str, Any], st: os.stat_result | None) -> Record:
        """Apply the record change of `intent` and drop the intent, in one transaction."""
        uuid = intent["uuid"]
        op = intent["op"]
        src = get_field(intent, "src") or b""
        dst = get_field(intent, "dst") or b""

        def fn(txn: lmdb.Transaction) -> Record:
            w = self.store.writer(txn)
            cur = self.store.get(txn, uuid)
            base = cur if cur is not None else intent["record"]
            if op == "delete":
                if cur is not None:
                    w.delete(cur)
                new = base
            else:
                new = self._moved_record(op, base, src, dst, st)
                pv = self.store.path_value(txn, dst)
                other = self.store.get(txn, pv.uuid) if pv and pv.uuid != uuid else None
                if other is not None:  # a scan recorded the moved file first: same file
                    w.delete(other)
                w.put(new, cur)
            txn.delete(P_INTENT + uuid.encode("ascii"))
            self.audit.append(txn, path=dst, status="ok", op=op, uuid=uuid,
                              extra={"from": display(src)} if op != "delete" else None)
            w.finish()
            return new

        return self.env.write(fn)

    @staticmethod
    def _moved_record(op: str, base: Record, src: bytes, dst: bytes,
                      st: os.stat_result | None) -> Record:
        new = dict(base)
        set_field(new, "path", dst)
        if op == "trash":
            set_field(new, "trash_path", dst)
            set_field(new, "original_path", src)
            new.update(is_trash=True, deleted_at=R.now_iso())
        else:
            name = os.path.basename(dst)
            set_field(new, "trash_path", None)
            set_field(new, "original_path", dst)
            set_field(new, "name", name)
            new.update(is_trash=False, deleted_at=None, ext=R.extension(name),
                       type=R.infer_type(name))
        if st is not None:
            new.update(_stat_fields(st))
        new["indexed_at"] = R.now_iso()
        return new

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Finish or roll back intents of dead processes. Skipped while another op runs."""
        counts = {"finished": 0, "rolled_back": 0}
        with self.env.read() as txn:
            cur = txn.cursor()
            if not (cur.set_range(P_INTENT) and cur.key().startswith(P_INTENT)):
                return counts
        with self._locked(blocking=False) as got:
            if not got:
                return counts
            for intent in self.pending():
                counts["finished" if self._settle(intent) else "rolled_back"] += 1
        return counts

    def _settle(self, intent: dict[str, Any]) -> bool:
        op = intent["op"]
        ino = intent["ino"]
        src = get_field(intent, "src") or b""
        dst = get_field(intent, "dst") or b""
        try:
            st = os.lstat(src if op == "delete" else dst)
        except OSError:
            st = None
        happened = (st is None or st.st_ino != ino) if op == "delete" else (
            is_regular(st) and st is not None and st.st_ino == ino)
        if happened:
            self._commit(intent, st if op != "delete" else None)
            if op == "restore":
                self._cleanup_slot(src)
            return True
        self._drop_intent(intent["uuid"])
        if op == "trash":
            self._cleanup_slot(dst)
        return False

    def _cleanup_slot(self, path_in_slot: bytes) -> None:
        slot_dir = os.path.dirname(path_in_slot)
        trash_dir = os.path.dirname(slot_dir)
        if os.path.basename(trash_dir) == TRASH_DIR:
            self._remove_slot(os.path.dirname(trash_dir), os.path.basename(slot_dir))


def parse_age(text: str) -> float:
    """`30d`, `12h`, `45m`, `90s`, `2w` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        value = -1
    if value < 0 or value != value:
        raise UsageError(f"bad age {text!r}; write it like 30d, 12h, 45m or 90s")
    return value


__all__ = ["TRASH_DIR", "ItemResult", "TrashOps", "parse_age", "restore_names"]
