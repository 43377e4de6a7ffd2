"""Security through the HTTP API and share tokens, with figures for the report.

- Path traversal payloads in every route that takes an id, a token or a path (raw request
  targets, percent-encoded and doubly encoded dots, NUL, backslashes): never a byte of a file
  outside the volume, never a 5xx, and no file on disk changed by the attempt.
- Share tokens with every bit flipped, truncated, extended, swapped between two libraries (two
  keys, two volumes) and used after key rotation: 0 accepted, by the library and by `/f/`.
"""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_serve_support import Server, serve_extra_or_skip

from kvmedia import Library
from kvmedia.errors import KvmediaError

SECRET = b"secret bytes outside every volume\n"

PAYLOADS = ["../../../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd",
            "%2e%2e/%2e%2e/secret.txt", "%252e%252e%252fsecret.txt", "..\\..\\secret.txt",
            "/etc/passwd", "{outside}", "{vol}/../outside/secret.txt", "{vol}/a.jpg%00.txt",
            "....//....//secret.txt", "%c0%ae%c0%ae/secret.txt", "~root/.ssh/id_rsa",
            "{vol}/a.jpg/..", "00000000-0000-0000-0000-000000000000/../../secret.txt"]


def _raw(srv: Server, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request with `target` sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    serve_extra_or_skip()
    base = tmp_path_factory.mktemp("httpsec")
    vol = base / "vol"
    (vol / "sub").mkdir(parents=True)
    (vol / "a.jpg").write_bytes(b"a-bytes")
    (vol / "sub" / "b.jpg").write_bytes(b"b-bytes")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    data_dir = base / "data"
    with Library.open(data_dir) as lib:
        lib.scan([vol])
        rec = lib.find_by_path(str(vol / "a.jpg"))
        assert rec is not None
        token = lib.share_id(rec["uuid"])
    server = Server(data_dir)
    yield {"srv": server, "vol": vol, "outside": outside / "secret.txt", "token": token,
           "uuid": rec["uuid"], "data_dir": data_dir, "base": base}
    assert server.stop() == 0, server.log()


def _targets(payload: str, site: dict[str, Any]) -> list[tuple[str, str, bytes | None]]:
    ref = payload.format(vol=site["vol"], outside=site["outside"])
    enc = quote(ref, safe="/%")
    out: list[tuple[str, str, bytes | None]] = [
        ("GET", f"/f/{enc}", None),
        ("GET", f"/f/{site['token']}/{enc}", None),
        ("GET", f"/api/items/{enc}", None),
        ("GET", f"/api/items/{enc}/thumbnail", None),
        ("GET", f"/api/items/{enc}/similar", None),
        ("POST", f"/api/items/{enc}/share", None),
        ("GET", f"/{enc}", None),
        ("GET", f"/api/search?q=path:{quote(ref)}", None),
        ("GET", f"/api/media?path={quote(ref)}", None),
    ]
    for verb in ("trash", "restore", "delete", "probe"):
        body = json.dumps({"ids": [ref]}).encode()
        out.append(("POST", f"/api/{verb}", body))
    return out


@pytest.mark.parametrize("payload", PAYLOADS)
def test_traversal_payloads_over_http(site: dict[str, Any], payload: str, figures) -> None:
    srv: Server = site["srv"]
    before = {p: p.read_bytes() for p in (site["vol"] / "a.jpg", site["vol"] / "sub" / "b.jpg",
                                          site["outside"])}
    for method, target, body in _targets(payload, site):
        figures.add("security", "bad inputs tried")
        try:
            status, answer = _raw(srv, method, target, body)
        except http.client.HTTPException:  # the server refused the request line: fine
            continue
        assert status < 500, (method, target, status, answer[:300])
        assert SECRET not in answer, (method, target)
        if target.startswith("/f/"):
            assert status in (400, 404), (method, target, status)
    after = {p: p.read_bytes() for p in before}
    assert after == before
    figures.add("security", "http routes probed", len(_targets(payload, site)))


def _b64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _tok(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tampered_share_tokens_never_accepted(site: dict[str, Any], tmp_path: Path,
                                              figures) -> None:
    """Every bit of the token flipped, every truncation, extensions, a token of another
    library and volume, and tokens after a key rotation: the library and `/f/` refuse all."""
    srv: Server = site["srv"]
    token = site["token"]
    raw = _b64(token)
    bad: list[str] = []
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        bad.append(_tok(bytes(flipped)))
    bad += [token[:cut] for cut in range(len(token))]
    bad += [token + extra for extra in ("A", "AA", "AAAA", token)]
    other_vol = tmp_path / "other-vol"
    other_vol.mkdir()
    (other_vol / "a.jpg").write_bytes(b"other volume")
    with Library.open(tmp_path / "other-lib") as other:  # another key, another volume
        other.scan([other_vol])
        rec = other.find_by_path(str(other_vol / "a.jpg"))
        assert rec is not None
        bad.append(other.share_id(rec["uuid"]))
    accepted = 0
    with Library.open(site["data_dir"], readonly=True) as lib:
        for text in bad:
            try:
                lib.resolve_share(text)
                accepted += 1
            except KvmediaError:
                pass
    for text in bad[:: max(1, len(bad) // 150)]:  # a sample over HTTP too (each a request)
        status, answer = _raw(srv, "GET", f"/f/{quote(text, safe='')}")
        accepted += status == 200
        assert b"a-bytes" not in answer
    figures.add("security", "share tokens tampered", len(bad))

    # After a rotation the old token stops working everywhere; a new one works.
    assert _raw(srv, "GET", f"/f/{token}")[0] == 200
    with Library.open(site["data_dir"]) as lib:
        lib.rotate_share_key()
        fresh = lib.share_id(site["uuid"])
    figures.add("security", "share tokens tampered")
    status, _ = _raw(srv, "GET", f"/f/{token}")
    accepted += status == 200
    assert _raw(srv, "GET", f"/f/{fresh}") == (200, b"a-bytes")
    figures.add("security", "share tokens accepted", accepted)
    assert accepted == 0
