"""Backup, restore, export and import: what only kvmedia knows must survive a lost disk.

Backup directory (`kvmedia backup DEST`):

    DEST/data.mdb     LMDB's own compacting copy, taken inside one read transaction: a
                      consistent snapshot even while a scan or the watcher writes
    DEST/share.key    the share-ID key (0600), when one exists
    DEST/backup.json  {"kvmedia_backup": 1, "created_at", "records", "schema"}

`restore_backup` checks the copy opens and has a schema, refuses while another process has
the library open (LMDB holds a shared lock on lock.mdb byte 0; we take it exclusively and keep
it until done), then swaps directories: the old `media.lmdb` is kept as
`media.lmdb.pre-restore`. The search index is derived data and rebuilds from the records.

Export (JSON lines): a header `{"kvmedia_export": 1, "created_at", "relative_to"}`, then one
record per line exactly as stored. With `relative_to`, the byte fields path, original_path,
trash_path and root of records under it are written relative ("" for the root itself), and
records elsewhere are left out. Import remaps relative paths under `--root`, or for absolute
exports moves each record from its own `root` to `--root`; it refreshes inode and ctime from
the file when present (so the next scan finds it unchanged and metadata is not re-probed),
keeps uuids, and refuses paths with `.`/`..`/empty components.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import lmdb
import orjson

from . import records as R
from .errors import BusyError, DamagedError, StorageError, UsageError
from .identity import FsUuidResolver
from .pathbytes import dir_prefix, get_field, is_under, set_field
from .safefs import components, fsync_dir
from .store import keys as K
from .store.env import Env
from .store.recordstore import Record, RecordStore

BACKUP_FORMAT = 1
EXPORT_FORMAT = 1
PATH_FIELDS = ("path", "original_path", "trash_path", "root")
IMPORT_BATCH = 1000
ENV_DIR = "media.lmdb"
KEY_NAME = "share.key"


def _copy_private(src: str, dst: str) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


# -- backup / restore ----------------------------------------------------------------------

def backup(env: Env, data_dir: str, dest: str) -> dict[str, Any]:
    """A consistent, compacted hot copy of the library into the new or empty directory `dest`."""
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise UsageError(f"backup destination {dest} exists and is not an empty directory; "
                         "pick a new one")
    if is_under(os.fsencode(dest), os.fsencode(os.path.abspath(data_dir))):
        raise UsageError("the backup destination is inside the data dir; pick another place")
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        with env.read() as txn:
            records = sum(K.unpack_stats(txn.get(K.stats_key(K.ALL, t)))[0] for t in (False, True))
            schema = (txn.get(K.K_SCHEMA) or b"").decode("ascii", "replace")
            env.env.copy(dest, compact=True, txn=txn)
        os.chmod(os.path.join(dest, "data.mdb"), 0o600)
        key = os.path.join(data_dir, KEY_NAME)
        if os.path.isfile(key) and not os.path.islink(key):
            _copy_private(key, os.path.join(dest, KEY_NAME))
        manifest = {"kvmedia_backup": BACKUP_FORMAT, "created_at": R.now_iso(),
                    "records": records, "schema": schema}
        with open(os.path.join(dest, "backup.json"), "wb") as fh:
            fh.write(orjson.dumps(manifest))
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(dest)
    except lmdb.Error as exc:
        raise StorageError(f"backup failed: {exc}; check free space at {dest}") from exc
    except OSError as exc:
        raise StorageError(f"backup failed: {exc.strerror or exc} ({dest})", path=dest) from exc
    return {"type": "backup", "dest": dest, **manifest}


def _check_backup(src: str) -> dict[str, Any]:
    data = os.path.join(src, "data.mdb")
    if not os.path.isfile(data):
        raise UsageError(f"{src} holds no data.mdb; give a directory made by `kvmedia backup`")
    try:
        env = lmdb.open(src, readonly=True, lock=False, subdir=True, max_dbs=0)
    except lmdb.Error as exc:
        raise DamagedError(f"the backup in {src} does not open: {exc}; use another backup",
                           path=src) from exc
    try:
        with env.begin() as txn:
            schema = txn.get(K.K_SCHEMA)
            records = sum(K.unpack_stats(txn.get(K.stats_key(K.ALL, t)))[0] for t in (False, True))
    finally:
        env.close()
    if schema is None:
        raise DamagedError(f"the backup in {src} is not a kvmedia library; use another backup",
                           path=src)
    return {"records": records, "schema": schema.decode("ascii", "replace")}


@contextmanager
def _exclusive(env_dir: str) -> Iterator[None]:
    """Hold LMDB's liveness lock exclusively: no other process has this library open."""
    lock = os.path.join(env_dir, "lock.mdb")
    if not os.path.exists(lock):
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise BusyError("the library is open in another process (watcher, scan or "
                                "server); stop it and retry the restore") from exc
            raise
        yield
    finally:
        os.close(fd)


def restore_backup(data_dir: str, src: str) -> dict[str, Any]:
    """Replace the library in `data_dir` by the backup in `src`. The library must be closed."""
    src = os.path.abspath(src)
    info = _check_backup(src)
    env_dir = os.path.join(data_dir, ENV_DIR)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    staging = os.path.join(data_dir, ENV_DIR + ".restoring")
    previous = os.path.join(data_dir, ENV_DIR + ".pre-restore")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o700)
        _copy_private(os.path.join(src, "data.mdb"), os.path.join(staging, "data.mdb"))
        fsync_dir(staging)
        with _exclusive(env_dir):
            if os.path.exists(env_dir):
                shutil.rmtree(previous, ignore_errors=True)
                os.rename(env_dir, previous)
            os.rename(staging, env_dir)
            fsync_dir(data_dir)
        key = os.path.join(src, KEY_NAME)
        if os.path.isfile(key):
            tmp = os.path.join(data_dir, f".{KEY_NAME}.restore")
            if os.path.lexists(tmp):
                os.unlink(tmp)
            _copy_private(key, tmp)
            os.replace(tmp, os.path.join(data_dir, KEY_NAME))
    except OSError as exc:
        raise StorageError(f"restore failed: {exc.strerror or exc}; the previous library is "
                           f"in {previous} if it was moved", path=data_dir) from exc
    return {"type": "restore", "src": src, "data_dir": data_dir, "previous": previous, **info}


# -- export / import -------------------------------------------------------------------------

def _relative(value: bytes, base: bytes) -> bytes | None:
    if not is_under(value, base):
        return None
    return b"" if value.rstrip(b"/") == base.rstrip(b"/") else value[len(dir_prefix(base)):]


def export_records(env: Env, store: RecordStore, out: IO[bytes],
                   relative_to: bytes | None = None) -> dict[str, int]:
    """Write the header and every record (under `relative_to`) as JSON lines to `out`."""
    header: dict[str, Any] = {"kvmedia_export": EXPORT_FORMAT, "created_at": R.now_iso()}
    base = (os.path.abspath(relative_to).rstrip(b"/") or b"/") if relative_to else None
    set_field(header, "relative_to", base)
    out.write(orjson.dumps(header) + b"\n")
    written = skipped = 0
    with env.read() as txn:
        for rec in store.iter_records(txn):
            if base is not None:
                rec = dict(rec)
                if _relative(R.path_of(rec), base) is None:
                    skipped += 1
                    continue
                for name in PATH_FIELDS:
                    value = get_field(rec, name)
                    if value is not None:
                        rel = _relative(value, base)
                        set_field(rec, name, rel)  # None (outside the base) drops the field
            out.write(orjson.dumps(rec) + b"\n")
            written += 1
    return {"exported": written, "skipped": skipped}


@dataclass
class ImportSummary:
    imported: int = 0
    replaced: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "imported": self.imported, "replaced": self.replaced,
                "failed": self.failed, "errors": self.errors}


def _safe(path: bytes) -> bytes:
    components(path, b"/")  # absolute, no NUL, no ./../empty parts
    return path


def _remap(rec: Record, relative: bool, new_root: bytes | None) -> Record:
    rec = dict(rec)
    if relative:
        assert new_root is not None
        for name in PATH_FIELDS:
            value = get_field(rec, name)
            if value is not None:
                if value.startswith(b"/"):
                    raise UsageError("an absolute path in a relative export")
                set_field(rec, name, new_root if value == b"" else dir_prefix(new_root) + value)
    elif new_root is not None:
        old_root = get_field(rec, "root")
        if not old_root:
            raise UsageError("record has no root to move; export with --relative-to instead")
        for name in PATH_FIELDS:
            value = get_field(rec, name)
            if value is not None:
                rel = _relative(value, old_root)
                if rel is None:
                    raise UsageError(f"{name} is outside the record's root")
                set_field(rec, name, new_root if rel == b"" else dir_prefix(new_root) + rel)
    for name in ("path", "original_path", "trash_path"):
        value = get_field(rec, name)
        if value is not None:
            _safe(value)
    return rec


def _validate(obj: Any) -> Record:
    if not isinstance(obj, dict):
        raise UsageError("not a JSON object")
    uuid = obj.get("uuid")
    if not (isinstance(uuid, str) and len(uuid) == 36 and uuid.count("-") == 4
            and all(c in "0123456789abcdef-" for c in uuid)):
        raise UsageError("missing or malformed uuid")
    if get_field(obj, "path") is None:
        raise UsageError("record without a path")
    if obj.get("type") not in R.MEDIA_TYPES:
        obj["type"] = R.infer_type(get_field(obj, "name") or b"")
    for name in ("size", "mtime_ns", "ino", "ctime", "ctime_ns"):
        if not isinstance(obj.get(name, 0), int):
            raise UsageError(f"{name} is not an integer")
    return obj


def import_records(env: Env, store: RecordStore, lines: IO[bytes], new_root: bytes | None,
                   resolver: FsUuidResolver) -> ImportSummary:
    summary = ImportSummary()
    relative = False
    batch: list[Record] = []
    if new_root is not None:
        new_root = os.path.abspath(new_root).rstrip(b"/") or b"/"
        _safe(new_root + b"/x")

    def flush() -> None:
        if batch:
            summary.replaced += env.write(lambda txn: _put_all(txn, store, batch))
            summary.imported += len(batch)
            batch.clear()

    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if isinstance(obj, dict) and "kvmedia_export" in obj:
                relative = get_field(obj, "relative_to") is not None
                if relative and new_root is None:
                    raise UsageError("this export has relative paths; give --root NEWROOT")
                continue
            rec = _remap(_validate(obj), relative, new_root)
            batch.append(_refresh(rec, resolver))
        except (orjson.JSONDecodeError, UsageError) as exc:
            if isinstance(exc, UsageError) and "give --root" in exc.message:
                raise
            summary.failed += 1
            if len(summary.errors) < 100:
                message = exc.message if isinstance(exc, UsageError) else "invalid JSON"
                summary.errors.append({"line": lineno, "error": message})
            continue
        if len(batch) >= IMPORT_BATCH:
            flush()
    flush()
    return summary


def _refresh(rec: Record, resolver: FsUuidResolver) -> Record:
    """Take identity fields from the file at the new path, when it is there."""
    try:
        st = os.lstat(R.path_of(rec))
    except OSError:
        return rec
    if not stat.S_ISREG(st.st_mode):
        return rec
    rec["ino"] = st.st_ino
    rec["ctime"] = st.st_ctime_ns // 1_000_000_000
    rec["ctime_ns"] = st.st_ctime_ns
    rec["fs_uuid"] = resolver.fs_uuid(R.path_of(rec), st.st_dev)
    return rec


def _put_all(txn: lmdb.Transaction, store: RecordStore, batch: list[Record]) -> int:
    w = store.writer(txn)
    replaced = 0
    for rec in batch:
        rec = dict(rec, indexed_at=R.now_iso())
        old = store.get(txn, rec["uuid"])
        pv = store.path_value(txn, R.path_of(rec))
        if pv is not None and pv.uuid != rec["uuid"]:
            other = store.get(txn, pv.uuid)
            if other is not None:
                w.delete(other)
                replaced += 1
        replaced += old is not None
        w.put(rec, old)
    w.finish()
    return replaced


__all__ = ["backup", "export_records", "import_records", "restore_backup"]
