"""The manifest: which segment files (and which deleted-doc bitmaps) make up the index now.

Directory `<data_dir>/searchidx_media/`:

    MANIFEST                  the current manifest (below); replaced atomically
    seg-<gen:06d>.kvs         segment files (format.py), immutable
    seg-<gen:06d>.del-<g:06d> deleted-doc bitmap of a segment as of generation g: numpy
                              packbits (big bit order) over n_docs bits, 1 = deleted; immutable
    .lock                     flock held by the one process merging or rebuilding

MANIFEST file:

    line 1   b"KVMSIDX-MANIFEST 1\\n"
    line 2   JSON {"gen": int, "segments": [{"file": str, "docs": int, "bytes": int,
                   "dead": str | null, "dead_xxh3": int | null, "dead_count": int}]}  + b"\\n"
    line 3   xxh3_64 of lines 1-2 as 16 hex digits

Switching: write `MANIFEST.tmp`, fsync, rename over `MANIFEST`, fsync the directory. Old files
are deleted afterwards; a reader that loses the race re-reads the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import xxhash

from ..errors import BusyError, DamagedError, StorageError
from ..safefs import create_private, fsync_dir

if TYPE_CHECKING:
    import numpy as np

DIR_NAME = "searchidx_media"
MANIFEST = "MANIFEST"
MANIFEST_MAGIC = b"KVMSIDX-MANIFEST 1\n"
LOCK = ".lock"


@dataclass
class SegmentEntry:
    file: str
    docs: int
    bytes: int
    dead: str | None = None
    dead_xxh3: int | None = None
    dead_count: int = 0


@dataclass
class Manifest:
    gen: int = 0
    segments: list[SegmentEntry] = field(default_factory=list)

    def files(self) -> set[str]:
        out = {s.file for s in self.segments}
        out.update(s.dead for s in self.segments if s.dead)
        return out


def _damaged(index_dir: str, why: str) -> DamagedError:
    return DamagedError(f"search index manifest in {index_dir} is damaged: {why}; "
                        "run `kvmedia rebuild-index`", path=index_dir)


def read_manifest(index_dir: str) -> Manifest | None:
    """The current manifest, None when there is none. DamagedError when it fails its check."""
    try:
        with open(os.path.join(index_dir, MANIFEST), "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _damaged(index_dir, exc.strerror or str(exc)) from exc
    body, _, digest = raw.rpartition(b"\n")
    body += b"\n"
    if not raw.startswith(MANIFEST_MAGIC) or len(digest) != 16:
        raise _damaged(index_dir, "bad header or footer")
    if xxhash.xxh3_64_hexdigest(body).encode() != digest:
        raise _damaged(index_dir, "checksum mismatch")
    try:
        data = orjson.loads(body[len(MANIFEST_MAGIC):])
        return Manifest(int(data["gen"]), [SegmentEntry(**s) for s in data["segments"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise _damaged(index_dir, f"unreadable body ({exc})") from exc


def write_manifest(index_dir: str, manifest: Manifest) -> None:
    body = MANIFEST_MAGIC + orjson.dumps(
        {"gen": manifest.gen, "segments": [s.__dict__ for s in manifest.segments]}) + b"\n"
    tmp = os.path.join(index_dir, MANIFEST + ".tmp")
    with open(create_private(tmp), "wb") as fh:
        fh.write(body + xxhash.xxh3_64_hexdigest(body).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(index_dir, MANIFEST))
    fsync_dir(index_dir)


def write_dead(path: str, dead: np.ndarray) -> int:
    import numpy as np

    """Write a deleted-doc bitmap (bool array); returns its xxh3_64."""
    raw = np.packbits(dead.astype(bool)).tobytes()
    tmp = path + ".tmp"
    with open(create_private(tmp), "wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return xxhash.xxh3_64_intdigest(raw)


def read_dead(path: str, n_docs: int, expect_xxh3: int | None) -> np.ndarray:
    import numpy as np

    with open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) != (n_docs + 7) // 8 or xxhash.xxh3_64_intdigest(raw) != expect_xxh3:
        raise DamagedError(f"deleted-doc bitmap {path} is damaged; run `kvmedia rebuild-index`",
                           path=path)
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n_docs).astype(bool)


@contextlib.contextmanager
def merge_lock(index_dir: str, *, wait: bool) -> Iterator[None]:
    """Only one process merges or rebuilds at a time. BusyError when `wait` is False and
    another process holds it."""
    os.makedirs(index_dir, mode=0o700, exist_ok=True)
    path = os.path.join(index_dir, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open the index lock {path}: {exc.strerror}; remove it if "
                           "it is not a regular file", path=path) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise BusyError("another process is merging the search index; retry later",
                            path=index_dir) from exc
        yield
    finally:
        os.close(fd)


def remove_unreferenced(index_dir: str, manifest: Manifest) -> None:
    """Delete segment files the manifest does not name (old generations, aborted writes)."""
    keep = manifest.files() | {MANIFEST, LOCK}
    try:
        names = os.listdir(index_dir)
    except OSError:
        return
    for name in names:
        if name not in keep and name.startswith(("seg-", MANIFEST + ".tmp")):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(index_dir, name))
