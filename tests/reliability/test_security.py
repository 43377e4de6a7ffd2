"""Data-dir hardening: symlinks planted at the lock, state, key and temporary-file paths never
lead a write to their target (the victim stays byte-for-byte untouched, and is not created);
the data dir is 0700 and the files kvmedia writes are 0600. Share tokens and path traversal
through the HTTP API are in test_security_http.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rel_helpers import make_tree

from kvmedia import Library
from kvmedia.index import manifest as M

VICTIM = b"victim: must stay as it is\n"

# (path inside the data dir, how to make kvmedia write there)
PLANTS = {
    "ops.lock": "trash",
    "watcher.lock": "watcher-lock",
    "state.json.{pid}.tmp": "state",
    "share.key": "share",
    "searchidx_media/.lock": "rebuild",
    "searchidx_media/MANIFEST.tmp": "rebuild",
    "searchidx_media/seg-{gen}.kvs.tmp": "rebuild",
    "vectors/m.kvv.tmp.{pid}": "vectors",
}

_DRIVER = r"""
import os, sys
import numpy as np
from kvmedia import Library
action, data, target = sys.argv[1], sys.argv[2], sys.argv[3].encode()
os.write(1, b"%d\n" % os.getpid())
sys.stdin.readline()  # the test plants its symlinks now that it knows the pid
with Library.open(data) as lib:
    try:
        if action == "trash":
            lib.trash([target])
        elif action == "watcher-lock":
            from kvmedia.lockfile import DataDirLock
            with DataDirLock(data):
                pass
        elif action == "state":
            from kvmedia.watch.runlog import write_state
            write_state(data, {"pid": os.getpid()})
        elif action == "share":
            lib.share_id(target)
        elif action == "rebuild":
            lib.rebuild_index()
        elif action == "vectors":
            from kvmedia.vectors import VectorIndex, store_embedding
            uuid = lib.list_media()[0]["uuid"]
            lib.env.write(lambda t: store_embedding(t, uuid, "m", b"d" * 16,
                                                    np.ones(4, np.float32)))
            VectorIndex(lib.env, data, "m", 4).refresh(full=True)
    except Exception as exc:  # a refusal is fine; following the link is not
        print(type(exc).__name__, exc, file=sys.stderr)
"""


@pytest.mark.parametrize("where", sorted(PLANTS))
def test_planted_symlink_never_followed(tree: Path, data_dir: Path, tmp_path: Path,
                                        where: str, figures) -> None:
    files = make_tree(tree, 4)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        gen = lib.search_engine.maintainer._lmdb_gen() + 1
    os.makedirs(data_dir / "vectors", mode=0o700, exist_ok=True)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    os.chmod(victim, 0o644)
    absent = tmp_path / "absent-victim"
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, PLANTS[where], str(data_dir),
                             files[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    pid = int(proc.stdout.readline())
    name = where.format(pid=pid, gen=f"{gen:06d}")
    link = data_dir / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink(victim if "key" in where or "lock" in where else absent, link)
    os.symlink(victim, str(link) + ".2")  # an existing target too, for the tmp names
    if not (where.endswith(".lock") or where == "share.key"):
        link.unlink()
        os.symlink(victim, link)
    _out, err = proc.communicate(b"go\n", timeout=120)
    figures.add("security", "bad inputs tried")
    assert victim.read_bytes() == VICTIM, err
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not absent.exists()
    figures.add("security", "symlink plants resisted")


def test_data_dir_and_files_private(tree: Path, data_dir: Path) -> None:
    make_tree(tree, 5)
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.rebuild_index()
        lib.share_id(str(lib.list_media()[0]["uuid"]))
    from kvmedia.watch.runlog import setup_logs, write_state

    log = setup_logs(str(data_dir), max_bytes=200, backups=2)
    for i in range(20):  # rotations open new files too
        log.warning("file %d of a private library", i)
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    write_state(str(data_dir), {"pid": 1})
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    loose = []
    for dirpath, dirs, names in os.walk(data_dir):
        for d in dirs:
            if stat.S_IMODE(os.stat(os.path.join(dirpath, d)).st_mode) & 0o077:
                loose.append(os.path.join(dirpath, d))
        for n in names:
            if stat.S_IMODE(os.stat(os.path.join(dirpath, n)).st_mode) & 0o077:
                loose.append(os.path.join(dirpath, n))
    assert not loose, loose
    assert os.path.exists(data_dir / M.DIR_NAME / M.MANIFEST)
