"""The query grammar: what each construct parses to, and errors that point at the bad part."""

from __future__ import annotations

import pytest

from kvmedia.errors import UsageError
from kvmedia.search.query import apply_options, parse_query


def test_words_phrases_or_not_fuzzy() -> None:
    q = parse_query('beach "Summer  Holiday" -draft cat | dog ~holliday')
    assert [[t.text for t in g] for g in q.groups] == [
        ["beach"], ["summer holiday"], ["cat", "dog"], ["holliday"]]
    assert [t.text for t in q.excludes] == ["draft"]
    assert q.groups[3][0].fuzzy and not q.groups[0][0].fuzzy
    assert parse_query("a|b").groups[0][1].text == "b"


def test_fields() -> None:
    q = parse_query("type:video|audio ext:.MKV,mp4 trash:any path:/mnt/a|/mnt/b/ name:x 12:30")
    assert q.types == {"video", "audio"}
    assert q.exts == {"mkv", "mp4"}
    assert q.trash is None
    assert q.paths == [b"/mnt/a", b"/mnt/b"]
    assert q.groups[0][0].field == "name"
    assert q.groups[1][0].text == "12:30"  # unknown field: plain text


def test_ranges() -> None:
    q = parse_query("size:>1G size:10M..2G width:>=3840 dur:>=1h30m dur:..90")
    assert q.ranges["size"] == [(">", 1 << 30), (">=", 10 << 20), ("<=", 2 << 30)]
    assert q.ranges["width"] == [(">=", 3840)]
    assert q.ranges["dur"] == [(">=", 5400.0), ("<=", 90.0)]
    q = parse_query("mtime:2024-01..2024-06")
    (op1, lo), (op2, hi) = q.ranges["mtime"]
    assert (op1, op2) == (">=", "<=") and hi - lo > 180 * 86400 * 10**9
    q = parse_query("mtime:-7d..", now=1_000_000.0)
    assert q.ranges["mtime"] == [(">=", (1_000_000 - 7 * 86400) * 10**9)]


@pytest.mark.parametrize("text,col", [('"open', 1), ("size:>1Q", 6), ("type:movie", 6),
                                      ("| a", 1), ("a |", 3), ("mtime:2024-13", 7),
                                      ("ids:nope", 5), ("trash:maybe", 7)])
def test_errors_point_at_the_bad_part(text: str, col: int) -> None:
    with pytest.raises(UsageError) as err:
        parse_query(text)
    assert f"column {col}:" in err.value.message
    assert err.value.message.splitlines()[-2].index("^") == col + 1


def test_options_merge_and_validate() -> None:
    q = apply_options(parse_query("type:video"), media_type="audio", trash=None,
                      path_prefix="/x|/y", sort="size", limit=5, offset=2)
    assert q.types == set() and q.trash is None and q.paths == [b"/x", b"/y"]
    with pytest.raises(UsageError):
        apply_options(parse_query(""), sort="random")
    with pytest.raises(UsageError):
        parse_query("x" * 5000)
