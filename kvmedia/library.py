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

from .changefeed import ChangeFeed, FeedPage
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
from .store.recordstore import (
    Record,
    RecordStore,
    record_fid_key,
    record_path_value,
    record_type_keys,
)
from .trash import ItemResult, TrashOps
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
        self.feed = ChangeFeed()
        self.feed.attach(self.store)
        from .index.delta import DeltaWriter, init_gen

        self._search_engine: Any = None  # built on first use: it loads numpy (see search_engine)
        self.store.listeners.append(DeltaWriter())  # search-index delta, same txn
        from .pipeline.engine import AssetPipeline
        from .search.tagkeys import TagKeysWriter, ensure_built
        from .thumbs import Thumbnails

        self.store.listeners.append(TagKeysWriter())  # `tag:` / `rating:` keys, same txn
        self.pipeline = AssetPipeline(self.env, self.store)
        self.store.listeners.append(self.pipeline)  # dependency dirty marks, same txn
        self.thumbs = Thumbnails(self.env, self.store, data_dir,
                                 max_bytes=int(config["thumbs.max_mb"]) << 20)
        self.store.listeners.append(self.thumbs)  # a deleted item loses its cached thumbnail
        if not readonly:
            init_gen(self.env)
            ensure_built(self.env)
        self._resolver: FsUuidResolver | None = None
        if not readonly:
            self._check_schema()
            self.trash_ops().recover()  # settle trash/restore/delete left by a dead process

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
    def search_engine(self) -> Any:
        """The search engine (segments, planner, merges), created on first use."""
        if self._search_engine is None:
            from .search.engine import SearchEngine

            self._search_engine = SearchEngine(
                self.env, self.data_dir, cache_bytes=int(self.config["search.cache_mb"]) << 20,
                mapped_budget=int(self.config["search.mapped_mb"]) << 20)
        return self._search_engine

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
             stop: threading.Event | None = None, force: bool = False,
             persist_ids: str | None = None) -> list[ScanSummary]:
        """persist_ids: "xattr" / "none" (default: the `scan.persist_ids` setting)."""
        if not self.env.readonly:
            self.trash_ops().recover()
        scanner = Scanner(self.env, self.store, self.audit, rules=self.walk_rules(),
                          progress=progress, stop=stop, resolver=self.resolver,
                          batch_files=int(self.config["scan.batch_files"]),
                          walk_process=self.config["scan.walk_process"])
        scanner.ingest.sidecars = self.pipeline
        scanner.ingest.persist = self.id_persister(persist_ids)
        out = []
        for root in roots:
            out.append(scanner.scan(to_bytes(root), force=force))
            if stop is not None and stop.is_set():
                break
        self.pipeline.sweep([s.root for s in out if not (s.interrupted or s.offline)])
        self.pipeline.process_dirty()  # sidecar fields of what changed, before the index fold
        self.maintain_index()  # fold a big delta so the next search is fast
        return out

    def maintain_index(self) -> None:
        """Rebuild a damaged index or fold a big delta; when there is nothing to do, decided
        without loading the search engine (numpy), which an unchanged rescan would pay for."""
        if self._search_engine is None:
            from .index.manifest import DIR_NAME
            from .index.status import needs_maintenance

            if not needs_maintenance(self.env, os.path.join(self.data_dir, DIR_NAME)):
                return
        self.search_engine.maintainer.maintain()

    def upsert_paths(self, paths: Iterable[str | bytes], *,
                     outcomes: list[tuple[bytes, str]] | None = None) -> dict[str, int]:
        """Files, directories (walked) or gone paths, in one transaction (see scan.upsert_paths)."""
        ingest = Ingest(self.store, self.audit, self.resolver)
        ingest.sidecars = self.pipeline
        ingest.persist = self.id_persister(None)
        roots = [p for p in (get_field(r, "path") for r in self.roots()) if p]
        raw = [os.path.abspath(to_bytes(p)) for p in paths]
        stats = upsert_paths(self.env, ingest, raw, self.walk_rules(),
                             roots=roots, outcomes=outcomes)
        self.pipeline.sweep(raw)  # sidecars deleted at or under these paths
        self.pipeline.process_dirty()
        self.maintain_index()
        return stats

    @property
    def semantic(self) -> Any:
        """Analysis, embeddings, K-NN / similar / hybrid search (kvmedia/embed/semantic.py)."""
        sem = self.__dict__.get("_semantic")
        if sem is None:
            from .embed.semantic import Semantic

            sem = self.__dict__["_semantic"] = Semantic(self.env, self.store, self.data_dir,
                                                        self.config, text_search=self.search)
        return sem

    # -- search ------------------------------------------------------------------------------

    def search(self, query: str = "", *, media_type: str | None = None,
               trash: bool | None | str = "keep",
               path_prefix: str | bytes | list[Any] | None = None, sort: str | None = None,
               limit: int | None | str = "keep", offset: int | None = None,
               explain: bool = False) -> Any:
        """Search names and paths (grammar: kvmedia/search/query.py). Returns a SearchResult
        (`.total`, `.hits` records in order, `.plan` with explain=True). trash: True/False/None
        (both); "keep" leaves the query's own `trash:` (default false)."""
        from .search.query import apply_options, parse_query

        q = apply_options(parse_query(query), media_type=media_type, trash=trash,
                          path_prefix=path_prefix, sort=sort, limit=limit, offset=offset)
        return self.search_engine.search(q, explain=explain)

    def rebuild_index(self, paths: Sequence[str | bytes] | None = None, *,
                      progress: Progress | None = None, stop: threading.Event | None = None
                      ) -> dict[str, Any]:
        """Rescan `paths` (default: every known root), then write the search index again from
        the records. Searches keep answering from the old index meanwhile."""
        if paths is None:
            paths = [p for p in (get_field(r, "path") for r in self.roots()) if p]
        summaries = self.scan(list(paths), progress=progress, stop=stop) if paths else []
        report = self.search_engine.maintainer.merge(full=True)
        return {"scans": summaries, "index": report}

    def optimize(self) -> Any:
        """Fold the delta and every segment into one segment."""
        return self.search_engine.maintainer.merge(optimize=True)

    def events(self, since: int = 0, limit: int | None = None) -> FeedPage:
        """Change-feed entries after cursor `since` (see changefeed.py)."""
        with self.env.read() as txn:
            return self.feed.page(txn, since, limit)

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

    # -- media operations: trash, buckets, probing, hashes, share IDs, backup ------------------
    # Thin wrappers over trash.py, buckets.py, probe/, hashing.py, shareid.py and backup.py.

    def trash_ops(self) -> TrashOps:
        ops = getattr(self, "_trash_ops", None)
        if ops is None:
            ops = self._trash_ops = TrashOps(
                self.env, self.store, self.audit, self.data_dir, self.resolver,
                lambda: [p for p in (get_field(r, "path") for r in self.roots()) if p])
        return ops

    def _resolve_trashed(self, ref: str | bytes) -> Record:
        """A record by uuid or path; for trashed ones the original path works too."""
        try:
            return self.resolve(ref)
        except NotFoundError:
            if isinstance(ref, str) and _is_uuid(ref):
                raise
            want = os.path.abspath(to_bytes(ref))
            hits = [r for r in self.trash_ops().trashed()
                    if get_field(r, "original_path") == want]
            if not hits:
                raise
            return max(hits, key=lambda r: r.get("deleted_at") or "")

    def _each(self, refs: Iterable[str | bytes], op: Any, *, trashed_refs: bool = False
              ) -> list[ItemResult]:
        from .errors import KvmediaError

        out = []
        for ref in refs:
            try:
                rec = self._resolve_trashed(ref) if trashed_refs else self.resolve(ref)
                out.append(ItemResult(ref, op(rec["uuid"])))
            except KvmediaError as exc:
                out.append(ItemResult(ref, None, exc))
        return out

    def trash(self, refs: Iterable[str | bytes]) -> list[ItemResult]:
        """Move files to their volume's `.nas-trash`; one result per ref, errors per item."""
        return self._each(refs, self.trash_ops().trash)

    def restore(self, refs: Iterable[str | bytes]) -> list[ItemResult]:
        """Put trashed files back (as `name (restored).ext` when the path is taken)."""
        return self._each(refs, self.trash_ops().restore, trashed_refs=True)

    def delete(self, refs: Iterable[str | bytes]) -> list[ItemResult]:
        """Remove files and their records permanently, trashed or not."""
        return self._each(refs, self.trash_ops().delete, trashed_refs=True)

    def empty_trash(self, older_than_s: float | None = None) -> list[ItemResult]:
        """Permanently delete trashed items (deleted more than `older_than_s` ago)."""
        ops = self.trash_ops()
        return self._each([r["uuid"] for r in ops.trashed(older_than_s)], ops.delete)

    def buckets(self, media_type: str | None = None) -> list[dict[str, Any]]:
        from .buckets import list_buckets

        if media_type is not None and media_type not in LIST_TYPES:
            raise UsageError(f"unknown type {media_type!r}; use one of {', '.join(LIST_TYPES)}")
        with self.env.read() as txn:
            return list_buckets(txn, self.store, media_type)

    def _records(self, refs: Iterable[str | bytes] | None) -> list[Record]:
        if refs is None:
            with self.env.read() as txn:
                return [r for r in self.store.iter_records(txn) if not r.get("is_trash")]
        return [self.resolve(ref) for ref in refs]

    def capabilities(self) -> dict[str, Any]:
        """Optional tools present and missing (ffprobe, Pillow, mutagen), for `doctor`."""
        from .probe.tools import describe, find_tools

        return describe(find_tools())

    def probe(self, refs: Iterable[str | bytes] | None = None, *, force: bool = False,
              workers: int = 2, progress: Progress | None = None,
              stop: threading.Event | None = None) -> Any:
        """Fill metadata (duration, size, EXIF, tags) for `refs` or every record; a ProbeSummary."""
        from .probe.bulk import probe_records
        from .probe.tools import find_tools

        return probe_records(self.env, self.store, self._records(refs), find_tools(),
                             workers=workers, force=force, progress=progress, stop=stop)

    def ensure_probed(self, rec: Record) -> Record:
        """`rec` with fresh metadata: probed now only when its cached stamp is stale."""
        from .probe.bulk import probe_one, store_results
        from .probe.cache import needs_probe
        from .probe.tools import find_tools

        tools = find_tools()
        if not needs_probe(rec, tools):
            return rec
        outcome = probe_one(rec, tools)
        return store_results(self.env, self.store, [outcome], tools).get(rec["uuid"], rec)

    def hash_media(self, refs: Iterable[str | bytes] | None = None, *, algo: str = "xxh3_128",
                   force: bool = False, under: Sequence[bytes] | None = None,
                   progress: Progress | None = None, stop: threading.Event | None = None) -> Any:
        """Content hashes for `refs`, every record, or those `under` some roots; reused while
        size+mtime hold. Returns a HashSummary."""
        from .hashing import hash_records
        from .pathbytes import is_under

        recs = self._records(refs)
        if under is not None:
            recs = [r for r in recs if any(is_under(get_field(r, "path") or b"", u)
                                           for u in under)]
        return hash_records(self.env, self.store, recs, algo=algo, force=force,
                            progress=progress, stop=stop)

    def dupes(self, *, algo: str = "xxh3_128", hash_missing: bool = True,
              min_size: int = 1) -> list[dict[str, Any]]:
        """Duplicate sets among live files; hashes only files that share a size."""
        from .hashing import dupe_sets, hash_records, same_size_candidates

        with self.env.read() as txn:
            groups = same_size_candidates(txn, self.store, min_size)
        if hash_missing:
            with self.env.read() as txn:
                recs = [r for g in groups for u in g if (r := self.store.get(txn, u))]
            hash_records(self.env, self.store, recs, algo=algo)
        with self.env.read() as txn:
            loaded = [[r for u in g if (r := self.store.get(txn, u))] for g in groups]
        return dupe_sets(loaded, algo)

    def share_id(self, ref: str | bytes) -> str:
        """An opaque, authenticated token for a file in the library."""
        from .shareid import load_key, seal

        rec = self.resolve(ref)
        if rec.get("is_trash"):
            raise UsageError("the file is in the trash; restore it before sharing it")
        return seal(load_key(self.data_dir) or b"", rec["uuid"], get_field(rec, "path") or b"")

    def resolve_share(self, token: str) -> Record:
        """The record a share token points at (following renames), or a clear refusal."""
        from .shareid import load_key, open_token

        key = load_key(self.data_dir, create=False)
        if key is None:
            raise UsageError("no share key exists here, so no token can be valid; "
                             "ask for a new link")
        uuid, path = open_token(key, token)
        rec = self.get(uuid) if uuid else None
        if rec is None:
            rec = self.find_by_path(path)
        if rec is None:
            raise NotFoundError(f"the shared file {display(path)} is no longer in the library")
        if rec.get("is_trash"):
            raise NotFoundError("the shared file is in the trash")
        return rec

    def rotate_share_key(self) -> None:
        """New share key: every token minted before stops resolving."""
        from .shareid import rotate

        rotate(self.data_dir)

    def backup(self, dest: str) -> dict[str, Any]:
        """Consistent compacted hot copy of the library (and share key) into `dest`."""
        from .backup import backup

        return backup(self.env, self.data_dir, dest)

    @staticmethod
    def restore_backup(data_dir: str | os.PathLike[str], src: str) -> dict[str, Any]:
        """Replace the library in `data_dir` by a backup. Call with the library closed."""
        from .backup import restore_backup

        return restore_backup(os.path.abspath(os.fspath(data_dir)), src)

    def export(self, out: Any, relative_to: str | bytes | None = None) -> dict[str, int]:
        """Every record as JSON lines to the binary stream `out` (paths relative if asked)."""
        from .backup import export_records

        rel = to_bytes(relative_to) if relative_to is not None else None
        return export_records(self.env, self.store, out, rel)

    def import_records(self, lines: Any, root: str | bytes | None = None) -> Any:
        """Load an export (binary line stream), remapping paths under `root`; a summary."""
        from .backup import import_records

        return import_records(self.env, self.store, lines,
                              to_bytes(root) if root is not None else None, self.resolver)

    # -- asset pipeline: sidecars and dependencies, extractors, thumbnails, persisted ids -------
    # Thin wrappers over pipeline/, thumbs/ and persistids.py.

    def id_persister(self, mode: str | None = None) -> Any:
        """The scan's xattr id keeper, or None when ids are not persisted (persistids.py)."""
        mode = mode or self.config["scan.persist_ids"]
        if mode not in ("none", "xattr"):
            raise UsageError(f"unknown --persist-ids mode {mode!r}; use xattr or none")
        if mode == "none":
            return None
        persister = self.__dict__.get("_persister")
        if persister is None:
            from .persistids import IdPersister

            persister = self.__dict__["_persister"] = IdPersister(self.store)
        return persister

    def persist_ids(self, refs: Iterable[str | bytes] | None = None) -> dict[str, int]:
        """Write `user.kvmedia.uuid` on files whose records predate persisting."""
        from .persistids import persist_existing

        persister = self.id_persister("xattr")
        return persist_existing(self.env, self.store, self._records(refs), persister)

    def deps(self, ref: str | bytes) -> dict[str, Any]:
        """What a record depends on (sidecar files, records) and what depends on it."""
        from .pipeline.inspect import describe_deps

        rec = self.resolve(ref)
        with self.env.read() as txn:
            return describe_deps(txn, self.store, rec)

    def process_dirty(self) -> Any:
        """Re-derive every record marked dirty by a sidecar or dependency change."""
        return self.pipeline.process_dirty()

    def extractors(self) -> Any:
        """The extractor registry: probe, analyzers, sidecars, thumbnail, plugins."""
        reg = self.__dict__.get("_extractors")
        if reg is None:
            from .pipeline.plugins import builtin_registry

            reg = self.__dict__["_extractors"] = builtin_registry(self)
        return reg

    def reprocess(self, extractor: str, refs: Iterable[str | bytes] | None = None, *,
                  force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Redo one extractor's outputs: where its recorded version differs from its current
        one (all of them with `force`), among `refs` or every record."""
        from .pipeline.registry import stale

        ex = self.extractors().get(extractor)
        recs = self._records(refs)
        todo = [r["uuid"] for r in recs if (ex.applies(r) if force else stale(ex, r))]
        out: dict[str, Any] = {"type": "summary", "op": "reprocess", "extractor": ex.name,
                               "version": ex.version, "considered": len(recs),
                               "stale": len(todo)}
        if not dry_run and todo:
            out["result"] = ex.run(self, todo)
            self.maintain_index()
        return out

    def thumbnail(self, ref: str | bytes, *, build: bool = True) -> bytes | None:
        """JPEG bytes of an item's thumbnail (built and cached on first use), or None when
        it has none. Hot items come from memory without LMDB or disk reads."""
        rec = None
        if isinstance(ref, str) and _is_uuid(ref):
            rec = self.thumbs.record(ref.lower())
        if rec is None:
            rec = self.resolve(ref)
        return self.thumbs.get(rec, build=build)

    def build_thumbnails(self, refs: Iterable[str | bytes] | None = None, *,
                         force: bool = False, progress: Progress | None = None,
                         stop: threading.Event | None = None) -> Any:
        """Thumbnails for `refs` or every item; cached ones are kept unless `force`."""
        report = self.thumbs.build_many(self._records(refs), force=force, progress=progress,
                                        stop=stop)
        if refs is None:
            with self.env.read() as txn:
                live = {k[len(K.P_UUID):].decode("ascii")
                        for k, _ in self.store.iter_prefix(txn, K.P_UUID)}
            report.evicted += self.thumbs.cache.prune(live)
        return report
