"""`kvmedia fsck`: one verdict on everything kvmedia keeps in its data dir, so a test (or an
admin after a power cut) can tell "consistent" from "damaged" without reading five formats.

Checks, each reusing the check of the module that owns the data:

    records   doctor.check_and_repair: media:uuid <-> path <-> fid <-> type keys, stats
    index     the manifest (manifest.read_manifest), every segment with all section checksums
              (segment.Segment, verify=True) and deleted-doc bitmaps, the manifest generation
              against `sidx:gen`, and that segments + delta make visible exactly the records,
              each once, every visible row (segment or delta) agreeing with its record
    vectors   `sem:vid:` <-> `sem:vuuid:` agree; every `vectors/*.kvv` passes its checksum;
              vector ids of deleted records are counted (search filters them; a refresh or
              --repair drops them) but are not damage
    state     `state.json` (the watcher's) parses as a JSON object
    intents   no trash/restore/delete intent left by a dead process (trash.TrashOps.recover)
    modes     the data dir and everything in it owner-only (dirs 0700, files 0600)

Without `repair` the library is opened read-only, so nothing (not even the recovery a
writable open does) changes before the check. With `repair`: doctor repairs keys, the index is
rebuilt from the records, damaged vector files are deleted (they are caches rebuilt from
LMDB), stale vector ids are dropped, an unparseable state.json is removed, intents settled,
loose modes tightened;
then everything is checked again.
"""

from __future__ import annotations

import glob
import os
import stat
from typing import TYPE_CHECKING, Any

import orjson

from .errors import DamagedError, StorageError

if TYPE_CHECKING:
    from .library import Library

MAX_PROBLEMS = 100


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.info: dict[str, Any] = {}

    def note(self, area: str, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{area}: {message}")


def check_records(lib: Library, rep: _Report, repair: bool) -> None:
    report = lib.doctor(repair=repair)
    rep.info["records"] = report["records"]
    if not report["clean"]:
        for p in report["problems"] or ["record keys disagree"]:
            rep.note("records", p)


def check_index(lib: Library, rep: _Report) -> bool:
    """True when the index is sound and holds exactly the records."""
    from .index import manifest as M
    from .index.delta import iter_delta, read_gen
    from .index.docs import doc_from_record
    from .index.merge import DAMAGED_MARK
    from .index.segment import Segment
    from .store.recordstore import RecordStore

    index_dir = os.path.join(lib.data_dir, M.DIR_NAME)
    before = len(rep.problems)
    bad = 0

    def problem(message: str) -> None:
        nonlocal bad
        bad += 1
        rep.note("index", message)

    with M.merge_lock(index_dir, wait=True):  # no merge switches files under the check
        if os.path.exists(os.path.join(index_dir, DAMAGED_MARK)):
            problem("marked damaged by a search that fell back")
        try:
            man = M.read_manifest(index_dir)
        except DamagedError as exc:
            problem(exc.message)
            man = None
        with lib.env.read() as txn:
            gen = read_gen(txn)
            delta = dict(iter_delta(txn))
            records = {rec["uuid"]: rec for rec in RecordStore.iter_records(txn)}
        if gen is None:
            if records:
                problem("no index generation although records exist (index never built)")
            visible: dict[str, int] = {}
        else:
            visible = {}
            if man is None and gen > 0 and bad == 0:
                problem("manifest missing")
            if man is not None and man.gen < gen:
                problem(f"manifest generation {man.gen} older than the library's {gen}")
            for entry in man.segments if man is not None else []:
                try:
                    seg = Segment(os.path.join(index_dir, entry.file), entry.file, verify=True)
                    if seg.n != entry.docs:
                        raise DamagedError(f"segment {entry.file} holds {seg.n} docs, "
                                           f"manifest says {entry.docs}")
                    dead = (M.read_dead(os.path.join(index_dir, entry.dead), entry.docs,
                                        entry.dead_xxh3) if entry.dead else None)
                except FileNotFoundError as exc:
                    problem(f"{exc.filename} missing")
                    continue
                except (DamagedError, ValueError, IndexError) as exc:
                    problem(getattr(exc, "message", str(exc)))
                    continue
                stale = []
                for doc in range(seg.n):
                    if dead is not None and dead[doc]:
                        continue
                    uuid = seg.uuid(doc)
                    if uuid in delta:
                        continue
                    visible[uuid] = visible.get(uuid, 0) + 1
                    rec = records.get(uuid)
                    if rec is not None and _seg_fields(seg, doc) != _row_fields(
                            doc_from_record(rec)):
                        stale.append(uuid)
                if stale:
                    problem(f"{len(stale)} rows of {entry.file} differ from their records "
                            f"(e.g. {stale[0]})")
                seg.file.close()
            for uuid, value in delta.items():
                if value:
                    visible[uuid] = visible.get(uuid, 0) + 1
                    rec = records.get(uuid)
                    if rec is not None and doc_from_record(rec).pack() != value:
                        problem(f"delta row of {uuid} differs from its record")
        if bad == 0 and gen is not None:
            dupes = [u for u, n in visible.items() if n > 1]
            extra = [u for u in visible if u not in records]
            missing = [u for u in records if u not in visible]
            for label, uuids in (("indexed twice", dupes), ("indexed but not a record", extra),
                                 ("record missing from the index", missing)):
                if uuids:
                    problem(f"{len(uuids)} {label} (e.g. {uuids[0]})")
    rep.info["index_docs"] = sum(visible.values()) if gen is not None else 0
    return len(rep.problems) == before and bad == 0


def _seg_fields(seg: Any, doc: int) -> tuple[Any, ...]:
    return (int(seg.mtime[doc]), int(seg.size[doc]), int(seg.meta[doc]), seg.nname(doc),
            seg.raw_dir(int(seg.doc_dir[doc])))


def _row_fields(row: Any) -> tuple[Any, ...]:
    return (row.mtime_ns, row.size, row.type_code | (int(row.trash) << 3), row.nname, row.dir)


def check_vectors(lib: Library, rep: _Report, repair: bool) -> None:
    from .store import keys as K
    from .vectors import keys as V
    from .vectors.snapshot import read_snapshot

    stale: list[str] = []
    with lib.env.read() as txn:
        cur = txn.cursor()
        if cur.set_range(V.P_VID):
            for key, raw in cur:
                if not key.startswith(V.P_VID):
                    break
                uuid = key[len(V.P_VID):].decode("ascii", "replace")
                try:
                    val = V.VidValue.unpack(raw)
                except (ValueError, UnicodeDecodeError, IndexError):
                    rep.note("vectors", f"unreadable vector id of {uuid}")
                    continue
                if val.uuid != uuid or txn.get(V.vuuid_key(val.vid)) != raw:
                    rep.note("vectors", f"vector id {val.vid} of {uuid} disagrees with "
                                        "its reverse key")
                if txn.get(K.uuid_key(uuid)) is None:
                    stale.append(uuid)
        vnext = int(txn.get(V.K_VNEXT) or b"1")
        cur = txn.cursor()
        if cur.set_range(V.P_VUUID):
            for key, _raw in cur:
                if not key.startswith(V.P_VUUID):
                    break
                if V.vid_from_vuuid_key(key) >= vnext:
                    rep.note("vectors", f"vector id {V.vid_from_vuuid_key(key)} not below "
                                        f"the next id {vnext}")
    rep.info["stale_vector_ids"] = len(stale)
    if repair and stale:
        from .vectors import forget_item

        lib.env.write(lambda t: [forget_item(t, u) for u in stale])
    for path in sorted(glob.glob(os.path.join(glob.escape(lib.data_dir), "vectors", "*.kvv"))):
        try:
            read_snapshot(path)
        except DamagedError as exc:
            rep.note("vectors", exc.message)
            if repair:
                os.unlink(path)
        except OSError as exc:
            rep.note("vectors", f"{path} unreadable: {exc.strerror}")


def check_state(lib: Library, rep: _Report, repair: bool) -> None:
    from .watch.runlog import state_path

    path = state_path(lib.data_dir)
    try:
        with open(path, "rb") as fh:
            data = orjson.loads(fh.read())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        rep.note("state", f"state.json unreadable ({exc}); the watcher rewrites it")
        if repair:
            os.unlink(path)


def check_modes(lib: Library, rep: _Report, repair: bool) -> None:
    """The data dir holds share keys and the only record of the trash: owner-only modes
    (dirs 0700, files 0600). Symlinks are never followed or changed."""
    loose = []
    for dirpath, dirs, names in os.walk(lib.data_dir):
        for name in [*dirs, *names]:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                loose.append((path, 0o700 if stat.S_ISDIR(st.st_mode) else 0o600))
    if os.stat(lib.data_dir).st_mode & 0o077:
        loose.append((lib.data_dir, 0o700))
    for path, mode in loose:
        rep.note("modes", f"{path} is readable by others; should be {mode:o}")
        if repair:
            os.chmod(path, mode, follow_symlinks=False)


def check_intents(lib: Library, rep: _Report, repair: bool) -> None:
    ops = lib.trash_ops()
    if not ops.pending():
        return
    if repair:
        ops.recover()
    with ops._locked(blocking=False) as got:
        if not got:
            rep.info["intents_in_progress"] = len(ops.pending())
            return
        for intent in ops.pending():
            rep.note("intents", f"unfinished {intent['op']} of {intent['uuid']} "
                                f"(process {intent.get('pid')} is gone)")


def fsck(lib: Library, *, repair: bool = False) -> dict[str, Any]:
    """Check everything; with `repair` fix what can be fixed and check again."""
    rep = _Report()
    check_intents(lib, rep, repair)  # first: settling an intent changes records
    check_records(lib, rep, repair)
    index_ok = check_index(lib, rep)
    check_vectors(lib, rep, repair)
    check_state(lib, rep, repair)
    check_modes(lib, rep, repair)
    found = list(rep.problems)
    if repair and found:
        if not index_ok:
            try:
                lib.search_engine.maintainer.merge(full=True)
            except (OSError, StorageError) as exc:
                rep.note("index", f"rebuild failed: {exc}")
        again = fsck(lib, repair=False)
        return {**again, "repaired": again["clean"], "clean": False,
                "found": found, "verdict": "repaired" if again["clean"] else "damaged"}
    clean = not found
    return {"type": "fsck", "clean": clean, "repaired": False, "found": found,
            "problems": found, "verdict": "clean" if clean else "damaged", **rep.info}


def fsck_data_dir(data_dir: str, config: Any = None, *, repair: bool = False) -> dict[str, Any]:
    """Check the library in `data_dir` opened read-only (so the recovery a writable open does
    cannot hide damage); with `repair` and damage found, reopen writable and repair."""
    from .library import Library

    first: dict[str, Any] | None = None
    if os.path.exists(os.path.join(data_dir, "media.lmdb")):
        with Library.open(data_dir, config=config, readonly=True) as lib:
            first = fsck(lib)
        if not repair or (first["clean"] and not first.get("stale_vector_ids")):
            return first
    with Library.open(data_dir, config=config) as lib:
        report = fsck(lib, repair=repair)
    if first is None or first["clean"]:
        return report
    final = report if report["verdict"] == "damaged" else {**report, "verdict": "repaired",
                                                           "repaired": True}
    return {**final, "clean": False, "found": first["found"]}
