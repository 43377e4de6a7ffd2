"""The per-segment search caches (word maps, text-scan occurrences) and the byte-pair bitmaps
never change an answer: typed sequences, deletes between keystrokes and random texts are
checked against the brute-force oracle and against plain scans."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_helpers import assert_same, delete_uuids, gen_corpus, put_paths

from kvmedia import Library
from kvmedia.index import analysis as A
from kvmedia.index import format as F
from kvmedia.index import segment
from kvmedia.index.builder import pair_bitmap
from kvmedia.index.segment import ArrayCache, TextOccurrences

TYPED = ["img_2023", "IMG_0", "s01e0", "Sherlock.S0", "love_", "- love", "a.b", "(20",
         "photos/2023/0", "dsc0", "bãi_b", "_20230", "e.j", "京"]


def prefixes(word: str) -> list[str]:
    return [word[:i] for i in range(1, len(word) + 1)]


@pytest.fixture
def typing_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Library]:
    """One segment over a generated corpus, with every text big enough to be cached."""
    monkeypatch.setattr(segment, "CACHE_MIN_TEXT_BYTES", 0)
    monkeypatch.setattr("kvmedia.search.planner.WORD_CACHE_MIN_DOCS", 1)
    lib = Library.open(tmp_path / "data")
    put_paths(lib, list(gen_corpus.paths(1500, seed=11)))
    lib.optimize()
    yield lib
    lib.close()


def _segments(lib: Library) -> list[segment.Segment]:
    lib.search("zzzzq")  # loads the current segments
    state = lib.search_engine._state
    assert state is not None
    return [seg for seg, _dead in state.segments]


def test_typing_then_backspacing_matches_oracle(typing_lib: Library) -> None:
    for word in TYPED:
        for q in prefixes(word) + prefixes(word)[::-1]:
            assert_same(typing_lib, q, limit=30)
    cached = [k for seg in _segments(typing_lib) for k, _ in seg.cache.items()]
    assert any(k[0] == "text" for k in cached) and any(k[0] == "word" for k in cached)


def test_deletes_between_keystrokes_reach_cached_answers(typing_lib: Library) -> None:
    """A cached map is the segment's before deletes: each search applies the live mask."""
    rng = random.Random(5)
    for word in ("img_2", "love", "s0", "a"):
        for q in prefixes(word):
            assert_same(typing_lib, q, limit=30)
        hits = typing_lib.search(word, limit=None).hits
        assert hits, word
        delete_uuids(typing_lib, [h["uuid"] for h in rng.sample(hits, min(5, len(hits)))])
        for q in prefixes(word):
            assert_same(typing_lib, q, limit=30)


def test_no_cache_when_the_budget_is_zero(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_SEARCH_CACHE_MB", "0")
    monkeypatch.setattr(segment, "CACHE_MIN_TEXT_BYTES", 0)
    with Library.open(tmp_path / "data") as lib:
        put_paths(lib, list(gen_corpus.paths(300, seed=2)))
        lib.optimize()
        for q in prefixes("img_2023") + ["a", "e"]:
            assert_same(lib, q, limit=20)
        assert all(not seg.cache.items() for seg in _segments(lib))


def test_array_cache_evicts_least_recently_used_and_freezes_entries() -> None:
    cache = ArrayCache(budget=4000)
    a, b, c = (np.zeros(100, dtype=np.int64) for _ in range(3))  # 800 bytes each
    cache.put(("a",), (a,))
    cache.put(("b",), (b,))
    cache.put(("c",), (c,))
    assert cache.get(("a",)) is not None  # now most recent
    for k in ("d", "e", "f"):  # the sixth entry passes 4,000 bytes: the oldest, b, goes
        cache.put((k,), (np.zeros(100, dtype=np.int64),))
    assert [k for k, _ in cache.items()] == [("c",), ("a",), ("d",), ("e",), ("f",)]
    with pytest.raises(ValueError):
        a[0] = 1  # stored arrays are read-only
    cache.put(("big",), (np.zeros(126, dtype=np.int64),))  # over a quarter of the budget
    assert cache.get(("big",)) is None


texts = st.lists(st.text(alphabet="ab_.-/ 1é京\u0301", min_size=0, max_size=12),
                 min_size=1, max_size=40)
needles = st.text(alphabet="ab_.-/ 1é京\u0301", min_size=1, max_size=6)


def _section(lines: list[str]) -> tuple[bytes, np.ndarray]:
    raw = [line.encode() + b"\n" for line in lines]
    off = np.zeros(len(raw) + 1, dtype=np.uint32)
    np.cumsum([len(r) for r in raw], out=off[1:])
    return b"".join(raw), off


@settings(max_examples=150, deadline=None)
@given(lines=texts, needle=needles)
def test_pair_bitmap_is_exactly_the_pairs_and_never_denies_a_match(lines: list[str],
                                                                   needle: str) -> None:
    text, _off = _section(lines)
    bits = np.unpackbits(pair_bitmap(text, chunk=7), bitorder="little")
    assert set(np.flatnonzero(bits).tolist()) == {
        (text[i] << 8) | text[i + 1] for i in range(len(text) - 1)}


@pytest.fixture(scope="module")
def random_segment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[segment.Segment]:
    """A real segment whose names hold punctuation, accents and CJK; many repeats."""
    rng = random.Random(9)
    parts = ["img", "_", "2023", ".", "a", "b", "-", "é", "京", " ", "s01e02", "1"]
    items = []
    for i in range(2500):
        name = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 7))).strip() or "x"
        items.append((f"/mnt/vol1/d{rng.randrange(30)}/{name}.jpg".encode(), i, i * 1000))
    lib = Library.open(tmp_path_factory.mktemp("seg") / "data")
    put_paths(lib, items)
    lib.optimize()
    seg = _segments(lib)[0]
    yield seg
    lib.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(typed=st.lists(st.sampled_from(["img_2023", "a.b-", "_20", "s01e02.", "é京 1", "b_a",
                                       "23.a", "京_"]), min_size=1, max_size=4),
       budget=st.sampled_from([0, 3000, 1 << 24]), use_terms=st.booleans(),
       refine_first=st.sampled_from([0, 1 << 16]))
def test_text_occurrences_equal_a_scan_whatever_is_cached(random_segment: segment.Segment,
                                                          typed: list[str], budget: int,
                                                          use_terms: bool, refine_first: int,
                                                          ) -> None:
    """Every path (cache, refinement, candidate check, scan) gives the scan's answer; with
    refine_first 0 the dictionary is asked even when a cached needle could be refined."""
    seg = random_segment
    saved_refine = segment.REFINE_MAX_FIRST
    segment.REFINE_MAX_FIRST = refine_first
    try:
        _typed_occurrences(seg, typed, budget, use_terms)
    finally:
        segment.REFINE_MAX_FIRST = saved_refine


def _typed_occurrences(seg: segment.Segment, typed: list[str], budget: int,
                       use_terms: bool) -> None:
    occ = TextOccurrences(seg.file, ArrayCache(budget))
    for word in typed:
        for needle in prefixes(word) + [word[1:], word[2:]]:
            if not needle:
                continue
            nb = needle.encode()
            for section, off in ((F.NAME_TEXT, seg.name_off), (F.DIR_TEXT, seg.dir_off)):
                text = seg.file.bytes_of(section)
                want = [i for i in range(len(text)) if text.startswith(nb, i)]
                words = [w.encode() for w in A.words(needle)]
                folders = section == F.DIR_TEXT
                pos, ids = _find_cached(occ, section, nb, off, (
                    lambda w=words, f=folders: seg.candidate_lines(w, f)) if use_terms else None)
                assert pos.tolist() == want
                assert ids.tolist() == [int(np.searchsorted(off, p, side="right")) - 1
                                        for p in want]


def _find_cached(occ: TextOccurrences, section: int, needle: bytes, off: np.ndarray,
                 candidates: Any) -> tuple[np.ndarray, np.ndarray]:
    saved = segment.CACHE_MIN_TEXT_BYTES
    segment.CACHE_MIN_TEXT_BYTES = 0  # this segment's texts are small: cache them anyway
    try:
        pos, ids, _how = occ.find(section, needle, off, candidates)
        return pos, ids
    finally:
        segment.CACHE_MIN_TEXT_BYTES = saved


def test_a_needle_with_a_missing_pair_skips_the_scan(random_segment: segment.Segment) -> None:
    occ = random_segment.texts
    assert not occ.may_contain(F.DIR_TEXT, b"_")  # folders are d0..d29
    assert not occ.may_contain(F.NAME_TEXT, b"zz")
    assert occ.may_contain(F.NAME_TEXT, b"img_")
    assert occ.may_contain(F.DIR_TEXT, b"/d1")


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab_.-/ 1é京\u0301", min_size=0, max_size=90),
                      min_size=1, max_size=40),
       needle=needles, pick=st.lists(st.integers(0, 39), max_size=40),
       chunk=st.sampled_from([1, 5, 64, 1 << 20]), window=st.sampled_from([2, 8, 64]))
def test_line_occurrences_equal_a_check_of_each_line(lines: list[str], needle: str,
                                                     pick: list[int], chunk: int,
                                                     window: int) -> None:
    """Short lines take the window path, long ones the gathered one (lines up to ~270
    bytes against windows of 2-64); every occurrence is found, in position order."""
    text, off = _section(lines)
    ids = sorted({i for i in pick if i < len(lines)})
    nb = needle.encode()
    saved = segment.LINES_CHUNK_BYTES, segment.LINE_WINDOW
    segment.LINES_CHUNK_BYTES, segment.LINE_WINDOW = chunk, window
    try:
        pos, got = segment.line_occurrences(np.frombuffer(text, dtype=np.uint8), off,
                                            np.asarray(ids, dtype=np.int64), nb)
    finally:
        segment.LINES_CHUNK_BYTES, segment.LINE_WINDOW = saved
    want = [(p, i) for i in ids for p in range(int(off[i]), int(off[i + 1]))
            if text.startswith(nb, p)]
    assert list(zip(pos.tolist(), got.tolist(), strict=True)) == sorted(want)


def test_repeated_queries_come_from_the_result_cache_until_anything_changes(
        typing_lib: Library) -> None:
    """The same query asked again with nothing written in between is answered from the
    engine's result cache (its hits fresh copies); every kind of write, in this process or
    another, makes the next answer a new one, equal to the oracle's."""
    engine = typing_lib.search_engine
    queries = ["img", "a", "love", "s0", "e.j"]
    for q in queries:
        assert_same(typing_lib, q, limit=30)
    entries = len(engine._results)
    first = typing_lib.search("img", limit=30)
    assert len(engine._results) == entries  # answered from the cache, nothing added
    first.hits[0]["name"] = "changed by the caller"
    first.hits.pop()
    again = typing_lib.search("img", limit=30)
    assert again.hits[0]["name"] != "changed by the caller" and len(again.hits) == 30
    assert again.hits == assert_same(typing_lib, "img", limit=30).hits

    new = put_paths(typing_lib, [(b"/mnt/vol1/new/img_zz_fresh.jpg", 10, 1)], first_ino=90000)
    for q in queries:
        assert_same(typing_lib, q, limit=30)
    assert typing_lib.search("img_zz", limit=5).total == 1
    delete_uuids(typing_lib, new)
    assert typing_lib.search("img_zz", limit=5).total == 0
    for q in queries:
        assert_same(typing_lib, q, limit=30)
    typing_lib.optimize()  # new segments: the snapshot and the manifest both move
    for q in queries:
        assert_same(typing_lib, q, limit=30)
    hits = typing_lib.search("love", limit=None).hits
    with Library.open(typing_lib.data_dir) as other:  # a write through another handle
        delete_uuids(other, [hits[0]["uuid"]])
    assert_same(typing_lib, "love", limit=None)
    assert typing_lib.search("love", limit=None).total == len(hits) - 1


def test_no_result_cache_without_the_segment_caches(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_SEARCH_CACHE_MB", "0")
    with Library.open(tmp_path / "data") as lib:
        put_paths(lib, list(gen_corpus.paths(200, seed=3)))
        lib.optimize()
        for q in ("a", "a", "img"):
            assert_same(lib, q, limit=20)
        assert not lib.search_engine._results


def test_the_result_cache_stays_within_its_bounds(typing_lib: Library,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmedia.search import engine as E

    monkeypatch.setattr(E, "RESULT_CACHE_BYTES", 64 << 10)
    monkeypatch.setattr(E, "RESULT_CACHE_ENTRIES", 6)
    eng = typing_lib.search_engine
    for i, q in enumerate(["a", "e", "img", "love", "s0", "o", "i", "r", "n", "t"]):
        assert_same(typing_lib, q, limit=5 + i)
        assert len(eng._results) <= 6
        assert eng._results_bytes == sum(len(v[1]) for v in eng._results.values())
        assert eng._results_bytes <= 64 << 10
    big = typing_lib.search("a", limit=None)  # far past an eighth of the budget: not kept
    assert len(big.hits) > 100
    assert all(len(v[1]) <= (64 << 10) // 8 for v in eng._results.values())
    assert_same(typing_lib, "a", limit=None)


def test_threads_sharing_one_engine_get_right_answers_and_a_consistent_cache(
        typing_lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server searching on a thread pool: the same few queries from 6 threads at once, with
    a budget so small that entries come and go all the time."""
    import threading

    from search_helpers import oracle_answer

    from kvmedia.search import engine as E

    monkeypatch.setattr(E, "RESULT_CACHE_ENTRIES", 3)
    queries = ["a", "e", "img", "love", "s0", "o", "img_2"]
    expected = {q: oracle_answer(typing_lib, q, limit=20) for q in queries}
    errors: list[str] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            q = rng.choice(queries)
            r = typing_lib.search(q, limit=20)
            if (r.total, [h["uuid"] for h in r.hits]) != expected[q]:
                errors.append(q)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    eng = typing_lib.search_engine
    assert len(eng._results) <= 3
    assert eng._results_bytes == sum(len(v[1]) for v in eng._results.values())


FAULTS_PER_SEARCH = """
import resource, sys
import numpy as np
from kvmedia.store.env import keep_heap_for_searches
if sys.argv[1] == "keep":
    assert keep_heap_for_searches()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(1 << 20, np.uint8)  # glibc's own threshold then moves to 1 MB, its trim to 2 MB
del a
def search():  # the shape of a query's arrays: several live at once, all freed at the end
    arrays = [np.ones(500_000, np.uint8) for _ in range(8)]
    del arrays
search()
before = faults()
for _ in range(20):
    search()
print((faults() - before) / 20)
"""


def test_a_search_process_keeps_its_freed_heap_for_the_next_search() -> None:
    """Without keep_heap_for_searches glibc hands the heap top back after each search and
    the next one faults it in again (~1,000 faults here); with it, none."""
    import subprocess
    import sys

    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_SEARCH, mode],
                             capture_output=True, text=True, check=True)
        return float(out.stdout)

    default = faults("default")
    if default < 100:
        pytest.skip(f"this C library keeps the heap on its own ({default} faults a search)")
    assert faults("keep") < 10
