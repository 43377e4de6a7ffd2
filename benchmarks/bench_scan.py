"""Scan throughput: kvmedia scan vs a bare os.scandir + lstat walk (the floor), same tree, same run.

    python benchmarks/bench_scan.py --files 200000 [--work DIR] [--keep]

Builds a tree of N real (sparse, empty-content) files with realistic NAS names in nested
folders, then times, each in its own process so peak RSS is per phase:
  walk        bare os.scandir + stat walk, no skip rules (the floor)
  first       `kvmedia scan` into an empty library
  rescan      the same scan again, nothing changed
  rescan-1%   after 1% of files were modified (new size/mtime)
and prints files/s, seconds, peak RSS and each phase's ratio to the walk. Warm page cache:
an untimed walk runs first.

A last phase, `write floor`, measures the least any scan could spend writing what the first
scan stored: every `media:` key and value of the library, put into a new LMDB in key order
with MDB_APPEND in one transaction (LMDB's fastest load: no page is split or written twice),
reading untimed, committed with fsync. `compute floor` times, over the stored records (read
untimed), the per-file work no scan of a new file can skip, with kvmedia's own helpers: its
uuid, its JSON record, its path/fid/type keys and its index-delta row. A first scan costs at
least walk + write floor + compute floor.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time

CAMERAS = ["IMG_{:04d}.JPG", "DSC{:05d}.ARW", "PXL_2023{:04d}_101010.jpg", "GOPR{:04d}.MP4"]
MUSIC = ["{:02d} - Track {}.flac", "{:02d} Bài hát {}.mp3", "{:02d} 夜に駆ける {}.m4a"]
SHOWS = ["Show.Name.S{:02d}E{:02d}.1080p.mkv", "Documentary {} part {}.mp4"]
WORDS = ["Holiday", "Family", "Đà Lạt", "Beach", "Tết", "Wedding", "Birthday", "東京", "Work"]


def build_tree(root: str, n_files: int, seed: int = 7) -> int:
    """Create `n_files` files in year/month/event folders, music albums and TV seasons."""
    rng = random.Random(seed)
    made = 0
    per_dir = 200
    d = 0
    while made < n_files:
        kind = d % 3
        if kind == 0:
            folder = os.path.join(root, "Photos", str(2005 + d % 20), f"{d % 12 + 1:02d}",
                                  f"{rng.choice(WORDS)} {d}")
        elif kind == 1:
            folder = os.path.join(root, "Music", f"Artist {d % 500}", f"Album {d}")
        else:
            folder = os.path.join(root, "Video", f"Show {d % 300}", f"Season {d % 9 + 1}")
        os.makedirs(folder, exist_ok=True)
        count = min(per_dir, n_files - made)
        for i in range(count):
            if kind == 0:
                name = rng.choice(CAMERAS).format(made + i)[:80]
            elif kind == 1:
                name = rng.choice(MUSIC).format(i + 1, made + i)
            else:
                name = SHOWS[i % 2].format(d % 9 + 1, i + 1) if i % 2 == 0 else \
                    SHOWS[1].format(made + i, i)
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, rng.randrange(1 << 12, 1 << 32))  # sparse: no data blocks
            os.close(fd)
        made += count
        d += 1
    return made


WALK_CODE = r"""
import os, sys, stat
def walk(top):
    n = 0
    stack = [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    st = e.stat(follow_symlinks=False)
                    n += stat.S_ISREG(st.st_mode)
    return n
print(walk(sys.argv[1]))
"""


FLOOR_CODE = r"""
import itertools, sys, time, lmdb
src = lmdb.open(sys.argv[1], readonly=True, lock=False)
dst = lmdb.open(sys.argv[2], map_size=64 << 30, sync=True, metasync=True)
spent = 0.0
keys = size = 0
wtxn = dst.begin(write=True)
out = wtxn.cursor()
with src.begin() as rtxn:
    cur = rtxn.cursor()
    cur.set_range(b"media:")
    items = ((bytes(k), bytes(v)) for k, v in cur if k.startswith(b"media:"))
    while chunk := list(itertools.islice(items, 100_000)):  # read untimed
        t0 = time.perf_counter()
        out.putmulti(chunk, append=True)
        spent += time.perf_counter() - t0
        keys += len(chunk)
        size += sum(len(k) + len(v) for k, v in chunk)
t0 = time.perf_counter()
wtxn.commit()  # page writes + fsync
spent += time.perf_counter() - t0
print(spent, keys, size)
"""


COMPUTE_CODE = r"""
import sys, time, lmdb, orjson
from kvmedia.identity import uuid_from_triplet
from kvmedia.index.docs import doc_from_record
from kvmedia.store import keys as K
from kvmedia.store.recordstore import record_fid_key, record_path_value, record_type_keys
from kvmedia.pathbytes import get_field
src = lmdb.open(sys.argv[1], readonly=True, lock=False)
spent = 0.0
n = 0


def work(chunk):
    global spent, n
    t0 = time.perf_counter()
    for rec in chunk:
        uuid_from_triplet(rec["fs_uuid"], rec["ino"], rec["ctime"])
        orjson.dumps(rec)
        K.path_key(get_field(rec, "path"))
        record_path_value(rec)
        record_fid_key(rec)
        record_type_keys(rec)
        doc_from_record(rec).pack()
    spent += time.perf_counter() - t0
    n += len(chunk)


with src.begin() as txn:
    cur = txn.cursor()
    cur.set_range(K.P_UUID)
    chunk = []
    for key, raw in cur:
        if not key.startswith(K.P_UUID):
            break
        chunk.append(orjson.loads(raw))  # read untimed
        if len(chunk) == 50_000:
            work(chunk)
            chunk = []
    work(chunk)
print(spent, n)
"""


def run_phase(argv: list[str], env: dict[str, str]) -> tuple[float, int, str, float]:
    """(seconds, peak RSS bytes, stdout, CPU seconds) of one child process. CPU time (user +
    system) is reported too: on a shared machine it moves far less than wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"phase {argv} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, out, usage.ru_utime + usage.ru_stime


def modify_fraction(root: str, fraction: float, seed: int = 11) -> int:
    rng = random.Random(seed)
    changed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if rng.random() < fraction:
                path = os.path.join(dirpath, name)
                with open(path, "r+b") as fh:
                    fh.truncate(rng.randrange(1 << 12, 1 << 32))
                changed += 1
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "_work"))
    ap.add_argument("--keep", action="store_true", help="keep the tree and library afterwards")
    args = ap.parse_args()

    work = os.path.abspath(os.path.join(args.work, f"scan_{args.files}"))
    tree = os.path.join(work, "tree")
    data = os.path.join(work, "data")
    if not os.path.isdir(tree):
        t0 = time.perf_counter()
        n = build_tree(tree, args.files)
        print(f"built tree: {n:,} files in {time.perf_counter() - t0:.1f}s", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    env = dict(os.environ, KVMEDIA_DATA_DIR=data, KVMEDIA_CONFIG=os.path.join(work, "none.toml"))
    kv = [sys.executable, "-m", "kvmedia"]

    rows = []
    run_phase([sys.executable, "-c", WALK_CODE, tree], env)  # warm the inode cache first
    secs, rss, out, cpu = run_phase([sys.executable, "-c", WALK_CODE, tree], env)
    walked = int(out.strip())
    rows.append(("walk (os.scandir+stat)", secs, rss, cpu))
    for label in ("kvmedia scan, first", "kvmedia rescan, unchanged"):
        secs, rss, _, cpu = run_phase([*kv, "scan", "--progress", "none", tree], env)
        rows.append((label, secs, rss, cpu))
    changed = modify_fraction(tree, 0.01)
    secs, rss, _, cpu = run_phase([*kv, "scan", "--progress", "none", tree], env)
    rows.append((f"kvmedia rescan, {changed:,} changed", secs, rss, cpu))

    floor_db = os.path.join(work, "floor.lmdb")
    shutil.rmtree(floor_db, ignore_errors=True)
    _, rss, out, cpu = run_phase(
        [sys.executable, "-c", FLOOR_CODE, os.path.join(data, "media.lmdb"), floor_db], env)
    shutil.rmtree(floor_db, ignore_errors=True)
    spent, n_keys, n_bytes = out.split()
    rows.append((f"write floor ({int(n_keys):,} keys, {int(n_bytes) >> 20} MB)", float(spent),
                 rss, cpu))

    _, rss, out, cpu = run_phase(
        [sys.executable, "-c", COMPUTE_CODE, os.path.join(data, "media.lmdb")], env)
    spent, n_records = out.split()
    rows.append((f"compute floor ({int(n_records):,} records)", float(spent), rss, cpu))

    db = os.path.join(data, "media.lmdb", "data.mdb")
    db_bytes = os.stat(db).st_size if os.path.exists(db) else 0
    floor, cpu_floor = rows[0][1], rows[0][3]
    print(f"\nfiles: {walked:,}   python {sys.version.split()[0]}   cores: {os.cpu_count()}   "
          f"load: {os.getloadavg()[0]:.1f}")
    print(f"{'phase':<40} {'seconds':>8} {'files/s':>10} {'peak RSS':>9} {'x walk':>7} "
          f"{'CPU s':>7} {'x walk CPU':>10}")
    for label, secs, rss, cpu in rows:
        print(f"{label:<40} {secs:>8.2f} {walked / secs:>10,.0f} {rss / 2**20:>7.0f}MB "
              f"{secs / floor:>7.2f} {cpu:>7.2f} {cpu / max(cpu_floor, 1e-3):>10.2f}")
    print(f"LMDB file: {db_bytes / 2**20:.0f} MB ({db_bytes / max(walked, 1):.0f} B/file)")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
