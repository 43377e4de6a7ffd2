"""The on-disk vector index file, `<data_dir>/vectors/<model slug>.kvv`.

    magic       8 bytes   b"KVMVEC\\x00\\x01" (format version 1 in the last byte)
    header_len  u32 BE    length of the header
    header      JSON      {"model", "dim", "kind", "count", "next_vid", "stale",
                           "trained_for", "built_at", "backend"}: `next_vid` is the first
                           vector id NOT folded in (the delta starts there); `stale` counts
                           entries known to be superseded; `trained_for` the vector count
                           the IVF lists were trained on (4x that many: rebuild)
    payload     bytes     faiss.serialize_index output, or for kind "numpy" ids int64 LE
                          [count] then vectors float32 LE [count, dim]
    checksum    8 bytes   xxh3_64 (BE) of everything before it

Written to a temporary file, fsync'ed, renamed over the old one, directory fsync'ed: a crash
leaves the old file or the new one. A file that fails its magic, length or checksum raises
`DamagedError`; callers rebuild it from LMDB (search scans the stored vectors meanwhile).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson
import xxhash

from ..errors import DamagedError, StorageError
from ..safefs import create_private

MAGIC = b"KVMVEC\x00\x01"
_LEN = struct.Struct(">I")
_SUM = struct.Struct(">Q")


def write_snapshot(path: str, header: dict[str, Any], payload: bytes) -> None:
    head = orjson.dumps(header)
    body_head = MAGIC + _LEN.pack(len(head)) + head
    digest = xxhash.xxh3_64()
    digest.update(body_head)
    digest.update(payload)
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(create_private(tmp), "wb") as fh:
            fh.write(body_head)
            fh.write(payload)
            fh.write(_SUM.pack(digest.intdigest()))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StorageError(f"cannot write vector index {path}: {exc.strerror}; check free "
                           "space and permissions", path=path) from exc


def read_snapshot(path: str) -> tuple[dict[str, Any], memoryview]:
    """(header, payload) of a vector index file; FileNotFoundError when there is none."""
    with open(path, "rb") as fh:
        data = fh.read()
    hint = "; run `kvmedia embed --rebuild-index` (it is rebuilt from stored embeddings)"
    if len(data) < len(MAGIC) + _LEN.size + _SUM.size or not data.startswith(MAGIC):
        raise DamagedError(f"vector index {path} is not a kvmedia vector file{hint}", path=path)
    (stored,) = _SUM.unpack_from(data, len(data) - _SUM.size)
    if xxhash.xxh3_64_intdigest(memoryview(data)[: -_SUM.size]) != stored:
        raise DamagedError(f"vector index {path} failed its checksum{hint}", path=path)
    (head_len,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        header = orjson.loads(data[start : start + head_len])
    except orjson.JSONDecodeError as exc:
        raise DamagedError(f"vector index {path} has a bad header{hint}", path=path) from exc
    return header, memoryview(data)[start + head_len : -_SUM.size]
