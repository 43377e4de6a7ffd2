"""LMDB key encodings. Byte order of every key family IS the wanted order.

    media:uuid:<uuid>                                   -> record JSON (orjson)
    media:path:<pathkey>                                -> PathValue (uuid + change stamp)
    media:fid:<xxh64(fs_uuid) hex16>:<ino>:<ctime_s>    -> uuid
    media:type:<type>:trash:<0|1>:<kind>:<sortkey>:<uuid'> -> b""   (type also "all")
    media:stats:<type>:trash:<0|1>                      -> StatsValue (count, bytes)
    media:root:<root path>                              -> root JSON (see library.py)
    meta:schema                                         -> schema version (ascii int)
    audit:<seq %016d>                                   -> audit JSON (audit.py)

<pathkey> is the raw path bytes. Paths longer than PATH_KEY_MAX bytes (LMDB keys are at most
511 bytes) become `path[:PATH_KEY_MAX] + b"\\0" + xxh128(path)`: no real path holds a NUL, so
these never collide with short ones; the record holds the full path.

Sort keys (kind -> <sortkey>), each followed by ":" and the uuid:
    mod / moddesc    20 decimal digits of mtime_ns + 2**63 (negative times sort first) /
                     of 2**64-1 minus that
    size / sizedesc  20 decimal digits of size / of 2**64-1 minus size
    name / namedesc  NAME_KEY(name) + b"\\0" / every byte of that XOR 0xFF
NAME_KEY is the case-folded NFC name in UTF-8 (invalid bytes kept as they are), cut to
NAME_KEY_MAX bytes. The NUL terminator makes name keys prefix-free, so "ab" < "abc" holds in
both directions. Ties are broken by the uuid; in desc kinds the uuid's hex digits are
complemented (d -> f-d), so every desc listing is the exact reverse of its asc listing.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import xxhash

UUID_LEN = 36
PATH_KEY_MAX = 400
NAME_KEY_MAX = 240
KINDS = ("mod", "moddesc", "name", "namedesc", "size", "sizedesc")
ALL = "all"
U64 = (1 << 64) - 1

P_UUID = b"media:uuid:"
P_PATH = b"media:path:"
P_FID = b"media:fid:"
P_TYPE = b"media:type:"
P_STATS = b"media:stats:"
P_ROOT = b"media:root:"
K_SCHEMA = b"meta:schema"

_HEX = "0123456789abcdef"
_COMPLEMENT = str.maketrans(_HEX, _HEX[::-1])
_INVERT = bytes(255 - i for i in range(256))


def uuid_key(uuid: str) -> bytes:
    return P_UUID + uuid.encode("ascii")


def path_key(path: bytes) -> bytes:
    if len(path) <= PATH_KEY_MAX:
        return P_PATH + path
    return P_PATH + path[:PATH_KEY_MAX] + b"\0" + xxhash.xxh128_digest(path)


def path_from_key(key: bytes) -> bytes | None:
    """The path of a short path key; None for a hashed long one (read the record instead)."""
    raw = key[len(P_PATH) :]
    return None if b"\0" in raw else raw


@lru_cache(maxsize=256)
def fs_hash(fs_uuid: str) -> bytes:
    return xxhash.xxh64_hexdigest(fs_uuid.encode("utf-8")).encode("ascii")


def fid_prefix(fs_uuid: str, ino: int) -> bytes:
    """All fid keys of one inode (any ctime). The trailing ":" keeps ino 42 apart from 421."""
    return P_FID + fs_hash(fs_uuid) + b":%d:" % ino


def fid_key(fs_uuid: str, ino: int, ctime_s: int) -> bytes:
    return fid_prefix(fs_uuid, ino) + b"%d" % ctime_s


def name_sort_key(name: bytes) -> bytes:
    """Case- and normalisation-insensitive name order; invalid UTF-8 bytes kept verbatim."""
    if name.isascii():  # casefold is lower() and NFC the identity on ASCII
        return name.lower()[:NAME_KEY_MAX]
    text = name.decode("utf-8", "surrogateescape")
    folded = unicodedata.normalize("NFC", text.casefold())
    return folded.encode("utf-8", "surrogateescape")[:NAME_KEY_MAX]


def complement_uuid(uuid: str) -> str:
    """Hex digits d -> f-d: reverses uuid order, keeps the shape; its own inverse."""
    return uuid.translate(_COMPLEMENT)


def sort_key(kind: str, record_name: bytes, mtime_ns: int, size: int) -> bytes:
    if kind == "mod":
        return b"%020d" % (mtime_ns + (1 << 63))
    if kind == "moddesc":
        return b"%020d" % (U64 - (mtime_ns + (1 << 63)))
    if kind == "size":
        return b"%020d" % size
    if kind == "sizedesc":
        return b"%020d" % (U64 - size)
    if kind == "name":
        return name_sort_key(record_name) + b"\0"
    if kind == "namedesc":
        return (name_sort_key(record_name) + b"\0").translate(_INVERT)
    raise ValueError(f"unknown sort kind {kind!r}")


def type_prefix(media_type: str, trash: bool, kind: str) -> bytes:
    return _PREFIXES.get((media_type, bool(trash), kind)) or (
        P_TYPE + f"{media_type}:trash:{int(trash)}:{kind}:".encode("ascii")
    )


_PREFIXES = {
    (t, tr, k): P_TYPE + f"{t}:trash:{int(tr)}:{k}:".encode("ascii")
    for t in ("audio", "video", "image", "other", ALL)
    for tr in (False, True)
    for k in KINDS
}


_FAMILY: dict[tuple[str, bool], tuple[bytes, ...]] = {
    (t, tr): tuple(_PREFIXES[(t, tr, k)] for k in KINDS)
    for t in ("audio", "video", "image", "other", ALL)
    for tr in (False, True)
}


def type_keys(media_type: str, trash: bool, name: bytes, mtime_ns: int, size: int, uuid: str
              ) -> list[bytes]:
    """The twelve type keys of one record (its own type and "all", six kinds each)."""
    u = b":" + uuid.encode("ascii")
    cu = b":" + uuid.translate(_COMPLEMENT).encode("ascii")
    mod = mtime_ns + (1 << 63)
    name_asc = name_sort_key(name) + b"\0"
    tails = (
        b"%020d%s" % (mod, u),
        b"%020d%s" % (U64 - mod, cu),
        name_asc + u,
        name_asc.translate(_INVERT) + cu,
        b"%020d%s" % (size, u),
        b"%020d%s" % (U64 - size, cu),
    )
    own = _FAMILY.get((media_type, trash)) or tuple(
        type_prefix(media_type, trash, k) for k in KINDS)
    every = _FAMILY[(ALL, trash)]
    return ([p + t for p, t in zip(own, tails, strict=True)]
            + [p + t for p, t in zip(every, tails, strict=True)])


def type_key(
    media_type: str, trash: bool, kind: str, name: bytes, mtime_ns: int, size: int, uuid: str
) -> bytes:
    tail = complement_uuid(uuid) if kind.endswith("desc") else uuid
    return (
        type_prefix(media_type, trash, kind)
        + sort_key(kind, name, mtime_ns, size)
        + b":"
        + tail.encode("ascii")
    )


def uuid_from_type_key(key: bytes) -> str:
    tail = key[-UUID_LEN:].decode("ascii")
    kind = key.split(b":", 6)[5]
    return complement_uuid(tail) if kind.endswith(b"desc") else tail


def stats_key(media_type: str, trash: bool) -> bytes:
    return P_STATS + f"{media_type}:trash:{int(trash)}".encode("ascii")


# -- values --------------------------------------------------------------------------------

_STAMP = struct.Struct(">QQqqB")  # ino, size, mtime_ns, ctime_ns, flags
FLAG_TRASH = 1


@dataclass(frozen=True)
class PathValue:
    """Value of a path key: the uuid, then the stamp that tells a rescan "unchanged".

    Layout: uuid (36 ascii bytes) | ino u64 | size u64 | mtime_ns i64 | ctime_ns i64 | flags u8,
    integers big-endian. Readers that only want the uuid take the first 36 bytes.
    """

    uuid: str
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    flags: int = 0

    def pack(self) -> bytes:
        return pack_path_value(self.uuid, self.ino, self.size, self.mtime_ns, self.ctime_ns,
                               self.flags)

    @classmethod
    def unpack(cls, raw: bytes) -> PathValue:
        uuid = raw[:UUID_LEN].decode("ascii")
        if len(raw) < UUID_LEN + _STAMP.size:  # a bare uuid (PlainNAS layout): no stamp
            return cls(uuid, 0, 0, 0, 0, 0)
        return cls(uuid, *_STAMP.unpack_from(raw, UUID_LEN))


def pack_stamp(ino: int, size: int, mtime_ns: int, ctime_ns: int, flags: int) -> bytes:
    """The bytes after the uuid in a PathValue (compared as-is by a rescan)."""
    return _STAMP.pack(ino, size, mtime_ns, ctime_ns, flags)


def pack_path_value(uuid: str, ino: int, size: int, mtime_ns: int, ctime_ns: int, flags: int
                    ) -> bytes:
    """PathValue.pack without building the object (the scanner's hot path)."""
    return uuid.encode("ascii") + _STAMP.pack(ino, size, mtime_ns, ctime_ns, flags)


_STATS = struct.Struct(">qq")  # count, bytes


def pack_stats(count: int, total_bytes: int) -> bytes:
    return _STATS.pack(count, total_bytes)


def unpack_stats(raw: bytes | None) -> tuple[int, int]:
    if not raw:
        return 0, 0
    count, total = _STATS.unpack(raw)
    return int(count), int(total)
