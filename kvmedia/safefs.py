"""File moves that cannot be tricked out of a volume: directory fds, O_NOFOLLOW, no-replace.

Every path an operation touches is opened component by component from a trusted base
directory (a scan root or mount point) with `O_DIRECTORY | O_NOFOLLOW`, so a `..`, a symlinked
parent or a directory swapped for a symlink between check and use can never redirect a move
or an unlink outside the base. Moves use `renameat2(RENAME_NOREPLACE)`, so they never
overwrite; on file systems without it (EINVAL/ENOSYS) a check-then-rename fallback is used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import UsageError
from .pathbytes import display, is_under

RENAME_NOREPLACE = 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def components(path: bytes, base: bytes) -> list[bytes]:
    """The components of `path` below `base`; UsageError for `.`/`..`/empty ones or outside."""
    if not path.startswith(b"/") or b"\0" in path:
        raise UsageError(f"not an absolute path: {display(path)}; give a full path")
    if not is_under(path, base) or path.rstrip(b"/") == base.rstrip(b"/"):
        raise UsageError(
            f"{display(path)} is outside {display(base)}; refusing to move it across volumes")
    rest = path[len(base.rstrip(b"/")) + 1:] if base != b"/" else path[1:]
    parts = rest.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise UsageError(f"path {display(path)} has empty, '.' or '..' components; refusing it")
    return parts


def open_base(base: bytes) -> int:
    """Open a trusted base directory (scan roots are stored already resolved)."""
    return os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_child_dir(dir_fd: int, name: bytes, *, create: bool = False, mode: int = 0o755) -> int:
    """Open directory `name` inside `dir_fd` without following a symlink; mkdir it if asked."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass  # created meanwhile by someone else: open it below, still without following
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


@contextmanager
def open_dirs(base: bytes, parts: list[bytes], *, create: bool = False) -> Iterator[int]:
    """Yield an fd of base/parts[0]/.../parts[-1], each step O_NOFOLLOW; closed afterwards."""
    fd = open_base(base)
    try:
        for name in parts:
            child = open_child_dir(fd, name, create=create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def create_private(path: str | bytes) -> int:
    """A new 0600 file at `path`, open for writing. Whatever sits there (a stale temp file, or
    a symlink planted to redirect the write) is unlinked first - the link, never its target -
    and O_EXCL | O_NOFOLLOW make sure the file opened is the one created here."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o600)


def fsync_dir(path: str | bytes) -> None:
    """Make a rename or create inside `path` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_regular(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISREG(st.st_mode)


def rename_noreplace(src_fd: int, src_name: bytes, dst_fd: int, dst_name: bytes) -> None:
    """Move without ever replacing: FileExistsError when `dst_name` exists."""
    if _renameat2 is not None:
        if _renameat2(src_fd, src_name, dst_fd, dst_name, RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err))
    # No renameat2 on this file system: check, then rename (a narrow race, the best available).
    if lstat_at(dst_fd, dst_name) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def rmdir_if_empty(dir_fd: int, name: bytes) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass
