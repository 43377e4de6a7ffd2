"""Helpers for the `kvmedia serve` tests (no tests here): a real server in a subprocess on a
free port, and plain HTTP to it with the standard library."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def serve_extra_or_skip() -> None:
    for name in ("starlette", "uvicorn"):
        pytest.importorskip(name, reason="`kvmedia serve` needs the serve extra: "
                                         "pip install -e '.[serve]'")


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:300]!r}>"


class Server:
    """`kvmedia serve --port 0 --json` with its own data dir; `stop()` checks a clean exit."""

    def __init__(self, data_dir: Path, *args: str | bytes, env: dict[str, str] | None = None,
                 timeout_s: float = 60) -> None:
        self.data_dir = data_dir
        self.log_path = Path(str(data_dir) + ".serve.log")
        full_env = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir),
                        KVMEDIA_CONFIG=str(data_dir) + ".toml", **(env or {}))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvmedia", "serve", "--port", "0", "--json", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not start: {self.log()}")
        self.info = json.loads(line)
        assert self.info["type"] == "serving"
        self.host = "127.0.0.1"
        self.port = int(self.info["port"])

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                timeout_s: float = 30) -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                          resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body={} if body is None else body, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server ignored SIGTERM: {self.log()}") from None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def wait_for(predicate: Any, timeout_s: float = 20, interval_s: float = 0.05) -> Any:
    """Poll `predicate()` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {value!r})")
        time.sleep(interval_s)
