"""A small HTTP client for OpenAI-compatible APIs (chat, transcription, embeddings).

Retries what is worth retrying — 429, 5xx, timeouts, refused connections — with exponential
backoff and jitter, honouring `Retry-After` (seconds or an HTTP date) up to `max_wait_s`.
A wait longer than that, or a run out of attempts, raises `ApiError(retry_at=...)` so the
caller queues the item instead of blocking. Other 4xx answers are not retried. Keys come
from an environment variable or a file only its owner can read (`read_api_key`).
"""

from __future__ import annotations

import email.utils
import os
import random
import stat
import time
import urllib.error
import urllib.request
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import EXIT_IO, KvmediaError, UsageError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ApiError(KvmediaError):
    """The remote API failed; `retry_at` (unix seconds) says when trying again makes sense."""

    exit_code = EXIT_IO
    code = "api"

    def __init__(self, message: str, *, status: int | None = None,
                 retry_at: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_at = retry_at


def read_api_key(env_var: str, key_file: str | None) -> str | None:
    """The API key from `env_var`, else from `key_file` (which must be mode 0600 or stricter)."""
    value = os.environ.get(env_var)
    if value:
        return value.strip()
    if not key_file:
        return None
    try:
        st = os.stat(key_file)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"API key file {key_file} is readable by others; "
                             f"run `chmod 600 {key_file}`", path=key_file)
        with open(key_file, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError as exc:
        raise UsageError(f"cannot read API key file {key_file}: {exc.strerror}; fix the path "
                         "or unset it", path=key_file) from exc


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 120.0,
                 max_attempts: int = 5, backoff_s: float = 1.0, max_wait_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"API base URL must start with http:// or https://: {base_url!r}; "
                             "fix it with `kvmedia config set`")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.requests = 0  # HTTP requests sent, retries included

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request(path, orjson.dumps(body), "application/json")

    def post_multipart(self, path: str, fields: dict[str, str],
                       files: dict[str, tuple[str, bytes, str]]) -> dict[str, Any]:
        boundary = "kvmedia-" + uuidlib.uuid4().hex
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                         f"\r\n\r\n{value}\r\n".encode())
        for name, (filename, data, ctype) in files.items():
            safe = filename.replace('"', "_").encode("utf-8", "replace")
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                         .encode() + b'filename="' + safe + b'"\r\n' +
                         f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self._request(path, b"".join(parts), f"multipart/form-data; boundary={boundary}")

    def _request(self, path: str, data: bytes, content_type: str) -> dict[str, Any]:
        url = self.base_url + "/" + path.lstrip("/")
        headers = {"Content-Type": content_type, "Accept": "application/json",
                   "User-Agent": "kvmedia"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = "no attempt made"
        for attempt in range(self.max_attempts):
            wait: float | None = None
            self.requests += 1
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    body = resp.read()
                try:
                    out = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise ApiError(f"{url} answered with something that is not JSON; check "
                                   "the API base URL") from exc
                if not isinstance(out, dict):
                    raise ApiError(f"{url} answered with unexpected JSON; check the API")
                return out
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {exc.code} from {url}: {detail}"
                if exc.code not in RETRY_STATUS:
                    raise ApiError(f"{last}; check the API key, model and base URL",
                                   status=exc.code) from exc
                wait = parse_retry_after(exc.headers.get("Retry-After"), time.time())
                status: int | None = exc.code
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"cannot reach {url}: {getattr(exc, 'reason', exc)}"
                status = None
            if wait is None:
                wait = self.backoff_s * (2 ** attempt) * (0.5 + random.random() / 2)
            if wait > self.max_wait_s or attempt == self.max_attempts - 1:
                raise ApiError(f"{last}; the item stays queued: retry later with "
                               "`kvmedia analyze`", status=status, retry_at=time.time() + wait)
            self.sleep(wait)
        raise ApiError(last)
