"""The query language, one grammar for the CLI and the API.

    beach 2023            every word must match (AND) the name or the folder path
    "summer holiday"      a phrase: matched as one piece of text, spaces included
    -draft  -"old copy"   exclude files matching the word / phrase
    cat | dog             either (binds tighter than AND: `x cat | dog` = x AND (cat OR dog))
    ~holliday             also match words one edit away (typo tolerance)
    ids:<uuid>,<uuid>     exactly these records, in this order (other conditions still apply)
    type:video,audio  ext:mkv|mp4  trash:true|false|any  path:/mnt/a|/mnt/b  name:word
    size:>1G  size:10M..2G  mtime:2024-01..2024-06  mtime:-7d..  dur:>=1h30m  width:>=3840
    tag:beach|sunset      a tag from XMP keywords / NFO genres / analyzers (several: all)
    rating:>=4            XMP rating, -1 (rejected) .. 5

A word matches a file when, after normalisation (analysis.norm), it occurs anywhere in the
file's name or folder path; a word with no match anywhere in the library is matched fuzzily.
Unknown `field:` prefixes are plain text (so `12:30` searches for "12:30"). Errors point at the
offending column.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..index import analysis as A

MEDIA_TYPES = ("audio", "video", "image", "other")
SORTS = ("relevance", "mod", "moddesc", "name", "namedesc", "size", "sizedesc")
FIELDS = ("type", "ext", "trash", "path", "name", "ids", "size", "mtime", "dur", "width",
          "height", "tag", "rating")
RANGE_FIELDS = ("size", "mtime", "dur", "width", "height")
MAX_QUERY_CHARS = 4096

Cond = tuple[str, float]  # (op, value) with op one of > >= < <= ==


@dataclass
class Term:
    text: str                 # normalised
    raw: str                  # as typed
    field: str = "any"        # "any" | "name"
    fuzzy: bool = False       # `~` marker
    phrase: bool = False

    @property
    def plain(self) -> bool:
        return A.is_plain(self.text)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "raw": self.raw, "field": self.field, "fuzzy": self.fuzzy,
                "phrase": self.phrase, "plain": self.plain}


@dataclass
class Query:
    groups: list[list[Term]] = field(default_factory=list)   # AND of ORs
    excludes: list[Term] = field(default_factory=list)
    ids: list[str] | None = None
    types: set[str] | None = None
    exts: set[str] | None = None
    trash: bool | None = False                                # None: both
    paths: list[bytes] | None = None
    ranges: dict[str, list[Cond]] = field(default_factory=dict)
    tags: list[set[str]] = field(default_factory=list)      # AND of `tag:a|b` alternatives
    rating: list[Cond] = field(default_factory=list)
    restrict: set[str] | None = None  # uuids passing tags/rating: set by the engine (tagkeys)
    sort: str = "relevance"
    limit: int | None = 100
    offset: int = 0

    @property
    def has_text(self) -> bool:
        return bool(self.groups or self.excludes)

    def exact_name(self) -> str | None:
        """The name stem that ranks first: the words typed, when there is no OR."""
        if not self.groups or any(len(g) != 1 for g in self.groups):
            return None
        return " ".join(g[0].text for g in self.groups)

    def effective_sort(self) -> str:
        return "moddesc" if self.sort == "relevance" and not self.groups else self.sort

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [[t.to_json() for t in g] for g in self.groups],
            "excludes": [t.to_json() for t in self.excludes],
            "ids": self.ids, "types": sorted(self.types) if self.types else None,
            "exts": sorted(self.exts) if self.exts else None, "trash": self.trash,
            "paths": [os.fsdecode(p) for p in self.paths] if self.paths else None,
            "ranges": self.ranges, "tags": [sorted(t) for t in self.tags],
            "rating": self.rating, "sort": self.sort, "limit": self.limit,
            "offset": self.offset,
        }


def _error(text: str, col: int, why: str, fix: str) -> UsageError:
    caret = " " * col + "^"
    return UsageError(f"bad query at column {col + 1}: {why}\n  {text}\n  {caret}\n{fix}")


# -- tokens -----------------------------------------------------------------------------------

@dataclass
class _Tok:
    kind: str      # "word" | "phrase" | "or"
    value: str
    col: int
    negate: bool = False
    fuzzy: bool = False


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        start = i
        if ch == "|" and (i + 1 == n or text[i + 1].isspace()):
            out.append(_Tok("or", "|", start))
            i += 1
            continue
        negate = fuzzy = False
        if ch in "-~" and i + 1 < n and not text[i + 1].isspace():
            negate, fuzzy = ch == "-", ch == "~"
            i += 1
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _error(text, i, "unterminated quote", 'close the phrase with a second "')
            out.append(_Tok("phrase", text[i + 1:end], start, negate, fuzzy))
            i = end + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            if text[j] == '"':  # field:"quoted value"
                end = text.find('"', j + 1)
                if end < 0:
                    raise _error(text, j, "unterminated quote", 'close it with a second "')
                j = end + 1
                continue
            j += 1
        out.append(_Tok("word", text[i:j], start, negate, fuzzy))
        i = j
    return out


# -- values -----------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_DUR_RE = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_REL_RE = re.compile(r"-(\d+)(s|min|h|d|w|mo|y)")
_REL_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400,
                "y": 365 * 86400}


def _size(v: str) -> tuple[float, float]:
    m = _SIZE_RE.fullmatch(v)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{v!r} is not a size; write e.g. 700M, 1.5G, 4096")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return value, value


def _rating(v: str) -> tuple[float, float]:
    if v not in ("-1", "0", "1", "2", "3", "4", "5"):
        raise ValueError(f"{v!r} is not a rating; ratings go from -1 (rejected) to 5")
    return int(v), int(v)


def _int(v: str) -> tuple[float, float]:
    if not v.isdigit():
        raise ValueError(f"{v!r} is not a whole number")
    return int(v), int(v)


def _dur(v: str) -> tuple[float, float]:
    if re.fullmatch(r"\d+(?:\.\d+)?", v):
        return float(v), float(v)
    if re.fullmatch(r"\d+:\d{1,2}(?::\d{1,2})?", v):
        parts = [int(p) for p in v.split(":")]
        secs = parts[0] * 60 + parts[1] if len(parts) == 2 else (
            parts[0] * 3600 + parts[1] * 60 + parts[2])
        return float(secs), float(secs)
    m = _DUR_RE.fullmatch(v)
    if not v or not m or not any(m.groups()):
        raise ValueError(f"{v!r} is not a duration; write e.g. 90s, 45m, 1h30m, 1:30:00")
    h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    secs = h * 3600 + mi * 60 + s
    return secs, secs


def _mtime(v: str, now: float) -> tuple[float, float]:
    """[start, end) of a date, month or year in local time, or an instant `-7d`, in ns."""
    m = _REL_RE.fullmatch(v)
    if m:
        t = int((now - int(m.group(1)) * _REL_SECONDS[m.group(2)]) * 1e9)
        return t, t
    m = re.fullmatch(r"(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?", v)
    if not m:
        raise ValueError(f"{v!r} is not a date; write 2024, 2024-06, 2024-06-30 or -7d")
    y = int(m.group(1))
    mo = int(m.group(2)) if m.group(2) else None
    d = int(m.group(3)) if m.group(3) else None
    try:
        if d is not None:
            start = dt.datetime(y, mo or 1, d)
            end = start + dt.timedelta(days=1)
        elif mo is not None:
            start = dt.datetime(y, mo, 1)
            end = dt.datetime(y + (mo == 12), mo % 12 + 1, 1)
        else:
            start, end = dt.datetime(y, 1, 1), dt.datetime(y + 1, 1, 1)
    except ValueError as exc:
        raise ValueError(f"{v!r} is not a valid date ({exc})") from exc
    to_ns = [int(time.mktime(t.timetuple())) * 1_000_000_000 for t in (start, end)]
    return to_ns[0], to_ns[1] - 1


def _range(name: str, value: str, now: float) -> list[Cond]:
    """`>x`, `>=x`, `<x`, `<=x`, `=x`, `x`, `a..b`, `a..`, `..b` -> conditions on [lo, hi]
    where each bound is the [start, end] of its value (a month is a span)."""
    def parse(v: str) -> tuple[float, float]:
        if name == "size":
            return _size(v)
        if name == "mtime":
            return _mtime(v, now)
        if name == "dur":
            return _dur(v)
        if name == "rating":
            return _rating(v)
        return _int(v)

    if ".." in value:
        lo_s, _, hi_s = value.partition("..")
        if not lo_s and not hi_s:
            raise ValueError("a range needs at least one end, e.g. 10M..2G")
        out: list[Cond] = []
        if lo_s:
            out.append((">=", parse(lo_s)[0]))
        if hi_s:
            out.append(("<=", parse(hi_s)[1]))
        return out
    for op in (">=", "<=", ">", "<", "="):
        if value.startswith(op):
            lo, hi = parse(value[len(op):])
            return {">=": [(">=", lo)], "<=": [("<=", hi)], ">": [(">", hi)], "<": [("<", lo)],
                    "=": [(">=", lo), ("<=", hi)]}[op]
    lo, hi = parse(value)
    return [(">=", lo), ("<=", hi)]


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_TRUTH = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False,
          "any": None, "all": None}


# -- parse ------------------------------------------------------------------------------------

def _term(raw: str, tok: _Tok, field_name: str = "any") -> Term | None:
    text = A.norm(raw).strip()
    if not text:
        return None
    return Term(text, raw, field_name, tok.fuzzy, tok.kind == "phrase" or " " in text)


def parse_query(text: str, *, now: float | None = None) -> Query:
    """Parse `text` into a Query (filters from options are merged by `apply_options`)."""
    if len(text) > MAX_QUERY_CHARS:
        raise UsageError(f"query is {len(text)} characters long; the limit is "
                         f"{MAX_QUERY_CHARS}: shorten it")
    text = text.replace("\0", " ")
    now = time.time() if now is None else now
    q = Query()
    pending_or = False
    for tok in _tokens(text):
        if tok.kind == "or":
            if not q.groups or pending_or:
                raise _error(text, tok.col, "`|` needs a word on each side", "write `a | b`")
            pending_or = True
            continue
        if tok.kind == "word" and ":" in tok.value:
            name, _, value = tok.value.partition(":")
            if name.lower() in FIELDS and not tok.fuzzy:
                if pending_or:
                    raise _error(text, tok.col, "a field cannot be one side of `|`",
                                 "use `|` inside the field value: type:video|audio")
                _field(q, name.lower(), value.strip('"'), tok, text, now)
                continue
        terms: list[Term] = []
        if tok.kind == "word" and "|" in tok.value.strip("|") and not tok.negate:
            for part in tok.value.split("|"):
                t = _term(part, tok)
                if t is not None:
                    terms.append(t)
        else:
            t = _term(tok.value, tok)
            if t is not None:
                terms.append(t)
        if not terms:
            continue
        if tok.negate:
            q.excludes.extend(terms)
        elif pending_or:
            q.groups[-1].extend(terms)
            pending_or = False
        else:
            q.groups.append(terms)
    if pending_or:
        raise _error(text, len(text.rstrip()) - 1, "`|` at the end", "add a word after it")
    return q


def _field(q: Query, name: str, value: str, tok: _Tok, text: str, now: float) -> None:
    col = tok.col + len(name) + 1
    if name == "name":
        t = _term(value, tok, "name")
        if t is not None:
            (q.excludes.append(t) if tok.negate else q.groups.append([t]))
        return
    if tok.negate:
        raise _error(text, tok.col, f"`-{name}:` is not supported", "negate words, not filters")
    if not value:
        raise _error(text, col, f"`{name}:` needs a value", f"write e.g. {_EXAMPLES[name]}")
    parts = [p for p in re.split(r"[|,]", value) if p] if name != "path" else \
        [p for p in value.split("|") if p]
    if name == "type":
        bad = [p for p in parts if p.lower() not in (*MEDIA_TYPES, "all")]
        if bad:
            raise _error(text, col, f"unknown type {bad[0]!r}",
                         "use audio, video, image, other or all")
        types = {p.lower() for p in parts}
        if "all" not in types:
            q.types = types if q.types is None else q.types & types
    elif name == "ext":
        exts = {p.lower().lstrip(".") for p in parts}
        q.exts = exts if q.exts is None else q.exts & exts
    elif name == "trash":
        if value.lower() not in _TRUTH:
            raise _error(text, col, f"trash:{value} is not true, false or any",
                         "write trash:true, trash:false or trash:any")
        q.trash = _TRUTH[value.lower()]
    elif name == "path":
        q.paths = (q.paths or []) + [normalise_path_prefix(p) for p in parts]
    elif name == "tag":
        tags = {" ".join(A.norm(p).split()) for p in parts} - {""}
        if not tags:
            raise _error(text, col, "`tag:` needs a word", "write e.g. tag:beach")
        q.tags.append(tags)
    elif name == "rating":
        try:
            q.rating.extend(_range(name, value, now))
        except ValueError as exc:
            raise _error(text, col, str(exc), f"write e.g. {_EXAMPLES[name]}") from None
    elif name == "ids":
        bad = [p for p in parts if not _UUID_RE.fullmatch(p)]
        if bad:
            raise _error(text, col, f"{bad[0]!r} is not a uuid",
                         "write ids:<uuid>,<uuid> with 36-character uuids")
        q.ids = (q.ids or []) + [p.lower() for p in parts]
    else:
        try:
            conds = _range(name, value, now)
        except ValueError as exc:
            raise _error(text, col, str(exc), f"write e.g. {_EXAMPLES[name]}") from None
        q.ranges.setdefault(name, []).extend(conds)


_EXAMPLES = {"type": "type:video", "ext": "ext:mkv", "trash": "trash:true",
             "path": "path:/mnt/vol/photos", "ids": "ids:<uuid>", "size": "size:>1G",
             "mtime": "mtime:2024-01..2024-06", "dur": "dur:>=1h30m", "width": "width:>=3840",
             "height": "height:>=2160", "name": "name:holiday", "tag": "tag:beach|sunset",
             "rating": "rating:>=4"}


def normalise_path_prefix(p: str | bytes) -> bytes:
    raw = os.fsencode(p)
    if not raw.startswith(b"/"):
        raw = os.path.abspath(raw)
    return raw.rstrip(b"/") or b"/"


def apply_options(q: Query, *, media_type: str | None = None, trash: bool | None | str = "keep",
                  path_prefix: str | bytes | list[str | bytes] | None = None,
                  sort: str | None = None, limit: int | None | str = "keep",
                  offset: int | None = None) -> Query:
    """Merge option values (CLI flags, API keyword arguments) into a parsed query."""
    if media_type and media_type != "all":
        if media_type not in MEDIA_TYPES:
            raise UsageError(f"unknown type {media_type!r}; use one of "
                             f"{', '.join(MEDIA_TYPES)} or all")
        q.types = {media_type} if q.types is None else q.types & {media_type}
    if trash != "keep":
        q.trash = trash  # type: ignore[assignment]
    if path_prefix:
        items = path_prefix if isinstance(path_prefix, list) else (
            path_prefix.split(b"|") if isinstance(path_prefix, bytes) else path_prefix.split("|"))
        q.paths = (q.paths or []) + [normalise_path_prefix(p) for p in items if p]
    if sort is not None:
        if sort not in SORTS:
            raise UsageError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
        q.sort = sort
    if limit != "keep":
        if limit is not None and int(limit) < 0:
            raise UsageError("limit must not be negative")
        q.limit = limit  # type: ignore[assignment]
    if offset is not None:
        if offset < 0:
            raise UsageError("offset must not be negative")
        q.offset = offset
    return q
