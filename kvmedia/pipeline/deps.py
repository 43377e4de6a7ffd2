"""The dependency graph in LMDB: which records depend on which sidecar files and records, and
which records are dirty (must be re-derived).

LMDB keys (this module owns the `dep:` prefix):

    dep:side:<sid>                      -> sidecar node JSON: {"path" | "path_bytes", "kind",
                                           "size", "mtime_ns", "ino"} (see sidecars.py)
    dep:stem:<stemkey>\\0<sid>           -> b""   sidecar filed under the media stem
                                           `<dir>/<stem>` (lookup and sweep by path prefix)
    dep:on:<node>:<node>                -> b""   A depends on B   (forward edge)
    dep:by:<node>:<node>                -> b""   B is needed by A (reverse edge, same txn)
    dep:dirty:<uuid>                    -> JSON {"depth": int, "why": str, "at": ns}

A node is `u:<uuid>` (a record, 38 bytes) or `s:<sid>` (a sidecar file, 34 bytes), where
`sid` is the xxh3-128 hex digest of the sidecar's path. `<stemkey>` is the raw `<dir>/<stem>`
bytes, or for long ones (over STEM_KEY_MAX) their first STEM_KEY_MAX bytes + NUL + xxh128
digest, like `media:path:` keys: a NUL never occurs in a real path, and the root prefix of
the path is kept so a sweep under a root still finds them. Stem lookups verify the node's
real path, so a truncated key can never hand a sidecar to the wrong media.

`mark_dirty` follows reverse edges breadth-first with a visited set: transitive (A -> B -> C)
and finite on cycles (a Live-Photo still and its video depend on each other).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import lmdb
import orjson
import xxhash

from ..pathbytes import get_field, set_field

P_SIDE = b"dep:side:"
P_STEM = b"dep:stem:"
P_ON = b"dep:on:"
P_BY = b"dep:by:"
P_DIRTY = b"dep:dirty:"
STEM_KEY_MAX = 400
SID_LEN = 32
MAX_DEPTH = 64
"""Dirty propagation stops this many hops from its source (a guard, not a limit seen)."""


def record_node(uuid: str) -> str:
    return "u:" + uuid


def sidecar_id(path: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(path)


def sidecar_node(sid: str) -> str:
    return "s:" + sid


def node_uuid(node: str) -> str | None:
    return node[2:] if node.startswith("u:") else None


def _split_edge(rest: bytes) -> tuple[str, str]:
    """`<node>:<node>` -> the two nodes (lengths are fixed by their kind)."""
    text = rest.decode("ascii")
    first_len = 38 if text.startswith("u:") else 2 + SID_LEN
    return text[:first_len], text[first_len + 1:]


def stem_key(dir_stem: bytes) -> bytes:
    if len(dir_stem) <= STEM_KEY_MAX:
        return dir_stem
    return dir_stem[:STEM_KEY_MAX] + b"\0" + xxhash.xxh128_digest(dir_stem)


# -- sidecar nodes ----------------------------------------------------------------------------

def get_sidecar(txn: lmdb.Transaction, sid: str) -> dict[str, Any] | None:
    raw = txn.get(P_SIDE + sid.encode("ascii"))
    return orjson.loads(raw) if raw is not None else None


def put_sidecar(txn: lmdb.Transaction, path: bytes, kind: str, stems: list[bytes],
                size: int, mtime_ns: int, ino: int) -> tuple[str, bool]:
    """Store (or refresh) a sidecar node; (sid, True when it is new or its stamp changed)."""
    sid = sidecar_id(path)
    old = get_sidecar(txn, sid)
    stamp = {"kind": kind, "size": size, "mtime_ns": mtime_ns, "ino": ino}
    if old is not None and all(old.get(k) == v for k, v in stamp.items()):
        return sid, False
    node: dict[str, Any] = dict(stamp)
    set_field(node, "path", path)
    txn.put(P_SIDE + sid.encode("ascii"), orjson.dumps(node))
    if old is None:
        parent = path[:path.rfind(b"/") + 1]
        for stem in stems:
            txn.put(P_STEM + stem_key(parent + stem) + b"\0" + sid.encode("ascii"), b"")
    return sid, True


def drop_sidecar(txn: lmdb.Transaction, sid: str, stems: list[bytes]) -> dict[str, Any] | None:
    """Forget a sidecar node and its stem keys; returns the node it was."""
    node = get_sidecar(txn, sid)
    if node is None:
        return None
    path = get_field(node, "path") or b""
    parent = path[:path.rfind(b"/") + 1]
    for stem in stems:
        txn.delete(P_STEM + stem_key(parent + stem) + b"\0" + sid.encode("ascii"))
    txn.delete(P_SIDE + sid.encode("ascii"))
    return node


def sidecars_for_stem(txn: lmdb.Transaction, dir_stem: bytes, stems_of: Any
                      ) -> list[tuple[str, dict[str, Any]]]:
    """Sidecars filed under exactly `<dir>/<stem>`; `stems_of(name)` verifies each one."""
    prefix = P_STEM + stem_key(dir_stem) + b"\0"
    slash = dir_stem.rfind(b"/")
    parent, stem = dir_stem[:slash + 1], dir_stem[slash + 1:]
    out = []
    for key in _keys(txn, prefix):
        sid = key[-SID_LEN:].decode("ascii")
        node = get_sidecar(txn, sid)
        if node is None:
            continue
        path = get_field(node, "path") or b""
        name = path[path.rfind(b"/") + 1:]
        if path[:path.rfind(b"/") + 1] == parent and stem in stems_of(name):
            out.append((sid, node))
    return out


def sidecars_under(txn: lmdb.Transaction, dir_prefix: bytes) -> list[tuple[str, bytes]]:
    """(sid, path) of every sidecar whose path starts with `dir_prefix`."""
    seen: dict[str, bytes] = {}
    for key in _keys(txn, P_STEM + dir_prefix):
        sid = key[-SID_LEN:].decode("ascii")
        if sid in seen:
            continue
        node = get_sidecar(txn, sid)
        path = get_field(node, "path") if node is not None else None
        if path is not None and path.startswith(dir_prefix):
            seen[sid] = path
    return list(seen.items())


def _keys(txn: lmdb.Transaction, prefix: bytes) -> Iterator[bytes]:
    cur = txn.cursor()
    if not cur.set_range(prefix):
        return
    for key in cur.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


# -- edges ------------------------------------------------------------------------------------

def depends_on(txn: lmdb.Transaction, node: str) -> list[str]:
    """What `node` depends on."""
    prefix = P_ON + node.encode("ascii") + b":"
    return [_split_edge(k[len(P_ON):])[1] for k in _keys(txn, prefix)]


def needed_by(txn: lmdb.Transaction, node: str) -> list[str]:
    """What depends on `node`."""
    prefix = P_BY + node.encode("ascii") + b":"
    return [_split_edge(k[len(P_BY):])[1] for k in _keys(txn, prefix)]


def set_depends(txn: lmdb.Transaction, node: str, targets: Iterable[str]) -> bool:
    """Make `node` depend on exactly `targets` (both edge directions). True when changed."""
    want = {t for t in targets if t != node}
    have = set(depends_on(txn, node))
    a = node.encode("ascii")
    for t in have - want:
        txn.delete(P_ON + a + b":" + t.encode("ascii"))
        txn.delete(P_BY + t.encode("ascii") + b":" + a)
    for t in want - have:
        txn.put(P_ON + a + b":" + t.encode("ascii"), b"")
        txn.put(P_BY + t.encode("ascii") + b":" + a, b"")
    return want != have


def drop_node(txn: lmdb.Transaction, node: str) -> None:
    """Remove a node's forward edges and its dirty mark. Incoming edges stay until each
    dependent is re-derived (they are how the dependents were found)."""
    set_depends(txn, node, ())
    uuid = node_uuid(node)
    if uuid is not None:
        txn.delete(P_DIRTY + uuid.encode("ascii"))


# -- dirty marks ------------------------------------------------------------------------------

def mark_dirty(txn: lmdb.Transaction, sources: Iterable[str], why: str, *,
               include_sources: bool = True) -> list[str]:
    """Mark every record reachable from `sources` through reverse edges dirty (and the
    record sources themselves when `include_sources`). Cycle-safe; returns the uuids marked
    in breadth-first order. An existing mark keeps the smaller depth."""
    queue: deque[tuple[str, int]] = deque((s, 0) for s in dict.fromkeys(sources))
    seen = {s for s, _ in queue}
    marked: list[str] = []
    while queue:
        node, depth = queue.popleft()
        uuid = node_uuid(node)
        if uuid is not None and (depth > 0 or include_sources):
            key = P_DIRTY + uuid.encode("ascii")
            raw = txn.get(key)
            if raw is not None:
                depth = min(depth, int(orjson.loads(raw).get("depth", 0)))
            # `at` changes on every mark, so a mark made while a record was being re-derived
            # is told apart from the one that was read (see clear_dirty)
            txn.put(key, orjson.dumps({"depth": depth, "why": why, "at": time.time_ns()}))
            marked.append(uuid)
        if depth >= MAX_DEPTH:
            continue
        for nxt in needed_by(txn, node):
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, depth + 1))
    return marked


def dirty(txn: lmdb.Transaction, limit: int | None = None) -> list[tuple[str, bytes]]:
    """(uuid, raw mark) of dirty records, shallowest first."""
    out = []
    cur = txn.cursor()
    if cur.set_range(P_DIRTY):
        for key, value in cur:
            if not key.startswith(P_DIRTY):
                break
            out.append((key[len(P_DIRTY):].decode("ascii"), value))
    out.sort(key=lambda item: (orjson.loads(item[1]).get("depth", 0), item[0]))
    return out if limit is None else out[:limit]


def is_dirty(txn: lmdb.Transaction, uuid: str) -> bool:
    return txn.get(P_DIRTY + uuid.encode("ascii")) is not None


def clear_dirty(txn: lmdb.Transaction, uuid: str, seen_mark: bytes | None = None) -> None:
    """Clear a mark; with `seen_mark`, only if nobody marked it again since it was read."""
    key = P_DIRTY + uuid.encode("ascii")
    if seen_mark is None or txn.get(key) == seen_mark:
        txn.delete(key)
