"""Opt-in ids kept on the files themselves, so a lost data dir rebuilds with the same uuids.

With `scan.persist_ids = "xattr"` (or `kvmedia scan --persist-ids xattr`) every file that gets
a new record also gets two extended attributes:

    user.kvmedia.uuid     the record's uuid (36 ASCII bytes), readable by other tools
    user.kvmedia.origin   "<fs_uuid>:<inode>" of the file the uuid was given to

When a scan meets a file it has no record for, the attributes decide its uuid:
- none                         -> the minted uuid; the attributes are written
- origin is this very file     -> the stored uuid again (data dir deleted and rebuilt; a
                                  renamed file whose ctime moved keeps its id too)
- origin is another file       -> a copy made with its xattrs (`cp -a`, `rsync -X`) on this
                                  or another volume: the minted uuid, `copied_from` = the
                                  stored one, and the attributes rewritten for the copy

Writing an xattr changes the file's ctime, so the record is built from a fresh stat taken
after the write (the next scan then sees the file unchanged). A filesystem without user
xattrs (some FUSE/NFS/SMB mounts, tmpfs on old kernels) is reported once per filesystem and
the scan continues without them; a file we may not write to is simply left without one.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from dataclasses import replace
from typing import Any

import lmdb

from .pathbytes import display, get_field
from .store.recordstore import RecordStore
from .walk import FileEntry

XATTR_UUID = b"user.kvmedia.uuid"
XATTR_ORIGIN = b"user.kvmedia.origin"
MODES = ("none", "xattr")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def read_ids(path: bytes) -> tuple[str | None, str | None]:
    """(uuid, origin) from the file's attributes; (None, None) when absent or unreadable."""
    try:
        raw = os.getxattr(path, XATTR_UUID, follow_symlinks=False)
    except OSError:
        return None, None
    raw = raw.strip().lower()
    if not _UUID.fullmatch(raw):
        return None, None
    try:
        origin = os.getxattr(path, XATTR_ORIGIN, follow_symlinks=False).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        origin = None
    return raw.decode("ascii"), origin


def write_ids(path: bytes, uuid: str, origin: str) -> None:
    """Set both attributes; OSError when the filesystem or permissions refuse."""
    os.setxattr(path, XATTR_UUID, uuid.encode("ascii"), follow_symlinks=False)
    os.setxattr(path, XATTR_ORIGIN, origin.encode("utf-8"), follow_symlinks=False)


def supported(directory: bytes | str) -> bool:
    """Whether files under `directory` take user xattrs (probes with a temporary file)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=os.fsdecode(directory), prefix=".kvmedia-xattr-")
    except OSError:
        return False
    try:
        os.setxattr(name, XATTR_UUID, b"probe")
        return os.getxattr(name, XATTR_UUID) == b"probe"
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(name)


class IdPersister:
    """Used by the scan's Ingest for files without a record (see module docstring)."""

    def __init__(self, store: RecordStore, warn: Any = None) -> None:
        self.store = store
        self.unsupported: set[str] = set()
        self.warnings: list[str] = []
        self._warn = warn or (lambda msg: print(f"kvmedia: warning: {msg}", file=sys.stderr))
        self.written = 0

    def adopt(self, txn: lmdb.Transaction, entry: FileEntry, fs_uuid: str, minted: str
              ) -> tuple[str, FileEntry, dict[str, Any]]:
        """(uuid, entry to record, {"fields": extra record fields, "restored": bool})."""
        origin_here = f"{fs_uuid}:{entry.ino}"
        stored, origin = read_ids(entry.path)
        info: dict[str, Any] = {"fields": {}, "restored": False}
        if stored is not None and origin == origin_here:
            holder = self.store.get(txn, stored)
            if holder is None:
                return stored, entry, info  # the same file after a rebuild: same id
            if get_field(holder, "path") == entry.path or not os.path.lexists(
                    get_field(holder, "path") or b""):
                info["restored"] = True  # its old path is gone: a rename seen late
                return stored, entry, info
            return minted, entry, info  # a hardlink twin holds it: keep the minted id
        if stored is not None:
            info["fields"]["copied_from"] = stored
        return minted, self._write(entry, fs_uuid, minted), info

    def _write(self, entry: FileEntry, fs_uuid: str, uuid: str) -> FileEntry:
        if fs_uuid in self.unsupported:
            return entry
        try:
            write_ids(entry.path, uuid, f"{fs_uuid}:{entry.ino}")
            st = os.lstat(entry.path)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self.unsupported.add(fs_uuid)
                msg = (f"{display(entry.path)}: this filesystem does not store user xattrs; "
                       "ids are not persisted on it (the scan goes on without them)")
                self.warnings.append(msg)
                self._warn(msg)
            return entry
        self.written += 1
        return replace(entry, ctime_ns=st.st_ctime_ns, size=st.st_size,
                       mtime_ns=st.st_mtime_ns)


def persist_existing(env: Any, store: RecordStore, records: list[dict[str, Any]],
                     persister: IdPersister) -> dict[str, int]:
    """Write the attributes of records made before persisting was turned on, and store each
    file's new ctime in its record (one write transaction)."""
    from .store.recordstore import Record

    todo: list[tuple[Record, int]] = []
    counts = {"written": 0, "present": 0, "failed": 0}
    for rec in records:
        path = get_field(rec, "path") or b""
        if rec.get("is_trash"):
            continue
        stored, _origin = read_ids(path)
        if stored == rec["uuid"]:
            counts["present"] += 1
            continue
        if rec.get("fs_uuid") in persister.unsupported:
            counts["failed"] += 1
            continue
        entry = FileEntry(path, b"", int(rec.get("ino") or 0), 0, int(rec.get("size") or 0),
                          int(rec.get("mtime_ns") or 0), int(rec.get("ctime_ns") or 0))
        after = persister._write(entry, rec.get("fs_uuid") or "", rec["uuid"])
        if after is entry:
            counts["failed"] += 1
            continue
        counts["written"] += 1
        todo.append((rec, after.ctime_ns))

    def fn(txn: lmdb.Transaction) -> None:
        w = store.writer(txn)
        for rec, ctime_ns in todo:
            cur = store.get(txn, rec["uuid"])
            if cur is None or cur.get("ctime_ns") != rec.get("ctime_ns"):
                continue
            new = dict(cur, ctime_ns=ctime_ns, ctime=ctime_ns // 1_000_000_000)
            w.put(new, cur)
        w.finish()

    if todo:
        env.write(fn)
    return counts
