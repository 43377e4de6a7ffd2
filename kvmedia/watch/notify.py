"""`kvmedia notify`: firmware pushes changed paths to the running watcher over a unix socket.

    <data dir>/watcher.sock   mode 0600 (and the data dir is 0700): only the owner can talk

Protocol: one JSON line each way per connection.
    request   {"op": "notify", "paths_b64": [<base64 of the raw path bytes>...], "wait": bool}
              {"op": "ping"}
    reply     {"ok": true, "queued": N, "applied": bool} | {"ok": true, "pid": P}
              | {"ok": false, "error": "..."}
With "wait", the reply comes once the paths are committed (or after the server's wait limit,
with "applied": false): when `kvmedia notify` returns, a search in any process sees them.

Unix socket paths are limited to ~108 bytes; a longer data dir is reached through
`/proc/self/fd/<fd of the data dir>/watcher.sock`, which the kernel resolves to the same file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

SOCKET_NAME = "watcher.sock"
SUN_PATH_MAX = 100
MAX_REQUEST_BYTES = 64 << 20
SERVER_WAIT_S = 300.0

NotifySink = Callable[[list[bytes], threading.Event | None], None]


@contextlib.contextmanager
def _socket_path(data_dir: str) -> Iterator[str]:
    path = os.path.join(data_dir, SOCKET_NAME)
    if len(os.fsencode(path)) < SUN_PATH_MAX:
        yield path
        return
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


def _recv_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_REQUEST_BYTES:
            break
    return b"".join(chunks)


class NotifyServer:
    """Accepts notify requests on the data dir's socket and hands paths to `sink`."""

    def __init__(self, data_dir: str, sink: NotifySink, *, wait_s: float = SERVER_WAIT_S) -> None:
        self.data_dir = data_dir
        self.sink = sink
        self.wait_s = wait_s
        self.path = os.path.join(data_dir, SOCKET_NAME)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket: the caller holds the data-dir lock) and serve."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            with _socket_path(self.data_dir) as path:
                sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="kvmedia-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                reply = self._reply(_recv_line(conn))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(orjson.dumps(reply) + b"\n")

    def _reply(self, raw: bytes) -> dict[str, Any]:
        request = orjson.loads(raw)
        if request.get("op") == "ping":
            return {"ok": True, "pid": os.getpid()}
        if request.get("op") != "notify":
            return {"ok": False, "error": f"unknown op {request.get('op')!r}"}
        paths = [base64.b64decode(p) for p in request["paths_b64"]]
        done = threading.Event() if request.get("wait") else None
        self.sink(paths, done)
        applied = done.wait(self.wait_s) if done is not None else False
        return {"ok": True, "queued": len(paths), "applied": applied}


def send_notify(data_dir: str, paths: Sequence[bytes], *, wait: bool = True,
                timeout_s: float = SERVER_WAIT_S + 10) -> dict[str, Any] | None:
    """Hand `paths` to the running watcher. None when no watcher listens (apply directly)."""
    request = {"op": "notify", "paths_b64": [base64.b64encode(p).decode() for p in paths],
               "wait": wait}
    return _request(data_dir, request, timeout_s)


def ping(data_dir: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    return _request(data_dir, {"op": "ping"}, timeout_s)


def _request(data_dir: str, request: dict[str, Any], timeout_s: float
             ) -> dict[str, Any] | None:
    if not os.path.exists(os.path.join(data_dir, SOCKET_NAME)):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with sock:
        sock.settimeout(timeout_s)
        try:
            with _socket_path(data_dir) as path:
                sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a stale socket left by a killed watcher
        sock.sendall(orjson.dumps(request) + b"\n")
        raw = _recv_line(sock)
    if not raw:
        return None
    reply = orjson.loads(raw)
    return reply if isinstance(reply, dict) else None
