"""Build one segment file from `DocRow`s (see format.py for the layout it fills).

`SegmentBuilder.add()` takes one document at a time and keeps it only as packed columns
(one fixed-width `ROW`, byte blobs for the name and its sort key, the ids of its name terms,
the raw uuid): about 150 bytes a document
and no Python object per document, so a merge of a million new files — the end of a first
scan — stays within a few hundred MB. `finish()` sorts the documents into recency order with
numpy and writes the sections. The only expensive Python step is analysis (`terms()` per name
and per folder); folders are analysed once each, however many files they hold.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import xxhash

from .. import crashpoints
from ..forking import ForkedResult
from ..store.keys import name_sort_key
from . import analysis as A
from . import format as F
from .docs import DocRow, doc_from_record


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
    remap = np.empty(len(terms), dtype=np.uint32)
    remap[np.fromiter((term_ids[t] for t in terms), dtype=np.int64, count=len(terms))] = \
        np.arange(len(terms), dtype=np.uint32)
    tids = remap[np.asarray(pair_terms, dtype=np.uint32)]
    del remap
    # One u64 sort of (term << 32 | target) instead of a two-key lexsort: pairs are distinct.
    # Built and sorted in place: a full-size temporary per operator would triple the peak.
    keys = tids.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.asarray(pair_targets, dtype=np.uint32)
    keys.sort()
    post = keys.astype(np.uint32)  # the low 32 bits: the targets
    del keys
    counts = np.bincount(tids, minlength=len(terms))
    return terms, _offsets(counts), post


TRIGRAM_CHUNK_BYTES = 1 << 20
"""Term text handled per step by `term_trigrams`: its temporaries (~40 bytes a text byte)
stay a few tens of MB at any dictionary size."""


def term_trigrams(off: np.ndarray, text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, offsets, term ids): for every distinct byte trigram of the "\n"-terminated
    terms in `text`, the ids of the terms holding it. All numpy, no per-term Python; the text
    is taken in chunks of whole terms, each giving its distinct (trigram, term) pairs (a term
    lies in one chunk, so pairs from different chunks differ), then one sort of them all."""
    off64 = off.astype(np.int64)
    n_terms = len(off64) - 1
    parts: list[np.ndarray] = []
    first_term = 0
    while first_term < n_terms:
        last_term = int(np.searchsorted(off64, off64[first_term] + TRIGRAM_CHUNK_BYTES,
                                        side="right")) - 1
        last_term = min(max(last_term, first_term + 1), n_terms)
        lo, hi = int(off64[first_term]), int(off64[last_term])
        parts.append(_chunk_trigram_pairs(off64[first_term:last_term + 1] - lo,
                                          text[lo:hi], first_term))
        first_term = last_term
    pairs = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    del parts
    pairs.sort()
    tri = (pairs >> np.uint64(32)).astype(np.uint32)
    first = np.ones(len(tri), dtype=bool)
    first[1:] = tri[1:] != tri[:-1]
    starts = np.flatnonzero(first)
    offsets = np.append(starts, len(tri)).astype(np.uint32)
    return tri[starts], offsets, pairs.astype(np.uint32)


def _chunk_trigram_pairs(off: np.ndarray, text: bytes, first_term: int) -> np.ndarray:
    """Distinct (trigram << 32 | term id) of the terms in `text` (offsets `off` from 0),
    sorted; term ids start at `first_term`."""
    b = np.frombuffer(text, dtype=np.uint8).astype(np.uint32)
    if len(b) < 3:
        return np.zeros(0, np.uint64)
    keys = (b[:-2] << 16) | (b[1:-1] << 8) | b[2:]
    nl = b == 10
    del b
    valid = ~(nl[:-2] | nl[1:-1] | nl[2:])
    del nl
    pos = np.flatnonzero(valid)
    del valid
    tids = np.searchsorted(off, pos, side="right") - 1 + first_term
    pairs = keys[pos].astype(np.uint64)
    del keys, pos
    pairs <<= np.uint64(32)
    pairs |= tids.astype(np.uint64)
    del tids
    pairs.sort()
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = pairs[1:] != pairs[:-1]
    return pairs[keep]


NAME_DICTIONARY = (F.NTERM_OFF, F.NTERM_TEXT, F.NTRI_KEY, F.NTRI_OFF, F.NTRI_TERM, F.NTERM_REV,
                   F.NPOST_OFF, F.NPOST)
FOLDER_DICTIONARY = (F.DTERM_OFF, F.DTERM_TEXT, F.DTRI_KEY, F.DTRI_OFF, F.DTRI_TERM,
                     F.DTERM_REV, F.DPOST_OFF, F.DPOST)
"""The sections of a term dictionary, in the order they are written."""


def _dictionary_sections(terms: list[str], post_off: np.ndarray, post: np.ndarray
                         ) -> list[np.ndarray | bytes]:
    """The contents of a dictionary's sections (NAME_DICTIONARY / FOLDER_DICTIONARY order)."""
    off, text = _text_section(terms)
    tri_key, tri_off, tri_term = term_trigrams(off, text)
    reversed_terms = [t[::-1] for t in terms]
    rev = sorted(range(len(terms)), key=reversed_terms.__getitem__)
    return [off, text, tri_key, tri_off, tri_term, np.asarray(rev, dtype=np.uint32),
            post_off, post]


def _add_sections(w: F.SegmentWriter, ids: Sequence[int],
                  contents: Sequence[np.ndarray | bytes]) -> None:
    for sid, data in zip(ids, contents, strict=True):
        w.add(sid, data)


def folder_dictionary(dirs: list[bytes]) -> list[np.ndarray | bytes]:
    """The folder term dictionary of folders `dirs` (folder id = position): its sections."""
    term_ids: dict[str, int] = {}
    term_id = term_ids.setdefault
    pair_terms = array("I")
    per_dir = array("I")
    folder_terms = A.FolderTerms()
    for d in dirs:
        ts = folder_terms(d)
        pair_terms.extend([term_id(t, len(term_ids)) for t in ts])
        per_dir.append(len(ts))
    pair_dirs = np.repeat(np.arange(len(dirs), dtype=np.uint32), per_dir)
    return _dictionary_sections(*_dictionary(term_ids, pair_terms, pair_dirs))


_FIXED = struct.Struct("<qqQfIIIIIHIIB")
ROW = np.dtype([("mtime", "<i8"), ("size", "<i8"), ("uhash", "<u8"), ("dur", "<f4"),
                ("width", "<u4"), ("height", "<u4"), ("dir", "<u4"), ("stem", "<u4"),
                ("name_len", "<u4"), ("key_len", "<u2"), ("terms", "<u4"), ("ext", "<u4"),
                ("meta", "u1")])
"""The fixed-width part of one document as `SegmentBuilder` keeps it: mtime_ns, size, xxh64 of
the uuid text, duration, width, height, folder id, xxh32 of the name stem, byte lengths of the
normalised name (+ "\n") and of the name sort key, number of name terms, extension id, type
code | trash << 3."""
assert ROW.itemsize == _FIXED.size


class SegmentBuilder:
    """One segment's documents, added one by one (any order; uuids distinct), then written."""

    def __init__(self) -> None:
        self._n = 0
        self._uuid = bytearray()          # 16 raw bytes a doc
        self._fixed = bytearray()         # one _FIXED row a doc (see ROW)
        self._exts: dict[str, int] = {}   # extension -> id (first-seen order)
        self._dirs: dict[bytes, int] = {} # raw folder -> id (first-seen order)
        self._ndirs: list[str] = []       # normalised folder of each id
        self._names = bytearray()         # encoded normalised names, each + "\n"
        self._keys = bytearray()          # name sort keys (store.keys.name_sort_key)
        self._term_ids: dict[str, int] = {}
        self._pair_terms = array("I")     # name term ids, doc after doc (ROW.terms each)

    def __len__(self) -> int:
        return self._n

    def add(self, r: DocRow) -> None:
        self._n += 1
        uuid, nname = r.uuid, r.nname
        self._uuid += bytes.fromhex(uuid.replace("-", ""))
        dirs = self._dirs
        d = dirs.setdefault(r.dir, len(dirs))
        if d == len(self._ndirs):
            self._ndirs.append(r.ndir)
        name = A.encode(nname) + b"\n"
        self._names += name
        key = name_sort_key(r.name)
        self._keys += key
        exts = self._exts
        ts = A.terms(A.decode(r.name), nname)
        term_id, term_ids = self._term_ids.setdefault, self._term_ids
        self._pair_terms.extend([term_id(t, len(term_ids)) for t in ts])
        self._fixed += _FIXED.pack(
            r.mtime_ns, r.size, xxhash.xxh64_intdigest(uuid.encode()), r.dur, r.width,
            r.height, d, xxhash.xxh32_intdigest(A.encode(A.stem(nname))), len(name), len(key),
            len(ts), exts.setdefault(r.ext, len(exts)), (r.type_code & 7) | (r.trash << 3))

    def add_record(self, rec: dict[str, Any]) -> None:
        """`add(doc_from_record(rec))`, analysing each folder once per segment, not once per
        file (a full rebuild reads records in uuid order, which no LRU cache survives)."""
        self.add(doc_from_record(rec, self._norm_dir))

    def state(self) -> tuple[Any, ...]:
        """Everything added so far, as plain picklable values (for `absorb` in another
        process): doc count, the packed columns, and the extension, folder and term tables in
        id order."""
        return (self._n, self._uuid, self._fixed, list(self._exts), list(self._dirs),
                self._ndirs, self._names, self._keys, list(self._term_ids), self._pair_terms)

    def absorb(self, state: tuple[Any, ...]) -> None:
        """Add the documents of another builder's `state()` (uuids distinct from ours): its
        table ids are renumbered into ours. The segment written is the same as if every
        document had been added here (finish() orders documents, folders and terms itself)."""
        n, uuid, fixed, exts, dirs, ndirs, names, keys, terms, pair_terms = state
        ext_ids = self._exts
        ext_map = np.array([ext_ids.setdefault(e, len(ext_ids)) for e in exts] or [0],
                           dtype=np.uint32)
        dir_map = np.zeros(max(len(dirs), 1), dtype=np.uint32)
        for i, (raw, ndir) in enumerate(zip(dirs, ndirs, strict=True)):
            d = self._dirs.setdefault(raw, len(self._dirs))
            if d == len(self._ndirs):
                self._ndirs.append(ndir)
            dir_map[i] = d
        term_id, term_ids = self._term_ids.setdefault, self._term_ids
        term_map = np.fromiter((term_id(t, len(term_ids)) for t in terms), dtype=np.uint32,
                               count=len(terms))
        rows = np.frombuffer(fixed, dtype=ROW).copy()
        rows["dir"] = dir_map[rows["dir"]]
        rows["ext"] = ext_map[rows["ext"]]
        self._fixed += rows.tobytes()
        self._uuid += uuid
        self._names += names
        self._keys += keys
        self._pair_terms.frombytes(term_map[np.frombuffer(pair_terms, dtype=np.uint32)]
                                   .tobytes())  # pair_terms: an array("I") or its bytes
        self._n += n

    def _norm_dir(self, raw_dir: bytes) -> str:
        d = self._dirs.get(raw_dir)
        return A.norm_dir(raw_dir) if d is None else self._ndirs[d]

    def finish(self, path: str, crash_point: Callable[[str], None] | None = None, *,
               fork: bool = False) -> int:
        """Write the segment to `path`; returns its size in bytes. Consumes the builder: each
        column is dropped once written. `fork`: build the folder dictionary in a forked child
        meanwhile (~2 s of a million-document finish; index/parallel.py `should_fork`); the
        bytes written are the same either way."""
        w = F.SegmentWriter(path, len(self), crash_point)
        try:
            self._write(w, fork)
        except BaseException:
            w.abort()
            raise
        return w.finish()

    def _take(self, attr: str, dtype: type | np.dtype) -> np.ndarray:
        """Column `attr` as a numpy array; the builder lets go of it."""
        values = self.__dict__.pop(attr)
        return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype)

    def _write(self, w: F.SegmentWriter, fork: bool = False) -> None:
        # Folders: ids in ascending raw byte order, so a path prefix is a contiguous id range.
        dirs = sorted(self._dirs)
        folders = ForkedResult(lambda: _folders_in_child(dirs)) if fork else None
        try:
            hashes = self._write_docs(w, dirs)
            sections = folders.result() if folders is not None else None
            _add_sections(w, FOLDER_DICTIONARY,
                          sections if sections is not None else folder_dictionary(dirs))
        finally:
            if folders is not None:
                folders.close()
        by_hash = np.argsort(hashes, kind="stable")
        w.add(F.UUID_HASH, hashes[by_hash])
        w.add(F.UUID_HASH_DOC, by_hash.astype(np.uint32))

    def _write_docs(self, w: F.SegmentWriter, dirs: list[bytes]) -> np.ndarray:
        """Every section before the folder dictionary: the doc columns, folders, names and
        the name dictionary. Returns the uuid hash of each doc, in doc id order."""
        n = len(self)
        uuid_raw = self._take("_uuid", np.uint8).reshape(n, 16)
        halves = uuid_raw.view(">u8").reshape(n, 2)
        fixed = self._take("_fixed", ROW)
        mtime = fixed["mtime"]
        # Doc ids in recency order: newest mtime first, ties by uuid.
        order = np.lexsort((halves[:, 1], halves[:, 0], -mtime))
        rank = np.empty(n, dtype=np.uint32)
        rank[order] = np.arange(n, dtype=np.uint32)

        def col(field: str) -> np.ndarray:
            return np.ascontiguousarray(fixed[field][order])

        w.add(F.DOC_UUID, uuid_raw[order].reshape(-1))
        w.add(F.DOC_MTIME, col("mtime"))
        w.add(F.DOC_SIZE, col("size"))
        w.add(F.DOC_META, col("meta"))
        ext_ids, ext_text = _renumber_exts(col("ext"), list(self._exts))
        w.add(F.DOC_EXT, ext_ids)
        w.add(F.EXT_TEXT, ext_text)
        w.add(F.DOC_DUR, col("dur"))
        w.add(F.DOC_WIDTH, col("width"))
        w.add(F.DOC_HEIGHT, col("height"))

        dir_remap = np.empty(len(dirs), dtype=np.uint32)
        for i, d in enumerate(dirs):
            dir_remap[self._dirs[d]] = i
        ndir_of = [self._ndirs[self._dirs[d]] for d in dirs]
        doc_dir = dir_remap[col("dir")] if n else np.zeros(0, np.uint32)
        w.add(F.DOC_DIR, doc_dir)
        off, text = _text_section(ndir_of)
        w.add(F.DIR_OFF, off)
        w.add(F.DIR_TEXT, text)
        w.add(F.DIR_PAIRS, pair_bitmap(text))
        w.add(F.DIRRAW_OFF, _offsets([len(d) for d in dirs]))
        w.add(F.DIRRAW_TEXT, b"".join(dirs))
        w.add(F.DIRDOC_OFF, _offsets(np.bincount(doc_dir, minlength=len(dirs))))
        w.add(F.DIRDOC, np.argsort(doc_dir, kind="stable").astype(np.uint32))

        # Names.
        off, text = _gather(self.__dict__.pop("_names"), fixed["name_len"].astype(np.uint32),
                            order)
        w.add(F.NAME_OFF, off)
        w.add(F.NAME_TEXT, text)
        w.add(F.NAME_PAIRS, pair_bitmap(text))
        w.add(F.DOC_STEM, col("stem"))
        w.add(F.DOC_NAMERANK, self._name_rank(halves, fixed["key_len"])[order])

        pair_docs = np.repeat(rank, fixed["terms"])
        del rank
        _add_sections(w, NAME_DICTIONARY, _dictionary_sections(*_dictionary(
            self.__dict__.pop("_term_ids"), self._take("_pair_terms", np.uint32), pair_docs)))
        del pair_docs
        return col("uhash")

    def _name_rank(self, halves: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Rank of each doc (in `add` order) by (name sort key, uuid), for the name sorts."""
        n = len(halves)
        ends = np.cumsum(lengths, dtype=np.int64)
        starts = ends - lengths
        blob = bytes(self.__dict__.pop("_keys"))
        by_uuid = np.lexsort((halves[:, 1], halves[:, 0]))
        keys = np.array([blob[starts[i]:ends[i]] for i in by_uuid.tolist()], dtype=object)
        by_name = by_uuid[np.argsort(keys, kind="stable")]
        rank = np.empty(n, dtype=np.uint32)
        rank[by_name] = np.arange(n, dtype=np.uint32)
        return rank


def _folders_in_child(dirs: list[bytes]) -> list[np.ndarray | bytes]:
    crashpoints.hit("index.folders_child")
    return folder_dictionary(dirs)


def _renumber_exts(ids: np.ndarray, exts: list[str]) -> tuple[np.ndarray, bytes]:
    """Extension ids renumbered by first appearance in doc order (u16, or u32 for a segment
    with more than 65,536 distinct extensions), and their text section."""
    if not len(ids):
        return ids.astype(np.uint16), b""
    uniq, first = np.unique(ids, return_index=True)
    seen = uniq[np.argsort(first)]
    dtype = np.uint16 if len(seen) <= 1 << 16 else np.uint32
    remap = np.zeros(len(exts), dtype=dtype)
    remap[seen] = np.arange(len(seen), dtype=dtype)
    return remap[ids], b"".join(A.encode(exts[e]) + b"\n" for e in seen.tolist())


def pair_bitmap(text: np.ndarray | bytes, chunk: int = 1 << 20) -> np.ndarray:
    """Which byte pairs occur in `text`: 65,536 bits, bit b0 << 8 | b1 (numpy packbits,
    little bit order). 8 KB that let a search skip scanning a text it cannot match in."""
    data = np.frombuffer(text, dtype=np.uint8) if isinstance(text, bytes) else text
    seen = np.zeros(1 << 16, dtype=bool)
    for lo in range(0, max(len(data) - 1, 0), chunk):
        a = data[lo:lo + chunk + 1]
        seen[(a[:-1].astype(np.uint16) << 8) | a[1:]] = True
    return np.packbits(seen, bitorder="little")


_GATHER_CHUNK = 1 << 16


def _gather(blob: bytearray, lengths: np.ndarray, order: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The byte strings of `blob` (consecutive, of `lengths`) put in `order`: (offsets, text).
    Copied in chunks of documents, so the index arrays stay small."""
    src = np.frombuffer(blob, dtype=np.uint8)
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    new_len = lengths[order]
    off = _offsets(new_len)
    out = np.empty(int(starts[-1]), dtype=np.uint8)
    for lo in range(0, len(order), _GATHER_CHUNK):
        hi = min(lo + _GATHER_CHUNK, len(order))
        a, b = int(off[lo]), int(off[hi])
        shift = np.repeat(starts[order[lo:hi]] - off[lo:hi].astype(np.int64), new_len[lo:hi])
        out[a:b] = src[shift + np.arange(a, b, dtype=np.int64)]
    return off, out


def build_segment(rows: Iterable[DocRow], path: str,
                  crash_point: Callable[[str], None] | None = None) -> int:
    """Write the segment holding `rows` (one per uuid) to `path`; returns its size in bytes."""
    builder = SegmentBuilder()
    for r in rows:
        builder.add(r)
    return builder.finish(path, crash_point)
