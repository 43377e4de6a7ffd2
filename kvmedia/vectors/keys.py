"""LMDB keys of the semantic layer (analysis cache, embeddings, vector ids, retry queue).

Everything here lives in `media.lmdb` beside the records, under its own `sem:` prefix, and
is what only kvmedia knows: it survives a rescan, a rebuild of the records and a deletion of
`vectors/` (the FAISS files are a cache rebuilt from these keys, never re-embedded).

    sem:acache:<content_hash>:<analyzer>:<version>  -> analyzer output JSON (orjson)
    sem:emb:<model>:<xxh128(text) hex32>            -> embedding: float32 little-endian
    sem:vid:<uuid>                                  -> VidValue: the item's current vector
    sem:vuuid:<vid u64 big-endian>                  -> VidValue of that vector id
    sem:vnext                                       -> next vector id (ascii int, first 1)
    sem:queue:<uuid>                                -> QueueEntry JSON (retry bookkeeping)
    sem:feed_cursor                                 -> change-feed seq already queued (ascii)

<model> is a model id made key-safe by `model_slug` (no ":"); <content_hash> is
"<algo>:<hex>" from hashing.py (its ":" is fine: the analyzer name and version follow it and
neither holds ":"). Vector ids increase: every new embedding of an item gets a fresh id, so
an id names one vector forever. An id is current when `sem:vid:<uuid>` still holds it; a
stale id left in a FAISS file (the item was re-embedded, or deleted) is the tombstone the
search filters out. Ids above a FAISS file's `next_vid` are the delta it has not folded in.

VidValue layout: vid u64 big-endian | xxh128(text) 16 bytes | uuid 36 ascii | model slug.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import xxhash

P_ACACHE = b"sem:acache:"
P_EMB = b"sem:emb:"
P_VID = b"sem:vid:"
P_VUUID = b"sem:vuuid:"
K_VNEXT = b"sem:vnext"
P_QUEUE = b"sem:queue:"
K_FEED_CURSOR = b"sem:feed_cursor"

_U64 = struct.Struct(">Q")
_SLUG_BAD = re.compile(r"[^A-Za-z0-9._@+-]")


def model_slug(model_id: str) -> str:
    """A model id usable inside keys and file names (":" and "/" become "_")."""
    return _SLUG_BAD.sub("_", model_id)[:120]


def text_digest(text: str) -> bytes:
    """16-byte digest of an embedding source text (the embedding cache key)."""
    return xxhash.xxh3_128_digest(text.encode("utf-8", "surrogatepass"))


def acache_key(content_hash: str, analyzer: str, version: int | str) -> bytes:
    return P_ACACHE + f"{content_hash}:{analyzer}:{version}".encode()


def emb_key(model_id: str, digest: bytes) -> bytes:
    return P_EMB + model_slug(model_id).encode("ascii") + b":" + digest.hex().encode("ascii")


def vid_key(uuid: str) -> bytes:
    return P_VID + uuid.encode("ascii")


def vuuid_key(vid: int) -> bytes:
    return P_VUUID + _U64.pack(vid)


def vid_from_vuuid_key(key: bytes) -> int:
    return int(_U64.unpack_from(key, len(P_VUUID))[0])


def queue_key(uuid: str) -> bytes:
    return P_QUEUE + uuid.encode("ascii")


@dataclass(frozen=True)
class VidValue:
    """One vector id: which item, which model, which text (hence which cached vector)."""

    vid: int
    digest: bytes
    uuid: str
    model: str  # the model slug

    def pack(self) -> bytes:
        return _U64.pack(self.vid) + self.digest + self.uuid.encode("ascii") + \
            self.model.encode("ascii")

    @classmethod
    def unpack(cls, raw: bytes) -> VidValue:
        vid = int(_U64.unpack_from(raw, 0)[0])
        return cls(vid, bytes(raw[8:24]), bytes(raw[24:60]).decode("ascii"),
                   bytes(raw[60:]).decode("ascii"))
