"""Segment reader: here is a term (or a folder prefix, or a uuid), give me its doc ids.

Everything is a numpy view over the mmapped file (format.py); lookups are binary searches in
Python over the sorted term text (about 20 steps) and vectorised gathers of postings. No
per-query decoding of the whole segment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash

from . import analysis as A
from . import format as F

EMPTY = np.zeros(0, dtype=np.int64)
CHECK_MIN_CANDIDATES = 512
"""Candidates (terms or texts) always checked rather than scanning a whole text section;
above it, the budget grows with the section (terms: about 1 µs a check vs 1 ms a MB)."""
CHECK_TEXT_SHARE = 6
"""Candidate texts are checked (copied and compared with numpy, ~6 ns a byte) rather than
the whole section scanned (~1 ns a byte) while they are at most 1/CHECK_TEXT_SHARE of it."""
LINES_CHUNK_BYTES = 1 << 20
"""Candidate text copied per step by `line_occurrences`."""
LINE_WINDOW = 48
"""Bytes per row in `line_occurrences`: names up to this long (most) take the fast path."""


def line_occurrences(text: np.ndarray, off: np.ndarray, ids: np.ndarray, needle: bytes
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(positions, line ids), ascending by position, of every occurrence of `needle` (which
    holds no newline) in those lines of `text` listed in `ids` (ascending; line i is
    text[off[i]:off[i+1]], newline included). Lines that fit in a LINE_WINDOW-byte window
    are copied as rows of a 2-D array (a row copy each) and compared column by column;
    longer ones are gathered byte by byte."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids) or not needle:
        return EMPTY, EMPTY
    starts = off[ids].astype(np.int64)
    lens = off[ids + 1].astype(np.int64) - starts
    width = max(LINE_WINDOW, len(needle) + 1)
    fits = (lens <= width) & (starts <= len(text) - width)
    pos: list[np.ndarray] = []
    rows_of: list[np.ndarray] = []
    rows = np.flatnonzero(fits)
    if len(rows):
        windows = np.lib.stride_tricks.sliding_window_view(text, width)
        span = width - len(needle) + 1
        step = LINES_CHUNK_BYTES // width + 1
        for lo in range(0, len(rows), step):
            part = rows[lo:lo + step]
            hit = _match_starts(windows[starts[part]], needle, span)
            # a match may not start past the line's newline (that is the next line)
            hit &= np.arange(span) < lens[part, None]
            flat = np.flatnonzero(hit)  # faster than a 2-D nonzero
            r = part[flat // span]
            pos.append(starts[r] + flat % span)
            rows_of.append(r)
    rest = np.flatnonzero(~fits)
    if len(rest):
        p, r = _gathered_occurrences(text, starts[rest], lens[rest], needle)
        pos.append(p)
        rows_of.append(rest[r])
    if not pos:
        return EMPTY, EMPTY
    all_pos, all_rows = np.concatenate(pos), np.concatenate(rows_of)
    if len(rest) and len(rows):
        order = np.argsort(all_pos, kind="stable")
        all_pos, all_rows = all_pos[order], all_rows[order]
    return all_pos, ids[all_rows]


def _match_starts(buf: np.ndarray, needle: bytes, span: int) -> np.ndarray:
    """Where `needle` starts along the last axis of `buf` (1-D text, or 2-D rows): a bool
    array of the first `span` positions, one vectorised compare per needle byte."""
    hit = buf[..., :span] == needle[0]
    for j in range(1, len(needle)):
        hit &= buf[..., j:j + span] == needle[j]
    return hit


def _gathered_occurrences(text: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                          needle: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(positions, indexes into starts) of `needle` in the lines text[starts:starts+lens],
    gathered byte by byte into one buffer a chunk at a time (for lines past the window)."""
    ends = np.cumsum(lens)
    pos: list[np.ndarray] = []
    line: list[np.ndarray] = []
    lo = 0
    while lo < len(starts):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + LINES_CHUNK_BYTES, side="right")))
        ln = lens[lo:hi]
        total = int(ends[hi - 1]) - base
        shift = starts[lo:hi] - (ends[lo:hi] - ln - base)  # buffer index -> text position
        idx = np.repeat(shift, ln)
        idx += np.arange(total, dtype=np.int64)
        buf = text.take(idx)
        m = total - len(needle) + 1
        if m > 0:
            at = np.flatnonzero(_match_starts(buf, needle, m))
            if len(at):
                k = np.searchsorted(ends[lo:hi] - base, at, side="right")
                pos.append(at + shift[k])
                line.append(lo + k)
        lo = hi
    if not pos:
        return EMPTY, EMPTY
    return np.concatenate(pos), np.concatenate(line)


CACHE_BYTES = 16 << 20
"""Results of expensive lookups each segment keeps for the next searches (least recently
used go first): the tier maps of words matching many docs (`a`, `s`, `img`: the first
keystrokes of every search-as-you-type) and the occurrence lists of text scans (typing
`img_`, `img_2`, `img_20`... finds each longer needle among the occurrences of the shorter
one instead of scanning the text again, ~20 ms at a million names). Segments never change,
so an entry never goes stale; deletes are applied after, through the live mask. The
`search.cache_mb` setting (KVMEDIA_SEARCH_CACHE_MB) sets it; 0 turns the caches off."""
REFINE_MAX_FIRST = 1 << 18
"""Cached occurrences refined without asking the dictionary first: refining costs ~10 ns an
occurrence (1.5 ms for `img_2014` from the 157,502 of `img_201` at a million names), where
the dictionary's candidate lines cost ~1.7 ms to find and ~150 ns each to check (34,380 of
them, 6.7 ms in all). Past this many, the candidates may be far fewer."""
CHECK_COST_RATIO = 16
"""A candidate line checked costs about this many refined occurrences (see above)."""
CACHE_MIN_TEXT_BYTES = 1 << 20
"""Texts smaller than this are scanned again rather than cached (~1 ms a megabyte)."""


class ArrayCache:
    """A thread-safe LRU of tuples of numpy arrays, bounded by their bytes (a server searches
    on a thread pool). Stored arrays are made read-only: a caller that changed one would
    corrupt later answers, so it fails loudly instead."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple[object, ...], tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> tuple[np.ndarray, ...] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[object, ...], arrays: tuple[np.ndarray, ...]) -> None:
        size = sum(a.nbytes for a in arrays)
        if size > self.budget // 4:
            return  # an entry may not push out most of the others
        for a in arrays:
            a.flags.writeable = False
        with self._lock:
            if key in self._items:
                return
            self._items[key] = arrays
            self._bytes += size
            while self._bytes > self.budget:
                _k, old = self._items.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in old)

    def items(self) -> list[tuple[tuple[object, ...], tuple[np.ndarray, ...]]]:
        with self._lock:
            return list(self._items.items())


def sorted_unique(a: np.ndarray, *, presorted: bool = False) -> np.ndarray:
    """np.unique for integer ids, by sort + neighbour compare (numpy's hash-based unique is
    several times slower on the 10^4..10^6-element sets queries produce)."""
    if len(a) < 2:
        return a
    if not presorted and not (a[1:] >= a[:-1]).all():  # one pass; most sets come sorted
        a = np.sort(a)
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


@dataclass
class TermDict:
    """A sorted term dictionary with its postings (doc ids or folder ids)."""

    file: F.SegmentFile
    text_id: int
    off: np.ndarray
    rev: np.ndarray
    post_off: np.ndarray
    post: np.ndarray
    tri: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (keys, offsets, term ids)

    def __len__(self) -> int:
        return len(self.off) - 1

    def term(self, i: int) -> bytes:
        return bytes(self.file.blob(self.text_id)[int(self.off[i]):int(self.off[i + 1]) - 1])

    def _lower(self, key: bytes, prefix: bool) -> int:
        """First term >= key (prefix=False) or first term whose prefix > key (prefix=True)."""
        lo, hi = 0, len(self)
        n = len(key)
        while lo < hi:
            mid = (lo + hi) // 2
            t = self.term(mid)
            if (t[:n] <= key) if prefix else (t < key):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, term: bytes) -> int:
        i = self._lower(term, False)
        return i if i < len(self) and self.term(i) == term else -1

    def prefix_range(self, prefix: bytes) -> tuple[int, int]:
        return self._lower(prefix, False), self._lower(prefix, True)

    def suffix_ids(self, suffix: str) -> np.ndarray:
        """Term ids ending with `suffix` (through the reversed-order permutation)."""
        key = suffix[::-1]
        n = len(key)

        def rkey(i: int) -> str:
            return self.term(int(self.rev[i])).decode("utf-8", "surrogatepass")[::-1]

        def bound(upper: bool) -> int:
            lo, hi = 0, len(self)
            while lo < hi:
                mid = (lo + hi) // 2
                k = rkey(mid)
                if (k[:n] <= key) if upper else (k < key):
                    lo = mid + 1
                else:
                    hi = mid
            return lo

        return self.rev[bound(False):bound(True)].astype(np.int64)

    def containing(self, needle: bytes) -> np.ndarray:
        """Ids of the terms that contain `needle`, ascending: through the trigram sections
        (intersect the posting lists of the needle's trigrams, rarest first, then check each
        candidate), or by a scan of the term text when there are none or it is cheaper."""
        if self.tri is not None and len(needle) >= 3:
            cand = self._trigram_candidates(needle)
            if cand is not None:
                if len(needle) == 3:
                    return cand
                keep = [i for i in cand.tolist() if needle in self.term(i)]
                return np.asarray(keep, dtype=np.int64)
        hits = self.file.find_all(self.text_id, needle)
        if not len(hits):
            return EMPTY
        # Offsets and positions in one dtype: a mixed u32/u64 search costs ~1.7x as much.
        ids = np.searchsorted(self.off, hits.astype(self.off.dtype), side="right") - 1
        return sorted_unique(ids, presorted=True)

    def _trigram_candidates(self, needle: bytes) -> np.ndarray | None:
        """Term ids holding every trigram of `needle`; None when checking them one by one
        would cost more than scanning the term text (about 1 µs a term vs 1 ms a megabyte)."""
        assert self.tri is not None
        keys, off, terms = self.tri
        b = needle
        wanted = np.unique(np.fromiter(
            ((b[i] << 16) | (b[i + 1] << 8) | b[i + 2] for i in range(len(b) - 2)),
            dtype=np.uint32))
        pos = np.searchsorted(keys, wanted)
        if (pos >= len(keys)).any() or (keys[np.minimum(pos, len(keys) - 1)] != wanted).any():
            return EMPTY
        starts, ends = off[pos].astype(np.int64), off[pos + 1].astype(np.int64)
        order = np.argsort(ends - starts, kind="stable")
        cand = terms[starts[order[0]]:ends[order[0]]]
        for j in order[1:]:
            if len(cand) <= 16:
                break
            other = terms[starts[j]:ends[j]]
            pos2 = np.minimum(np.searchsorted(other, cand), len(other) - 1)
            cand = cand[other[pos2] == cand]
        budget = max(CHECK_MIN_CANDIDATES, len(self.file.blob(self.text_id)) // 1000)
        if len(needle) > 3 and len(cand) > budget:
            return None
        return cand.astype(np.int64)

    def postings_range(self, lo: int, hi: int) -> np.ndarray:
        return self.post[int(self.post_off[lo]):int(self.post_off[hi])]

    def postings(self, ids: np.ndarray) -> np.ndarray:
        """Concatenated postings of `ids` (not sorted across terms)."""
        return gather(self.post_off, self.post, ids)


def gather(off: np.ndarray, data: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """data[off[i]:off[i+1]] for every i in ids, concatenated, in one vectorised step."""
    if len(ids) == 0:
        return EMPTY
    ids = np.asarray(ids, dtype=np.int64)
    starts = off[ids].astype(np.int64)
    lens = off[ids + 1].astype(np.int64) - starts
    total = int(lens.sum())
    if total == 0:
        return EMPTY
    shift = starts - (np.cumsum(lens) - lens)
    return data[np.arange(total, dtype=np.int64) + np.repeat(shift, lens)]


_PAIRS_OF = {F.NAME_TEXT: F.NAME_PAIRS, F.DIR_TEXT: F.DIR_PAIRS}
"""The byte-pair bitmap section of each scanned text section."""


class TextOccurrences:
    """Where needles occur in a segment's texts: scans through mmap + numpy, skipped when the
    section's pair bitmap lacks a byte pair of the needle, and refined from a cached shorter
    needle when one is inside the new one."""

    def __init__(self, file: F.SegmentFile, cache: ArrayCache) -> None:
        self.file = file
        self.cache = cache
        self._pairs: dict[int, np.ndarray | None] = {}

    def may_contain(self, section: int, needle: bytes) -> bool:
        """False when some byte pair (or single byte) of `needle` is nowhere in the text."""
        pairs_id = _PAIRS_OF.get(section)
        if pairs_id is None:
            return True
        if section not in self._pairs:
            self._pairs[section] = (self.file.array(pairs_id) if self.file.has(pairs_id)
                                    else None)
        bits = self._pairs[section]
        if bits is None or not needle:
            return True
        if len(needle) == 1:  # every byte of the text is followed by one (each ends in \n)
            return bool(bits[needle[0] << 5:(needle[0] + 1) << 5].any())
        for i in range(len(needle) - 1):
            v = (needle[i] << 8) | needle[i + 1]
            if not (int(bits[v >> 3]) >> (v & 7)) & 1:
                return False
        return True

    def find(self, section: int, needle: bytes, off: np.ndarray,
             candidates: Callable[[], np.ndarray | None] | None = None
             ) -> tuple[np.ndarray, np.ndarray, str]:
        """(positions, line ids, how) of every occurrence of `needle` in text `section`,
        whose lines start at `off` (the line of a position is its doc or folder id); both
        ascending. In order of cost: the cache, a refinement of a cached needle inside this
        one, the lines `candidates()` names (every line that can hold the needle, from the
        dictionary; None when they are too many), a scan of the whole text."""
        if not self.may_contain(section, needle):
            return EMPTY, EMPTY, "pairs"
        key = ("text", section, needle)
        hit = self.cache.get(key)
        if hit is not None:
            return hit[0], hit[1], "cache"
        base = self._base(section, needle)
        cand = None
        if candidates is not None and (base is None or len(base[1]) > REFINE_MAX_FIRST):
            cand = candidates()  # a big cached base (say `_`) can cost more than a check
            if cand is not None and base is not None and (
                    len(cand) * CHECK_COST_RATIO > len(base[1])):
                cand = None
        if base is not None and cand is None:
            pos, ids = self._refine(section, needle, *base)
            how = "refined"
        elif cand is not None:
            text = np.frombuffer(self.file.blob(section), dtype=np.uint8)
            pos, ids = line_occurrences(text, off, cand, needle)
            how = "dictionary+check"
        else:
            pos = self.file.find_all(section, needle)
            ids = (np.searchsorted(off, pos.astype(off.dtype), side="right").astype(np.int64) - 1
                   if len(pos) else EMPTY)
            how = "text-scan"
        if len(self.file.blob(section)) >= CACHE_MIN_TEXT_BYTES:
            self.cache.put(key, (pos.astype(np.uint32), ids.astype(np.uint32)))
        return pos, ids, how

    def _base(self, section: int, needle: bytes) -> tuple[bytes, np.ndarray, np.ndarray] | None:
        """The cached needle inside `needle` with the fewest occurrences."""
        best = None
        for key, arrays in self.cache.items():
            if key[0] == "text" and key[1] == section and isinstance(key[2], bytes) and (
                    key[2] in needle) and (best is None or len(arrays[0]) < len(best[1])):
                best = (key[2], arrays[0], arrays[1])
        return best

    def _refine(self, section: int, needle: bytes, inner: bytes, pos: np.ndarray,
                ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Occurrences of `needle` from those of `inner` (a part of it): an occurrence of the
        needle at p holds `inner` at p + shift, in the same line (no needle holds a newline)."""
        text = np.frombuffer(self.file.blob(section), dtype=np.uint8)
        shift = needle.find(inner)
        p = pos.astype(np.int64) - shift
        line = ids.astype(np.int64)
        ok = (p >= 0) & (p + len(needle) <= len(text))
        if not ok.all():
            p, line = p[ok], line[ok]
        for j, byte in enumerate(needle):
            if shift <= j < shift + len(inner) or not len(p):
                continue
            keep = np.flatnonzero(text[p + j] == byte)  # take() beats boolean indexing
            p, line = p.take(keep), line.take(keep)
        return p, line


class Segment:
    """One opened segment. `name` is its file name in the index directory."""

    def __init__(self, path: str, name: str, *, verify: bool = True,
                 cache_bytes: int = CACHE_BYTES) -> None:
        f = self.file = F.SegmentFile(path, verify=verify)
        self.name = name
        self.n = f.n_docs
        self.uuid_raw = f.array(F.DOC_UUID)
        self.mtime = f.array(F.DOC_MTIME)
        self.size = f.array(F.DOC_SIZE)
        self.meta = f.array(F.DOC_META)
        self.ext = f.array(F.DOC_EXT)
        self.dur = f.array(F.DOC_DUR)
        self.width = f.array(F.DOC_WIDTH)
        self.height = f.array(F.DOC_HEIGHT)
        self.doc_dir = f.array(F.DOC_DIR)
        self.stem = f.array(F.DOC_STEM)
        self.name_rank = f.array(F.DOC_NAMERANK)
        self.name_off = f.array(F.NAME_OFF)
        self.dir_off = f.array(F.DIR_OFF)
        self.dirraw_off = f.array(F.DIRRAW_OFF)
        self.dirdoc_off = f.array(F.DIRDOC_OFF)
        self.dirdoc = f.array(F.DIRDOC)
        self.uuid_hash = f.array(F.UUID_HASH)
        self.uuid_hash_doc = f.array(F.UUID_HASH_DOC)
        self.names = TermDict(f, F.NTERM_TEXT, f.array(F.NTERM_OFF), f.array(F.NTERM_REV),
                              f.array(F.NPOST_OFF), f.array(F.NPOST),
                              self._trigrams(F.NTRI_KEY, F.NTRI_OFF, F.NTRI_TERM))
        self.dirs = TermDict(f, F.DTERM_TEXT, f.array(F.DTERM_OFF), f.array(F.DTERM_REV),
                             f.array(F.DPOST_OFF), f.array(F.DPOST),
                             self._trigrams(F.DTRI_KEY, F.DTRI_OFF, F.DTRI_TERM))
        self.exts = [e.decode() for e in f.bytes_of(F.EXT_TEXT).split(b"\n")[:-1]]
        self.cache = ArrayCache(cache_bytes)
        self.texts = TextOccurrences(f, self.cache)
        self.n_dirs = len(self.dir_off) - 1

    def _trigrams(self, key_id: int, off_id: int, term_id: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        f = self.file
        if not f.has(key_id):
            return None  # written before the trigram sections existed
        return f.array(key_id), f.array(off_id), f.array(term_id)

    # -- per doc ------------------------------------------------------------------------------

    def uuid(self, doc: int) -> str:
        h = self.uuid_raw[doc * 16:doc * 16 + 16].tobytes().hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def uuids(self, docs: np.ndarray) -> list[str]:
        """`uuid(doc)` for many docs in one numpy gather and one hex conversion."""
        if not len(docs):
            return []
        h = self.uuid_raw.reshape(-1, 16)[np.asarray(docs, dtype=np.int64)].tobytes().hex()
        return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-"
                f"{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]

    def nname(self, doc: int) -> str:
        raw = self.file.blob(F.NAME_TEXT)[int(self.name_off[doc]):int(self.name_off[doc + 1]) - 1]
        return bytes(raw).decode("utf-8", "surrogatepass")

    def ndir(self, dir_id: int) -> str:
        lo, hi = int(self.dir_off[dir_id]), int(self.dir_off[dir_id + 1]) - 1
        return bytes(self.file.blob(F.DIR_TEXT)[lo:hi]).decode("utf-8", "surrogatepass")

    def raw_dir(self, dir_id: int) -> bytes:
        lo, hi = int(self.dirraw_off[dir_id]), int(self.dirraw_off[dir_id + 1])
        return bytes(self.file.blob(F.DIRRAW_TEXT)[lo:hi])

    # -- sets ---------------------------------------------------------------------------------

    def docs_of_dirs(self, dir_ids: np.ndarray) -> np.ndarray:
        return gather(self.dirdoc_off, self.dirdoc, dir_ids)

    def _text_of(self, folders: bool) -> tuple[int, np.ndarray]:
        """(text section, line offsets) of the folders or of the names."""
        return (F.DIR_TEXT, self.dir_off) if folders else (F.NAME_TEXT, self.name_off)

    def text_hits(self, needle: bytes, words: list[bytes], folders: bool
                  ) -> tuple[np.ndarray, str]:
        """Docs (or folder ids, `folders`) whose normalised text contains `needle` (which
        holds no newline), ascending, and how they were found (TextOccurrences.find);
        `words` are the maximal runs of word characters inside the needle."""
        section, off = self._text_of(folders)
        _pos, ids, how = self.texts.find(section, needle, off,
                                         lambda: self.candidate_lines(words, folders))
        return sorted_unique(ids, presorted=True), how

    def candidate_lines(self, words: list[bytes], folders: bool) -> np.ndarray | None:
        """Docs (or folder ids) that may hold a needle whose word runs are `words`: any text
        holding it has a word, hence a term, containing each of them. Those of the word with
        the fewest postings; None when their texts are so large a share of the section that
        scanning all of it is cheaper."""
        d = self.dirs if folders else self.names
        section, off = self._text_of(folders)
        size = len(self.file.blob(section))
        best: tuple[int, np.ndarray] | None = None
        for word in sorted(words, key=len, reverse=True):
            if best is not None and len(word) < 3:
                break  # a short word's term list is long to find and rarely the smallest
            ids = d.containing(word)
            n_post = int(d.post_off[ids + 1].astype(np.int64).sum()
                         - d.post_off[ids].astype(np.int64).sum())
            if best is None or n_post < best[0]:
                best = (n_post, ids)
        if best is None:
            return None
        n_post, ids = best
        if n_post > CHECK_MIN_CANDIDATES and n_post * 8 * CHECK_TEXT_SHARE > size:
            return None  # even before removing repeats, too many to beat a scan
        cand = sorted_unique(d.postings(ids))
        if len(cand) > CHECK_MIN_CANDIDATES and int(
                off[cand + 1].astype(np.int64).sum()
                - off[cand].astype(np.int64).sum()) * CHECK_TEXT_SHARE > size:
            return None
        return cand

    def dir_prefix_range(self, prefix: bytes) -> tuple[int, int]:
        """Folder ids whose raw path starts with `prefix` (folders sorted by raw bytes)."""
        lo, hi = 0, self.n_dirs
        n = len(prefix)

        def bound(upper: bool) -> int:
            a, b = lo, hi
            while a < b:
                mid = (a + b) // 2
                d = self.raw_dir(mid)
                if (d[:n] <= prefix) if upper else (d < prefix):
                    a = mid + 1
                else:
                    b = mid
            return a

        return bound(False), bound(True)

    def dir_id(self, raw: bytes) -> int:
        lo, hi = self.dir_prefix_range(raw)
        for i in range(lo, hi):
            if self.raw_dir(i) == raw:
                return i
        return -1

    def lookup(self, uuids: list[str]) -> np.ndarray:
        """Doc ids of those `uuids` present in this segment, ascending (vectorised: the
        delta can shadow thousands of uuids, and this runs whenever it changes)."""
        if not uuids or self.n == 0:
            return EMPTY
        hashes = np.fromiter((xxhash.xxh64_intdigest(u.encode()) for u in uuids), dtype=np.uint64,
                             count=len(uuids))
        raw = np.frombuffer(bytes.fromhex("".join(uuids).replace("-", "")),
                            dtype=np.uint8).reshape(len(uuids), 16)
        table = self.uuid_raw.reshape(-1, 16)
        pos = np.searchsorted(self.uuid_hash, hashes)
        found: list[np.ndarray] = []
        todo = np.arange(len(uuids))
        while len(todo):  # each round checks the next entry with the same hash (collisions)
            p = pos[todo]
            ok = p < self.n
            todo, p = todo[ok], p[ok]
            same = self.uuid_hash[p] == hashes[todo]
            todo, p = todo[same], p[same]
            docs = self.uuid_hash_doc[p].astype(np.int64)
            hit = (table[docs] == raw[todo]).all(axis=1)
            found.append(docs[hit])
            todo = todo[~hit]
            pos[todo] += 1
        return np.sort(np.concatenate(found)) if found else EMPTY

    def text_of(self, doc: int) -> str:
        return self.ndir(int(self.doc_dir[doc])) + "/" + self.nname(doc)

    def fuzzy_ids(self, d: TermDict, q: str) -> np.ndarray:
        """Terms within one edit of `q`: each shares q's first half or its second half."""
        h = len(q) // 2
        lo, hi = d.prefix_range(A.encode(q[:h]))
        cand = np.concatenate([np.arange(lo, hi, dtype=np.int64), d.suffix_ids(q[h:])])
        if len(cand) == 0:
            return EMPTY
        lens = (d.off[cand + 1].astype(np.int64) - d.off[cand].astype(np.int64) - 1)
        qlen = len(A.encode(q))
        cand = sorted_unique(cand[np.abs(lens - qlen) <= 4])  # UTF-8: one char is at most 4 bytes
        keep = [int(i) for i in cand
                if A.within_one_edit(q, d.term(int(i)).decode("utf-8", "surrogatepass"))]
        return np.asarray(keep, dtype=np.int64)
