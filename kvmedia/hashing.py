"""Content hashes of files, reused while size + mtime are unchanged, and duplicate sets.

Record fields:

    content_hash  str   "<algo>:<hex>", algo xxh3_128 (default, fast) or sha256
    hash_stamp    [size, mtime_ns]  the file version the hash describes

A hash is valid only while `hash_stamp` equals the record's size and mtime_ns; a rescan of a
changed file keeps the old field but makes it stale, so it is recomputed when next asked.
A file is read in 1 MiB chunks and stat'ed before and after: a file that changed while being
read is reported, not hashed. Never hashed (reported as failed): anything but a regular file
(a FIFO is opened non-blocking, so it cannot hang), and a file of 1 GiB or more that is
mostly holes (a sparse 1 TiB file would take hours to read and holds no media).

Duplicates: candidates are found from the `size` type keys alone (the size is in the key,
so no record is decoded); only files sharing a size with another are hashed and compared.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import xxhash

from .errors import NotFoundError, StorageError, UsageError
from .pathbytes import display, get_field, set_field
from .progress import NullProgress, Progress
from .store import keys as K
from .store.env import Env
from .store.recordstore import Record, RecordStore

ALGOS = ("xxh3_128", "sha256")
DEFAULT_ALGO = "xxh3_128"
CHUNK_BYTES = 1 << 20
SPARSE_MIN_BYTES = 1 << 30
"""A file this large whose data extents cover under half of it is not hashed (see hash_file)."""
MAX_EXTENTS = 4096
BATCH = 256


def _hasher(algo: str) -> Any:
    if algo == "xxh3_128":
        return xxhash.xxh3_128()
    if algo == "sha256":
        return hashlib.sha256()
    raise UsageError(f"unknown hash {algo!r}; use one of {', '.join(ALGOS)}")


def hash_file(path: bytes, algo: str = DEFAULT_ALGO) -> tuple[str, int, int]:
    """(content_hash, size, mtime_ns) of the file at `path`."""
    h = _hasher(algo)
    try:  # O_NONBLOCK: a FIFO that took the file's place must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{display(path)} is gone; run `kvmedia scan`", path=path) from exc
    except OSError as exc:
        raise StorageError(f"cannot read {display(path)}: {exc.strerror}", path=path) from exc
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise StorageError(f"{display(path)} is not a regular file any more (a FIFO, "
                               "socket or device took its place); run `kvmedia scan`", path=path)
        if _mostly_holes(fd, before.st_size):
            raise StorageError(f"{display(path)} is a sparse file ({before.st_size} bytes, "
                               "mostly holes): not hashed, reading it would take hours",
                               path=path)
        while True:
            chunk = os.read(fd, CHUNK_BYTES)
            if not chunk:
                break
            h.update(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise StorageError(f"cannot read {display(path)}: {exc.strerror}", path=path) from exc
    finally:
        os.close(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise StorageError(f"{display(path)} changed while being hashed; retry", path=path)
    return f"{algo}:{h.hexdigest()}", before.st_size, before.st_mtime_ns


def _mostly_holes(fd: int, size: int) -> bool:
    """True for a file of SPARSE_MIN_BYTES or more whose data extents (SEEK_DATA/SEEK_HOLE)
    cover less than half of it. Compressed file systems keep their extents: only real holes
    count. Stops counting after MAX_EXTENTS extents (then: not sparse enough to matter)."""
    if size < SPARSE_MIN_BYTES or not hasattr(os, "SEEK_DATA"):
        return False
    data = pos = 0
    try:
        for _ in range(MAX_EXTENTS):
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            data += end - start
            pos = end
            if pos >= size:
                break
        else:
            return False
    except OSError:
        return False  # no SEEK_DATA on this file system: treat it as dense
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    return data * 2 < size


def valid_hash(rec: Record, algo: str | None = None) -> str | None:
    """The record's content hash if it still describes the recorded size and mtime."""
    value = rec.get("content_hash")
    stamp = rec.get("hash_stamp")
    if not isinstance(value, str) or stamp != [rec.get("size"), rec.get("mtime_ns")]:
        return None
    if algo is not None and not value.startswith(algo + ":"):
        return None
    return value


@dataclass
class HashSummary:
    total: int = 0
    hashed: int = 0
    reused: int = 0
    changed: int = 0
    failed: int = 0
    interrupted: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", **{k: v for k, v in self.__dict__.items()}}


def hash_records(env: Env, store: RecordStore, records: Iterable[Record], *,
                 algo: str = DEFAULT_ALGO, force: bool = False,
                 progress: Progress | None = None, stop: threading.Event | None = None
                 ) -> HashSummary:
    """Give each record a valid content hash, reading only files whose stamp changed."""
    _hasher(algo)  # validate early
    progress = progress or NullProgress()
    summary = HashSummary()
    todo = []
    for rec in records:
        summary.total += 1
        if rec.get("is_trash") or (not force and valid_hash(rec, algo)):
            summary.reused += 1
        else:
            todo.append(rec)
    todo.sort(key=lambda r: get_field(r, "path") or b"")
    pending: list[tuple[str, str, int, int]] = []

    def flush() -> None:
        if pending:
            env.write(lambda txn: _store(txn, store, pending))
            pending.clear()

    for i, rec in enumerate(todo):
        if stop is not None and stop.is_set():
            summary.interrupted = True
            break
        path = get_field(rec, "path") or b""
        progress.update({"phase": "hash", "files": i, "total": len(todo), "current": path})
        try:
            digest, size, mtime_ns = hash_file(path, algo)
        except (NotFoundError, StorageError) as exc:
            summary.failed += 1
            if len(summary.errors) < 100:
                summary.errors.append({"uuid": rec["uuid"], "path": display(path),
                                       "error": exc.message})
            continue
        if (size, mtime_ns) != (rec.get("size"), rec.get("mtime_ns")):
            summary.changed += 1  # the record is stale: the next scan updates it first
            continue
        pending.append((rec["uuid"], digest, size, mtime_ns))
        summary.hashed += 1
        if len(pending) >= BATCH:
            flush()
    flush()
    progress.done({"phase": "hash", "files": summary.hashed, "total": len(todo)})
    return summary


def _store(txn: lmdb.Transaction, store: RecordStore, items: list[tuple[str, str, int, int]]
           ) -> None:
    w = store.writer(txn)
    for uuid, digest, size, mtime_ns in items:
        cur = store.get(txn, uuid)
        if cur is None or (cur.get("size"), cur.get("mtime_ns")) != (size, mtime_ns):
            continue
        new = dict(cur)
        new["content_hash"] = digest
        new["hash_stamp"] = [size, mtime_ns]
        w.put(new, cur)
    w.finish()


def same_size_candidates(txn: lmdb.Transaction, store: RecordStore, min_size: int = 1
                         ) -> list[list[str]]:
    """uuids of live files grouped by size, only groups of two or more (from keys alone)."""
    groups: list[list[str]] = []
    current: list[str] = []
    current_size = -1
    prefix = K.type_prefix(K.ALL, False, "size")
    for key, _ in store.iter_prefix(txn, prefix):
        size = int(key[len(prefix):len(prefix) + 20])
        if size != current_size:
            if len(current) > 1:
                groups.append(current)
            current, current_size = [], size
        if size >= min_size:
            current.append(K.uuid_from_type_key(key))
    if len(current) > 1:
        groups.append(current)
    return groups


def dupe_sets(records_by_group: list[list[Record]], algo: str) -> list[dict[str, Any]]:
    """Duplicate sets (same valid hash) with wasted bytes, largest waste first."""
    out = []
    for group in records_by_group:
        by_hash: dict[str, list[Record]] = {}
        for rec in group:
            digest = valid_hash(rec, algo)
            if digest is not None:
                by_hash.setdefault(digest, []).append(rec)
        for digest, recs in by_hash.items():
            if len(recs) < 2:
                continue
            size = int(recs[0].get("size") or 0)
            files = []
            for rec in sorted(recs, key=lambda r: get_field(r, "path") or b""):
                item: dict[str, Any] = {"uuid": rec["uuid"]}
                set_field(item, "path", get_field(rec, "path"))
                files.append(item)
            out.append({"type": "dupes", "content_hash": digest, "size": size,
                        "count": len(recs), "wasted_bytes": size * (len(recs) - 1),
                        "files": files})
    out.sort(key=lambda d: (-d["wasted_bytes"], d["content_hash"]))
    return out
