"""Hostile input: queries (1 MiB, NUL, invalid text, regex/glob metacharacters, 10,000 tokens,
hypothesis fuzzing of the parser and the search), file names (control characters and ANSI
escapes stored exactly and printed escaped, 255-byte names, deep trees), and path traversal
payloads in the path-taking Library calls. Only typed errors; answers equal the oracle.
Latencies are recorded as figures for REPORT.md, never asserted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_helpers import make_tree, oracle_uuids, run

from kvmedia import Library
from kvmedia.errors import KvmediaError, NotFoundError, UsageError
from kvmedia.pathbytes import get_field
from kvmedia.search.query import parse_query

META_NAMES = [b"a.*b.jpg", b"axxb.jpg", b"[x]%_y.jpg", b"xy.jpg", b"(re)+?.mp3", b"back\\slash.png",
              b"^start$.jpg", b"star*.jpg", b"dollar$ign.mkv", b"pct%25.jpg", b"q'uote.jpg"]


@pytest.fixture(scope="module")
def hostile_lib(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("hostile")
    tree = base / "vol"
    make_tree(tree, 40)
    for name in META_NAMES:
        (tree / "meta").mkdir(exist_ok=True)
        (tree / "meta" / os.fsdecode(name)).write_bytes(b"m")
    lib = Library.open(base / "data")
    lib.scan([tree])
    lib.rebuild_index()
    yield lib
    lib.close()


def _timed_search(lib: Library, query: str, figures) -> object:
    started = time.perf_counter()
    try:
        return lib.search(query, limit=None)
    finally:
        figures.max("hostile", "max hostile query ms", (time.perf_counter() - started) * 1000)
        figures.add("hostile", "bad inputs tried")


def _assert_oracle(lib: Library, query: str, result) -> None:
    want = oracle_uuids(lib, query, limit=None)
    assert (result.total, [h["uuid"] for h in result.hits]) == want, query


def test_one_mib_query_refused(hostile_lib, figures) -> None:
    for query in ("a" * (1 << 20), "beach " * 200_000, "x:" * 500_000):
        with pytest.raises(UsageError, match="shorten it"):
            _timed_search(hostile_lib, query, figures)


def test_ten_thousand_tokens(hostile_lib, figures) -> None:
    with pytest.raises(UsageError):
        _timed_search(hostile_lib, " ".join(["a"] * 10_000), figures)
    # The most tokens that fit under the length limit are answered, and correctly.
    query = " ".join(["a", "-b", "~c", "d"] * 500)[:4096]
    try:
        result = _timed_search(hostile_lib, query, figures)
    except UsageError:
        return
    _assert_oracle(hostile_lib, query, result)


@pytest.mark.parametrize("query", ["beach\0song", "\0", "be\0ach", "\udcff", "beach \udcff",
                                   "\ufeffbeach", "\u202ebeach", "\x1b[31mbeach", "\r\n\t",
                                   "type:\0", "path:\0/", "ext:\udcff", "ids:\0"])
def test_nul_and_invalid_text(hostile_lib, query: str, figures) -> None:
    try:
        result = _timed_search(hostile_lib, query, figures)
    except UsageError as exc:
        assert exc.message.strip()
        return
    _assert_oracle(hostile_lib, query, result)


@pytest.mark.parametrize("query,name", [("a.*b", b"a.*b.jpg"), ("[x]%_y", b"[x]%_y.jpg"),
                                        ("(re)+?", b"(re)+?.mp3"), ("^start$", b"^start$.jpg"),
                                        ("star*", b"star*.jpg"), ("back\\slash", None),
                                        ('name:"a.*b.jpg"', b"a.*b.jpg"), ("%", None),
                                        ("_", None), ("*", None), (".*", None), ("$", None)])
def test_metacharacters_literal(hostile_lib, query: str, name: bytes | None, figures) -> None:
    result = _timed_search(hostile_lib, query, figures)
    _assert_oracle(hostile_lib, query, result)
    names = {os.path.basename(get_field(h, "path")) for h in result.hits}
    if name is not None:
        assert name in names
    literal = query.removeprefix("name:").strip('"').encode()
    for hit in result.hits:  # no wildcard meaning: a hit holds the query's text literally
        path = get_field(hit, "path")
        if os.path.basename(path) in (b"axxb.jpg", b"xy.jpg"):
            # only possible through a parent folder's name (the temp dir may hold "_")
            assert not query.startswith("name:") and literal in os.path.dirname(path), path


ALPHABET = st.sampled_from(list("ab ~-\"|:*?.[](){}^$\\%_/\0\t") + ["type:", "ext:", "size:",
                           "mtime:", "path:", "name:", "ids:", "trash:", "dur:", "width:",
                           ">", "<", "..", "1", "k", "M", "\udcff", "é", "beach", "song"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(ALPHABET, max_size=30).map("".join) | st.text(max_size=60))
def test_parser_fuzz_only_typed_errors(text: str) -> None:
    try:
        parse_query(text, now=1.7e9)
    except UsageError as exc:
        assert exc.message.strip()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(ALPHABET, max_size=12).map("".join))
def test_search_fuzz_equals_oracle(hostile_lib, figures, text: str) -> None:
    try:
        result = _timed_search(hostile_lib, text, figures)
    except UsageError:
        return
    _assert_oracle(hostile_lib, text, result)


NASTY = [b"evil\x1b[31mred\x1b[0m.jpg", b"bell\x07\x08\x7f.mp3", b"line\nbreak\r.png",
         b"tab\there.jpg", b"\xff\xfe raw bytes.jpg", b"\xe2\x80\xaertl.jpg", b"-n.jpg",
         b"--help.jpg", b" lead and trail .jpg"]


def test_control_chars_stored_exactly_printed_escaped(tree: Path, data_dir: Path,
                                                      figures) -> None:
    for name in NASTY:
        (tree / os.fsdecode(name)).write_bytes(b"n")
    assert run(data_dir, "scan", str(tree)).returncode == 0
    with Library.open(data_dir) as lib:
        stored = {os.path.basename(get_field(r, "path")) for r in lib.list_media()}
    assert stored == set(NASTY)
    for args in (["list"], ["search", "bell"], ["search", "evil"], ["list", "--json"]):
        out = run(data_dir, *args)
        assert out.returncode == 0, out.stderr
        figures.add("hostile", "bad inputs tried")
        # JSON escapes the C0 controls; DEL is valid JSON and inert on a terminal.
        raw_ok = (b"\x7f",) if "--json" in args else ()
        for bad in (b"\x1b", b"\x07", b"\x08", b"\x7f", b"\r"):
            assert bad in raw_ok or bad not in out.stdout, (args, out.stdout)
        if "--json" in args:
            names = {os.path.basename(get_field(orjson.loads(line), "path"))
                     for line in out.stdout.splitlines()}
            assert names == set(NASTY)  # exact bytes round-trip through JSON
        if args == ["list"]:
            assert b"\\x1b[31m" in out.stdout and b"\\xff\\xfe" in out.stdout
            assert out.stdout.count(b"\n") == len(NASTY)  # the newline in a name is escaped


def test_long_names_and_deep_trees(tree: Path, data_dir: Path, figures) -> None:
    long_ascii = b"n" * 251 + b".jpg"
    long_utf8 = "é".encode() * 125 + b"x.jpg"
    assert len(long_ascii) == 255 and len(long_utf8) == 255
    for name in (long_ascii, long_utf8):
        with open(os.path.join(os.fsencode(tree), name), "wb") as fh:
            fh.write(b"l")
    deep = os.fsencode(tree)
    for _ in range(1000):  # depth 1000 (os.makedirs would recurse 1000 deep)
        deep += b"/a"
        os.mkdir(deep)
    with open(deep + b"/deep.jpg", "wb") as fh:
        fh.write(b"d")
    wide = os.fsencode(tree) + (b"/" + b"w" * 250) * 14  # a path of ~3600 bytes
    os.makedirs(wide)
    with open(wide + b"/wide.jpg", "wb") as fh:
        fh.write(b"w")
    figures.add("hostile", "bad inputs tried", 4)
    try:
        with Library.open(data_dir) as lib:
            lib.scan([tree])
            paths = {get_field(r, "path") for r in lib.list_media()}
            want = {os.path.join(os.fsencode(tree), long_ascii),
                    os.path.join(os.fsencode(tree), long_utf8),
                    deep + b"/deep.jpg", wide + b"/wide.jpg"}
            assert paths == want
            for query in ("deep", "wide", "nnnn", "éé"):
                _assert_oracle(lib, query, lib.search(query, limit=None))
    finally:  # pytest's recursive temp cleanup cannot go 1000 levels deep
        os.unlink(deep + b"/deep.jpg")
        while deep != os.fsencode(tree):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


TRAVERSAL = ["../../../../../../etc/passwd", "/etc/passwd", "{tree}/../victim.jpg",
             "{tree}/sub/../../victim.jpg", "{tree}/./../victim.jpg", "..\\..\\victim.jpg",
             "{tree}/%2e%2e/victim.jpg", "{tree}/a.jpg\0/../../victim.jpg", "",
             "{tree}/a.jpg/..", "~/victim.jpg", "file://{tree}/../victim.jpg"]


@pytest.mark.parametrize("payload", TRAVERSAL)
def test_path_traversal_payloads(tree: Path, tmp_path: Path, data_dir: Path, payload: str,
                                 figures) -> None:
    """Library calls taking paths reach only library records; the victim outside is untouched."""
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"victim")
    (tree / "a.jpg").write_bytes(b"a")
    ref = payload.format(tree=tree)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        for call in (lib.resolve, lambda r: lib.share_id(r), lambda r: lib.thumbnail(r),
                     lambda r: lib.deps(r)):
            figures.add("security", "bad inputs tried")
            with pytest.raises(KvmediaError):
                call(ref)
        for call in (lib.trash, lib.restore, lib.delete, lambda r: lib.hash_media(r)):
            figures.add("security", "bad inputs tried")
            try:
                results = call([ref])
            except KvmediaError:
                continue
            if isinstance(results, list):
                assert all(not r.ok for r in results)
        assert lib.find_by_path(ref) is None or payload == "{tree}/a.jpg/.."
    assert victim.read_bytes() == b"victim"
    assert (tree / "a.jpg").read_bytes() == b"a"
    with pytest.raises(NotFoundError):
        with Library.open(data_dir) as lib:
            lib.resolve(str(victim))
