"""Opaque share IDs: a URL-safe token a NAS web server can put in a link, and its inverse.

Token (base64url, no padding) of:

    version   u8        1
    nonce     12 bytes  random per token
    sealed    ChaCha20-Poly1305(key, nonce, payload, aad=b"kvmedia-share:1")
              payload = uuid (16 bytes) | path bytes ; 16-byte tag at the end

Authenticated encryption: a token with any bit flipped, cut short, extended or sealed under
another key fails the tag check and is refused; it never decrypts to garbage. Resolving
prefers the uuid (the link follows a rename or move) and falls back to the path.

Key file `<data dir>/share.key`: 32 random bytes, mode 0600, created on first use without
ever replacing an existing key (write a temp file, then link(2) it into place), never
followed through a symlink. `rotate()` replaces it atomically, which revokes every token.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import uuid as _uuid

from .errors import DamagedError, StorageError, UsageError

KEY_NAME = "share.key"
KEY_BYTES = 32
VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
AAD = b"kvmedia-share:1"
MAX_TOKEN_CHARS = 8192


def _key_path(data_dir: str) -> str:
    return os.path.join(data_dir, KEY_NAME)


def _write_temp(data_dir: str, key: bytes) -> str:
    tmp = os.path.join(data_dir, f".{KEY_NAME}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _read_key(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{path} is a symlink; refusing it. Remove it and retry",
                               path=path) from exc
        raise StorageError(f"cannot read {path}: {exc.strerror}", path=path) from exc
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # a looser mode leaks every share link: tighten it
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise DamagedError(f"{path} is not a {KEY_BYTES}-byte key; run `kvmedia share-key "
                           "rotate` to make a new one (old links stop working)", path=path)
    return key


def load_key(data_dir: str, *, create: bool = True) -> bytes | None:
    path = _key_path(data_dir)
    key = _read_key(path)
    if key is not None or not create:
        return key
    tmp = _write_temp(data_dir, os.urandom(KEY_BYTES))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        os.unlink(tmp)
    key = _read_key(path)
    assert key is not None
    return key


def rotate(data_dir: str) -> None:
    """A new key, atomically: every token minted before stops resolving."""
    tmp = _write_temp(data_dir, os.urandom(KEY_BYTES))
    os.replace(tmp, _key_path(data_dir))
    dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _aead(key: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key)


def seal(key: bytes, uuid: str | None, path: bytes) -> str:
    uuid_raw = _uuid.UUID(uuid).bytes if uuid else bytes(16)
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aead(key).encrypt(nonce, uuid_raw + path, AAD)
    raw = bytes([VERSION]) + nonce + sealed
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _invalid() -> UsageError:
    return UsageError("share token is invalid, damaged or revoked (key rotated); "
                      "ask for a new link")


def open_token(key: bytes, token: str) -> tuple[str | None, bytes]:
    """(uuid or None, path) sealed in `token`; UsageError for anything not minted by `key`."""
    from cryptography.exceptions import InvalidTag

    text = token.strip()
    if not text or len(text) > MAX_TOKEN_CHARS or not text.isascii():
        raise _invalid()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _invalid() from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise _invalid()  # non-canonical spelling (stray bits in the last char)
    if len(raw) < 1 + NONCE_BYTES + TAG_BYTES + 16 or raw[0] != VERSION:
        raise _invalid()
    nonce = raw[1:1 + NONCE_BYTES]
    try:
        payload = _aead(key).decrypt(nonce, raw[1 + NONCE_BYTES:], AAD)
    except InvalidTag as exc:
        raise _invalid() from exc
    uuid_raw, path = payload[:16], payload[16:]
    uuid = str(_uuid.UUID(bytes=uuid_raw)) if any(uuid_raw) else None
    return uuid, path
