"""Hostile file system inputs not covered elsewhere: links out of the volume and loops, files
churning during a scan, FIFOs / sockets / devices (never opened, even when one takes the place
of an indexed file), hardlinks, a sparse 1 TiB file, case-only renames, NFC/NFD twins, a
4095-byte path, a directory with many entries (peak memory), and a volume unmounted and
mounted again. Each ends with rel_helpers.assert_consistent (fsck clean, records equal the
file system after a scan, searches equal the oracle).

Unreadable folders: root reads any folder, so that scan runs without CAP_DAC_OVERRIDE /
CAP_DAC_READ_SEARCH (setpriv). Covered elsewhere, not repeated: control characters / ANSI
escapes, 255-byte names, depth 1000 and ~3600-byte paths (test_hostile.py); files and folders
vanishing between readdir and stat at exact points of the walk (tests/test_scan.py)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from rel_helpers import assert_consistent, assert_search_correct, cli_env, make_tree, records

from kvmedia import Library
from kvmedia.pathbytes import get_field

TIMEOUT = 180  # generous: hitting it means a hang (an opened FIFO, a 1 TiB read)


def kv(data_dir: Path, *args: str | bytes, timeout: float = TIMEOUT
       ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvmedia", *args], env=cli_env(data_dir),
                          capture_output=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    return proc


def paths_of(data_dir: Path) -> dict[bytes, str]:
    with Library.open(data_dir, readonly=True) as lib:
        return {get_field(r, "path"): r["uuid"] for r in records(lib)}


def b(p: Path | str) -> bytes:
    return os.fsencode(p)


def drop_non_regular(tree: Path) -> None:
    """Remove symlinks and special files, which rel_helpers.fs_files (os.walk) would count
    as files to be recorded."""
    for dirpath, dirs, names in os.walk(b(tree)):
        for name in dirs + names:
            p = os.path.join(dirpath, name)
            if not stat.S_ISREG(os.lstat(p).st_mode) and not stat.S_ISDIR(os.lstat(p).st_mode):
                os.unlink(p)


# -- links ------------------------------------------------------------------------------------

def test_links_out_of_the_volume_and_loops_never_followed(tree: Path, tmp_path: Path,
                                                          data_dir: Path, figures) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"s")
    (outside / "deep" / "more.mp3").write_bytes(b"m")
    (tree / "real").mkdir()
    (tree / "real" / "a.jpg").write_bytes(b"a")
    os.symlink(outside, tree / "out")                    # a folder link out of the volume
    os.symlink(outside / "secret.jpg", tree / "s.jpg")   # a file link out of the volume
    os.symlink("/", tree / "root")                       # the whole machine
    os.symlink("loop2", tree / "loop1")                  # a two-link loop
    os.symlink("loop1", tree / "loop2")
    os.symlink(".", tree / "real" / "self")              # a folder linking to itself
    os.symlink("..", tree / "real" / "up")
    ok(kv(data_dir, "scan", str(tree)))
    assert set(paths_of(data_dir)) == {b(tree / "real" / "a.jpg")}
    # Paths through a link, handed over one by one (`kvmedia notify`, the watcher's path):
    # nothing outside the volume gets a record.
    links = [tree / "out" / "secret.jpg", tree / "out" / "deep", tree / "out", tree / "s.jpg",
             tree / "root" / "etc" / "hostname", tree / "loop1", tree / "real" / "self" / "a.jpg",
             tree / "real" / "up" / "real" / "a.jpg"]
    ok(kv(data_dir, "notify", str(links[0]), "--json"))  # once through the CLI
    with Library.open(data_dir) as lib:
        for p in links:
            figures.add("fsinputs", "link paths tried")
            lib.upsert_paths([p])
            assert {get_field(r, "path") for r in records(lib)} == {
                b(tree / "real" / "a.jpg")}, p
    assert (outside / "secret.jpg").read_bytes() == b"s"
    drop_non_regular(tree)
    assert_consistent(data_dir, tree)


# -- unreadable folders ------------------------------------------------------------------------

def _no_dac(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """kvmedia as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so folder modes bind."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                           sys.executable, "-m", "kvmedia", *args], env=cli_env(data_dir),
                          capture_output=True, timeout=TIMEOUT)


def test_unreadable_folders_keep_their_records(tree: Path, data_dir: Path, figures) -> None:
    """A folder that cannot be listed (mode 0) or whose entries cannot be stat'ed (mode 0444)
    keeps every record under it, with a warning; readable again, the next scan converges."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the DAC capabilities")
    files = make_tree(tree, 60)
    ok(kv(data_dir, "scan", str(tree)))
    before = paths_of(data_dir)
    probe = _no_dac(data_dir, "count")
    if probe.returncode != 0:
        pytest.skip(f"cannot run kvmedia without DAC capabilities: {probe.stderr[-200:]!r}")
    locked, unsearchable = tree / "d1", tree / "d2" / "song"
    os.unlink(files[0])  # a real removal elsewhere must still happen
    os.chmod(locked, 0)
    os.chmod(unsearchable, 0o444)
    try:
        proc = _no_dac(data_dir, "scan", str(tree), "--json")
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
        summary = orjson.loads(proc.stdout.splitlines()[-1])
        assert summary["errors"] >= 2 and summary["removed"] == 1, summary
        after = paths_of(data_dir)
        assert set(after) == set(before) - {files[0]}
        assert all(after[p] == before[p] for p in after)
        figures.add("fsinputs", "unreadable folders tried", 2)
    finally:
        os.chmod(locked, 0o755)
        os.chmod(unsearchable, 0o755)
    assert_consistent(data_dir, tree)


# -- churn ------------------------------------------------------------------------------------

def _churn(tree: Path, stop: threading.Event, counter: list[int]) -> None:
    """Create, grow, rename and delete files (and folders) as fast as possible."""
    rnd = random.Random(7)
    live: list[Path] = []
    while not stop.is_set():
        op = rnd.random()
        try:
            if op < 0.35 or not live:
                d = tree / f"churn{rnd.randrange(5)}"
                d.mkdir(exist_ok=True)
                p = d / f"c{rnd.randrange(10**6)} beach.jpg"
                p.write_bytes(b"c" * rnd.randrange(1, 200))
                live.append(p)
            elif op < 0.55:
                with open(rnd.choice(live), "ab") as fh:
                    fh.write(b"more")
            elif op < 0.75:
                p = live.pop(rnd.randrange(len(live)))
                q = p.with_name(p.stem + "r.jpg")
                os.rename(p, q)
                live.append(q)
            else:
                os.unlink(live.pop(rnd.randrange(len(live))))
            counter[0] += 1
        except OSError:
            pass


def test_files_changing_and_vanishing_during_scans(tree: Path, data_dir: Path, figures) -> None:
    make_tree(tree, 800)
    stop = threading.Event()
    counter = [0]
    worker = threading.Thread(target=_churn, args=(tree, stop, counter), daemon=True)
    worker.start()
    try:
        for _ in range(2):
            ok(kv(data_dir, "scan", str(tree), "--json"))
            figures.add("fsinputs", "scans under churn")
    finally:
        stop.set()
        worker.join()
    assert counter[0] > 0
    figures.add("fsinputs", "files churned during scans", counter[0])
    result = assert_consistent(data_dir, tree)
    figures.add("fsinputs", "lost", result["lost"])
    figures.add("fsinputs", "duplicated", result["duplicated"])


# -- special files ----------------------------------------------------------------------------

@pytest.fixture
def unix_socket(tree: Path) -> Iterator[Path]:
    path = tree / "sock.mp3"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    try:
        yield path
    finally:
        s.close()


def test_fifos_sockets_devices_never_opened(tree: Path, data_dir: Path, unix_socket: Path,
                                            figures) -> None:
    """Special files are skipped by the walk; one that takes the place of an indexed file
    is never opened by hash, probe or trash (opening a FIFO would block for ever)."""
    files = make_tree(tree, 10)
    os.mkfifo(tree / "pipe.mkv")
    specials = [b(tree / "pipe.mkv"), b(unix_socket)]
    try:
        os.mknod(tree / "dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
        specials.append(b(tree / "dev.jpg"))
    except (PermissionError, OSError):
        pass  # no mknod here: FIFOs and sockets still prove the walk
    proc = ok(kv(data_dir, "scan", str(tree), "--json"))
    assert set(paths_of(data_dir)) == set(files)
    warned = [orjson.loads(x) for x in proc.stderr.splitlines() if b'"warning"' in x]
    assert len(warned) == len(specials)
    figures.add("fsinputs", "special files tried", len(specials))
    # An indexed file replaced by a FIFO between a scan and the next command.
    victim = files[0]
    os.unlink(victim)
    os.mkfifo(victim)
    for args in (["hash", "--all", "--json"], ["probe", "--all", "--json"],
                 ["trash", victim, "--json"], ["hash", victim, "--json"]):
        figures.add("fsinputs", "special files tried")
        proc = kv(data_dir, *args, timeout=60)  # a FIFO opened for reading never returns
        assert b"Traceback" not in proc.stderr, (args, proc.stderr)
        assert stat.S_ISFIFO(os.lstat(victim).st_mode)
    os.unlink(victim)
    drop_non_regular(tree)
    assert_consistent(data_dir, tree)


# -- hardlinks ---------------------------------------------------------------------------------

def test_hardlinks_one_record_per_name(tree: Path, data_dir: Path, figures) -> None:
    """Documented (scan.Ingest.resolve_identity): each name of an inode is its own record with
    its own uuid; trashing or deleting one name leaves the others alone."""
    first = tree / "a" / "clip.mkv"
    first.parent.mkdir()
    first.write_bytes(b"v" * 100)
    names = [first] + [tree / f"d{i}" / f"clip{i}.mkv" for i in range(9)]
    for n in names[1:]:
        n.parent.mkdir()
        os.link(first, n)
    ok(kv(data_dir, "scan", str(tree)))
    before = paths_of(data_dir)
    assert set(before) == {b(n) for n in names}
    assert len(set(before.values())) == len(names)
    figures.add("fsinputs", "hardlink names", len(names))
    ok(kv(data_dir, "scan", str(tree)))
    assert paths_of(data_dir) == before  # stable across rescans
    ok(kv(data_dir, "trash", b(names[3])))
    ok(kv(data_dir, "delete", b(names[4])))
    assert first.read_bytes() == b"v" * 100 and names[5].exists()
    os.rename(names[6], names[6].with_name("renamed.mkv"))
    ok(kv(data_dir, "scan", str(tree)))
    after = paths_of(data_dir)
    for n in (names[0], names[1], names[2], names[5], names[7], names[8]):
        assert after[b(n)] == before[b(n)]
    ok(kv(data_dir, "restore", before[b(names[3])]))
    assert paths_of(data_dir)[b(names[3])] == before[b(names[3])]
    assert_consistent(data_dir, tree)


# -- a sparse terabyte --------------------------------------------------------------------------

def test_sparse_terabyte_file_never_read_whole(tree: Path, data_dir: Path, figures) -> None:
    huge = tree / "huge.mkv"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 40)
    (tree / "small.mkv").write_bytes(b"s" * 1000)
    for args in (["scan", str(tree), "--hash", "--json"], ["probe", "--all", "--json"],
                 ["hash", "--all", "--force", "--json"], ["dupes", "--json"]):
        proc = kv(data_dir, *args)  # reading 1 TiB would take far longer than the timeout
        assert b"Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 1), (args, proc.stderr)
        figures.add("fsinputs", "sparse 1 TiB passes")
    with Library.open(data_dir, readonly=True) as lib:
        rec = lib.find_by_path(b(huge))
        assert rec is not None and rec["size"] == 1 << 40
        assert lib.find_by_path(b(tree / "small.mkv"))["content_hash"]
    assert_consistent(data_dir, tree)


# -- names ---------------------------------------------------------------------------------------

def test_case_only_renames_keep_the_uuid(tree: Path, data_dir: Path, figures) -> None:
    (tree / "Photos").mkdir()
    for name in ("beach.jpg", "Song.MP3", "x.jpg"):
        (tree / "Photos" / name).write_bytes(name.encode())
    ok(kv(data_dir, "scan", str(tree)))
    before = {k.lower(): v for k, v in paths_of(data_dir).items()}
    os.rename(tree / "Photos" / "beach.jpg", tree / "Photos" / "BEACH.jpg")
    os.rename(tree / "Photos" / "Song.MP3", tree / "Photos" / "song.mp3")
    os.rename(tree / "Photos", tree / "photos")
    proc = ok(kv(data_dir, "scan", str(tree), "--json"))
    summary = orjson.loads(proc.stdout.splitlines()[-1])
    assert (summary["moved"], summary["added"], summary["removed"]) == (3, 0, 0)
    after = paths_of(data_dir)
    assert set(after) == {b(tree / "photos" / n) for n in ("BEACH.jpg", "song.mp3", "x.jpg")}
    assert {k.lower(): v for k, v in after.items()} == before
    with Library.open(data_dir, readonly=True) as lib:
        assert lib.search("song", limit=None).total == 1
        assert lib.search("type:audio", limit=None).total == 1  # .MP3 -> .mp3 still audio
    figures.add("fsinputs", "case-only renames", 3)
    assert_consistent(data_dir, tree)


def test_nfc_nfd_twins_are_two_records(tree: Path, data_dir: Path, figures) -> None:
    nfc = unicodedata.normalize("NFC", "Café Müller.jpg").encode()
    nfd = unicodedata.normalize("NFD", "Café Müller.jpg").encode()
    assert nfc != nfd
    for name, data in ((nfc, b"composed"), (nfd, b"decomposed")):
        with open(b(tree) + b"/" + name, "wb") as fh:
            fh.write(data)
    ok(kv(data_dir, "scan", str(tree)))
    got = paths_of(data_dir)
    assert set(got) == {b(tree) + b"/" + nfc, b(tree) + b"/" + nfd}
    assert len(set(got.values())) == 2
    for query in ("café", unicodedata.normalize("NFD", "café"), "cafe", "müller", "MULLER"):
        proc = ok(kv(data_dir, "search", query, "--json"))
        hits = [orjson.loads(x) for x in proc.stdout.splitlines()]
        found = {os.path.basename(get_field(h, "path")) for h in hits if h.get("uuid")}
        assert found == {nfc, nfd}, query  # exact bytes back through --json
        figures.add("fsinputs", "NFC/NFD queries")
    with Library.open(data_dir, readonly=True) as lib:
        assert_search_correct(lib, ["café", "cafe", "müller", "Café Müller"])
    assert_consistent(data_dir, tree)


def test_path_at_the_4095_byte_limit(tree: Path, data_dir: Path, figures) -> None:
    base = b(tree)
    parts = []
    room = 4095 - len(base) - 1
    while room > 256 + 255:
        parts.append(b"p" * 250)
        room -= 251
    last_dir = b"q" * (room - 256)
    name = b"n" * 251 + b".jpg"
    folder = base + b"/" + b"/".join([*parts, last_dir])
    path = folder + b"/" + name
    assert len(path) == 4095
    os.makedirs(folder)
    with open(path, "wb") as fh:
        fh.write(b"edge")
    ok(kv(data_dir, "scan", str(tree)))
    assert set(paths_of(data_dir)) == {path}
    ok(kv(data_dir, "trash", path))
    assert not os.path.exists(path)
    ok(kv(data_dir, "restore", path))
    with open(path, "rb") as fh:
        assert fh.read() == b"edge"
    figures.max("fsinputs", "longest path (bytes)", len(path))
    assert_consistent(data_dir, tree)


# -- a wide directory ------------------------------------------------------------------------------

_RSS_DRIVER = r"""
import atexit, sys
def report():
    with open("/proc/self/status") as fh:
        hwm = [l for l in fh if l.startswith("VmHWM:")][0].split()[1]
    sys.stderr.write("VMHWM %s\n" % hwm)
atexit.register(report)
sys.argv = ["kvmedia", *sys.argv[1:]]
from kvmedia.cli import main
main()
"""


def _scan_peak_kib(data_dir: Path, root: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", _RSS_DRIVER, "scan", str(root), "--json"],
                          env=cli_env(data_dir), capture_output=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith(b"VMHWM ")][-1]
    return int(line.split()[1])


def _wide(tree: Path, data_dir: Path, n: int, figures, label: str) -> None:
    small = tree / "small"
    small.mkdir()
    for i in range(100):
        (small / f"s{i}.jpg").write_bytes(b"s")
    base_kib = _scan_peak_kib(data_dir / "small", small)
    wide = b(tree) + b"/wide"
    os.mkdir(wide)
    for i in range(n):
        os.close(os.open(wide + b"/photo %07d beach.jpg" % i, os.O_CREAT | os.O_WRONLY, 0o644))
    peak_kib = _scan_peak_kib(data_dir, Path(os.fsdecode(wide)))
    figures.max("fsinputs", f"scan peak RSS MiB, {label} entries in one dir", peak_kib / 1024)
    figures.max("fsinputs", "scan peak RSS MiB, 100 entries (baseline)", base_kib / 1024)
    # Generous: the walk sorts one directory's names in memory (path-key order), nothing
    # else may grow with the directory.
    assert peak_kib - base_kib < n * 2 + (300 << 10), (
        f"scan peak RSS {peak_kib >> 10} MiB for {n} entries in one folder (baseline "
        f"{base_kib >> 10} MiB): over 2 KiB per entry; the walk keeps the folder's whole "
        "listing (os.DirEntry objects) and the closing index merge holds every new doc")
    with Library.open(data_dir, readonly=True) as lib:
        assert lib.count() == n
        assert lib.search("photo 0000042", limit=None).total == 1


def test_wide_directory_bounded_memory(tree: Path, data_dir: Path, figures) -> None:
    _wide(tree, data_dir, 20_000, figures, "20k")


@pytest.mark.soak
def test_million_entry_directory_bounded_memory(tree: Path, data_dir: Path, figures) -> None:
    _wide(tree, data_dir, 1_000_000, figures, "1M")


# -- a volume unmounted mid-life -------------------------------------------------------------------

@pytest.fixture
def bind_volume(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(backing dir, mount point): a tmpfs holding the volume's files, bind-mounted at the
    mount point, so the test can unmount and mount the same file system again."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    backing, point = tmp_path / "backing", tmp_path / "mnt" / "usb"
    backing.mkdir()
    point.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "kvusb", str(backing)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    (backing / "vol").mkdir()
    try:
        yield backing / "vol", point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
        subprocess.run(["umount", "-l", str(backing)], capture_output=True)


def _bind(src: Path, point: Path) -> None:
    subprocess.run(["mount", "--bind", str(src), str(point)], check=True, capture_output=True)


def test_volume_unmounted_mid_life(bind_volume: tuple[Path, Path], data_dir: Path,
                                   tmp_path: Path, figures) -> None:
    """Unmounted: the mount point is an empty folder, so the root is offline and nothing is
    deleted (scan.Scanner._offline_reason); searches keep answering from the kept records.
    Mounted again (same file system, same mount point, so the same fs_uuid): back online,
    every uuid the same. Another file system at that point: offline, records kept."""
    src, point = bind_volume
    make_tree(src, 60)
    _bind(src, point)
    ok(kv(data_dir, "scan", str(point)))
    before = paths_of(data_dir)
    assert len(before) == 60
    subprocess.run(["umount", str(point)], check=True, capture_output=True)
    for _ in range(2):
        proc = ok(kv(data_dir, "scan", str(point), "--json"))
        summary = orjson.loads(proc.stdout.splitlines()[-1])
        assert summary["offline"] and summary["removed"] == 0, summary
        figures.add("fsinputs", "offline rescans")
    assert paths_of(data_dir) == before
    stats = orjson.loads(ok(kv(data_dir, "stats", "--json")).stdout)
    assert [r["offline"] for r in stats["roots"]] == [True]
    with Library.open(data_dir, readonly=True) as lib:
        assert lib.search("beach", limit=None).total > 0
    # A watcher-style notification for a path under the unmounted root deletes nothing.
    kv(data_dir, "notify", str(point / "d0"), "--json")
    assert paths_of(data_dir) == before
    _bind(src, point)
    proc = ok(kv(data_dir, "scan", str(point), "--json"))
    summary = orjson.loads(proc.stdout.splitlines()[-1])
    assert not summary["offline"] and (summary["added"], summary["removed"]) == (0, 0)
    assert paths_of(data_dir) == before
    figures.add("fsinputs", "records deleted while unmounted", 0)
    # Another file system mounted at the same point (other source): offline, kept.
    subprocess.run(["umount", str(point)], check=True, capture_output=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kvother", str(point)],
                   check=True, capture_output=True)
    (point / "stranger.jpg").write_bytes(b"x")
    proc = ok(kv(data_dir, "scan", str(point), "--json"))
    summary = orjson.loads(proc.stdout.splitlines()[-1])
    assert summary["offline"] and "another filesystem" in summary["offline_reason"], summary
    assert paths_of(data_dir) == before
    subprocess.run(["umount", str(point)], check=True, capture_output=True)
    _bind(src, point)
    assert_consistent(data_dir, point)
    assert set(paths_of(data_dir)) == set(before)
