"""Build one segment file from `DocRow`s (see format.py for the layout it fills).

The only expensive step is analysis (`terms()` per name and per folder); folders are analysed
once each, however many files they hold. Postings are built as flat (term, doc) arrays and
sorted once with numpy, so the Python work is one pass over the documents.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import numpy as np
import xxhash

from ..store.keys import name_sort_key
from . import analysis as A
from . import format as F
from .docs import DocRow


def _offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(np.asarray(lengths, dtype=np.uint64), out=out[1:])
    if len(out) and int(out[-1]) >= 1 << 32:
        raise ValueError("segment section exceeds 4 GiB; split the build")
    return out.astype(np.uint32)


def _text_section(texts: list[str]) -> tuple[np.ndarray, bytes]:
    encoded = [A.encode(t) + b"\n" for t in texts]
    return _offsets([len(e) for e in encoded]), b"".join(encoded)


def _dictionary(term_ids: dict[str, int], pair_terms: Sequence[int],
                pair_targets: Sequence[int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sorted terms, posting offsets and postings (targets ascending within each term)."""
    terms = sorted(term_ids)
    remap = np.empty(len(term_ids), dtype=np.uint32)
    for new, term in enumerate(terms):
        remap[term_ids[term]] = new
    tids = remap[np.asarray(pair_terms, dtype=np.uint32)]
    targets = np.asarray(pair_targets, dtype=np.uint32)
    order = np.lexsort((targets, tids))
    post = targets[order]
    counts = np.bincount(tids, minlength=len(terms))
    return terms, _offsets(counts), post


def term_trigrams(off: np.ndarray, text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, offsets, term ids): for every distinct byte trigram of the "\n"-terminated
    terms in `text`, the ids of the terms holding it. All numpy, no per-term Python."""
    b = np.frombuffer(text, dtype=np.uint8).astype(np.uint32)
    if len(b) < 3:
        return np.zeros(0, np.uint32), np.zeros(1, np.uint32), np.zeros(0, np.uint32)
    keys = (b[:-2] << 16) | (b[1:-1] << 8) | b[2:]
    nl = b == 10
    valid = ~(nl[:-2] | nl[1:-1] | nl[2:])
    pos = np.flatnonzero(valid)
    tids = np.searchsorted(off.astype(np.int64), pos, side="right") - 1
    pairs = np.sort((keys[pos].astype(np.uint64) << np.uint64(32)) | tids.astype(np.uint64))
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = pairs[1:] != pairs[:-1]
    pairs = pairs[keep]
    tri = (pairs >> np.uint64(32)).astype(np.uint32)
    first = np.ones(len(tri), dtype=bool)
    first[1:] = tri[1:] != tri[:-1]
    starts = np.flatnonzero(first)
    offsets = np.append(starts, len(tri)).astype(np.uint32)
    return tri[starts], offsets, (pairs & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _add_dictionary(w: F.SegmentWriter, ids: tuple[int, int, int, int, int],
                    terms: list[str], post_off: np.ndarray, post: np.ndarray,
                    tri_ids: tuple[int, int, int]) -> None:
    off_id, text_id, rev_id, poff_id, post_id = ids
    off, text = _text_section(terms)
    w.add(off_id, off)
    w.add(text_id, text)
    for sid, arr in zip(tri_ids, term_trigrams(off, text), strict=True):
        w.add(sid, arr)
    rev = sorted(range(len(terms)), key=lambda i: terms[i][::-1])
    w.add(rev_id, np.asarray(rev, dtype=np.uint32))
    w.add(poff_id, post_off)
    w.add(post_id, post)


def _recency_order(rows: list[DocRow]) -> tuple[np.ndarray, np.ndarray]:
    """Doc order (newest mtime first, ties by uuid) and the raw uuids, with numpy sorts."""
    n = len(rows)
    uuids = np.frombuffer(bytes.fromhex("".join(r.uuid for r in rows).replace("-", "")),
                          dtype=np.uint8).reshape(n, 16)
    halves = uuids.view(">u8").reshape(n, 2)
    mtime = np.fromiter((r.mtime_ns for r in rows), dtype=np.int64, count=n)
    order = np.lexsort((halves[:, 1], halves[:, 0], -mtime))
    return order, uuids[order]


def _name_rank(rows: list[DocRow], uuid_raw: np.ndarray) -> np.ndarray:
    """Rank of each doc by (name sort key, uuid), for the name sorts."""
    n = len(rows)
    halves = uuid_raw.view(">u8").reshape(n, 2)
    by_uuid = np.lexsort((halves[:, 1], halves[:, 0]))
    keys = np.array([name_sort_key(rows[i].name) for i in by_uuid.tolist()], dtype=object)
    by_name = by_uuid[np.argsort(keys, kind="stable")]
    rank = np.empty(n, dtype=np.uint32)
    rank[by_name] = np.arange(n, dtype=np.uint32)
    return rank


def build_segment(rows: list[DocRow], path: str,
                  crash_point: Callable[[str], None] | None = None) -> int:
    """Write the segment holding `rows` (one per uuid) to `path`; returns its size in bytes."""
    n = len(rows)
    if n:
        order, uuid_raw = _recency_order(rows)
        rows = [rows[i] for i in order.tolist()]
    else:
        uuid_raw = np.zeros((0, 16), dtype=np.uint8)
    w = F.SegmentWriter(n)
    w.add(F.DOC_UUID, uuid_raw.reshape(-1))
    w.add(F.DOC_MTIME, np.fromiter((r.mtime_ns for r in rows), dtype=np.int64, count=n))
    w.add(F.DOC_SIZE, np.fromiter((r.size for r in rows), dtype=np.int64, count=n))
    w.add(F.DOC_META, np.fromiter(((r.type_code & 7) | (r.trash << 3) for r in rows),
                                  dtype=np.uint8, count=n))
    exts: dict[str, int] = {}
    ext_ids = np.fromiter((exts.setdefault(r.ext, len(exts)) for r in rows), dtype=np.uint16,
                          count=n)
    w.add(F.DOC_EXT, ext_ids)
    w.add(F.EXT_TEXT, b"".join(A.encode(e) + b"\n" for e in exts))
    w.add(F.DOC_DUR, np.fromiter((r.dur for r in rows), dtype=np.float32, count=n))
    w.add(F.DOC_WIDTH, np.fromiter((r.width for r in rows), dtype=np.uint32, count=n))
    w.add(F.DOC_HEIGHT, np.fromiter((r.height for r in rows), dtype=np.uint32, count=n))

    # Folders: ids in ascending raw byte order, so a path prefix is a contiguous id range.
    ndir_of: dict[bytes, str] = {}
    for r in rows:
        ndir_of.setdefault(r.dir, r.ndir)
    dirs = sorted(ndir_of)
    dir_id = {d: i for i, d in enumerate(dirs)}
    doc_dir = np.fromiter((dir_id[r.dir] for r in rows), dtype=np.uint32, count=n)
    w.add(F.DOC_DIR, doc_dir)
    off, text = _text_section([ndir_of[d] for d in dirs])
    w.add(F.DIR_OFF, off)
    w.add(F.DIR_TEXT, text)
    w.add(F.DIRRAW_OFF, _offsets([len(d) for d in dirs]))
    w.add(F.DIRRAW_TEXT, b"".join(dirs))
    w.add(F.DIRDOC_OFF, _offsets(np.bincount(doc_dir, minlength=len(dirs))))
    w.add(F.DIRDOC, np.argsort(doc_dir, kind="stable").astype(np.uint32))

    # Names.
    off, text = _text_section([r.nname for r in rows])
    w.add(F.NAME_OFF, off)
    w.add(F.NAME_TEXT, text)
    w.add(F.DOC_STEM, np.fromiter(
        (xxhash.xxh32_intdigest(A.encode(A.stem(r.nname))) for r in rows), dtype=np.uint32,
        count=n))
    w.add(F.DOC_NAMERANK, _name_rank(rows, uuid_raw) if n else np.zeros(0, dtype=np.uint32))

    term_ids: dict[str, int] = {}
    # (term, doc) pairs as packed u32 arrays: ~8 bytes a pair instead of ~70 in int lists
    pair_terms = array("I")
    pair_docs = array("I")
    terms_of, decode, term_id = A.terms, A.decode, term_ids.setdefault
    for doc, r in enumerate(rows):
        ts = terms_of(decode(r.name), r.nname)
        pair_terms.extend([term_id(t, len(term_ids)) for t in ts])
        pair_docs.extend([doc] * len(ts))
    _add_dictionary(w, (F.NTERM_OFF, F.NTERM_TEXT, F.NTERM_REV, F.NPOST_OFF, F.NPOST),
                    *_dictionary(term_ids, pair_terms, pair_docs),
                    (F.NTRI_KEY, F.NTRI_OFF, F.NTRI_TERM))

    term_ids = {}
    pair_terms = array("I")
    pair_dirs = array("I")
    for i, d in enumerate(dirs):
        for t in A.terms(A.decode(d), ndir_of[d]):
            pair_terms.append(term_ids.setdefault(t, len(term_ids)))
            pair_dirs.append(i)
    _add_dictionary(w, (F.DTERM_OFF, F.DTERM_TEXT, F.DTERM_REV, F.DPOST_OFF, F.DPOST),
                    *_dictionary(term_ids, pair_terms, pair_dirs),
                    (F.DTRI_KEY, F.DTRI_OFF, F.DTRI_TERM))

    hashes = np.fromiter((xxhash.xxh64_intdigest(r.uuid.encode()) for r in rows), dtype=np.uint64,
                         count=n)
    order = np.argsort(hashes, kind="stable")
    w.add(F.UUID_HASH, hashes[order])
    w.add(F.UUID_HASH_DOC, order.astype(np.uint32))
    return w.finish(path, crash_point)
