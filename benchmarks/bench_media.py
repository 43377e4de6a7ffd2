"""Media operations, each against a peer measured in the same run:

    python benchmarks/bench_media.py --files 50000 --hash-mib 256 --trash 300

  buckets     `lib.buckets()` (path keys, no record decoded)  vs  decoding every record and
              grouping (PlainNAS's default route)
  hash        xxh3_128  vs  sha256 over one file (page cache warm)
  trash       trash + restore per file (intent, rename, record, index listeners, fsyncs)
              vs  two bare os.rename calls
  share-id    seal + open of a token  vs  one record lookup by uuid
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kvmedia import Library  # noqa: E402
from kvmedia.hashing import hash_file  # noqa: E402
from kvmedia.pathbytes import get_field  # noqa: E402


def timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def line(name: str, ours: float, peer: float, unit: str, n: int) -> None:
    print(f"{name:<9} ours {n / ours:>12,.0f} {unit}/s   peer {n / peer:>12,.0f} {unit}/s   "
          f"ratio ours/peer {peer / ours:.3g}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--hash-mib", type=int, default=256)
    ap.add_argument("--trash", type=int, default=300)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kvbench-media-")
    try:
        vol = os.path.join(work, "vol")
        for i in range(args.files):
            d = os.path.join(vol, f"album{i // 200:04d}")
            if i % 200 == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"IMG_{i:06d}.jpg"), "wb"):
                pass
        lib = Library.open(os.path.join(work, "data"))
        t0 = time.perf_counter()
        lib.scan([vol])
        print(f"setup: {args.files:,} files scanned in {time.perf_counter() - t0:.1f}s")

        def peer_buckets() -> None:
            groups: dict[bytes, int] = {}
            with lib.env.read() as txn:
                for rec in lib.store.iter_records(txn):
                    if not rec.get("is_trash"):
                        d = os.path.dirname(get_field(rec, "path") or b"")
                        groups[d] = groups.get(d, 0) + 1
            sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))

        line("buckets", timed(lib.buckets), timed(peer_buckets), "files", args.files)

        big = os.path.join(work, "big.bin")
        with open(big, "wb") as fh:
            for _ in range(args.hash_mib):
                fh.write(os.urandom(1 << 20))
        hash_file(os.fsencode(big))  # warm the page cache
        mib = args.hash_mib
        line("hash", timed(lambda: hash_file(os.fsencode(big), "xxh3_128")),
             timed(lambda: hash_file(os.fsencode(big), "sha256")), "MiB", mib)

        uuids = [r["uuid"] for r in lib.list_media(limit=args.trash)]

        def ours_trash() -> None:
            assert all(r.ok for r in lib.trash(uuids))
            assert all(r.ok for r in lib.restore(uuids))

        bare = [os.path.join(vol, f"album{i // 200:04d}", f"IMG_{i:06d}.jpg")
            for i in range(args.trash)]

        def peer_rename() -> None:
            for p in bare:
                os.rename(p, p + ".t")
            for p in bare:
                os.rename(p + ".t", p)

        line("trash", timed(ours_trash, 1), timed(peer_rename, 1), "items", args.trash)

        rec = lib.get(uuids[0])
        n = 2000

        def ours_share() -> None:
            for _ in range(n):
                lib.resolve_share(lib.share_id(rec["uuid"]))

        def peer_get() -> None:
            for _ in range(n):
                lib.get(rec["uuid"])

        line("share-id", timed(ours_share), timed(peer_get), "tokens", n)
        lib.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
