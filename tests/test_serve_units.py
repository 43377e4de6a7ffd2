"""The pieces of `kvmedia serve` that need no server: range parsing against an oracle, content
types, opening files inside roots, the job runner."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_serve_support import serve_extra_or_skip

serve_extra_or_skip()

from kvmedia.serve import ranges  # noqa: E402
from kvmedia.serve.errors import ApiError, query_position  # noqa: E402
from kvmedia.serve.files import open_in_roots  # noqa: E402
from kvmedia.serve.jobs import JobRunner  # noqa: E402


def oracle(header: str, size: int) -> tuple[int, int] | None | str:
    """RFC 9110 byte ranges by brute force: the set of selected positions, or a verdict."""
    unit, _, spec = header.partition("=")
    if unit != "bytes" or "," in spec or spec.count("-") != 1:
        return None
    a, b = spec.split("-")
    if not (a.isdigit() or a == "") or not (b.isdigit() or b == "") or a == b == "":
        return None
    if a == "":
        chosen = list(range(size))[-int(b):] if int(b) else []
    else:
        if b and int(b) < int(a):
            return None
        chosen = [p for p in range(size) if p >= int(a) and (not b or p <= int(b))]
    if not chosen:
        return "416"
    return chosen[0], chosen[-1]


@given(size=st.integers(0, 60), a=st.integers(0, 80) | st.none(),
       b=st.integers(0, 80) | st.none(), unit=st.sampled_from(["bytes", "bytes", "items"]))
def test_parse_range_matches_the_oracle(size: int, a: int | None, b: int | None,
                                        unit: str) -> None:
    header = f"{unit}={'' if a is None else a}-{'' if b is None else b}"
    want = oracle(header, size)
    try:
        got: tuple[int, int] | None | str = ranges.parse_range(header, size)
    except ranges.Unsatisfiable:
        got = "416"
    assert got == want, header


@pytest.mark.parametrize("header", [None, "", "bytes", "bytes=", "bytes=-", "bytes=1-2,4-5",
                                    "bytes=x-1", "bytes=1-x", "bytes= 1 - 2 x", "bytes=--1"])
def test_parse_range_ignores_what_it_does_not_understand(header: str | None) -> None:
    assert ranges.parse_range(header, 100) is None


@pytest.mark.parametrize("name, ctype", [
    (b"a.JPG", "image/jpeg"), (b"movie.mkv", "video/x-matroska"), (b"x.mp4", "video/mp4"),
    (b"s.flac", "audio/flac"), (b"noext", "application/octet-stream"),
    (b"caf\xe9.webm", "video/webm"), (b".hidden", "application/octet-stream"),
])
def test_content_type_by_extension(name: bytes, ctype: str) -> None:
    assert ranges.content_type(name) == ctype


def test_query_position_from_the_parser_message() -> None:
    from kvmedia.errors import UsageError

    assert query_position(UsageError("bad query at column 7: unterminated quote")) == 6
    assert query_position(UsageError("unknown type 'x'")) is None


def test_open_in_roots(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.jpg").write_bytes(b"ok")
    (tmp_path / "other.jpg").write_bytes(b"no")
    os.mkfifo(root / "d" / "pipe.jpg")
    os.symlink(tmp_path / "other.jpg", root / "d" / "link.jpg")
    os.symlink(root / "d", root / "dlink")
    roots = [os.fsencode(root)]
    fd, st = open_in_roots(os.fsencode(root / "d" / "f.jpg"), roots)
    try:
        assert os.pread(fd, 10, 0) == b"ok" and st.st_size == 2
    finally:
        os.close(fd)
    cases = {
        tmp_path / "other.jpg": "forbidden",          # outside every root
        root / "d" / "link.jpg": "forbidden",         # a symlink
        root / "dlink" / "f.jpg": "forbidden",        # through a symlinked folder
        root / "d" / "pipe.jpg": "forbidden",         # not a regular file (and no hang)
        root / "d": "forbidden",                      # a directory
        root / "d" / "gone.jpg": "not_found",
        root: "forbidden",                            # the root itself
    }
    for path, code in cases.items():
        with pytest.raises(ApiError) as err:
            open_in_roots(os.fsencode(path), roots)
        assert err.value.code == code, path
    prefix_twin = [os.fsencode(tmp_path / "vo")]  # /vo is not a parent of /vol/...
    with pytest.raises(ApiError):
        open_in_roots(os.fsencode(root / "d" / "f.jpg"), prefix_twin)


def test_job_runner_one_at_a_time_and_stop() -> None:
    runner = JobRunner()
    release = threading.Event()
    seen: list[int] = []

    def work(progress: object, stop: threading.Event) -> list[int]:
        for i in range(1000):
            progress.update({"files": i, "current": b"/mnt/\xff"})  # type: ignore[attr-defined]
            seen.append(i)
            if stop.wait(0.01) or release.is_set():
                break
        return seen

    first = runner.start("scan", work, lambda out: len(out))
    assert first["state"] == "running"
    with pytest.raises(ApiError) as err:
        runner.start("rebuild-index", work, lambda out: out)
    assert err.value.code == "conflict" and err.value.status == 409
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.stop()["state"] == "stopping"
    runner.close()
    snap = runner.snapshot()
    assert snap is not None and snap["state"] == "stopped" and snap["result"] == len(seen)
    assert snap["progress"]["current"] == "/mnt/\\xff"
    with pytest.raises(ApiError) as err:
        runner.stop()
    assert err.value.code == "not_found"


def test_job_runner_reports_failures() -> None:
    from kvmedia.errors import StorageError

    runner = JobRunner()

    def fails(progress: object, stop: threading.Event) -> None:
        raise StorageError("disk full; free space and retry")

    runner.start("scan", fails, lambda out: out)
    runner.close()
    snap = runner.snapshot()
    assert snap is not None and snap["state"] == "failed"
    assert snap["error"]["code"] == "io" and "free space" in snap["error"]["message"]
    runner.start("scan", lambda p, s: 7, lambda out: out)  # a new job may start now
    runner.close()
    assert runner.snapshot()["result"] == 7  # type: ignore[index]


def test_cpu_bound_calls_run_at_most_one_per_core_and_blocking_ones_are_not_held() -> None:
    """Twelve searches at once through the real thread pool: never more than CPU_SLOTS run
    together; a `blocking` call started meanwhile does not wait for a slot."""
    import anyio

    from kvmedia.serve import context

    slots = context.CPU_SLOTS._initial_value  # type: ignore[attr-defined]
    running = peak = 0
    lock = threading.Lock()
    slow_done: list[float] = []

    def search() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    def other() -> None:
        slow_done.append(time.monotonic())

    async def main() -> float:
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(context.cpu_bound, search)
            await anyio.sleep(0.01)
            tg.start_soon(context.blocking, other)
        return start

    start = anyio.run(main)
    assert peak == slots
    assert slow_done and slow_done[0] - start < 0.04  # not queued behind the searches
