"""Search worker processes of `kvmedia serve`: text searches run in as many processes as the
server may use cores, so they run side by side instead of taking turns on one interpreter
lock. Measured with 8 search-as-you-type clients at 1M records on 2 cores, no pause between
keystrokes: one process served ~270 requests/s whatever the number of threads; two search
processes ~380 (600-690 with WORKER_DEFAULTS and the engine's result cache).

Each worker is `main(DATA_DIR)` below in a new Python (WORKER_MAIN): a plain child with the
server's environment (same config file and settings) that opens the library read-only.
Searches are never stale across processes (the index delta lives in LMDB, read in each
search's own transaction), so a worker answers exactly what the server would.

The pipe protocol, one exchange at a time per worker, every frame `<BI` (kind, length) then
`length` bytes:

    server -> worker   kind 1  orjson {"q", "sort", "options": {...}}   a text search
    worker -> server   kind 0  ready (sent once, after the library opened; empty body)
                       kind 1  the JSON body of the 200 answer, ready to send
                       kind 2  orjson {"code", "message", "position"} of an API error

A worker exits when its stdin closes (the server stopped or died) and ignores SIGINT (a
Ctrl-C on the terminal reaches the whole process group; the server decides). A worker that
dies is replaced; the search it was running is answered in the server process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import sys
from collections import deque
from typing import Any, BinaryIO

import orjson

from .errors import ApiError

log = logging.getLogger("kvmedia.serve")

FRAME = struct.Struct("<BI")
WORKER_MAIN = "import sys; from kvmedia.serve.searchers import main; sys.exit(main(sys.argv[1:]))"
REQUEST, READY, ANSWER, ERROR = 1, 0, 1, 2
START_TIMEOUT_S = 60.0
WORKER_DEFAULTS = {"search.cache_mb": 64, "search.mapped_mb": 256}
"""Measured with 8 search-as-you-type clients at 1M records on 2 cores, 2 workers: the
defaults of a one-off search (16 MB of cache a segment, 64 MB of mapped pages) gave ~380
requests/s and p95 ~34 ms; these ~530-570 requests/s and p95 ~23-25 ms (each worker's CPU a
request 2.2 -> 1.3 ms: fewer scans again, fewer page faults and releases). Mapped pages are
the page cache, shared with every process; the cache is the workers' own heap, filled only as
far as the searches need."""
RECENT = 32
"""Queries each worker remembers for routing the next keystrokes of a typist to it."""
RESPAWN_PAUSE_S = 1.0
"""A worker that dies is replaced after this pause (one that dies at once does not spin)."""


def search_json(result: Any) -> dict[str, Any]:
    """A SearchResult as the API shows it: the summary (total, offset, ...) and the hits."""
    out = {k: v for k, v in result.summary().items() if k not in ("type", "returned")}
    out["hits"] = result.hits
    return out


def search_body(lib: Any, q: str, sort: str, options: dict[str, Any]) -> bytes:
    """The JSON body of a text search answer (in the server or in a worker: same bytes)."""
    from .responses import dumps

    return dumps(search_json(lib.search(q, sort=sort, **options)))


class WorkerLost(Exception):
    """The worker died during an exchange; the caller searches in-process instead."""


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.recent: deque[str] = deque(maxlen=RECENT)

    async def read_frame(self) -> tuple[int, bytes]:
        head = await self.stdout.readexactly(FRAME.size)
        kind, length = FRAME.unpack(head)
        return kind, await self.stdout.readexactly(length)

    async def exchange(self, payload: bytes) -> tuple[int, bytes]:
        try:
            self.stdin.write(FRAME.pack(REQUEST, len(payload)) + payload)
            await self.stdin.drain()
            return await self.read_frame()
        except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
            # RuntimeError: uvloop's answer to a write on a pipe already closed
            raise WorkerLost(str(exc)) from exc

    def typed(self, q: str) -> None:
        self.recent.append(q.casefold())

    def affinity(self, q: str) -> int:
        """How much of `q` this worker searched lately: the longest recent query that `q`
        extends or that extends `q` (a backspace)."""
        q = q.casefold()
        return max((len(r) for r in self.recent if q.startswith(r) or r.startswith(q)),
                   default=0)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class SearcherPool:
    """`size` search workers over `data_dir`. `search()` returns the answer body, raises the
    ApiError a worker reported, or returns None when no worker is alive (the caller then
    searches in its own process)."""

    def __init__(self, data_dir: str, size: int) -> None:
        self.data_dir = data_dir
        self.size = size
        self._idle: list[Worker] = []
        self._waiters: deque[asyncio.Future[Worker | None]] = deque()
        self._workers: set[Worker] = set()
        self._closing = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self.started = 0
        self.lost = 0

    @property
    def alive(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return sorted(w.proc.pid for w in self._workers)

    async def start(self) -> None:
        """Start every worker and wait until each has opened the library (or failed)."""
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        if self.size and not self._workers:
            log.warning("no search worker started; searching in the server process")

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_MAIN, self.data_dir,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 20)
        worker = Worker(proc)
        try:
            kind, _ = await asyncio.wait_for(worker.read_frame(), START_TIMEOUT_S)
            if kind != READY:
                raise WorkerLost(f"unexpected frame {kind}")
        except (TimeoutError, asyncio.IncompleteReadError, WorkerLost) as exc:
            log.warning("search worker %d did not start: %s", proc.pid,
                        str(exc) or type(exc).__name__)
            worker.kill()
            await proc.wait()
            return
        if self._closing:
            await self._stop(worker)
            return
        self.started += 1
        self._workers.add(worker)
        self._release(worker)

    async def search(self, q: str, sort: str, options: dict[str, Any]) -> bytes | None:
        if not self._workers:
            return None
        payload = orjson.dumps({"q": q, "sort": sort, "options": options})
        worker = await self._acquire(q)
        if worker is None:
            return None
        worker.typed(q)
        # The exchange finishes even if this request is cancelled (the client went away):
        # a reply left unread in the pipe would be taken as the answer to the next search.
        task = self._track(self._use(worker, payload))
        try:
            kind, body = await asyncio.shield(task)
        except WorkerLost:
            return None
        if kind == ERROR:
            err = orjson.loads(body)
            raise ApiError(err["code"], err["message"], position=err["position"])
        return body

    async def _use(self, worker: Worker, payload: bytes) -> tuple[int, bytes]:
        try:
            answer = await worker.exchange(payload)
        except WorkerLost:
            self._lose(worker)
            raise
        self._release(worker)
        return answer

    async def _acquire(self, q: str) -> Worker | None:
        """An idle worker, the one that last searched a prefix of `q` (or `q` plus letters)
        if it is free: typing `img_2` after `img_` there refines the occurrences it cached
        instead of scanning. Waits in turn when all are busy; None when none is alive."""
        if self._idle:
            best = max(self._idle, key=lambda w: w.affinity(q))
            self._idle.remove(best)
            return best
        if not self._workers:
            return None
        turn: asyncio.Future[Worker | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result() is not None:
                self._release(turn.result())  # handed over as this request went: pass on
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def _release(self, worker: Worker) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(worker)
                return
        self._idle.append(worker)

    def _track(self, work: Any) -> asyncio.Future[Any]:
        """`work` as a task the pool keeps (and cancels on close) until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lose(self, worker: Worker) -> None:
        self.lost += 1
        self._workers.discard(worker)
        worker.kill()
        if not self._workers:  # nobody left to hand a turn to: they search in the server
            while self._waiters:
                turn = self._waiters.popleft()
                if not turn.done():
                    turn.set_result(None)
        log.warning("search worker %d died (exit %s); starting another", worker.proc.pid,
                    worker.proc.returncode)
        if not self._closing:
            self._track(self._replace(worker))

    async def _replace(self, worker: Worker) -> None:
        await worker.proc.wait()
        await asyncio.sleep(RESPAWN_PAUSE_S)
        if not self._closing:
            await self._spawn()

    async def _stop(self, worker: Worker) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            worker.stdin.close()
        try:
            await asyncio.wait_for(worker.proc.wait(), 5)
        except TimeoutError:
            worker.kill()
            await worker.proc.wait()

    async def close(self) -> None:
        """Close every worker's stdin (they exit) and wait for them."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        workers, self._workers = list(self._workers), set()
        await asyncio.gather(*(self._stop(w) for w in workers))


def worker_config(config: Any) -> Any:
    """The server's config with the worker's own defaults for the search caches (settings
    the user gave are kept): a worker does nothing but search, for many typists at once,
    whose keystrokes push each other's entries out of a small cache."""
    from ..config import Config

    flags = {"data_dir": config["data_dir"]}
    for key, value in WORKER_DEFAULTS.items():
        if config.sources[key] == "default":
            flags[key] = value
    return Config(flags)


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def _answer(lib: Any, request: dict[str, Any]) -> tuple[int, bytes]:
    from ..errors import KvmediaError
    from .errors import from_library, internal

    try:
        return ANSWER, search_body(lib, request["q"], request["sort"], request["options"])
    except KvmediaError as exc:
        err = from_library(exc)
    except Exception as exc:  # a bug: answered like the server's own handler does
        log.exception("search worker failed")
        err = internal(exc)
    return ERROR, orjson.dumps({"code": err.code, "message": err.message,
                                "position": err.position})


def main(argv: list[str]) -> int:
    """Worker side: open the library read-only, say ready, answer searches until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..config import Config
    from ..library import Library
    from ..store.env import keep_heap_for_searches

    keep_heap_for_searches()

    data_dir = argv[0]
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames goes to the pipe
    config = worker_config(Config({"data_dir": data_dir}))
    with Library.open(data_dir, config=config, readonly=True) as lib:
        lib.search("", limit=1)  # loads the engine and opens the segments before a request
        stdout.write(FRAME.pack(READY, 0))
        stdout.flush()
        while True:
            head = _read_exactly(stdin, FRAME.size)
            if head is None:
                return 0
            kind, length = FRAME.unpack(head)
            body = _read_exactly(stdin, length)
            if body is None or kind != REQUEST:
                return 0
            out_kind, out = _answer(lib, orjson.loads(body))
            stdout.write(FRAME.pack(out_kind, len(out)) + out)
            stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
