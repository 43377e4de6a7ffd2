"""`Library`: the one public entry point. The CLI makes one Library call per command.

    lib = Library.open("/var/lib/kvmedia")      # or Library.open() for the configured dir
    lib.scan(["/mnt/vol"])
    for rec in lib.list_media(media_type="video", sort="moddesc", limit=20): ...

Every mutation runs in one LMDB write transaction across the record, its secondary keys and
whatever listeners later layers register on `lib.store` (search-index delta, change feed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import lmdb
import orjson

from .config import Config
from .errors import NotFoundError, StorageError, UsageError
from .identity import FsUuidResolver
from .pathbytes import display, get_field, to_bytes
from .progress import Progress
from .records import MEDIA_TYPES
from .scan import Ingest, Scanner, ScanSummary, upsert_paths
from .store import keys as K
from .store.audit import AuditLog
from .store.env import Env
from .store.recordstore import Record, RecordStore, record_fid_key, record_path_value, \
    record_type_keys
from .walk import WalkRules

SCHEMA_VERSION = 1
SORTS = K.KINDS
LIST_TYPES = (*MEDIA_TYPES, K.ALL)


def _is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4 and all(
        c in "0123456789abcdef-" for c in text.lower()
    )


class Library:
    def __init__(self, data_dir: str, config: Config, *, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.config = config
        self.env = Env(os.path.join(data_dir, "media.lmdb"), readonly=readonly)
        self.store = RecordStore()
        self.audit = AuditLog()
        self._resolver: FsUuidResolver | None = None
        if not readonly:
            self._check_schema()

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None, *, config: Config | None = None,
             readonly: bool = False) -> Library:
        """Open (creating with mode 0700 if needed) the library in `data_dir`."""
        config = config or Config({"data_dir": os.fspath(data_dir) if data_dir else None})
        path = os.path.abspath(os.fspath(data_dir) if data_dir else config["data_dir"])
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o700)
        except OSError as exc:
            raise StorageError(f"cannot create data dir {path}: {exc.strerror}", path=path) from exc
        return cls(path, config, readonly=readonly)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def resolver(self) -> FsUuidResolver:
        if self._resolver is None:
            self._resolver = FsUuidResolver()
        return self._resolver

    def walk_rules(self) -> WalkRules:
        return WalkRules(
            include=[os.path.abspath(to_bytes(p)) for p in self.config["scan.include"]],
            exclude=list(self.config["scan.exclude"]),
        )

    # -- schema ------------------------------------------------------------------------------

    def _check_schema(self) -> None:
        """Cheap check on open: a missing/old schema key or a record without its keys -> repair."""
        with self.env.read() as txn:
            version = txn.get(K.K_SCHEMA)
            sample_ok = self._sample_ok(txn)
        if version == str(SCHEMA_VERSION).encode() and sample_ok:
            return
        self.doctor(repair=True)

    def _sample_ok(self, txn: lmdb.Transaction) -> bool:
        cur = txn.cursor()
        if not cur.set_range(K.P_UUID):
            return True
        for _ in range(3):
            key, raw = cur.item()
            if not key.startswith(K.P_UUID):
                break
            if self._record_problems(txn, orjson.loads(raw)):
                return False
            if not cur.next():
                break
        return True

    def _record_problems(self, txn: lmdb.Transaction, rec: Record) -> list[str]:
        problems = []
        uuid = rec["uuid"].encode("ascii")
        path = get_field(rec, "path")
        if path is None or txn.get(K.path_key(path)) != record_path_value(rec):
            problems.append("path key")
        fid = record_fid_key(rec)
        if fid is not None and txn.get(fid) is None:
            problems.append("fid key")
        elif fid is not None and txn.get(fid) != uuid and not rec.get("is_trash"):
            pass  # a hardlink twin owns the fid key: allowed
        for key in record_type_keys(rec):
            if txn.get(key) is None:
                problems.append("type key")
                break
        return problems

    # -- scanning ----------------------------------------------------------------------------

    def scan(self, roots: Sequence[str | bytes], *, progress: Progress | None = None,
             stop: threading.Event | None = None, force: bool = False) -> list[ScanSummary]:
        scanner = Scanner(self.env, self.store, self.audit, rules=self.walk_rules(),
                          progress=progress, stop=stop, resolver=self.resolver,
                          batch_files=int(self.config["scan.batch_files"]))
        out = []
        for root in roots:
            out.append(scanner.scan(to_bytes(root), force=force))
            if stop is not None and stop.is_set():
                break
        return out

    def upsert_paths(self, paths: Iterable[str | bytes]) -> dict[str, int]:
        ingest = Ingest(self.store, self.audit, self.resolver)
        return upsert_paths(self.env, ingest, [to_bytes(p) for p in paths], self.walk_rules())

    def roots(self) -> list[dict[str, Any]]:
        with self.env.read() as txn:
            return [orjson.loads(v) for _k, v in self.store.iter_prefix(txn, K.P_ROOT)]

    # -- reads -------------------------------------------------------------------------------

    def get(self, uuid: str) -> Record | None:
        with self.env.read() as txn:
            return self.store.get(txn, uuid)

    def find_by_path(self, path: str | bytes) -> Record | None:
        raw = to_bytes(path)
        with self.env.read() as txn:
            rec = self.store.get_by_path(txn, raw)
            if rec is None and not raw.startswith(b"/"):
                rec = self.store.get_by_path(txn, os.path.abspath(raw))
            return rec

    def resolve(self, ref: str | bytes) -> Record:
        """A record by uuid or path; NotFoundError otherwise."""
        if isinstance(ref, str) and _is_uuid(ref):
            rec = self.get(ref.lower())
        else:
            rec = self.find_by_path(ref)
        if rec is None:
            raise NotFoundError(f"not in the library: {display(ref)}; scan its folder first")
        return rec

    def list_media(self, *, media_type: str | None = None, trash: bool = False,
                   sort: str = "moddesc", limit: int | None = None, offset: int = 0
                   ) -> list[Record]:
        """Records of one type (or all), in one of the six orders, from the `media:type:` keys."""
        media_type = media_type or K.ALL
        if media_type not in LIST_TYPES:
            raise UsageError(f"unknown type {media_type!r}; use one of {', '.join(LIST_TYPES)}")
        if sort not in SORTS:
            raise UsageError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
        if offset < 0 or (limit is not None and limit < 0):
            raise UsageError("limit and offset must not be negative")
        prefix = K.type_prefix(media_type, trash, sort)
        out: list[Record] = []
        with self.env.read() as txn:
            skipped = 0
            for key, _ in self.store.iter_prefix(txn, prefix):
                if skipped < offset:
                    skipped += 1
                    continue
                if limit is not None and len(out) >= limit:
                    break
                rec = self.store.get(txn, K.uuid_from_type_key(key))
                if rec is not None:
                    out.append(rec)
        return out

    def count(self, *, media_type: str | None = None, trash: bool = False) -> int:
        media_type = media_type or K.ALL
        if media_type not in LIST_TYPES:
            raise UsageError(f"unknown type {media_type!r}; use one of {', '.join(LIST_TYPES)}")
        with self.env.read() as txn:
            return K.unpack_stats(txn.get(K.stats_key(media_type, trash)))[0]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"types": {}}
        with self.env.read() as txn:
            for media_type in LIST_TYPES:
                live = K.unpack_stats(txn.get(K.stats_key(media_type, False)))
                trash = K.unpack_stats(txn.get(K.stats_key(media_type, True)))
                out["types"][media_type] = {
                    "count": live[0], "bytes": live[1],
                    "trash_count": trash[0], "trash_bytes": trash[1],
                }
            out["lmdb_entries"] = txn.stat()["entries"]
        out["db_bytes"] = self.env.disk_bytes()
        out["data_dir"] = self.data_dir
        out["roots"] = self.roots()
        return out

    def audit_tail(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.env.read() as txn:
            return AuditLog.tail(txn, limit)

    # -- checking ----------------------------------------------------------------------------

    def doctor(self, *, repair: bool = True) -> dict[str, Any]:
        """Full check of secondary keys and stats against the records; rebuild what is wrong."""
        from .doctor import check_and_repair

        return check_and_repair(self, repair=repair)
