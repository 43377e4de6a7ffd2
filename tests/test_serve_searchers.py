"""`kvmedia serve --search-workers N`: text searches answered by worker processes give the
same answers as the server's own, never go stale, survive a worker's death, stay in step when
clients hang up mid-search, and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from test_serve_support import Server, serve_extra_or_skip, wait_for

serve_extra_or_skip()

from kvmedia import Library  # noqa: E402

NAMES = {  # name -> how many files carry it (each search below has its own total)
    "alpha": 1, "bravo": 2, "charlie": 3, "delta": 4, "echo": 5, "foxtrot": 6,
    "golf": 7, "hotel": 8,
}
QUERIES = ["alpha", "bravo", "char", "delt", "ech", "foxtrot", "golf", "hot", "a", "e",
           "lf", "type:image", "", "-alpha", "alpha | bravo", "size:>1", "~hotle",
           "caf\u00e9", "ph", "2023"]


def _tree(root: Path) -> None:
    for name, count in NAMES.items():
        for i in range(count):
            folder = root / f"Photos/2023/{name}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}_{i:02d}.jpg").write_bytes(b"x" * (i + 1))
    (root / "odd").mkdir()
    (root / "odd" / "caf\u00e9.mp3").write_bytes(b"m")
    (root / "odd").joinpath(os.fsdecode(b"bad\xff name.jpg")).write_bytes(b"b")


def _scan(data: Path, root: Path) -> None:
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data), KVMEDIA_CONFIG=str(data) + ".toml")
    subprocess.run([sys.executable, "-m", "kvmedia", "scan", str(root), "--json"], env=env,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("searchers")
    root, data = base / "vol", base / "data"
    root.mkdir()
    _tree(root)
    _scan(data, root)
    return data, root


@pytest.fixture
def pooled(library: tuple[Path, Path]) -> Any:
    server = Server(library[0], "--search-workers", "2")
    yield server
    server.stop()


def _search(server: Server, q: str, **params: Any) -> Any:
    return server.get("/api/search?" + urlencode({"q": q, "limit": 50, **params}))


def _timeless(answer: Any) -> Any:
    """The answer without its `ms` (how long the search took)."""
    body = answer.json()
    if isinstance(body, dict):
        body.pop("ms", None)
    return body


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != b"Z":
                out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_workers_answer_the_same_bytes_as_the_server_process(library: tuple[Path, Path]
                                                             ) -> None:
    one = Server(library[0], "--search-workers", "0")
    two = Server(library[0], "--search-workers", "2")
    try:
        assert one.get("/api/status").json()["search_workers"] is None
        status = two.get("/api/status").json()["search_workers"]
        assert status["size"] == 2 and status["alive"] == 2
        assert set(status["pids"]) <= _children(two.proc.pid)
        for q in QUERIES:
            for params in ({}, {"sort": "namedesc", "offset": 1}, {"type": "audio"},
                           {"trash": "any", "path": str(library[1] / "odd")}):
                a, b = _search(one, q, **params), _search(two, q, **params)
                assert (a.status, _timeless(a)) == (b.status, _timeless(b)), (q, params)
        with Library.open(library[0]) as lib:
            for q in NAMES:
                expected = lib.search(q, limit=50)
                got = _search(two, q).json()
                assert got["total"] == expected.total == NAMES[q]
                assert [h["uuid"] for h in got["hits"]] == [h["uuid"] for h in expected.hits]
        # a bad query: the same 400, with the position, from a worker
        a, b = _search(one, 'size:>>1 "open'), _search(two, 'size:>>1 "open')
        assert b.status == 400 and b.json()["error"]["code"] == "bad_query"
        assert b.json()["error"]["position"] is not None
        assert (a.status, a.body) == (b.status, b.body)
    finally:
        one.stop()
        two.stop()


def test_workers_see_every_change_at_once(tmp_path: Path) -> None:
    root, data = tmp_path / "vol", tmp_path / "data"
    root.mkdir()
    _tree(root)
    _scan(data, root)
    server = Server(data, "--search-workers", "2")
    try:
        assert _search(server, "zulu").json()["total"] == 0
        (root / "zulu_new.jpg").write_bytes(b"z")
        _scan(data, root)  # another process writes
        for _ in range(4):  # whichever worker answers
            hits = _search(server, "zulu").json()["hits"]
            assert [h["name"] for h in hits] == ["zulu_new.jpg"]
        uuid = hits[0]["uuid"]
        trashed = server.post("/api/trash", {"ids": [uuid]})
        assert trashed.status == 200, trashed
        for _ in range(4):
            assert _search(server, "zulu").json()["total"] == 0
            assert _search(server, "zulu", trash="true").json()["total"] == 1
    finally:
        server.stop()


def test_a_killed_worker_is_replaced_and_no_search_fails(pooled: Server) -> None:
    before = pooled.get("/api/status").json()["search_workers"]
    victim = before["pids"][0]
    os.kill(victim, signal.SIGKILL)
    for i in range(40):  # the next searches are answered, by the survivor or the server
        q = list(NAMES)[i % len(NAMES)]
        answer = _search(pooled, q)
        assert answer.status == 200, answer
        assert answer.json()["total"] == NAMES[q]

    def replaced() -> Any:
        now = pooled.get("/api/status").json()["search_workers"]
        return now if now["alive"] == 2 and victim not in now["pids"] else None

    now = wait_for(replaced, timeout_s=60)
    assert now["lost"] == 1 and now["started"] == 3
    assert set(now["pids"]) <= _children(pooled.proc.pid)
    assert _search(pooled, "golf").json()["total"] == NAMES["golf"]


def test_every_worker_killed_then_searches_still_answer(pooled: Server) -> None:
    for pid in pooled.get("/api/status").json()["search_workers"]["pids"]:
        os.kill(pid, signal.SIGKILL)
    for q in NAMES:
        assert _search(pooled, q).json()["total"] == NAMES[q]
    wait_for(lambda: pooled.get("/api/status").json()["search_workers"]["alive"] == 2,
             timeout_s=60)


def test_clients_that_hang_up_mid_search_do_not_shift_answers(pooled: Server) -> None:
    """Half the requests are abandoned as soon as they are sent; every answer the other
    half gets is the one for its own query."""
    errors: list[str] = []

    def abandon(q: str) -> None:
        with socket.create_connection((pooled.host, pooled.port)) as sock:
            path = "/api/search?" + urlencode({"q": q, "limit": 50})
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def ask(q: str) -> None:
        got = _search(pooled, q)
        if got.status != 200 or got.json()["total"] != NAMES[q]:
            errors.append(f"{q}: {got}")

    names = list(NAMES)
    threads = []
    for i in range(120):
        q = names[i % len(names)]
        threads.append(threading.Thread(target=abandon if i % 2 else ask, args=(q,)))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for q in names:  # and afterwards, in order
        assert _search(pooled, q).json()["total"] == NAMES[q]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_workers_go_when_the_server_goes(library: tuple[Path, Path], how: int) -> None:
    server = Server(library[0], "--search-workers", "2")
    pids = server.get("/api/status").json()["search_workers"]["pids"]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    if how == signal.SIGKILL:
        server.proc.kill()
        server.proc.wait()
    else:
        assert server.stop() == 0
    wait_for(lambda: not any(_alive(p) for p in pids), timeout_s=30)
    if how == signal.SIGKILL:
        server.stop()


def test_ctrl_c_to_the_process_group_stops_server_and_workers(library: tuple[Path, Path]
                                                              ) -> None:
    """A terminal's Ctrl-C reaches every process of the group: the workers leave it to the
    server, which stops cleanly (exit 0) and takes them with it."""
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(library[0]),
               KVMEDIA_CONFIG=str(library[0]) + ".toml")
    proc = subprocess.Popen([sys.executable, "-m", "kvmedia", "serve", "--port", "0", "--json",
                             "--search-workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert b'"serving"' in proc.stdout.readline()
        pids = wait_for(lambda: _children(proc.pid) if len(_children(proc.pid)) == 2 else None)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130)
        wait_for(lambda: not any(_alive(p) for p in pids), timeout_s=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_search_cancelled_mid_exchange_does_not_shift_the_next(library: tuple[Path, Path]
                                                                 ) -> None:
    """The pool itself, on real worker processes: a search cancelled while its worker is busy
    (a request task torn down) leaves the worker's reply to be drained, not read as the
    answer to the next search that worker takes."""
    import asyncio

    from kvmedia.serve.searchers import SearcherPool

    options = {"media_type": None, "trash": "keep", "path_prefix": None, "limit": 50,
               "offset": 0}

    async def run() -> list[int]:
        pool = SearcherPool(str(library[0]), 1)
        await pool.start()
        try:
            totals = []
            for q in NAMES:
                doomed = asyncio.ensure_future(pool.search("hotel", "relevance", options))
                await asyncio.sleep(0)  # it has sent its request
                await asyncio.sleep(0)
                doomed.cancel()
                body = await pool.search(q, "relevance", options)
                assert body is not None
                totals.append(json.loads(body)["total"])
            return totals
        finally:
            await pool.close()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == list(NAMES.values())


def test_worker_cache_defaults_yield_to_the_users_settings(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from kvmedia.config import Config
    from kvmedia.serve.searchers import WORKER_DEFAULTS, worker_config

    monkeypatch.setenv("KVMEDIA_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("KVMEDIA_SEARCH_CACHE_MB", raising=False)
    monkeypatch.delenv("KVMEDIA_SEARCH_MAPPED_MB", raising=False)
    plain = worker_config(Config({"data_dir": str(tmp_path)}))
    assert plain["search.cache_mb"] == WORKER_DEFAULTS["search.cache_mb"]
    assert plain["search.mapped_mb"] == WORKER_DEFAULTS["search.mapped_mb"]
    assert plain["data_dir"] == str(tmp_path)
    monkeypatch.setenv("KVMEDIA_SEARCH_CACHE_MB", "0")
    chosen = worker_config(Config({"data_dir": str(tmp_path)}))
    assert chosen["search.cache_mb"] == 0
    assert chosen["search.mapped_mb"] == WORKER_DEFAULTS["search.mapped_mb"]
    with Library.open(tmp_path / "lib", config=Config({"data_dir": str(tmp_path / "lib"),
                                                       "search.mapped_mb": 7})) as lib:
        assert lib.search_engine.mapped_budget == 7 << 20
