"""Search-as-you-type over HTTP: `kvmedia serve` vs the CLI vs the library in-process.

    python benchmarks/bench_serve.py [--n 1000000] [--rounds 3] [--clients 1,8]
                                     [--pace-ms 100] [--work DIR]

Builds (or reuses, under --work) a library of N generated records (tools/gen_corpus.py), then
replays typing — every prefix of a query, one request per keystroke, 50 hits each with the
total count — and prints, for each phase, requests/s and p50/p95/p99 in ms.

Each client types its own queries (artists, shows, places, camera and episode names from the
corpus vocabulary, some lower-cased), different for every client and round: what clients
share is only what real users share, first letters and common prefixes such as `img_`. The
search caches (kvmedia/index/segment.py) are on, as in a running server, except in the
phases marked "no cache" (KVMEDIA_SEARCH_CACHE_MB=0), which show the engine alone.

  in-process       Library.search in this process (the floor: no HTTP, no JSON)
  serve xC         `kvmedia serve` in a subprocess, C clients at once, each a process of its
                   own (as browsers are) on one keep-alive connection, each sending its next
                   keystroke as soon as the last answer came: the server's saturation
  serve xC typing  the same, each client typing at --pace-ms a keystroke on average (uniform
                   0.5x-1.5x, 100 ms = 120 words a minute, a fast typist), starting at a
                   random moment: what a person at a search box waits for ("2x": twice
                   as fast as that, beyond any typist)
  ... 1 proc       the server with --search-workers 0: searches in the server process (with
                   the workers' cache sizes, kvmedia/serve/searchers.py WORKER_DEFAULTS)
  serve x8 same    the earlier workload: all 8 clients type the same 5 queries (rotated)
  cli              one `kvmedia search --json` process per keystroke (what a CGI-style web
                   UI pays), one client

Ratios: serve p50 / in-process p50 (the HTTP overhead), cli p50 / serve p50 (what a resident
server saves). The clients run on the same cores as the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import select
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import gen_corpus  # noqa: E402

QUERIES = ["beyonce live", "sherlock", "bãi biển", "midnight city", "img_2023"]
LIMIT = 50
PER_ROUND = 5
WARM = ["zebra crossing", "qx", "2019 holiday", "wedding"]


def keystrokes(shift: int = 0) -> list[str]:
    """Every prefix of every query of QUERIES; `shift` rotates the queries (the earlier
    workload: the same keystrokes for every client, in different orders)."""
    return typed(QUERIES[shift % len(QUERIES):] + QUERIES[:shift % len(QUERIES)])


def typed(queries: list[str]) -> list[str]:
    out = []
    for q in queries:
        out += [q[:i] for i in range(1, len(q) + 1) if not q[:i].endswith(" ")]
    return out


def query_pool() -> list[str]:
    """Queries a NAS user types, from the corpus vocabulary; shuffled, about half lower-cased."""
    g = gen_corpus
    pool = list(dict.fromkeys(g.ARTISTS + g.SHOWS + g.FILMS + g.PLACES + g.DOC_WORDS + g.WORDS))
    for y in range(2012, 2025):
        pool += [f"IMG_{y}", f"PXL_{y}0", f"VID_{y}", f"Screenshot {y}-0"]
    pool += [f"S0{season}E{ep:02d}" for season in range(1, 8) for ep in (1, 5, 12)]
    pool += [f"DSC0{d}" for d in range(10)]
    rng = random.Random(7)
    rng.shuffle(pool)
    return [q.lower() if rng.random() < 0.5 else q for q in pool]


POOL = query_pool()


def plan(client: int, rounds: int) -> list[list[str]]:
    """The keystrokes of `client`, one list per round: PER_ROUND queries of the pool that no
    other (client, round) of this run types (the pool wraps past 39 clients x 1 round)."""
    out = []
    for r in range(rounds):
        first = ((client * rounds + r) * PER_ROUND) % len(POOL)
        out.append(typed([POOL[(first + i) % len(POOL)] for i in range(PER_ROUND)]))
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(name: str, lat_ms: list[float], wall_s: float) -> dict[str, Any]:
    return {"phase": name, "requests": len(lat_ms), "rps": len(lat_ms) / wall_s,
            "p50": pct(lat_ms, 50), "p95": pct(lat_ms, 95), "p99": pct(lat_ms, 99)}


def build(data: str, n: int) -> None:
    from kvmedia import Library

    marker = os.path.join(data, "bench-serve-n")
    if os.path.exists(marker) and open(marker).read() == str(n):
        return
    t = time.perf_counter()
    with Library.open(data) as lib:
        gen_corpus.write_records(lib, n, seed=1)
        lib.rebuild_index()
    with open(marker, "w") as fh:
        fh.write(str(n))
    print(f"built {n:,} records in {time.perf_counter() - t:.0f}s", file=sys.stderr)


def in_process(data: str, client: int, rounds: int, name: str) -> dict[str, Any]:
    """Type `client`'s plan once in a library opened for this phase (fresh caches)."""
    from kvmedia import Library

    with Library.open(data) as lib:
        for k in WARM:
            lib.search(k, limit=LIMIT)
        lat = []
        per_key: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for keys in plan(client, rounds):
            for k in keys:
                t = time.perf_counter()
                lib.search(k, limit=LIMIT)
                lat.append((time.perf_counter() - t) * 1000)
                per_key.setdefault(k, []).append(lat[-1])
        out = summary(name, lat, time.perf_counter() - t0)
        out["slowest"] = sorted(((pct(v, 50), k) for k, v in per_key.items()), reverse=True)[:6]
        return out


class Serve:
    def __init__(self, data: str, cache: bool = True, workers: int | None = None) -> None:
        env = dict(os.environ, KVMEDIA_DATA_DIR=data)
        if not cache:
            env["KVMEDIA_SEARCH_CACHE_MB"] = "0"
        extra = [] if workers is None else ["--search-workers", str(workers)]
        if workers == 0 and cache:  # the workers' cache sizes, so only the processes differ
            env.setdefault("KVMEDIA_SEARCH_CACHE_MB", "64")
            env.setdefault("KVMEDIA_SEARCH_MAPPED_MB", "256")
        self.proc = subprocess.Popen([sys.executable, "-m", "kvmedia", "serve", "--port", "0",
                                      "--json", *extra], env=env, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        if not ready:
            self.proc.kill()
            raise SystemExit("kvmedia serve did not start")
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _client(port: int, rounds: list[list[str]], pace_s: float, seed: int,
            start: Any, out: Any) -> None:
    """One typist in its own process: its keystrokes on one keep-alive connection, each
    sent `pace_s` (0.5x-1.5x) after the one before, or at once when the answer came later."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat = []
    start.wait()
    due = time.perf_counter() + rng.random() * pace_s
    for keys in rounds:
        for k in keys:
            if pace_s:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                due += pace_s * rng.uniform(0.5, 1.5)
            t = time.perf_counter()
            conn.request("GET", "/api/search?" + urlencode({"q": k, "limit": LIMIT}))
            resp = conn.getresponse()
            body = resp.read()
            lat.append((time.perf_counter() - t) * 1000)
            assert resp.status == 200, body[:200]
    conn.close()
    out.put(lat)


def http_clients(port: int, plans: list[list[list[str]]], name: str,
                 pace_s: float = 0.0) -> dict[str, Any]:
    """One client process per plan, all at once."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(plans) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, p, pace_s, i, start, out))
             for i, p in enumerate(plans)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    lat: list[float] = []
    for _ in procs:
        lat += out.get(timeout=600)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a client of {name} failed (exit {p.exitcode})")
    return summary(name, lat, wall)


def cli(data: str, keys: list[str]) -> dict[str, Any]:
    env = dict(os.environ, KVMEDIA_DATA_DIR=data)
    lat = []
    t0 = time.perf_counter()
    for k in keys:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kvmedia", "search", k, "--limit", str(LIMIT),
                        "--json"], env=env, capture_output=True, check=False)
        lat.append((time.perf_counter() - t) * 1000)
    return summary("cli", lat, time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--pace-ms", type=float, default=100.0,
                    help="mean time between a typist's keystrokes in the typing phases")
    ap.add_argument("--work", default=os.path.join(HERE, "_work"))
    args = ap.parse_args()
    data = os.path.join(args.work, f"serve-{args.n}")
    build(data, args.n)
    counts = [int(x) for x in args.clients.split(",")]
    most = max(counts)
    solo = most  # the single-client phases type a plan no concurrent client types
    rows = [in_process(data, solo, args.rounds, "in-process")]
    os.environ["KVMEDIA_SEARCH_CACHE_MB"] = "0"
    try:
        rows.append(in_process(data, solo, args.rounds, "in-process no cache"))
    finally:
        del os.environ["KVMEDIA_SEARCH_CACHE_MB"]
    warm = [[WARM]]
    pace = args.pace_ms / 1000
    for cache, workers in ((True, None), (True, 0), (False, None)):
        server = Serve(data, cache=cache, workers=workers)
        try:
            http_clients(server.port, warm, "warm")
            tag = ("" if cache else " no cache") + (" 1 proc" if workers == 0 else "")
            for c in counts:
                plans = [plan(solo, args.rounds)] if c == 1 else [
                    plan(i, args.rounds) for i in range(c)]
                rows.append(http_clients(server.port, plans, f"serve x{c}{tag}"))
                if c > 1:
                    rows.append(http_clients(server.port, plans, f"serve x{c} typing{tag}",
                                             pace_s=pace))
                if c > 1 and cache and workers is None:
                    rows.append(http_clients(server.port, plans, f"serve x{c} typing 2x",
                                             pace_s=pace / 2))
            if cache and workers is None:
                same = [[keystrokes(i)] * args.rounds for i in range(most)]
                rows.append(http_clients(server.port, same, f"serve x{most} same"))
        finally:
            server.stop()
    rows.append(cli(data, plan(solo, 1)[0]))
    n_keys = sum(len(k) for k in plan(solo, args.rounds))
    print(f"{args.n:,} records; each client types {args.rounds} x {PER_ROUND} queries "
          f"({n_keys} keystrokes for the single client), limit {LIMIT}")
    print(f"typing phases: a keystroke every {args.pace_ms:g} ms on average (0.5x-1.5x)")
    print(f"{'phase':<28} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['phase']:<28} {r['requests']:>8} {r['rps']:>8.1f} {r['p50']:>8.2f} "
              f"{r['p95']:>8.2f} {r['p99']:>8.2f}")
    floor = rows[0]
    serve1 = next(r for r in rows if r["phase"] == "serve x1")
    cli_row = rows[-1]
    print("slowest keystrokes in-process (p50 ms): "
          + ", ".join(f"{k!r} {ms:.0f}" for ms, k in floor["slowest"]))
    print(f"ratio serve x1 p50 / in-process p50: {serve1['p50'] / floor['p50']:.2f}x")
    print(f"ratio cli p50 / serve x1 p50: {cli_row['p50'] / serve1['p50']:.1f}x")
    print("target: p95 under 20 ms a keystroke with 8 clients typing")
    for r in rows:
        if r["phase"].startswith("serve x") and not r["phase"].startswith("serve x1"):
            verdict = "meets" if r["p95"] < 20 else "misses"
            how = ("typing" if " typing" in r["phase"] else
                   f"saturation, each client {r['rps'] / most:.0f} keystrokes/s")
            print(f"{r['phase']}: p95 {r['p95']:.1f} ms {verdict} 20 ms ({how})")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
