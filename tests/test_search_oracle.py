"""The index answers every query exactly like the brute-force oracle (order included), over
segments, deleted-doc bitmaps and the LMDB delta together."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_helpers import assert_same, delete_uuids, gen_corpus, put_paths

from kvmedia import Library
from kvmedia.index import analysis as A

FIXED_QUERIES = [
    "", "beyonce", "Beyoncé", "BEYONCE", "bai bien", "bãi biển", "mua he", "東京", "京",
    "夜の", "사랑", "img", "IMG_2023", "20230714", "s01e02", "S01E02", "e02", ".mkv", "mkv",
    "tc_", "photos/2023", "2023/07", "/", "-", "_", "(", "1080p", "season 01",
    '"season 01"', "love -night", "love | rain", "halo | nothing", "~hallo", "holliday",
    "phtos", "zzzzqqq", "dsc0", "type:audio", "type:video beyonce", "ext:mkv dark",
    "size:>1M", "size:10K..1M", "mtime:2020..2022", "trash:any love", "trash:true",
    "path:/mnt/vol1/Music", "path:/mnt/vol1/Music|/mnt/vol1/TV love", "name:love",
    "name:music", "-name:love love", "straße", "strasse", "ueber", "uber", "lukasz", "łukasz",
    "den vau", "đen", "ólafur", "røyksopp", "royksopp", "ae", "ß", "ǅ", "ﬁ", "x" * 300,
    "ab" * 40, "IMG_", "_20", "P.S", "a.b", "..", "-love", "-\"love\"",
]


@pytest.fixture(scope="module")
def corpus_lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """Two segments (one with a deleted-doc bitmap), plus a live delta of adds, changes and
    deletes on top."""
    lib = Library.open(tmp_path_factory.mktemp("search") / "data")
    lib.search_engine.maintainer.small_segment_docs = 100  # keep two segments apart
    items = list(gen_corpus.paths(1600, seed=7))
    uuids = put_paths(lib, items[:900])
    lib.optimize()
    rng = random.Random(3)
    put_paths(lib, items[900:1300], first_ino=1900)
    delete_uuids(lib, rng.sample(uuids, 60))
    # renames: same uuid, new path
    moved = [(p.replace(b"/Music/", b"/Musik/"), s + 1, m) for p, s, m in items[:40]]
    put_paths(lib, moved)
    lib.search_engine.maintainer.merge()
    put_paths(lib, items[1300:], first_ino=2300)
    delete_uuids(lib, rng.sample(uuids[100:], 30))
    put_paths(lib, [(p + b".bak", s, m + 5) for p, s, m in items[200:230]], first_ino=1200)
    yield lib
    lib.close()


def test_corpus_has_segments_and_delta(corpus_lib: Library) -> None:
    r = corpus_lib.search("love", explain=True)
    assert r.mode == "index"
    assert len(r.plan["segments"]) == 2
    assert any(s["live"] < s["docs"] for s in r.plan["segments"])
    assert r.plan["delta"]["entries"] > 100


@pytest.mark.parametrize("query", FIXED_QUERIES)
def test_fixed_queries_match_oracle(corpus_lib: Library, query: str) -> None:
    assert_same(corpus_lib, query, limit=40)


@pytest.mark.parametrize("budget", [0, 10**9])
def test_scan_and_check_strategies_agree(corpus_lib: Library, budget: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Substrings are found either by checking dictionary candidates or by scanning the text
    sections, whichever is cheaper; force each in turn: both must equal the oracle."""
    from kvmedia.index import segment

    monkeypatch.setattr(segment, "CHECK_MIN_CANDIDATES", budget)
    monkeypatch.setattr(segment, "CHECK_TEXT_SHARE", 10**9 if budget == 0 else 1)
    monkeypatch.setattr(segment, "LINES_CHUNK_BYTES", 64)  # many chunks, lines across them
    for query in [*FIXED_QUERIES, "ove", "love_", "_2023", "e.j", "o/b", "hoto", "ach 20",
                  "- ", "2023-0", "ea", "e", "a", "1", "o", "s 2"]:
        assert_same(corpus_lib, query, limit=40)


@pytest.mark.parametrize("sort", ["relevance", "mod", "moddesc", "name", "namedesc", "size",
                                  "sizedesc"])
def test_sorts_and_paging_match_oracle(corpus_lib: Library, sort: str) -> None:
    for query in ("love", "", "img", "type:image", "path:/mnt/vol1/TV"):
        for offset in (0, 7, 95):
            assert_same(corpus_lib, query, sort=sort, limit=25, offset=offset)


def _vocabulary() -> list[str]:
    words = set()
    for path, _s, _m in gen_corpus.paths(400, seed=7):
        text = path.decode()
        for _ in range(3):
            i = random.Random(len(words)).randrange(len(text))
            words.add(text[i:i + random.Random(i).randrange(1, 9)])
    return sorted(words)


VOCAB = _vocabulary()
word = st.one_of(
    st.sampled_from(VOCAB),
    st.sampled_from(["beyonce", "bai", "biển", "東京", "img", "s01", "love", "mkv", "2023",
                     "łukasz", "Ólafur", "e\u0301", "NFD\u0301x", "a_b", "08/1"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
            max_size=6),
)
modifier = st.sampled_from(["", "", "", "-", "~"])


@st.composite
def queries(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        w = draw(word).replace('"', "")
        kind = draw(st.integers(0, 5))
        if kind == 0:
            parts.append(f'"{w}"')
        elif kind == 1 and parts:
            parts.append(f"| {w}")
        else:
            parts.append(draw(modifier) + w)
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["type:image", "ext:mp3", "trash:any", "size:<100K",
                                           "path:/mnt/vol1/Photos", "name:e", "mtime:2020.."])))
    return " ".join(parts)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(q=queries(), sort=st.sampled_from(["relevance", "moddesc", "name", "size"]),
       offset=st.integers(0, 30))
def test_random_queries_match_oracle(corpus_lib: Library, q: str, sort: str, offset: int
                                     ) -> None:
    from kvmedia.errors import UsageError

    try:
        assert_same(corpus_lib, q, sort=sort, limit=20, offset=offset)
    except UsageError:
        pass  # malformed queries are rejected by both paths alike


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",),
                                       exclude_characters="/\0"), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=st.lists(st.tuples(st.lists(names, min_size=0, max_size=3), names), min_size=1,
                     max_size=25),
       qs=st.lists(st.one_of(names, word), min_size=1, max_size=6),
       merge=st.booleans())
def test_random_trees_match_oracle(tmp_path_factory: pytest.TempPathFactory,
                                   tree: list[tuple[list[str], str]], qs: list[str],
                                   merge: bool) -> None:
    from kvmedia.errors import UsageError

    lib = Library.open(tmp_path_factory.mktemp("rt") / "data")
    try:
        items = {}
        for i, (dirs, name) in enumerate(tree):
            path = "/".join(["", "mnt", *[d for d in dirs if d not in (".", "..")], name])
            items[path.encode("utf-8", "surrogateescape")] = (i * 1000 + 7, 10**18 + i % 4)
        put_paths(lib, [(p, s, m) for p, (s, m) in items.items()])
        if merge:
            lib.optimize()
        for q in qs:
            for text in (q, A.norm(q), q.upper()):
                try:
                    assert_same(lib, text.replace('"', ""), limit=50)
                except UsageError:
                    pass
    finally:
        lib.close()


def test_non_utf8_names_are_searchable(tmp_path: Path) -> None:
    lib = Library.open(tmp_path / "data")
    put_paths(lib, [(b"/mnt/x/caf\xe9 bad.jpg", 1, 5), (b"/mnt/\xff\xfe/ok.jpg", 2, 6)])
    for merge in (False, True):
        if merge:
            lib.optimize()
        assert assert_same(lib, "bad").total == 1
        assert assert_same(lib, "ok").total == 1
        assert assert_same(lib, "caf").total == 1
    lib.close()


def test_a_word_found_only_in_folders_whose_files_interleave(tmp_path: Path) -> None:
    """Docs ascend by recency, so the files of several matching folders interleave; a word
    matched by folders alone must still come out in doc order (AND, ranking, paging)."""
    lib = Library.open(tmp_path / "data")
    items = [(f"/mnt/vol1/alpha{f}/clip{f}_{i}.mp4".encode(), 100 + i, 10**18 + i * 7 + f)
             for i in range(6) for f in range(5)]  # mtimes interleave the five folders
    items += [(f"/mnt/vol1/other{i % 200}/f{i}.jpg".encode(), i, 10**17 + i)
              for i in range(600)]  # few alpha folders and files: the sparse folder path
    put_paths(lib, items)
    lib.optimize()
    for query in ("alph", "alpha", "alpha3", "alph clip", "alph clip1", "alph -clip2",
                  "alph | f12", "lph"):
        for opts in ({"limit": 4}, {"limit": 100}, {"limit": 5, "offset": 7},
                     {"limit": 10, "sort": "size"}):
            assert_same(lib, query, **opts)
    lib.close()


def test_answers_stay_right_when_every_search_lets_go_of_its_pages(
        corpus_lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a zero mapped-page budget each search drops the segment and LMDB pages it mapped
    (madvise): the next ones fault them back in from the page cache and answer the same."""
    from kvmedia.search import engine as E

    monkeypatch.setattr(E, "MAPPED_BUDGET", 0)
    monkeypatch.setattr(E, "BUDGET_CHECK_EVERY", 1)  # the default; kept explicit
    for query in FIXED_QUERIES[:40]:
        assert_same(corpus_lib, query, limit=40)


def test_a_released_segment_file_drops_its_mapped_pages(tmp_path: Path) -> None:
    from kvmedia.index import format as F
    from kvmedia.index.builder import SegmentBuilder
    from kvmedia.index.docs import DocRow

    def mapped() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[2]) * 4096

    b = SegmentBuilder()
    for i in range(40_000):
        b.add(DocRow(f"00000000-0000-5000-8000-{i:012d}", f"holiday {i}.jpg".encode(),
                     b"/mnt/a/%d" % (i % 997), f"holiday {i}.jpg", f"/mnt/a/{i % 997}", i, i,
                     3, False, "jpg", float("nan"), 0, 0))
    path = str(tmp_path / "s.kvs")
    size = b.finish(path)
    f = F.SegmentFile(path)
    names = f.array(F.NAME_TEXT)
    before = mapped()
    total = sum(int(f.array(sid).view("u1").sum()) for sid in F.SECTION_IDS.values())
    touched = mapped()
    assert touched - before > size // 2
    f.release_pages()
    assert mapped() - before < size // 10
    assert sum(int(f.array(sid).view("u1").sum()) for sid in F.SECTION_IDS.values()) == total
    assert bytes(names[:8]) == b"holiday "
    f.close()
