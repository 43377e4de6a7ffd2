"""Token mode of `kvmedia serve`. Binding beyond loopback is never done in tests: the same code
path is forced on 127.0.0.1 with --require-token or KVMEDIA_SERVE_REQUIRE_TOKEN=1."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from test_serve_support import Server, serve_extra_or_skip

serve_extra_or_skip()

from kvmedia import Library  # noqa: E402
from kvmedia.serve.auth import (  # noqa: E402
    REQUIRE_TOKEN_ENV,
    is_loopback,
    load_or_create_token,
    token_path,
    token_required,
)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.10", False), ("10.0.0.1", False), ("nas.local", False), ("", False),
    ("127.0.0.1.evil.example", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_mode_follows_the_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_TOKEN_ENV, raising=False)
    assert token_required("127.0.0.1") is False
    assert token_required("0.0.0.0") is True
    assert token_required("192.168.1.10") is True
    assert token_required("127.0.0.1", require_token=True) is True
    monkeypatch.setenv(REQUIRE_TOKEN_ENV, "1")
    assert token_required("127.0.0.1") is True


def test_token_file_is_private_stable_and_shared(tmp_path: Path) -> None:
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(load_or_create_token(
        str(tmp_path)))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 8 and len(set(tokens)) == 1 and len(tokens[0]) >= 40
    path = token_path(str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["api-token"]  # no temp files left behind
    os.chmod(path, 0o644)
    assert load_or_create_token(str(tmp_path)) == tokens[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, str, str]:
    base = tmp_path_factory.mktemp("auth")
    vol = base / "vol"
    vol.mkdir()
    (vol / "shared_movie.mp4").write_bytes(b"movie-bytes")
    with Library.open(base / "data") as lib:
        lib.scan([os.fsencode(vol)])
        uuid = lib.search("shared_movie").hits[0]["uuid"]
    server = Server(base / "data", "--require-token")
    token = (base / "data" / "api-token").read_text().strip()
    yield server, token, uuid
    assert server.stop() == 0, server.log()


def test_api_needs_the_bearer_token(token_server: tuple[Server, str, str]) -> None:
    server, token, uuid = token_server
    assert server.info["token_required"] is True
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                    {"Authorization": f"Basic {token}"}):
        answer = server.get("/api/count", headers=headers)
        assert answer.status == 401, headers
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    answer = server.post("/api/trash", {"ids": [uuid]})
    assert answer.status == 401
    good = {"Authorization": f"Bearer {token}"}
    assert server.get("/api/count", headers=good).json()["count"] == 1
    assert server.get(f"/api/items/{uuid}", headers=good).json()["uuid"] == uuid


def test_public_routes_in_token_mode(token_server: tuple[Server, str, str]) -> None:
    server, token, uuid = token_server
    assert server.get("/").status == 200
    doc = server.get("/openapi.json").json()
    assert doc["security"] == [{"bearer": []}]
    good = {"Authorization": f"Bearer {token}"}
    url = server.post(f"/api/items/{uuid}/share", headers=good).json()["url"]
    answer = server.get(url)  # a share link works without the API token
    assert (answer.status, answer.body) == (200, b"movie-bytes")
    # token mode does not check the Host header: a NAS is reached by its LAN name
    assert server.get("/api/count", headers={**good, "Host": "nas.local:8765"}).status == 200


def test_env_var_forces_token_mode(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={REQUIRE_TOKEN_ENV: "1"})
    try:
        assert server.info["token_required"] is True
        assert server.get("/api/count").status == 401
        token = (tmp_path / "data" / "api-token").read_text().strip()
        answer = server.get("/api/count", headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 200
    finally:
        assert server.stop() == 0
