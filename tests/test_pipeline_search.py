"""`tag:` and `rating:` against a brute-force scan of the records, on the delta and on
merged segments, with words and other filters mixed in."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvtest import write

from kvmedia import Library
from kvmedia.errors import UsageError
from kvmedia.index import analysis as A
from tests.test_pipeline_sidecars import xmp

TAGS = ("Beach", "beach house", "Đà Lạt", "family", "Sunset")


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Library, list[dict]]:
    base = tmp_path_factory.mktemp("tagged")
    rng = random.Random(7)
    for i in range(40):
        folder = base / "vol" / ("trip" if i % 3 else "home")
        write(folder / f"pic{i:02d}.jpg", b"\xff\xd8" + bytes([i]) * (i + 1))
        if i % 5:
            tags = tuple(rng.sample(TAGS, rng.randint(0, 3)))
            rating = rng.choice(["-1", "0", "1", "2", "3", "4", "5", None])
            write(folder / f"pic{i:02d}.xmp", xmp(rating, tags))
    lib = Library.open(base / "data")
    lib.scan([base / "vol"])
    return lib, [r for r in lib.list_media()]


def brute(records: list[dict], tag_groups: list[set[str]], conds: list[tuple[str, int]],
          word: str | None) -> set[str]:
    def norm(tag: str) -> str:
        return " ".join(A.norm(tag).split())

    out = set()
    for rec in records:
        tags = {norm(t) for t in rec.get("user_tags") or []}
        if any(not ({norm(t) for t in alts} & tags) for alts in tag_groups):
            continue
        rating = rec.get("rating")
        if conds and (rating is None or not all(
                {">=": rating >= v, "<=": rating <= v, ">": rating > v, "<": rating < v,
                 "=": rating == v}[op] for op, v in conds)):
            continue
        if word and word not in rec["path"]:
            continue
        out.add(rec["uuid"])
    return out


queries = st.tuples(
    st.lists(st.sets(st.sampled_from(TAGS), min_size=1, max_size=2), max_size=2),
    st.lists(st.tuples(st.sampled_from([">=", "<=", ">", "<", "="]),
                       st.integers(min_value=-1, max_value=5)), max_size=2),
    st.sampled_from([None, "trip", "home"]),
)


def render(tag_groups: list[set[str]], conds: list[tuple[str, int]], word: str | None) -> str:
    parts = ['tag:"' + "|".join(sorted(g)) + '"' for g in tag_groups]
    parts += [f"rating:{'' if op == '=' else op}{v}" for op, v in conds]
    if word:
        parts.append(word)
    return " ".join(parts)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=queries)
def test_tag_and_rating_agree_with_brute_force(tagged: tuple[Library, list[dict]],
                                               q: tuple) -> None:
    lib, records = tagged
    tag_groups, conds, word = q
    if not tag_groups and not conds:
        return
    want = brute(records, tag_groups, conds, word)
    got = lib.search(render(tag_groups, conds, word), limit=None)
    assert {r["uuid"] for r in got.hits} == want and got.total == len(want)


def test_same_answers_after_the_delta_is_merged(tagged: tuple[Library, list[dict]]) -> None:
    lib, records = tagged
    before = {q: [r["uuid"] for r in lib.search(q, limit=None, sort="name").hits]
              for q in ("tag:beach", "rating:>=3", "tag:family trip", 'tag:"beach house"')}
    lib.optimize()
    after = {q: [r["uuid"] for r in lib.search(q, limit=None, sort="name").hits]
             for q in before}
    assert after == before and before["tag:beach"]
    assert lib.search("tag:beach", explain=True).mode == "index"


def test_bad_rating_and_empty_tag_are_usage_errors(lib: Library) -> None:
    with pytest.raises(UsageError, match="rating"):
        lib.search("rating:>=9")
    with pytest.raises(UsageError, match="tag"):
        lib.search("tag:")
