"""Segment file format: one immutable file per segment, read through mmap + numpy views.

All integers little-endian (numpy's native order on the targets). docs/format.md repeats this
layout; tests/test_index_format.py checks the two agree.

    +--------------------------------------------------------------------------------------+
    | Header (32 bytes)  HEADER = "<8sIIII8x"                                              |
    |   magic(8s)        b"KVMSEG01"                                                       |
    |   version(u32)     FORMAT_VERSION                                                    |
    |   n_docs(u32)      documents in the segment (doc ids 0..n_docs-1)                    |
    |   n_sections(u32)  entries in the section table                                      |
    |   flags(u32)       0                                                                 |
    +--------------------------------------------------------------------------------------+
    | Sections, each starting at a multiple of ALIGN bytes, in any order                    |
    +--------------------------------------------------------------------------------------+
    | Section table: n_sections x SECTION = "<IIQQQ" (32 bytes)                             |
    |   id(u32) | dtype code(u32) | offset(u64) | length_bytes(u64) | xxh3_64 of the bytes(u64) |
    +--------------------------------------------------------------------------------------+
    | Footer (24 bytes)  FOOTER = "<QQ8s"                                                  |
    |   table_offset(u64) | xxh3_64 of header + table (u64) | end magic(8s) b"KVMSEGND"    |
    +--------------------------------------------------------------------------------------+

A writer creates `<name>.tmp`, writes everything, fsyncs and renames it to `<name>`; a file is
only used once a manifest names it. A torn or truncated file fails the footer check; a flipped
bit fails a section checksum (all checked when the segment is opened).

Doc ids are assigned in recency order: newest mtime first, ties by uuid. So "most recent
first" is ascending doc id, and any posting list is already in rank order within a tier.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

import numpy as np
import xxhash

from ..errors import DamagedError
from ..safefs import create_private, fsync_dir

MAGIC = b"KVMSEG01"
END_MAGIC = b"KVMSEGND"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIII8x")
SECTION = struct.Struct("<IIQQQ")
FOOTER = struct.Struct("<QQ8s")
ALIGN = 16

# Section ids. Per-document columns have n_docs entries indexed by doc id.
DOC_UUID = 1       # u8[n*16]  uuid as 16 raw bytes
DOC_MTIME = 2      # i64[n]    mtime_ns
DOC_SIZE = 3       # i64[n]    size in bytes
DOC_META = 4       # u8[n]     type code (bits 0-2: 1 audio 2 video 3 image 4 other) | trash << 3
DOC_EXT = 5        # u16[n]    index into EXT_TEXT (u32 past 65,536 distinct extensions)
EXT_TEXT = 6       # u8[]      extensions, each followed by "\n"
DOC_DUR = 7        # f32[n]    duration in seconds, NaN when unknown
DOC_WIDTH = 8      # u32[n]    pixels, 0 when unknown
DOC_HEIGHT = 9     # u32[n]    pixels, 0 when unknown
DOC_DIR = 10       # u32[n]    folder id (index into the DIR_* sections)
DOC_STEM = 11      # u32[n]    xxh32 of the normalised name without extension
DOC_NAMERANK = 12  # u32[n]    position of the doc when sorted by (name sort key, uuid)
NAME_OFF = 13      # u32[n+1]  offsets into NAME_TEXT
NAME_TEXT = 14     # u8[]      normalised names (UTF-8), each followed by "\n"
DIR_OFF = 15       # u32[d+1]  offsets into DIR_TEXT
DIR_TEXT = 16      # u8[]      normalised folders, each followed by "\n"
DIRRAW_OFF = 17    # u32[d+1]  offsets into DIRRAW_TEXT
DIRRAW_TEXT = 18   # u8[]      raw folder bytes in ascending byte order (= folder id order)
DIRDOC_OFF = 19    # u32[d+1]  offsets into DIRDOC
DIRDOC = 20        # u32[]     doc ids of each folder, ascending
NTERM_OFF = 21     # u32[t+1]  name terms: offsets into NTERM_TEXT
NTERM_TEXT = 22    # u8[]      name terms in ascending byte order, each followed by "\n"
NTERM_REV = 23     # u32[t]    term ids ordered by reversed term text (fuzzy suffix lookups)
NPOST_OFF = 24     # u32[t+1]  offsets into NPOST
NPOST = 25         # u32[]     doc ids of each name term, ascending
DTERM_OFF = 26     # u32[u+1]  folder terms, same layout as the name terms
DTERM_TEXT = 27    # u8[]
DTERM_REV = 28     # u32[u]
DPOST_OFF = 29     # u32[u+1]
DPOST = 30         # u32[]     folder ids of each folder term, ascending
UUID_HASH = 31     # u64[n]    xxh64 of the uuid text, ascending
UUID_HASH_DOC = 32 # u32[n]    doc id of each UUID_HASH entry
NTRI_KEY = 33      # u32[g]    distinct byte trigrams of the name terms (b0<<16|b1<<8|b2), ascending
NTRI_OFF = 34      # u32[g+1]  offsets into NTRI_TERM
NTRI_TERM = 35     # u32[]     ids of the name terms holding each trigram, ascending
DTRI_KEY = 36      # u32[h]    the same for the folder terms
DTRI_OFF = 37      # u32[h+1]
DTRI_TERM = 38     # u32[]
NAME_PAIRS = 39    # u8[8192]  bitmap of the byte pairs in NAME_TEXT: bit (b0 << 8 | b1), LSB first
DIR_PAIRS = 40     # u8[8192]  the same for DIR_TEXT (both optional: a text scan skips a
                   #           section missing a pair of the needle)

SECTION_IDS = {name: value for name, value in globals().items()
               if name.isupper() and isinstance(value, int) and name not in
               ("FORMAT_VERSION", "ALIGN")}

DTYPES = {0: np.uint8, 1: np.uint16, 2: np.uint32, 3: np.uint64, 4: np.int64, 5: np.float32}
_DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


class SegmentWriter:
    """Writes one segment file section by section: `add()` writes a section to `<path>.tmp`
    at once (a build never holds a second copy of the whole segment), `finish()` writes the
    table, footer and header, fsyncs and renames to `path`; `abort()` drops the tmp file.
    Arrays are written in their dtype (little-endian); `crash_point("segment.section")` is
    called after each section."""

    def __init__(self, path: str, n_docs: int, crash_point: Any = None) -> None:
        self.path = path
        self.n_docs = n_docs
        self._crash_point = crash_point
        self._tmp = path + ".tmp"
        self._fh = open(create_private(self._tmp), "wb")  # noqa: SIM115 - closed by finish/abort
        self._fh.write(b"\0" * HEADER.size)  # the real header goes in last
        self._pos = HEADER.size
        self._table: list[bytes] = []
        self._ids: set[int] = set()

    def add(self, section_id: int, data: np.ndarray | bytes | bytearray) -> None:
        assert section_id not in self._ids, f"section {section_id} added twice"
        self._ids.add(section_id)
        if isinstance(data, bytes | bytearray):
            data = np.frombuffer(data, dtype=np.uint8)
        assert data.dtype in _DTYPE_CODES, f"unsupported dtype {data.dtype}"
        arr = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).reshape(-1)
        raw = memoryview(arr.view(np.uint8))
        pad = (-self._pos) % ALIGN
        self._fh.write(b"\0" * pad)
        self._pos += pad
        self._fh.write(raw)
        self._table.append(SECTION.pack(section_id, _DTYPE_CODES[data.dtype], self._pos,
                                        len(raw), xxhash.xxh3_64_intdigest(raw)))
        self._pos += len(raw)
        if self._crash_point is not None:
            self._crash_point("segment.section")

    def finish(self) -> int:
        """Complete the file and rename it into place. Returns its size in bytes."""
        fh = self._fh
        try:
            table_bytes = b"".join(self._table)
            fh.write(table_bytes)
            header = HEADER.pack(MAGIC, FORMAT_VERSION, self.n_docs, len(self._table), 0)
            digest = xxhash.xxh3_64_intdigest(header + table_bytes)
            fh.write(FOOTER.pack(self._pos, digest, END_MAGIC))
            size = fh.tell()
            fh.seek(0)
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        os.replace(self._tmp, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")
        return size

    def abort(self) -> None:
        self._fh.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class SegmentFile:
    """An opened, verified segment file: `array(section_id)` gives a zero-copy numpy view."""

    def __init__(self, path: str, *, verify: bool = True) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < HEADER.size + FOOTER.size:
                    raise self._damaged("shorter than a header and footer")
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._vfd: int | None = os.dup(fh.fileno()) if verify else None
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._damaged(f"unreadable: {exc.strerror}") from exc
        self.size = size
        try:
            self._open_checked(verify)
        finally:
            if self._vfd is not None:
                os.close(self._vfd)
                self._vfd = None

    def _open_checked(self, verify: bool) -> None:
        mm, size = self._mm, self.size
        table_offset, digest, end = FOOTER.unpack_from(mm, size - FOOTER.size)
        if end != END_MAGIC:
            raise self._damaged("no end marker (truncated or torn write)")
        magic, version, n_docs, n_sections, _flags = HEADER.unpack_from(mm, 0)
        if magic != MAGIC:
            raise self._damaged("bad magic")
        if version != FORMAT_VERSION:
            raise self._damaged(f"format version {version}, expected {FORMAT_VERSION}")
        table_end = table_offset + n_sections * SECTION.size
        if table_end + FOOTER.size != size:
            raise self._damaged("section table does not end at the footer")
        if xxhash.xxh3_64_intdigest(mm[:HEADER.size] + mm[table_offset:table_end]) != digest:
            raise self._damaged("header or section table checksum mismatch")
        self.n_docs = n_docs
        self._table: dict[int, tuple[int, int, int, int]] = {}
        for i in range(n_sections):
            sid, code, off, length, xxh = SECTION.unpack_from(mm, table_offset + i * SECTION.size)
            if off + length > table_offset or code not in DTYPES:
                raise self._damaged(f"section {sid} out of bounds")
            self._table[sid] = (code, off, length, xxh)
        self._buf = memoryview(mm)
        if verify:
            for sid in self._table:
                self.verify(sid)
            self._verify_padding(table_offset)

    _CHUNK = 1 << 20

    def _damaged(self, why: str) -> DamagedError:
        return DamagedError(f"search index segment {self.path} is damaged: {why}; "
                            "run `kvmedia rebuild-index`", path=self.path)

    def _verify_padding(self, table_offset: int) -> None:
        """The alignment gaps are zeros: no checksum covers them, so check them directly
        (a flipped bit anywhere in the file is then found)."""
        pos = HEADER.size
        for _code, off, length, _xxh in sorted(self._table.values(), key=lambda t: t[1]):
            if off < pos or self._buf[pos:off].tobytes().strip(b"\0"):
                raise self._damaged("bad padding or overlapping sections")
            pos = off + length
        if pos > table_offset or self._buf[pos:table_offset].tobytes().strip(b"\0"):
            raise self._damaged("bad padding before the section table")

    def verify(self, section_id: int) -> None:
        """Check one section's checksum. Reads with pread, not through the mapping: pages
        read through the mmap would stay in this process's RSS; read() only warms the page
        cache, so a searcher's RSS holds just the pages its queries touch."""
        _code, off, length, xxh = self._table[section_id]
        digest = xxhash.xxh3_64()
        own = self._vfd is None
        try:
            fd = os.open(self.path, os.O_RDONLY) if own else self._vfd
        except OSError as exc:
            raise self._damaged(f"unreadable: {exc.strerror}") from exc
        assert fd is not None
        try:
            pos, end = off, off + length
            while pos < end:
                chunk = os.pread(fd, min(self._CHUNK, end - pos), pos)
                if not chunk:
                    raise self._damaged(f"section {section_id} truncated")
                digest.update(chunk)
                pos += len(chunk)
        finally:
            if own:
                os.close(fd)
        if digest.intdigest() != xxh:
            raise self._damaged(f"section {section_id} checksum mismatch")

    def has(self, section_id: int) -> bool:
        return section_id in self._table

    def array(self, section_id: int) -> np.ndarray:
        try:
            code, off, length, _ = self._table[section_id]
        except KeyError:
            raise self._damaged(f"section {section_id} missing") from None
        dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        return np.frombuffer(self._buf, dtype=dtype, count=length // dtype.itemsize, offset=off)

    def blob(self, section_id: int) -> memoryview:
        _code, off, length, _ = self._table[section_id]
        return self._buf[off:off + length]

    def bytes_of(self, section_id: int) -> bytes:
        return bytes(self.blob(section_id))

    FIND_LOOP_MAX = 2048
    """Occurrences found one `mmap.find` at a time before the rest are found with numpy."""

    def find_all(self, section_id: int, needle: bytes) -> np.ndarray:
        """Offsets (relative to the section) of every occurrence of `needle`, ascending (the
        occurrences may overlap); no copy. Rare needles: a loop of `mmap.find` (memchr
        speed); common ones (a letter or two): vectorised byte compares over the section."""
        _code, off, length, _ = self._table[section_id]
        end = off + length
        find = self._mm.find
        out: list[int] = []
        pos = find(needle, off, end)
        while pos >= 0:
            out.append(pos - off)
            if len(out) >= self.FIND_LOOP_MAX:
                head = np.asarray(out, dtype=np.int64)
                rest = self._find_all_vectorised(off, length, needle, pos - off + 1)
                return np.concatenate([head, rest])
            pos = find(needle, pos + 1, end)
        return np.asarray(out, dtype=np.int64)

    def _find_all_vectorised(self, off: int, length: int, needle: bytes, start: int
                             ) -> np.ndarray:
        data = np.frombuffer(self._buf, dtype=np.uint8, count=length, offset=off)[start:]
        width = len(needle)
        if len(data) < width:
            return np.zeros(0, dtype=np.int64)
        cand = np.flatnonzero(data[:len(data) - width + 1] == needle[0])
        for j in range(1, width):
            cand = cand[data[cand + j] == needle[j]]
        return cand.astype(np.int64) + start

    def release_pages(self) -> None:
        """Drop this process's mapping of the file's pages (they stay in the page cache and
        fault back in when read; the file never changes, so every view stays valid)."""
        try:
            self._mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):  # closed, or no madvise on this OS
            pass

    def close(self) -> None:
        """Unmap now if no numpy view is alive; otherwise the mapping goes with the last view."""
        try:
            self._buf.release()
            self._mm.close()
        except BufferError:
            pass
