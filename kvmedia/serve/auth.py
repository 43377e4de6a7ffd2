"""Who may call the API.

Loopback binds (127.0.0.0/8, ::1, localhost) need no token: only local processes can connect.
Any other bind — or `kvmedia serve --require-token`, or KVMEDIA_SERVE_REQUIRE_TOKEN=1 — is
token mode: every non-public route needs `Authorization: Bearer <token>`, the token being the
content of `<data_dir>/api-token`:

    api-token   43 url-safe characters (32 random bytes) and a newline, mode 0600,
                created once with O_EXCL + link so two servers starting together agree.

Public routes: the page at `/`, `/openapi.json` (they hold no library data) and `/f/<token>`
(a share token is itself an authenticated capability, and <video> tags cannot send headers).

Browsers add two more checks in every mode: a write whose `Origin` is another site is refused
(a page elsewhere cannot trash your files through your own browser), and without a token the
`Host` header must name a loopback address (DNS rebinding cannot reach the API).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from ..errors import StorageError
from .errors import ApiError

TOKEN_FILE = "api-token"
REQUIRE_TOKEN_ENV = "KVMEDIA_SERVE_REQUIRE_TOKEN"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_required(host: str, require_token: bool = False) -> bool:
    """Token mode for this bind address (see the module docstring)."""
    forced = os.environ.get(REQUIRE_TOKEN_ENV, "").lower() in ("1", "true", "yes")
    return require_token or forced or not is_loopback(host)


def token_path(data_dir: str) -> str:
    return os.path.join(data_dir, TOKEN_FILE)


def load_or_create_token(data_dir: str) -> str:
    """The API token, created on first use; a file readable by others is tightened to 0600."""
    path = token_path(data_dir)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            _create(path)
            continue
        with os.fdopen(fd, "r", encoding="ascii") as fh:
            if os.fstat(fh.fileno()).st_mode & 0o077:
                os.fchmod(fh.fileno(), 0o600)
            token = fh.read().strip()
        if len(token) >= 32:
            return token
        raise StorageError(f"{path} holds no usable token; delete it and restart "
                           "`kvmedia serve` to make a new one", path=path)
    raise StorageError(f"cannot create {path}; check the data dir's permissions", path=path)


def _create(path: str) -> None:
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a token another server just wrote
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


class Guard:
    """Checks one request against the rules in the module docstring; raises ApiError."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def check(self, request: Request, public: bool) -> None:
        if request.method not in SAFE_METHODS:
            self._same_origin(request)
        if self.token is None:
            host = request.headers.get("host", "")
            if not is_loopback(urlsplit("//" + host).hostname or ""):
                raise ApiError("forbidden", "this server answers only requests addressed to "
                               "a loopback host; use http://127.0.0.1:<port>/")
            return
        if public:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self.token.encode()):
            raise ApiError("unauthorized", "send `Authorization: Bearer <token>`; the token "
                           "is in <data dir>/api-token", headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _same_origin(request: Request) -> None:
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            raise ApiError("forbidden", "cross-site writes are refused; call the API from its "
                           "own page or from a script")
        origin = request.headers.get("origin")
        if origin is None:  # not a browser, or a same-origin GET-like call
            return
        parts = urlsplit(origin)
        if parts.netloc.lower() != request.headers.get("host", "").lower():
            raise ApiError("forbidden", f"writes from {origin} are refused; call the API from "
                           "its own page or from a script")
