"""Paths are bytes on Linux. This module is the one place that turns them into text.

Two forms exist:
- for JSON (records, `--json` output): a field holds `str` when the bytes are valid UTF-8,
  otherwise the field is renamed `<field>_bytes` and holds standard base64 of the raw bytes.
  Both forms decode back to the exact original bytes.
- for humans: valid UTF-8 printed as is, except control characters and invalid bytes which
  are shown as backslash escapes (`\\x1b`, `\\xff`) so a hostile name cannot drive the terminal.
"""

from __future__ import annotations

import base64
import os
from typing import Any

BYTES_SUFFIX = "_bytes"


def to_bytes(path: str | bytes | os.PathLike[Any]) -> bytes:
    """Any path-like to bytes, exactly as the OS would see it."""
    return os.fsencode(path)


def set_field(obj: dict[str, Any], field: str, value: bytes | None) -> None:
    """Store `value` in `obj` under `field` (UTF-8 text) or `field_bytes` (base64)."""
    obj.pop(field, None)
    obj.pop(field + BYTES_SUFFIX, None)
    if value is None:
        obj[field] = None
        return
    try:
        obj[field] = value.decode("utf-8")
    except UnicodeDecodeError:
        obj[field + BYTES_SUFFIX] = base64.b64encode(value).decode("ascii")


def get_field(obj: dict[str, Any], field: str) -> bytes | None:
    """Inverse of `set_field`: the exact bytes, or None when absent / null."""
    raw = obj.get(field + BYTES_SUFFIX)
    if raw is not None:
        return base64.b64decode(raw)
    text = obj.get(field)
    if text is None:
        return None
    return text.encode("utf-8")


def display(value: bytes | str | None) -> str:
    """Human-safe text: control chars and undecodable bytes become visible escapes."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    text = value.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def is_under(path: bytes, root: bytes) -> bool:
    """True when `path` is `root` or inside it, on a path-component boundary.

    `/mnt/usb1` is not under `/mnt/usb10`'s parent match: `/mnt/usb10/x` is not under `/mnt/usb1`.
    """
    if root == b"/":
        return path.startswith(b"/")
    root = root.rstrip(b"/")
    return path == root or path.startswith(root + b"/")


def dir_prefix(root: bytes) -> bytes:
    """`root` with exactly one trailing slash: the byte prefix of everything under it."""
    return root.rstrip(b"/") + b"/"
