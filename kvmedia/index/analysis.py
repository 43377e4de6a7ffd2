"""Text analysis: the one definition of what a name or folder "says", shared by the segment
writer, the delta, the planner and the brute-force oracle (so the fast and slow paths agree).

`norm(text)`: NFKC -> full case folding -> NFD -> drop diacritic marks and fold the letters that
have no decomposition (đ -> d, ł -> l, ø -> o, ...) -> NFC; control characters become a space and
runs of spaces collapse to one. NFC and NFD spellings (Macs over SMB) give the same text.
Bytes that are not UTF-8 are decoded with surrogateescape and encoded back with surrogatepass,
so a non-UTF-8 name keeps its own distinct characters.

A *word* is a maximal run of `WORD_RE` characters (letters and digits of any script; `_` and
punctuation separate words). *Terms* are what the dictionary holds: every word, plus
sub-tokens that rank as exact tokens — letter/digit splits (`img20230714` -> `img`, `20230714`),
ASCII camelCase splits (`HolidayInRome` -> `holiday`, `in`, `rome`) and CJK/kana/Hangul bigrams.
Every term is a substring of a word, which is what lets the planner answer a plain word from
the dictionary alone without re-reading any text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache

WORD_RE = re.compile(r"[^\W_]+")
_SPLIT_ASCII = re.compile(r"\d+|[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_SPLIT_ANY = re.compile(r"\d+|[^\W\d_]+")
_CJK_RUN = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]{2,}")

_MARK_RANGES = ((0x300, 0x370), (0x1AB0, 0x1B00), (0x1DC0, 0x1E00), (0x20D0, 0x2100),
                (0xFE20, 0xFE30))
_LETTER_FOLDS = {"đ": "d", "ð": "d", "ł": "l", "ø": "o", "ħ": "h", "ı": "i", "ŧ": "t",
                 "þ": "th", "æ": "ae", "œ": "oe", "ŀ": "l", "ĸ": "k"}
_TABLE: dict[int, str | None] = {}
for _lo, _hi in _MARK_RANGES:
    _TABLE.update(dict.fromkeys(range(_lo, _hi)))
_TABLE.update({ord(k): v for k, v in _LETTER_FOLDS.items()})
_CONTROL = {i: " " for i in [*range(32), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]}
_TABLE.update(_CONTROL)

FUZZY_MIN_LEN = 3
"""Shorter words are never matched fuzzily: one edit away from two letters is anything."""


def _collapse(text: str) -> str:
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def norm(text: str) -> str:
    """Search form of a text (see module docstring). Pure function of its argument."""
    if text.isascii():
        text = text.lower()
        if not text.isprintable():
            text = text.translate(_CONTROL)
        return _collapse(text) if "  " in text else text
    text = unicodedata.normalize("NFKC", text).casefold()
    text = unicodedata.normalize("NFD", text).translate(_TABLE)
    return _collapse(unicodedata.normalize("NFC", text))


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """UTF-8 that keeps lone surrogates (from non-UTF-8 names); byte order = code point order."""
    return text.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=65536)
def norm_dir(raw_dir: bytes) -> str:
    """Search form of a folder path: each component normalised, joined by "/"."""
    if raw_dir.isascii():
        return norm(raw_dir.decode("ascii"))
    return "/".join([_norm_component(part) for part in raw_dir.split(b"/")])


@lru_cache(maxsize=65536)
def _norm_component(part: bytes) -> str:
    """One folder name normalised: names repeat across folders far more than whole paths."""
    return norm(decode(part))


def stem(normed_name: str) -> str:
    """The name without its extension (a leading dot is not an extension)."""
    dot = normed_name.rfind(".")
    return normed_name[:dot] if dot > 0 else normed_name


def words(normed: str) -> list[str]:
    return WORD_RE.findall(normed)


_ASCII_BOUNDARY = re.compile(r"[0-9][A-Za-z]|[A-Za-z][0-9]|[a-z][A-Z]|[A-Z][A-Z][a-z]")
"""A letter/digit or case boundary inside an ASCII word; a text without one has only words
that are all digits or letters in lower, upper or title case, which never split."""


def terms(raw: str, normed: str) -> set[str]:
    """Dictionary terms of one text: words of `normed`, plus sub-tokens from `raw` (which
    still has its letter case, needed for camelCase)."""
    ws = WORD_RE.findall(normed)
    out = set(ws)
    if raw.isascii():
        _ascii_subtokens(raw, out)
        return out
    _cjk_bigrams(ws, out)
    _subtokens(raw, ws, out)
    return out


def _cjk_bigrams(ws: list[str], out: set[str]) -> None:
    """Add the CJK/kana/Hangul bigrams of the words `ws`."""
    for w in ws:
        if not w.isascii():
            for run in _CJK_RUN.findall(w):
                out.update(run[i:i + 2] for i in range(len(run) - 1))


def _pieces(raw: str) -> Iterator[str]:
    """The normalised letter/digit and camelCase pieces of the words of `raw` that split."""
    for rw in WORD_RE.findall(raw):
        if rw.isdigit() or (rw.isalpha() and (rw.islower() or rw.isupper() or rw.istitle())):
            continue
        pieces = (_SPLIT_ASCII if rw.isascii() else _SPLIT_ANY).findall(rw)
        if len(pieces) < 2:
            continue
        for piece in pieces:
            p = norm(piece)
            if p:
                yield p


def _subtokens(raw: str, ws: list[str], out: set[str]) -> None:
    """Add the letter/digit and camelCase pieces of the words of `raw` that are part of a
    word of `ws` (the normalised words)."""
    for p in _pieces(raw):
        if p not in out and any(p in w for w in ws):
            out.add(p)


class FolderTerms:
    """`terms()` of folder paths, analysed one path component at a time with a cache, so the
    parent folders shared by thousands of folders are analysed once (a million files sit in
    ~270k folders whose components repeat).

    Exact, not an approximation (tests/test_index_analysis.py compares it with `terms()`):
    words, CJK bigrams and sub-token pieces never cross a "/" (not a word character, and
    `norm_dir` normalises each component alone), and for ASCII words `_subtokens` and
    `_ascii_subtokens` agree. The one rule that looks past a component is `_subtokens`' check
    that a piece lies inside *some* word of the whole text: a component keeps the pieces that
    pass against its own words, and the rare others are checked against every word of the
    path when the path is put together."""

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]] = {}

    def __call__(self, raw_dir: bytes) -> set[str]:
        out: set[str] = set()
        pending: list[str] = []
        cache = self._cache
        parts = [cache.get(part) or self._component(part) for part in raw_dir.split(b"/")]
        for sure, _words, unsure in parts:
            out |= sure
            pending += unsure
        if pending:
            ws = [w for part in parts for w in part[1]]
            out.update(p for p in pending if any(p in w for w in ws))
        return out

    def _component(self, part: bytes) -> tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]:
        """(terms of any path holding `part`, its words, pieces needing the global check)."""
        raw = decode(part)
        ws = WORD_RE.findall(norm(raw))
        out = set(ws)
        _cjk_bigrams(ws, out)
        pending = []
        for p in _pieces(raw):
            if any(p in w for w in ws):
                out.add(p)
            else:
                pending.append(p)
        entry = (frozenset(out), tuple(ws), tuple(pending))
        self._cache[part] = entry
        return entry


def _ascii_subtokens(raw: str, out: set[str]) -> None:
    """`_subtokens` for ASCII text, faster: nothing to do without a boundary; a word splits
    when it has more than one piece; a lowered piece is always part of its lowered word, one
    of the normalised words."""
    if _ASCII_BOUNDARY.search(raw) is None:
        return
    for rw in WORD_RE.findall(raw):
        pieces = _SPLIT_ASCII.findall(rw)
        if len(pieces) > 1:
            out.update(piece.lower() for piece in pieces)


def is_plain(normed_query_word: str) -> bool:
    """A plain word is one word and nothing else: the dictionary answers it exactly."""
    return bool(normed_query_word) and WORD_RE.fullmatch(normed_query_word) is not None


def within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance(a, b) <= 1."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1:] == b[i + 1:]
    return a[i:] == b[i + 1:]
