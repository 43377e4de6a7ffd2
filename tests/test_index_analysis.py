"""Normalisation and terms: the rules the issue lists, one assertion each."""

from __future__ import annotations

import string
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmedia.index import analysis as A


def test_diacritics_case_and_special_letters() -> None:
    assert A.norm("bãi biển") == "bai bien"
    assert A.norm("Beyoncé") == "beyonce"
    assert A.norm("Đen Vâu") == "den vau"
    assert A.norm("Łukasz Żal") == "lukasz zal"
    assert A.norm("Røyksopp") == "royksopp"
    assert A.norm("STRASSE") == A.norm("Straße") == "strasse"
    assert A.norm("ﬁle") == "file"  # NFKC ligature
    assert A.norm("a\tb\n\x1bc") == "a b c"
    assert A.norm("a   b") == "a b"


def test_nfc_and_nfd_are_the_same_name() -> None:
    for name in ("Café Noël.mp3", "Tiếng Việt", "한국어", "ポケモン"):
        assert A.norm(unicodedata.normalize("NFD", name)) == A.norm(
            unicodedata.normalize("NFC", name))


def test_hangul_and_kana_voicing_survive() -> None:
    assert A.norm("사랑") == "사랑"
    assert A.norm("ガ") != A.norm("カ")


def test_terms_split_numbers_camel_case_and_cjk() -> None:
    t = A.terms("IMG_20230714.jpg", A.norm("IMG_20230714.jpg"))
    assert {"img", "20230714", "jpg"} <= t
    t = A.terms("HolidayInRome.mp4", A.norm("HolidayInRome.mp4"))
    assert {"holidayinrome", "holiday", "in", "rome", "mp4", "mp"} <= t
    t = A.terms("S01E02.mkv", A.norm("S01E02.mkv"))
    assert {"s01e02", "s", "01", "e", "02"} <= t
    t = A.terms("東京タワー", A.norm("東京タワー"))
    assert {"東京タワー", "東京", "京タ", "タワ", "ワー"} <= t


@given(st.text())
def test_every_term_is_inside_a_word(text: str) -> None:
    normed = A.norm(text)
    words = A.words(normed)
    for term in A.terms(text, normed):
        assert any(term in w for w in words)


@given(st.text(max_size=8), st.text(max_size=8))
def test_within_one_edit_matches_levenshtein(a: str, b: str) -> None:
    def lev(x: str, y: str) -> int:
        prev = list(range(len(y) + 1))
        for i, cx in enumerate(x, 1):
            cur = [i]
            for j, cy in enumerate(y, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (cx != cy)))
            prev = cur
        return prev[-1]

    assert A.within_one_edit(a, b) == (lev(a, b) <= 1)


@given(st.text())
def test_norm_is_idempotent(text: str) -> None:
    """A query typed in already-normalised form finds the same files."""
    once = A.norm(text)
    assert A.norm(once) == once


@settings(max_examples=2000, deadline=None)
@given(raw=st.text(alphabet=string.ascii_letters + string.digits + "_-. \t\x01", max_size=20))
def test_ascii_subtokens_equal_the_general_rule(raw: str) -> None:
    """The ASCII fast path of `terms` adds exactly what the general sub-token rule adds."""
    normed = A.norm(raw)
    ws = A.WORD_RE.findall(normed)
    fast: set[str] = set(ws)
    A._ascii_subtokens(raw, fast)
    general: set[str] = set(ws)
    A._subtokens(raw, ws, general)
    assert fast == general


_COMPONENT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="aAbB1_-. éÉßﬁ²ǅŉ\u0301東京タワー사랑／⁄", max_size=12),
    st.binary(max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


@settings(max_examples=1500, deadline=None)
@given(parts=st.lists(_COMPONENT, min_size=1, max_size=6))
def test_folder_terms_equal_terms_of_the_whole_path(parts: list[str]) -> None:
    """Component-wise analysis with its cache gives exactly `terms()` of the whole folder,
    for any components (non-UTF-8 bytes, combining marks, ligatures, CJK, slashes that NFKC
    makes), with the cache warm from other folders or cold."""
    raw_dir = "/".join(p.replace("/", "") for p in parts).encode("utf-8", "surrogateescape")
    want = A.terms(A.decode(raw_dir), A.norm_dir(raw_dir))
    cold = A.FolderTerms()
    assert cold(raw_dir) == want
    assert cold(raw_dir) == want  # from the cache
    warm = A.FolderTerms()
    for i in range(len(parts)):
        warm(b"/".join(raw_dir.split(b"/")[i:]))
    assert warm(raw_dir) == want
