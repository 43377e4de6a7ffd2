"""Search benchmark: kvmedia vs SQLite FTS5, tantivy and plocate on the same corpus.

    python benchmarks/bench_search.py [--n 1000000] [--repeat 15] [--no-check]

Mode for every engine: the total count plus the first 100 hits in rank order with their paths.
Prints build time, index bytes per document, per-kind p50/p95/p99 in ms and ratios, the CLI's
whole-process time, upsert-to-visible latency, the searching process's RSS, and whether every
kvmedia answer equals the brute-force oracle. Two floors beside them: per kind, the same
search counting only (limit 0) and the read of the 100 records a page returns (kvmedia's hits
are the records); and the bytes a document's name, folder and uuid take, against the index's
own sections.

Each query is timed 15 times in a row, so kvmedia's search caches (kvmedia/index/segment.py)
would answer all but the first from memory; they are off here (KVMEDIA_SEARCH_CACHE_MB=0) so
the engine is what is measured, as for the peers. benchmarks/bench_serve.py measures typing
with the caches on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import gen_corpus  # noqa: E402

# kind -> (kvmedia query, fts5 MATCH (None: n/a), fts5 trigram LIKE?, tantivy spec, plocate)
KINDS: dict[str, list[dict[str, Any]]] = {
    "exact_common": [{"kv": "love", "fts": "love", "tv": ("term", "love"), "pl": "love"},
                     {"kv": "season", "fts": "season", "tv": ("term", "season"),
                      "pl": "season"}],
    "exact_rare": [{"kv": "motorhead", "fts": "motorhead", "tv": ("term", "motörhead"),
                    "pl": "motörhead"},
                   {"kv": "sherlock", "fts": "sherlock", "tv": ("term", "sherlock"),
                    "pl": "sherlock"}],
    "diacritic": [{"kv": "beyonce", "fts": "beyonce", "tv": ("term", "beyoncé"),
                   "pl": "beyonc"},
                  {"kv": "bai bien", "fts": "bai bien", "tv": ("and", ["bãi", "biển"]),
                   "pl": "bãi biển"}],
    "prefix": [{"kv": "beyon", "fts": "beyon*", "tv": ("prefix", "beyon"), "pl": "beyon"},
               {"kv": "midn", "fts": "midn*", "tv": ("prefix", "midn"), "pl": "midn"}],
    "multi_and": [{"kv": "summer love", "fts": "summer love", "tv": ("and", ["summer", "love"]),
                   "pl": None},
                  {"kv": "dark 1080p", "fts": "dark 1080p", "tv": ("and", ["dark", "1080p"]),
                   "pl": None}],
    "substring": [{"kv": "idnig", "fts_tri": "idnig", "tv": ("regex", ".*idnig.*"),
                   "pl": "idnig"},
                  {"kv": "0714_", "fts_tri": "0714_", "tv": ("regex", ".*0714.*"),
                   "pl": "0714_"}],
    "fuzzy": [{"kv": "~sherlok", "fts": None, "tv": ("fuzzy", "sherlok"), "pl": None},
              {"kv": "~paradyse", "fts": None, "tv": ("fuzzy", "paradyse"), "pl": None}],
    "filtered": [{"kv": "love type:audio", "fts": "love AND type:typeaudio",
                  "tv": ("and", ["love"]), "pl": None},
                 {"kv": "season ext:mkv", "fts": "season AND ext:mkv",
                  "tv": ("and", ["season", "mkv"]), "pl": None}],
    "cjk": [{"kv": "東京", "fts_tri": "東京", "tv": ("term", "東京"), "pl": "東京"},
            {"kv": "사랑", "fts_tri": "사랑", "tv": ("term", "사랑"), "pl": "사랑"}],
}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(fn: Any, repeat: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


# -- kvmedia ----------------------------------------------------------------------------------

def bench_kvmedia(work: str, corpus: list[tuple[bytes, int, int]], n: int, repeat: int,
                  check: bool) -> dict[str, Any]:
    from kvmedia import Library
    from kvmedia.store.env import keep_heap_for_searches
    from kvmedia.store.recordstore import RecordStore

    os.environ["KVMEDIA_SEARCH_CACHE_MB"] = "0"  # repeats would be cache hits: see the top
    keep_heap_for_searches()  # as in kvmedia's processes that serve searches
    data = os.path.join(work, "kv")
    reused = os.path.exists(os.path.join(data, "media.lmdb"))
    lib = Library.open(data)
    t = time.perf_counter()
    if not reused:
        gen_corpus.write_records(lib, n, seed=1)
    ingest_s = None if reused else time.perf_counter() - t
    t = time.perf_counter()
    report = lib.search_engine.maintainer.merge(full=True)
    build_s = time.perf_counter() - t
    idx_bytes = du(os.path.join(data, "searchidx_media"))
    out: dict[str, Any] = {"ingest_s": ingest_s, "build_s": build_s, "index_bytes": idx_bytes,
                           "bytes_per_doc": idx_bytes / n, "segments": report.segments,
                           "kinds": {}}
    lib.close()
    lib = Library.open(data)
    out["sections"] = section_sizes(os.path.join(data, "searchidx_media"), n)
    for kind, qs in KINDS.items():
        times: list[float] = []
        count_times: list[float] = []
        record_times: list[float] = []
        totals = []
        for spec in qs:
            def run(spec: dict[str, Any] = spec) -> Any:
                r = lib.search(spec["kv"], limit=100)
                return r.total, [h["path"] for h in r.hits]

            def count(spec: dict[str, Any] = spec) -> Any:
                return lib.search(spec["kv"], limit=0).total

            uuids = [h["uuid"] for h in lib.search(spec["kv"], limit=100).hits]

            def records(uuids: list[str] = uuids) -> Any:
                with lib.env.read() as txn:
                    return [RecordStore.get(txn, u)["path"] for u in uuids]
            times += timed(run, repeat)
            count_times += timed(count, repeat)
            record_times += timed(records, repeat)
            totals.append(run()[0])
        out["kinds"][kind] = {"p50": pct(times, 50), "p95": pct(times, 95),
                              "p99": pct(times, 99), "totals": totals,
                              "count_p50": pct(count_times, 50),
                              "records_p50": pct(record_times, 50)}
    # upsert -> visible
    lat = []
    for i in range(20):
        path = f"/mnt/vol1/new/fresh_upsert_{i}_qqzx.jpg".encode()
        rec = gen_corpus.record_for(path, 1, 2 * 10**18, 10**8 + i, b"/mnt/vol1")
        t = time.perf_counter()

        def fn(txn: Any, rec: dict[str, Any] = rec) -> None:
            w = lib.store.writer(txn)
            w.put(rec, RecordStore.get(txn, rec["uuid"]))
            w.finish()

        lib.env.write(fn)
        r = lib.search(f"fresh_upsert_{i}_qqzx", limit=100)
        lat.append((time.perf_counter() - t) * 1000)
        assert r.total == 1, "upsert not visible"
    out["upsert_visible_ms"] = {"p50": pct(lat, 50), "p95": pct(lat, 95)}
    # CLI whole process
    env = dict(os.environ, KVMEDIA_DATA_DIR=data)
    cli = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kvmedia", "search", "beyonce", "--limit", "100"],
                       env=env, capture_output=True, check=False)
        cli.append((time.perf_counter() - t) * 1000)
    out["cli_ms"] = {"p50": pct(cli, 50), "min": min(cli)}
    # RSS of a process that only searches: VmHWM of its own address space. (Not ru_maxrss:
    # Linux carries the parent's high-water mark into a child across vfork + exec, so a child
    # of this large benchmark process would report the benchmark's RSS, not its own.)
    queries = [s["kv"] for qs in KINDS.values() for s in qs]
    code = (f"import sys;sys.path.insert(0,{HERE!r});from kvmedia import Library;"
            "from kvmedia.store.env import keep_heap_for_searches;keep_heap_for_searches();"
            f"lib=Library.open({data!r});[lib.search(q,limit=100) for q in {queries!r}*3];"
            "st=open('/proc/self/status').read();"
            "print(*(int(st.split(k+':')[1].split()[0]) for k in ('VmHWM','RssAnon','RssFile')))")
    cached = {k: v for k, v in os.environ.items() if k != "KVMEDIA_SEARCH_CACHE_MB"}
    rss = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cached)  # a real searching process: caches on
    hwm, anon, file_backed = (int(x) / 1024 for x in (rss.stdout.split() or [0, 0, 0]))
    out["search_rss_mb"] = hwm
    out["search_rss_anon_mb"] = anon
    out["search_rss_file_mb"] = file_backed
    if check:
        out["oracle_mismatches"] = oracle_check(lib)
    lib.close()
    return out


def section_sizes(index_dir: str, n: int) -> dict[str, float]:
    """Bytes per document of each section of the index's segments, largest first."""
    from kvmedia.index import format as F

    names = {v: k for k, v in F.SECTION_IDS.items()}
    sizes: dict[str, float] = {}
    for entry in sorted(os.listdir(index_dir)):
        if not entry.endswith(".kvs"):
            continue
        f = F.SegmentFile(os.path.join(index_dir, entry))
        for sid, (_code, _off, length, _xxh) in f._table.items():
            name = names.get(sid, str(sid))
            sizes[name] = sizes.get(name, 0) + length / n
        f.close()
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def text_floor(corpus: list[tuple[bytes, int, int]]) -> dict[str, float]:
    """What any index answering substring queries from mapped, uncompressed text must hold:
    every name and every distinct folder once, and each document's 16-byte uuid (the key of
    its record); and what compressing the names would save and cost (zlib level 1, the
    cheapest the standard library has: a scan for a substring would first decompress)."""
    import zlib

    n = len(corpus)
    names = b"\n".join(p.rpartition(b"/")[2] for p, _s, _m in corpus)
    folders = b"\n".join(sorted({p.rpartition(b"/")[0] for p, _s, _m in corpus}))
    packed = zlib.compress(names, 1)
    t = time.perf_counter()
    zlib.decompress(packed)
    return {"names_b_per_doc": len(names) / n, "folders_b_per_doc": len(folders) / n,
            "uuid_b_per_doc": 16.0,
            "floor_b_per_doc": (len(names) + len(folders)) / n + 16.0,
            "names_zlib_b_per_doc": len(packed) / n,
            "names_unzlib_ms": (time.perf_counter() - t) * 1000}


def oracle_check(lib: Any) -> list[str]:
    from kvmedia.index.docs import doc_from_record
    from kvmedia.search import oracle
    from kvmedia.search.query import apply_options, parse_query
    from kvmedia.store.recordstore import RecordStore

    with lib.env.read() as txn:
        rows = [doc_from_record(r) for r in RecordStore.iter_records(txn)]
    bad = []
    for qs in KINDS.values():
        for spec in qs:
            q = apply_options(parse_query(spec["kv"]), limit=100)
            total, hits = oracle.scan(rows, q)
            r = lib.search(spec["kv"], limit=100)
            if (r.total, [h["uuid"] for h in r.hits]) != (total, [x.uuid for _k, x in hits[:100]]):
                bad.append(spec["kv"])
    return bad


# -- peers ------------------------------------------------------------------------------------

def bench_fts5(work: str, corpus: list[tuple[bytes, int, int]], repeat: int) -> dict[str, Any]:
    path = os.path.join(work, "fts.db")
    if os.path.exists(path):
        con = sqlite3.connect(path)
        build = float("nan")
    else:
        con = sqlite3.connect(path)
        build = _fts5_build(con, corpus)
    out: dict[str, Any] = {"build_s": build, "index_bytes": os.path.getsize(path), "kinds": {}}
    return _fts5_queries(con, out, repeat)


def _fts5_build(con: sqlite3.Connection, corpus: list[tuple[bytes, int, int]]) -> float:
    t = time.perf_counter()
    con.execute("CREATE VIRTUAL TABLE f USING fts5(name, path, type, ext, "
                "tokenize='unicode61 remove_diacritics 2')")
    con.execute("CREATE VIRTUAL TABLE g USING fts5(path, tokenize='trigram')")
    from kvmedia import records as R
    rows = []
    for p, _s, _m in corpus:
        name = p.rsplit(b"/", 1)[1]
        rows.append((name.decode(), p.decode(), "type" + R.infer_type(name), R.extension(name)))
    con.executemany("INSERT INTO f VALUES (?,?,?,?)", rows)
    con.executemany("INSERT INTO g VALUES (?)", [(r[1],) for r in rows])
    con.commit()
    return time.perf_counter() - t


def _fts5_queries(con: sqlite3.Connection, out: dict[str, Any], repeat: int) -> dict[str, Any]:
    for kind, qs in KINDS.items():
        times: list[float] = []
        totals = []
        ok = True
        for spec in qs:
            if "fts_tri" in spec:
                pat = "%" + spec["fts_tri"] + "%"

                def run(pat: str = pat) -> Any:
                    n = con.execute("SELECT count(*) FROM g WHERE path LIKE ?", (pat,)).fetchone()
                    hits = con.execute("SELECT path FROM g WHERE path LIKE ? LIMIT 100",
                                       (pat,)).fetchall()
                    return n[0], hits
            elif spec.get("fts"):
                m = spec["fts"]

                def run(m: str = m) -> Any:
                    n = con.execute("SELECT count(*) FROM f WHERE f MATCH ?", (m,)).fetchone()
                    hits = con.execute("SELECT path FROM f WHERE f MATCH ? ORDER BY rank "
                                       "LIMIT 100", (m,)).fetchall()
                    return n[0], hits
            else:
                ok = False
                continue
            times += timed(run, repeat)
            totals.append(run()[0])
        if ok and times:
            out["kinds"][kind] = {"p50": pct(times, 50), "p95": pct(times, 95),
                                  "p99": pct(times, 99), "totals": totals}
    con.close()
    return out


def bench_tantivy(work: str, corpus: list[tuple[bytes, int, int]], repeat: int
                  ) -> dict[str, Any] | None:
    try:
        import tantivy
    except ImportError:
        return None
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("name", stored=False)
    sb.add_text_field("path", stored=True)
    schema = sb.build()
    path = os.path.join(work, "tantivy")
    reuse = os.path.isdir(path) and bool(os.listdir(path))
    os.makedirs(path, exist_ok=True)
    t = time.perf_counter()
    index = tantivy.Index(schema, path=path)
    if not reuse:
        writer = index.writer(heap_size=200_000_000, num_threads=2)
        for p, _s, _m in corpus:
            text = p.decode()
            writer.add_document(tantivy.Document(name=text.rsplit("/", 1)[1], path=text))
        writer.commit()
        writer.wait_merging_threads()
    build = float("nan") if reuse else time.perf_counter() - t
    index.reload()
    searcher = index.searcher()
    out: dict[str, Any] = {"build_s": build, "index_bytes": du(path), "kinds": {}}
    Occur = tantivy.Occur

    def make(spec: tuple[str, Any]) -> Any:
        kind, arg = spec
        fields = ["name", "path"]
        def one(word: str) -> Any:
            if kind == "prefix":
                return tantivy.Query.boolean_query([(Occur.Should, tantivy.Query.fuzzy_term_query(
                    schema, f, word, distance=0, prefix=True)) for f in fields])
            if kind == "fuzzy":
                return tantivy.Query.boolean_query([(Occur.Should, tantivy.Query.fuzzy_term_query(
                    schema, f, word, distance=1)) for f in fields])
            if kind == "regex":
                return tantivy.Query.boolean_query([(Occur.Should, tantivy.Query.regex_query(
                    schema, f, word)) for f in fields])
            return tantivy.Query.boolean_query([(Occur.Should, tantivy.Query.term_query(
                schema, f, word.lower())) for f in fields])
        if kind == "and":
            return tantivy.Query.boolean_query([(Occur.Must, make(("term", w))) for w in arg])
        return one(arg)

    for kind, qs in KINDS.items():
        times: list[float] = []
        totals = []
        for spec in qs:
            query = make(spec["tv"])

            def run(query: Any = query) -> Any:
                res = searcher.search(query, 100)
                return res.count, [searcher.doc(a)["path"] for _s, a in res.hits]
            times += timed(run, repeat)
            totals.append(run()[0])
        out["kinds"][kind] = {"p50": pct(times, 50), "p95": pct(times, 95),
                              "p99": pct(times, 99), "totals": totals}
    return out


def bench_plocate(work: str, corpus: list[tuple[bytes, int, int]], repeat: int
                  ) -> dict[str, Any] | None:
    build_bin = shutil.which("plocate-build") or "/usr/sbin/plocate-build"
    if not shutil.which("plocate") or not os.path.exists(build_bin):
        return None
    lst = os.path.join(work, "paths.txt")
    with open(lst, "wb") as fh:
        fh.write(b"\n".join(p for p, _s, _m in corpus) + b"\n")
    db = os.path.join(work, "plocate.db")
    t = time.perf_counter()
    if os.path.exists(db):
        build = float("nan")
    else:
        subprocess.run([build_bin, "-l", "no", "-p", lst, db], check=True)
        build = time.perf_counter() - t
    out: dict[str, Any] = {"build_s": build, "index_bytes": os.path.getsize(db), "kinds": {}}
    for kind, qs in KINDS.items():
        times: list[float] = []
        totals = []
        for spec in qs:
            if not spec.get("pl"):
                continue
            pat = spec["pl"]

            def run(pat: str = pat) -> Any:
                c = subprocess.run(["plocate", "-d", db, "-i", "-c", pat], capture_output=True)
                h = subprocess.run(["plocate", "-d", db, "-i", "-l", "100", pat],
                                   capture_output=True)
                return int(c.stdout or 0), h.stdout
            times += timed(run, max(3, repeat // 3))
            totals.append(run()[0])
        if times:
            out["kinds"][kind] = {"p50": pct(times, 50), "p95": pct(times, 95),
                                  "p99": pct(times, 99), "totals": totals}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of peers to skip")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the corpus and every engine's index from the last run of this "
                         "--n (build and ingest figures then read nan; kvmedia's full rebuild "
                         "is still timed)")
    args = ap.parse_args()
    work = os.path.join(HERE, "_work", f"search-{args.n}")
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    corpus = list(gen_corpus.paths(args.n, seed=1))
    results: dict[str, Any] = {"n": args.n, "cpu": os.cpu_count()}
    results["kvmedia"] = bench_kvmedia(work, corpus, args.n, args.repeat, not args.no_check)
    results["kvmedia"]["text_floor"] = text_floor(corpus)
    print(json.dumps(results["kvmedia"], indent=1), flush=True)
    skip = set(args.skip.split(","))
    if "fts5" not in skip:
        results["fts5"] = bench_fts5(work, corpus, args.repeat)
    if "tantivy" not in skip:
        results["tantivy"] = bench_tantivy(work, corpus, args.repeat)
    if "plocate" not in skip:
        results["plocate"] = bench_plocate(work, corpus, args.repeat)
    report(results)
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


def report(r: dict[str, Any]) -> None:
    kv = r["kvmedia"]
    print(f"\nN={r['n']}  kvmedia build {kv['build_s']:.1f}s, {kv['bytes_per_doc']:.1f} B/doc, "
          f"ingest {kv['ingest_s'] or float('nan'):.1f}s, search RSS {kv['search_rss_mb']:.0f} MB "
          f"({kv.get('search_rss_anon_mb', 0):.0f} anon + {kv.get('search_rss_file_mb', 0):.0f} "
          "mapped file pages at the end), "
          f"CLI {kv['cli_ms']['p50']:.0f} ms, upsert->visible p50 "
          f"{kv['upsert_visible_ms']['p50']:.2f} ms; oracle mismatches: "
          f"{kv.get('oracle_mismatches', 'not checked')}")
    for peer in ("fts5", "tantivy", "plocate"):
        if r.get(peer):
            print(f"{peer}: build {r[peer]['build_s']:.1f}s, "
                  f"{r[peer]['index_bytes'] / r['n']:.1f} B/doc")
    print(f"\n{'kind':<13}{'kvmedia p50/p95/p99':>24}  " + "  ".join(
        f"{p + ' p50/p95':>18} {'ratio':>6}" for p in ("fts5", "tantivy", "plocate")))
    for kind, m in kv["kinds"].items():
        line = f"{kind:<13}{m['p50']:>8.2f}/{m['p95']:>7.2f}/{m['p99']:>7.2f}  "
        for peer in ("fts5", "tantivy", "plocate"):
            pm = (r.get(peer) or {}).get("kinds", {}).get(kind)
            if pm:
                line += f"{pm['p50']:>9.2f}/{pm['p95']:>8.2f} {m['p50'] / pm['p50']:>6.2f}  "
            else:
                line += f"{'n/a':>18} {'':>6}  "
        print(line)
    tf = kv.get("text_floor")
    if tf:
        print(f"\nindex floor: names {tf['names_b_per_doc']:.1f} + folders "
              f"{tf['folders_b_per_doc']:.1f} + uuid {tf['uuid_b_per_doc']:.0f} = "
              f"{tf['floor_b_per_doc']:.1f} B/doc of mapped text and keys before any posting; "
              f"names zlib-1 {tf['names_zlib_b_per_doc']:.1f} B/doc, decompressed in "
              f"{tf['names_unzlib_ms']:.0f} ms")
        print("kvmedia sections, B/doc: " + ", ".join(
            f"{k} {v:.1f}" for k, v in kv.get("sections", {}).items() if v >= 1))
    print(f"\n{'kind':<13}{'p50':>8}{'count only':>12}{'100 records':>13}"
          f"{'faster peer':>13}")
    for kind, m in kv["kinds"].items():
        peers = [pm["p50"] for peer in ("fts5", "tantivy")
                 if (pm := (r.get(peer) or {}).get("kinds", {}).get(kind))
                 and (kind != "cjk" or peer != "fts5")]  # FTS5 finds no CJK word
        best = f"{min(peers):.2f}" if peers else "n/a"
        print(f"{kind:<13}{m['p50']:>8.2f}{m.get('count_p50', float('nan')):>12.2f}"
              f"{m.get('records_p50', float('nan')):>13.2f}{best:>13}")
    print("\ntotals (kvmedia | fts5 | tantivy | plocate):")
    for kind, m in kv["kinds"].items():
        row = [str(m["totals"])]
        for peer in ("fts5", "tantivy", "plocate"):
            pm = (r.get(peer) or {}).get("kinds", {}).get(kind)
            row.append(str(pm["totals"]) if pm else "-")
        print(f"  {kind:<13} " + " | ".join(row))


if __name__ == "__main__":
    sys.exit(main())
