"""Sending a library file: opened safely inside its scan root, streamed with range support.

The file is opened once, component by component from its root with O_NOFOLLOW (safefs), and
everything after — size, ETag, the bytes — comes from that one descriptor, so a path swapped
for a symlink between the check and the read cannot redirect the download.
"""

from __future__ import annotations

import errno
import os
import stat
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import anyio
import xxhash
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .. import safefs
from ..errors import UsageError
from ..pathbytes import display, is_under
from . import ranges
from .errors import ApiError

CHUNK_BYTES = 256 << 10


def open_in_roots(path: bytes, roots: list[bytes]) -> tuple[int, os.stat_result]:
    """A read-only fd of the regular file `path`, which must lie inside one of `roots`."""
    inside = [r for r in roots if is_under(path, r) and path.rstrip(b"/") != r.rstrip(b"/")]
    if not inside:
        raise ApiError("forbidden", f"{display(path)} is outside every scan root; only files "
                       "inside scanned volumes are served")
    root = max(inside, key=len)
    try:
        parts = safefs.components(path, root)
        with safefs.open_dirs(root, parts[:-1]) as dir_fd:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
    except UsageError as exc:
        raise ApiError("forbidden", exc.message) from None
    except FileNotFoundError:
        raise ApiError("not_found", f"{display(path)} is no longer on disk; rescan its "
                       "folder") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ApiError("forbidden", f"{display(path)} goes through a symlink; it is not "
                           "served") from None
        raise ApiError("io", f"cannot open {display(path)}: {exc.strerror}; check its "
                       "permissions") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ApiError("forbidden", f"{display(path)} is not a regular file; it is not served")
    return fd, st


class FileResponse:
    """An ASGI response for an open fd: 200, 206, 304 or 416; HEAD sends headers only.

    Owns `fd`: it is closed when the response is done, sent or not.
    """

    def __init__(self, request: Request, fd: int, st: os.stat_result, name: bytes,
                 *, ctype: str | None = None, cache: str = "private, max-age=0") -> None:
        self.fd = fd
        self.size = st.st_size
        self.head = request.method == "HEAD"
        self.first, self.last = 0, st.st_size - 1
        ctype = ctype or ranges.content_type(name)
        tag = ranges.etag(st)
        modified = formatdate(st.st_mtime, usegmt=True)
        disposition = "attachment" if ranges.is_active(ctype) else "inline"
        self.headers: dict[str, str] = {
            "content-type": ctype, "accept-ranges": "bytes", "etag": tag,
            "last-modified": modified, "cache-control": cache,
            "content-disposition": f"{disposition}; filename*=UTF-8''"
                                   f"{quote(display(name).encode('utf-8'), safe='')}",
            "x-content-type-options": "nosniff", "content-security-policy": "sandbox",
        }
        self.status = 200
        if request.headers.get("if-none-match", "").strip() == tag:
            self.status = 304
            return
        try:
            wanted = ranges.parse_range(request.headers.get("range"), self.size)
        except ranges.Unsatisfiable:
            self.status = 416
            self.headers = {"content-range": f"bytes */{self.size}", "content-type":
                            "application/json"}
            return
        if wanted is not None and ranges.range_applies(request.headers.get("if-range"), tag,
                                                       modified):
            self.first, self.last = wanted
            self.status = 206
            self.headers["content-range"] = f"bytes {self.first}-{self.last}/{self.size}"

    @property
    def length(self) -> int:
        return self.last - self.first + 1 if self.status in (200, 206) else 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = b""
            if self.status == 416:
                body = (b'{"error": {"code": "range_not_satisfiable", "message": "the range '
                        b'starts past the end of the file; ask for bytes below %d", '
                        b'"position": null}}' % self.size)
            headers = {**self.headers, "content-length": str(len(body) or self.length)}
            if self.status == 304:
                del headers["content-length"]
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
            if self.head or self.status in (304, 416):
                await send({"type": "http.response.body", "body": body})
                return
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await self._stream(send)
                tg.cancel_scope.cancel()
        finally:
            os.close(self.fd)

    async def _stream(self, send: Send) -> None:
        offset, left = self.first, self.length
        while left > 0:
            chunk = await anyio.to_thread.run_sync(os.pread, self.fd, min(CHUNK_BYTES, left),
                                                   offset)
            if not chunk:  # the file shrank under us: end early, the length check fails
                break
            offset += len(chunk)
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        if left > 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return



_IMAGE_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def image_type(data: bytes) -> str:
    for magic, ctype in _IMAGE_MAGIC:
        if data.startswith(magic):
            return ctype
    return "image/jpeg"


def thumbnail_response(request: Request, data: bytes | None) -> Any:
    """The image bytes `Library.thumbnail` gave, revalidated by ETag (a thumbnail changes
    when its file does, under the same URL)."""
    from starlette.responses import Response

    if not data:
        raise ApiError("not_found", "this item has no thumbnail (not an image, video or "
                       "audio with cover art, or unreadable); show a placeholder")
    tag = f'"{xxhash.xxh3_64_hexdigest(data)}"'
    headers = {"etag": tag, "cache-control": "private, no-cache",
               "x-content-type-options": "nosniff"}
    if request.headers.get("if-none-match", "").strip() == tag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=image_type(data), headers=headers)
