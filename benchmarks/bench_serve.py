"""Search-as-you-type over HTTP: `kvmedia serve` vs the CLI vs the library in-process.

    python benchmarks/bench_serve.py [--n 1000000] [--rounds 3] [--clients 1,8] [--work DIR]

Builds (or reuses, under --work) a library of N generated records (tools/gen_corpus.py), then
replays a typing sequence — every prefix of a few queries, one request per keystroke, 50 hits
each with the total count — and prints, for each phase, requests/s and p50/p95/p99 in ms:

  in-process   Library.search in this process (the floor: no HTTP, no JSON)
  serve xC     `kvmedia serve` in a subprocess, C clients at once, each on its own
               keep-alive connection replaying the whole sequence `rounds` times
  cli          one `kvmedia search --json` process per keystroke (what a CGI-style web UI
               pays), one client

Ratios: serve p50 / in-process p50 (the HTTP overhead), cli p50 / serve p50 (what a resident
server saves). The clients run in this process on the same cores as the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import gen_corpus  # noqa: E402

QUERIES = ["beyonce live", "sherlock", "bãi biển", "midnight city", "img_2023"]
LIMIT = 50


def keystrokes(shift: int = 0) -> list[str]:
    """Every prefix of every query; `shift` rotates the queries (each client types its own
    order, so concurrent requests are for different prefixes)."""
    out = []
    for q in QUERIES[shift % len(QUERIES):] + QUERIES[:shift % len(QUERIES)]:
        out += [q[:i] for i in range(1, len(q) + 1) if not q[:i].endswith(" ")]
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


def in_process(data: str, keys: list[str], rounds: int) -> dict[str, Any]:
    from kvmedia import Library

    with Library.open(data) as lib:
        for k in keys:  # warm
            lib.search(k, limit=LIMIT)
        lat = []
        per_key: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for _ in range(rounds):
            for k in keys:
                t = time.perf_counter()
                lib.search(k, limit=LIMIT)
                lat.append((time.perf_counter() - t) * 1000)
                per_key.setdefault(k, []).append(lat[-1])
        out = summary("in-process", lat, time.perf_counter() - t0)
        out["slowest"] = sorted(((pct(v, 50), k) for k, v in per_key.items()), reverse=True)[:6]
        return out


class Serve:
    def __init__(self, data: str) -> None:
        env = dict(os.environ, KVMEDIA_DATA_DIR=data)
        self.proc = subprocess.Popen([sys.executable, "-m", "kvmedia", "serve", "--port", "0",
                                      "--json"], env=env, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        if not ready:
            self.proc.kill()
            raise SystemExit("kvmedia serve did not start")
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def http_clients(port: int, rounds: int, clients: int) -> dict[str, Any]:
    lat: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(keys: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        start.wait()
        for _ in range(rounds):
            for k in keys:
                t = time.perf_counter()
                conn.request("GET", "/api/search?" + urlencode({"q": k, "limit": LIMIT}))
                resp = conn.getresponse()
                body = resp.read()
                mine.append((time.perf_counter() - t) * 1000)
                assert resp.status == 200, body[:200]
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(keystrokes(i),)) for i in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return summary(f"serve x{clients}", lat, time.perf_counter() - t0)


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
    ap.add_argument("--work", default=os.path.join(HERE, "_work"))
    args = ap.parse_args()
    data = os.path.join(args.work, f"serve-{args.n}")
    build(data, args.n)
    keys = keystrokes()
    rows = [in_process(data, keys, args.rounds)]
    server = Serve(data)
    try:
        http_clients(server.port, 1, 1)  # warm the server's caches
        for c in (int(x) for x in args.clients.split(",")):
            rows.append(http_clients(server.port, args.rounds, c))
    finally:
        server.stop()
    rows.append(cli(data, keys))
    print(f"{args.n:,} records, {len(keys)} keystrokes x {args.rounds} rounds, limit {LIMIT}")
    print(f"{'phase':<12} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['phase']:<12} {r['requests']:>8} {r['rps']:>8.1f} {r['p50']:>8.2f} "
              f"{r['p95']:>8.2f} {r['p99']:>8.2f}")
    floor = rows[0]
    serve1 = next(r for r in rows if r["phase"] == "serve x1")
    cli_row = rows[-1]
    print("slowest keystrokes in-process (p50 ms): "
          + ", ".join(f"{k!r} {ms:.0f}" for ms, k in floor["slowest"]))
    print(f"ratio serve x1 p50 / in-process p50: {serve1['p50'] / floor['p50']:.2f}x")
    print(f"ratio cli p50 / serve x1 p50: {cli_row['p50'] / serve1['p50']:.1f}x")
    for r in rows:
        if r["phase"].startswith("serve x") and r["phase"] != "serve x1":
            target = "meets" if r["p95"] < 20 else "misses"
            print(f"{r['phase']}: p95 {r['p95']:.1f} ms {target} the 20 ms target")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
