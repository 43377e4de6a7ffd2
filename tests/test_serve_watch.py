"""`kvmedia serve --watch`: the watcher runs inside the server and its changes are searchable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

from test_serve_support import Server, serve_extra_or_skip, wait_for

serve_extra_or_skip()


def total(server: Server, q: str) -> int:
    return server.get("/api/search?" + urlencode({"q": q})).json()["total"]


def test_watcher_in_the_server_process(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "before_start.jpg").write_bytes(b"x")
    data = tmp_path / "data"
    server = Server(data, "--watch", os.fsencode(vol), "--debounce", "0.1")
    try:
        status = server.get("/api/status").json()
        assert status["features"]["watcher"] is True
        assert status["watcher"]["running"] is True and status["watcher"]["error"] is None
        wait_for(lambda: total(server, "before_start") == 1)  # the scan-on-start
        (vol / "arrived_later.jpg").write_bytes(b"y")
        wait_for(lambda: total(server, "arrived_later") == 1)
        (vol / "arrived_later.jpg").unlink()
        wait_for(lambda: total(server, "arrived_later") == 0)

        env = dict(os.environ, KVMEDIA_DATA_DIR=str(data), KVMEDIA_CONFIG=str(data) + ".toml")
        second = subprocess.run([sys.executable, "-m", "kvmedia", "serve", "--port", "0",
                                 "--watch", os.fsencode(vol)], env=env, capture_output=True,
                                timeout=60)
        assert second.returncode == 4, second.stderr  # one watcher per data dir
        assert b"error" in second.stderr
    finally:
        assert server.stop() == 0, server.log()
