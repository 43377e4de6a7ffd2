"""`DocRow`: the searchable part of one record, and its packed form kept in the LMDB delta.

A record is searchable by its name, the folder of its current path, and a few columns used by
filters and sorting. The folder is `path` up to its last "/" (b"" for a file in "/").

Packed delta value (all integers big-endian), written by the record's transaction:

    mtime_ns  i64 | size i64 | type u8 | trash u8 | dur f32 (NaN: unknown) | width u32 | height u32
    then five length-prefixed (u32) byte strings:
    name (raw bytes) | dir (raw bytes) | ext (UTF-8) | norm(name) | norm_dir(dir)   (surrogatepass)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..pathbytes import get_field
from . import analysis as A

TYPE_CODES = {"audio": 1, "video": 2, "image": 3, "other": 4}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}

_FIXED = struct.Struct(">qqBBfII")
_LEN = struct.Struct(">I")
_F32 = struct.Struct(">f")


@dataclass(slots=True)
class DocRow:
    uuid: str
    name: bytes
    dir: bytes
    nname: str
    ndir: str
    mtime_ns: int
    size: int
    type_code: int
    trash: bool
    ext: str
    dur: float
    width: int
    height: int

    @property
    def text(self) -> str:
        """The text a query word is matched against: folder + "/" + name, normalised."""
        return self.ndir + "/" + self.nname

    def pack(self) -> bytes:
        parts = [_FIXED.pack(self.mtime_ns, self.size, self.type_code, int(self.trash),
                             self.dur, self.width, self.height)]
        for field in (self.name, self.dir, self.ext.encode(), A.encode(self.nname),
                      A.encode(self.ndir)):
            parts.append(_LEN.pack(len(field)))
            parts.append(field)
        return b"".join(parts)

    @classmethod
    def unpack(cls, uuid: str, raw: bytes) -> DocRow:
        mtime_ns, size, type_code, trash, dur, width, height = _FIXED.unpack_from(raw, 0)
        pos = _FIXED.size
        fields = []
        for _ in range(5):
            (n,) = _LEN.unpack_from(raw, pos)
            pos += 4
            fields.append(raw[pos:pos + n])
            pos += n
        name, dir_, ext, nname, ndir = fields
        return cls(uuid, name, dir_, nname.decode("utf-8", "surrogatepass"),
                   ndir.decode("utf-8", "surrogatepass"), mtime_ns, size, type_code,
                   bool(trash), ext.decode(), dur, width, height)


def _dim(value: Any) -> int:
    """A width or height as stored in the u32 columns; 0 when unknown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(float(value)), 0xFFFFFFFF))


def doc_from_record(rec: dict[str, Any],
                    norm_dir: Callable[[bytes], str] = A.norm_dir) -> DocRow:
    """The searchable part of a record (runs for every record of a full rebuild: kept lean,
    positional, one dict lookup per field). Numbers that are not numbers (a bool, a string)
    count as unknown. `norm_dir`: where a caller already knows most folders' search form."""
    get = rec.get
    path = get_field(rec, "path") or b""
    slash = path.rfind(b"/")
    name = get_field(rec, "name")
    if name is None:
        name = path[slash + 1:]
    dur = get("duration_sec")
    if dur is None or isinstance(dur, bool) or not isinstance(dur, int | float):
        dur = math.nan
    else:
        dur = _F32.unpack(_F32.pack(float(dur)))[0]  # as stored
    dir_ = path[:slash] if slash >= 0 else b""
    return DocRow(rec["uuid"], name, dir_, A.norm(A.decode(name)), norm_dir(dir_),
                  int(get("mtime_ns") or 0), int(get("size") or 0),
                  TYPE_CODES.get(get("type") or "other", 4), bool(get("is_trash")),
                  str(get("ext") or "").lower(), dur, _dim(get("width")), _dim(get("height")))
