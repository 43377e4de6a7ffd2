"""The watcher, against a peer measured in the same run:

    python benchmarks/bench_watch.py --files 200 --burst 10000 --debounce 0.2

  latency   a `kvmedia watch` subprocess (inotify, --debounce 0.2); files are created one by
            one (a steady trickle, one every --gap seconds) and this process searches for
            each by name until it appears: create -> first search hit, p50/p95/max.
            Peer: one incremental `Library.scan` of the same tree (after the burst below),
            the least a watcher-less setup pays for every refresh.
  burst     10,000 new files written as fast as Python can (a camera import), from the first
            write until every one is searchable, and how many write transactions the
            watcher used. Peer: a full `Library.scan` of the same files into a fresh library.

Targets (issue 4): latency p95 < debounce + 0.5 s; burst absorbed in < 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kvmedia import Library  # noqa: E402


def start_watcher(data_dir: str, root: str, debounce: float) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KVMEDIA_DATA_DIR=data_dir, KVMEDIA_CONFIG=data_dir + ".toml")
    proc = subprocess.Popen([sys.executable, "-m", "kvmedia", "watch", root, "--debounce",
                             str(debounce)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = os.path.join(data_dir, "logs", "watcher.out.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(log) and "scan-on-start" in open(log).read():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the watcher did not start")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def found(lib: Library, name: str) -> bool:
    """An exact hit for `name` (the query also finds near names by prefix and typo)."""
    hits = lib.search(name.removesuffix(".jpg"), limit=20).hits
    return any(h.get("name") == name for h in hits)


def latency(lib: Library, root: str, n: int, gap_s: float) -> list[float]:
    """Create n files (one every gap_s) in one thread; search for them in this one."""
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def creator() -> None:
        os.makedirs(os.path.join(root, "trickle"), exist_ok=True)
        for i in range(n):
            name = f"lat{i:04d}x.jpg"
            with open(os.path.join(root, "trickle", name), "wb") as fh:
                fh.write(b"l" * 1000)
            with lock:
                created[name] = time.monotonic()
            time.sleep(gap_s)

    thread = threading.Thread(target=creator)
    thread.start()
    deadline = time.monotonic() + n * gap_s + 60
    while len(seen) < n and time.monotonic() < deadline:
        with lock:
            pending = [k for k in created if k not in seen]
        for name in pending:
            if found(lib, name):
                seen[name] = time.monotonic()
        time.sleep(0.005)
    thread.join()
    if len(seen) < n:
        raise SystemExit(f"only {len(seen)} of {n} files became searchable")
    return [seen[k] - created[k] for k in created]


def burst(lib: Library, root: str, n: int, log: str) -> tuple[float, float, int]:
    batches_before = open(log).read().count("] batch:")
    base = lib.count()
    t0 = time.monotonic()
    for i in range(n):
        d = os.path.join(root, "import", f"dcim{i % 20:02d}")
        if i < 20:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"IMG_{i:05d}.jpg"), "wb") as fh:
            fh.write(b"%d" % i)
    written = time.monotonic() - t0
    while lib.count() < base + n:
        if time.monotonic() - t0 > 300:
            raise SystemExit("the burst was not absorbed in 300 s")
        time.sleep(0.01)
    absorbed = time.monotonic() - t0
    if not found(lib, f"IMG_{n - 1:05d}.jpg"):
        raise SystemExit("the last file of the burst is not searchable")
    batches = open(log).read().count("] batch:") - batches_before
    return written, absorbed, batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--debounce", type=float, default=0.2)
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between trickled files")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kvm-bench-watch-")
    try:
        root = os.path.join(work, "vol")
        data = os.path.join(work, "data")
        os.makedirs(root)
        Library.open(data).close()
        proc = start_watcher(data, root, args.debounce)
        lib = Library.open(data, readonly=True)
        try:
            lat = latency(lib, root, args.files, args.gap)
            written, absorbed, batches = burst(lib, root, args.burst,
                                               os.path.join(data, "logs", "watcher.out.log"))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            lib.close()
        # Peers, same run, same tree.
        peer = Library.open(os.path.join(work, "peer"))
        t0 = time.monotonic()
        peer.scan([root])
        full_scan = time.monotonic() - t0
        t0 = time.monotonic()
        peer.scan([root])
        rescan = time.monotonic() - t0
        peer.close()
        total = args.files + args.burst
        print(f"latency  {args.files} files, one every {args.gap}s, debounce {args.debounce}s: "
              f"p50 {pct(lat, 50) * 1000:.0f} ms  p95 {pct(lat, 95) * 1000:.0f} ms  "
              f"max {max(lat) * 1000:.0f} ms  (target p95 < {(args.debounce + 0.5) * 1000:.0f}"
              f" ms)")
        print(f"  peer: one incremental rescan of the {total:,}-file tree {rescan * 1000:.0f} ms"
              f"   ratio p95/rescan {pct(lat, 95) / rescan:.2f}x")
        print(f"burst    {args.burst:,} files written in {written:.2f}s, all searchable after "
              f"{absorbed:.2f}s ({absorbed - written:.2f}s after the last write) in {batches} "
              "transactions (target < 10 s)")
        print(f"  peer: full scan of the same {total:,} files {full_scan:.2f}s   "
              f"ratio burst/full-scan {absorbed / full_scan:.2f}x")
        print(f"watcher exit code after SIGTERM: {code}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
