"""Metadata probing on real media: ffmpeg-made audio/video, Pillow-made photos with EXIF,
mutagen-tagged files with non-ASCII tags, and malformed files that must not hang or crash."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kvtest import run_cli

from kvmedia import Library
from kvmedia.probe import Tools, find_tools, probe_file
from kvmedia.probe.cache import needs_probe

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
need_ffmpeg = pytest.mark.skipif(not (FFMPEG and FFPROBE),
                                 reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)")
EXTRA = "not installed (pip install 'kvmedia[media]')"
PIL = pytest.importorskip("PIL.Image", reason=f"Pillow {EXTRA}")
mutagen = pytest.importorskip("mutagen", reason=f"mutagen {EXTRA}")

ARTIST = "Sơn Tùng M-TP"
ALBUM = "Bãi biển 東京"
TITLE = "夜に駆ける — Ярко"
NO_FFPROBE = Tools(ffprobe=None, pillow=True, mutagen=True)


def ffmpeg(*args: str) -> None:
    assert FFMPEG
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, timeout=120)


def tag_mp3(path: Path) -> None:
    from mutagen.id3 import ID3, TALB, TIT2, TPE1, TRCK

    tags = ID3()
    tags.add(TPE1(encoding=3, text=ARTIST))
    tags.add(TALB(encoding=1, text=ALBUM))  # UTF-16
    tags.add(TIT2(encoding=3, text=TITLE))
    tags.add(TRCK(encoding=3, text="3/12"))
    tags.save(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real files with known durations (2.5 s audio, 3 s / 2 s video) and known tags."""
    d = tmp_path_factory.mktemp("media")
    if not FFMPEG:
        return d
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2.5", str(d / "tone.wav"))
    for name, codec in (("tone.mp3", "libmp3lame"), ("tone.flac", "flac"), ("tone.m4a", "aac"),
                        ("tone.wv", "wavpack")):
        ffmpeg("-i", str(d / "tone.wav"), "-c:a", codec, str(d / name))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3", "-f", "lavfi",
           "-i", "sine=duration=3", "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
           str(d / "clip.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2", "-c:v", "mpeg4",
           str(d / "silent.mkv"))
    tag_mp3(d / "tone.mp3")
    from mutagen.apev2 import APEv2
    from mutagen.flac import FLAC
    from mutagen.mp4 import MP4

    flac = FLAC(d / "tone.flac")
    flac.update({"artist": ARTIST, "album": ALBUM, "title": TITLE, "tracknumber": "7"})
    flac.save()
    m4a = MP4(d / "tone.m4a")
    m4a.update({"\xa9ART": [ARTIST], "\xa9alb": [ALBUM], "\xa9nam": [TITLE], "trkn": [(5, 9)]})
    m4a.save()
    ape = APEv2()
    ape.update({"Artist": ARTIST, "Album": ALBUM, "Title": TITLE, "Track": "2"})
    ape.save(d / "tone.wv")
    return d


def _probe(path: Path, media_type: str, tools: Tools | None = None) -> dict:
    result = probe_file(os.fsencode(path), media_type, tools or find_tools(),
                        ext=path.suffix[1:].lower())
    assert result.ok, result.error
    return result.fields


@need_ffmpeg
@pytest.mark.parametrize("name", ["tone.wav", "tone.mp3", "tone.flac", "tone.m4a", "tone.wv"])
@pytest.mark.parametrize("with_ffprobe", [True, False])
def test_audio_duration_within_a_tenth(media: Path, name: str, with_ffprobe: bool) -> None:
    fields = _probe(media / name, "audio", None if with_ffprobe else NO_FFPROBE)
    assert abs(fields["duration_sec"] - 2.5) < 0.1


@need_ffmpeg
@pytest.mark.parametrize("name,track", [("tone.mp3", 3), ("tone.flac", 7), ("tone.m4a", 5),
                                        ("tone.wv", 2)])
def test_non_ascii_tags(media: Path, name: str, track: int) -> None:
    for tools in (None, NO_FFPROBE):
        fields = _probe(media / name, "audio", tools)
        assert (fields["artist"], fields["album"], fields["title"], fields["track"]) == (
            ARTIST, ALBUM, TITLE, track)


@need_ffmpeg
def test_video_fields(media: Path) -> None:
    clip = _probe(media / "clip.mp4", "video")
    assert abs(clip["duration_sec"] - 3.0) < 0.1
    assert (clip["width"], clip["height"], clip["fps"]) == (320, 240, 25.0)
    assert clip["has_audio"] is True
    assert (clip["video_codec"], clip["audio_codec"]) == ("mpeg4", "aac")
    silent = _probe(media / "silent.mkv", "video")
    assert abs(silent["duration_sec"] - 2.0) < 0.1
    assert (silent["width"], silent["height"], silent["has_audio"]) == (160, 120, False)
    # Without ffprobe, MP4 still gets its duration from mutagen.
    assert abs(_probe(media / "clip.mp4", "video", NO_FFPROBE)["duration_sec"] - 3.0) < 0.1


@need_ffmpeg
def test_ffprobe_timeout_is_a_failure_not_a_hang(media: Path) -> None:
    tools = Tools(ffprobe=FFPROBE, pillow=False, mutagen=False)
    result = probe_file(os.fsencode(media / "silent.mkv"), "video", tools, timeout_s=0.001)
    assert not result.ok and "timed out" in (result.error or "")


def test_legacy_id3_encodings(tmp_path: Path) -> None:
    from mutagen.id3 import ID3, TIT2, TPE1

    # ID3v1 only: Latin-1 by definition.
    v1 = tmp_path / "v1.mp3"
    v1.write_bytes(b"\xff\xfb\x90\x00" * 64 + b"TAG" + b"Caf\xe9".ljust(30, b"\0")
                   + b"Artist".ljust(30, b"\0") + b"Album".ljust(30, b"\0") + b"1999"
                   + b"".ljust(28, b"\0") + b"\0\x04" + b"\x0c")
    from kvmedia.probe import tags

    fields = tags.read(os.fsencode(v1))
    assert (fields["title"], fields["artist"], fields["track"]) == ("Café", "Artist", 4)
    # ID3v2 frame marked Latin-1 but holding UTF-8 bytes (a common tagger bug): repaired.
    v2 = tmp_path / "v2.mp3"
    v2.write_bytes(b"\xff\xfb\x90\x00" * 64)
    id3 = ID3()
    id3.add(TIT2(encoding=0, text=ALBUM.encode("utf-8").decode("latin-1")))
    id3.add(TPE1(encoding=0, text="\xc0\xe1\xe2"))  # cp1251 "Абв", not valid UTF-8
    id3.save(v2)
    fields = tags.read(os.fsencode(v2))
    assert fields["title"] == ALBUM
    assert fields["artist"] == "\xc0\xe1\xe2"
    assert tags.read(os.fsencode(v2), legacy_encoding="cp1251")["artist"] == "Абв"


def make_photo(path: Path, *, orientation: int = 6) -> None:
    from PIL import Image

    img = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R6"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769).update({0x9003: "2021:07:04 12:34:56", 0x9011: "+07:00"})
    exif.get_ifd(0x8825).update({1: "N", 2: (10.0, 46.0, 30.0), 3: "E", 4: (106.0, 40.0, 12.0)})
    img.save(path, exif=exif)


def test_photo_exif(tmp_path: Path) -> None:
    photo = tmp_path / "IMG_0001.jpg"
    make_photo(photo)
    fields = _probe(photo, "image")
    assert (fields["width"], fields["height"], fields["orientation"]) == (64, 48, 6)
    assert fields["taken_at"] == "2021-07-04T12:34:56+07:00"
    assert (fields["camera_make"], fields["camera_model"]) == ("Canon", "Canon EOS R6")
    assert fields["gps_lat"] == pytest.approx(10 + 46 / 60 + 30 / 3600, abs=1e-6)
    assert fields["gps_lon"] == pytest.approx(106 + 40 / 60 + 12 / 3600, abs=1e-6)
    png = tmp_path / "plain.png"
    from PIL import Image

    Image.new("L", (7, 5)).save(png)
    assert _probe(png, "image") == {"width": 7, "height": 5}


def _box(kind: bytes, payload: bytes = b"", size: int | None = None) -> bytes:
    return struct.pack(">I", len(payload) + 8 if size is None else size) + kind + payload


MALFORMED = {
    "empty.mp4": b"",
    "zero_atoms.mp4": _box(b"ftyp", b"isom\0\0\0\0") + _box(b"moov", size=0)
    + _box(b"mdat", size=0),
    "zero_inner.m4a": _box(b"ftyp", b"M4A \0\0\0\0") + _box(b"moov", _box(b"trak", size=0) * 50),
    "huge_box.mp4": _box(b"ftyp", b"isom\0\0\0\0") + _box(b"moov", b"\0" * 32, size=0xFFFFFFF0),
    "huge64.m4a": _box(b"ftyp", b"M4A \0\0\0\0") + struct.pack(">I", 1) + b"moov"
    + struct.pack(">Q", 1 << 62) + b"\0" * 64,
    "garbage.mp3": bytes(range(256)) * 40,
    "bad_id3.mp3": b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + b"TIT2\x7f\x7f\x7f\x7f\x00\x00" * 20,
    "trunc.flac": b"fLaC\x00\x00\x00\x22" + b"\x10" * 10,
    "trunc.jpg": b"\xff\xd8\xff\xe1\xff\xffExif\0\0MM\0*\0\0\0\x08\xff\xff",
    "notimage.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
}


def test_malformed_files_fail_cleanly(tmp_path: Path, media: Path) -> None:
    """Each malformed file gives a cached failure or partial data, in a bounded time."""
    for name, data in MALFORMED.items():
        (tmp_path / name).write_bytes(data)
    if FFMPEG:
        raw = (media / "clip.mp4").read_bytes()
        (tmp_path / "truncated.mp4").write_bytes(raw[: len(raw) // 3])
        (tmp_path / "head_only.m4a").write_bytes((media / "tone.m4a").read_bytes()[:600])
    script = (
        "import os, sys, orjson\n"
        "from kvmedia.probe import probe_file\nfrom kvmedia.records import infer_type\n"
        "out = {}\n"
        "for name in sorted(os.listdir(sys.argv[1])):\n"
        "    r = probe_file(os.path.join(sys.argv[1], name).encode(), infer_type(name.encode()),"
        " ext=name.rsplit('.', 1)[1], timeout_s=20)\n"
        "    out[name] = [r.ok, r.error, r.fields]\n"
        "print(orjson.dumps(out).decode())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = orjson.loads(proc.stdout)
    assert set(results) >= set(MALFORMED)
    assert results["empty.mp4"] == [False, "empty file", {}]
    for name in ("garbage.mp3", "trunc.jpg", "notimage.png", "zero_atoms.mp4"):
        ok, error, _fields = results[name]
        assert not ok and error, name
    for ok, error, _fields in results.values():
        assert ok or (error and len(error) <= 2000)


def test_without_any_tool_nothing_breaks(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    make_photo(photo)
    result = probe_file(os.fsencode(photo), "image", Tools(None, False, False))
    assert not result.ok and "install ffmpeg" in (result.error or "")


@need_ffmpeg
def test_library_probe_cache_and_stamp(tmp_path: Path, media: Path, lib: Library) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    for name in ("tone.mp3", "clip.mp4"):
        shutil.copy(media / name, vol / name)
    make_photo(vol / "p.jpg")
    (vol / "broken.mp4").write_bytes(MALFORMED["zero_atoms.mp4"])
    lib.scan([vol])
    first = lib.probe()
    assert (first.total, first.probed, first.failed, first.fresh) == (4, 3, 1, 0)
    rec = lib.resolve(os.fsencode(vol / "clip.mp4"))
    assert abs(rec["duration_sec"] - 3.0) < 0.1 and rec["probe"]["ok"]
    broken = lib.resolve(os.fsencode(vol / "broken.mp4"))
    assert broken["probe"]["ok"] is False and broken["probe"]["error"]
    # Everything cached, failures included: nothing is reopened.
    again = lib.probe()
    assert (again.probed, again.failed, again.fresh) == (0, 0, 4)
    # A changed file (size+mtime) is probed again after the scan saw the change.
    shutil.copy(media / "tone.flac", vol / "tone.mp3")
    lib.scan([vol])
    stale = lib.resolve(os.fsencode(vol / "tone.mp3"))
    assert needs_probe(stale, find_tools())
    third = lib.probe()
    assert (third.probed, third.fresh) == (1, 3)
    assert lib.resolve(os.fsencode(vol / "tone.mp3"))["audio_codec"] == "flac"
    # A tool that was missing at probe time makes the cached answer stale.
    partial = lib.resolve(os.fsencode(vol / "p.jpg"))
    partial["probe"]["with"] = ["pillow"]
    assert needs_probe(partial, find_tools())
    # Lazy probing: ensure_probed only probes what is stale.
    assert lib.ensure_probed(lib.resolve(os.fsencode(vol / "clip.mp4")))["probe"] == rec["probe"]
    assert lib.doctor(repair=False)["clean"]


@need_ffmpeg
def test_cli_probe_show_and_doctor(tmp_path: Path, media: Path, data_dir: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    shutil.copy(media / "tone.flac", vol / "só.flac")
    run_cli(data_dir, "scan", str(vol), check=True)
    proc = run_cli(data_dir, "probe", "--all", "--json", "--progress", "json", check=True)
    assert orjson.loads(proc.stdout.splitlines()[-1])["probed"] == 1
    assert b'"type":"progress"' in proc.stderr
    shown = orjson.loads(run_cli(data_dir, "show", "--json", str(vol / "só.flac"),
                                 check=True).stdout)
    assert abs(shown["duration_sec"] - 2.5) < 0.1 and shown["artist"] == ARTIST
    env_none = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir), KVMEDIA_FFPROBE="none")
    doc = subprocess.run([sys.executable, "-m", "kvmedia", "doctor", "--json"], env=env_none,
                         capture_output=True, timeout=60)
    missing = [m["tool"] for m in orjson.loads(doc.stdout)["media_tools"]["missing"]]
    assert missing == ["ffprobe"]


def test_probe_without_media_extra_in_another_process(tmp_path: Path, data_dir: Path) -> None:
    """Pillow and mutagen made unimportable: kvmedia still scans, probes, and doctor says so."""
    vol = tmp_path / "vol"
    vol.mkdir()
    make_photo(vol / "a.jpg")
    script = (
        "import sys; sys.modules['PIL'] = None; sys.modules['mutagen'] = None\n"
        "import os, orjson\nos.environ['KVMEDIA_FFPROBE'] = 'none'\n"
        "from kvmedia import Library\n"
        "lib = Library.open(sys.argv[1]); lib.scan([sys.argv[2]])\n"
        "s = lib.probe(); caps = lib.capabilities()\n"
        "print(orjson.dumps([s.failed, [m['tool'] for m in caps['missing']]]).decode())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(data_dir), str(vol)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout) == [1, ["ffprobe", "Pillow", "mutagen"]]
