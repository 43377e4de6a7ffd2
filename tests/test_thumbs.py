"""Thumbnails of real media, decoded and checked: EXIF orientation, a video frame, embedded
cover art; validity stamps, deletion, the size budget's LRU eviction, the in-memory LRU."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kvtest import run_cli
from PIL import Image

from kvmedia import Library
from kvmedia.thumbs.hot import BoundedLRU

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def oriented_jpeg(path: Path) -> None:
    """640x320, left half red, right half blue, EXIF orientation 6 (display rotated 90 CW)."""
    img = Image.new("RGB", (640, 320), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 320, 320))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes())


def noise_jpeg(path: Path, seed: int) -> None:
    img = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3) if seed else b"\0" * 480000)
    img.save(path, "JPEG", quality=95)


def test_image_thumbnail_is_upright_and_small(lib: Library, tree: Path) -> None:
    oriented_jpeg(tree / "photo.jpg")
    lib.scan([tree])
    uuid = lib.find_by_path(str(tree / "photo.jpg"))["uuid"]
    img = decode(lib.thumbnail(uuid))
    assert img.format == "JPEG" and img.size == (160, 320)  # portrait once upright
    top, bottom = img.getpixel((80, 20)), img.getpixel((80, 300))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    files = os.listdir(Path(lib.data_dir) / "thumbs" / uuid[:2])
    assert len(files) == 1 and files[0].startswith(uuid) and files[0].endswith(".jpg")


@needs_ffmpeg
def test_video_frame_and_audio_cover(lib: Library, tree: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=10:duration=2", "-pix_fmt", "yuv420p",
                    str(tree / "clip.mp4")], check=True, timeout=60)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1",
                    str(tree / "song.mp3")], check=True, timeout=60)
    from mutagen.id3 import APIC, ID3

    cover = io.BytesIO()
    Image.new("RGB", (500, 500), (0, 200, 0)).save(cover, "PNG")
    tags = ID3(str(tree / "song.mp3"))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=cover.getvalue()))
    tags.save()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1",
                    str(tree / "bare.mp3")], check=True, timeout=60)
    lib.scan([tree])
    video = decode(lib.thumbnail(str(tree / "clip.mp4")))
    assert video.size == (160, 120)
    art = decode(lib.thumbnail(str(tree / "song.mp3")))
    assert art.size == (320, 320) and art.getpixel((160, 160))[1] > 150
    assert lib.thumbnail(str(tree / "bare.mp3")) is None  # no cover: remembered as "none"
    uuid = lib.find_by_path(str(tree / "bare.mp3"))["uuid"]
    assert any(n.endswith(".none") for n in os.listdir(Path(lib.data_dir) / "thumbs" / uuid[:2]))


def test_stale_thumbnail_is_rebuilt_and_deleted_item_loses_it(lib: Library, tree: Path) -> None:
    path = tree / "a.jpg"
    Image.new("RGB", (100, 50), (10, 10, 10)).save(path)
    lib.scan([tree])
    rec = lib.find_by_path(str(path))
    assert decode(lib.thumbnail(rec["uuid"])).size == (100, 50)
    st = path.stat()
    Image.new("RGB", (60, 120), (10, 10, 10)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    lib.scan([tree])
    assert decode(lib.thumbnail(rec["uuid"])).size == (60, 120)
    shard = Path(lib.data_dir) / "thumbs" / rec["uuid"][:2]
    assert len([n for n in os.listdir(shard) if n.startswith(rec["uuid"])]) == 1  # old gone
    lib.delete([rec["uuid"]])
    assert not [n for n in os.listdir(shard) if n.startswith(rec["uuid"])]


def test_size_budget_evicts_least_recently_used(data_dir: Path, tree: Path) -> None:
    for i in range(12):
        noise_jpeg(tree / f"n{i:02d}.jpg", seed=1)
    lib = Library.open(data_dir)
    try:
        lib.scan([tree])
        keep = lib.find_by_path(str(tree / "n00.jpg"))["uuid"]
        report = lib.build_thumbnails()
        assert report.built == 12
        cache = lib.thumbs.cache
        entries = cache.entries()
        total = sum(size for _t, size, _p in entries)
        now = time.time()
        for i, (_t, _s, path) in enumerate(sorted(entries, key=lambda e: e[2])):
            used = now if os.path.basename(path).startswith(keep) else now - 1000 + i
            os.utime(path, (used, used))  # n00 used last, the others in path order
        cache.max_bytes = total // 2
        assert cache.evict() > 0
        assert cache.usage()["bytes"] <= total // 2
        left = {os.path.basename(p).split(".")[0] for _t, _s, p in cache.entries()}
        assert keep in left and 0 < len(left) < 12
    finally:
        lib.close()


def test_hot_cache_serves_without_disk_and_lmdb(lib: Library, tree: Path) -> None:
    Image.new("RGB", (40, 40), (1, 2, 3)).save(tree / "h.jpg")
    lib.scan([tree])
    uuid = lib.find_by_path(str(tree / "h.jpg"))["uuid"]
    first = lib.thumbnail(uuid)
    shutil.rmtree(Path(lib.data_dir) / "thumbs")  # the disk copy is gone...
    assert lib.thumbnail(uuid) == first            # ...served from memory
    hits = lib.thumbs.hot.records.hits
    lib.thumbnail(uuid)
    assert lib.thumbs.hot.records.hits == hits + 1  # the record too, no LMDB read
    st = (tree / "h.jpg").stat()
    Image.new("RGB", (80, 20), (1, 2, 3)).save(tree / "h.jpg")
    os.utime(tree / "h.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    lib.upsert_paths([tree / "h.jpg"])  # a commit: hot records are dropped, stamps differ
    assert decode(lib.thumbnail(uuid)).size == (80, 20)


def test_bounded_lru_keeps_its_bound() -> None:
    lru: BoundedLRU[int, bytes] = BoundedLRU(max_bytes=10_000, max_items=50)
    for i in range(1000):
        lru.put(i, b"x" * 300, 300)
        assert lru.bytes <= 10_000 and len(lru) <= 50
    assert lru.get(0) is None and lru.get(999) == b"x" * 300
    lru.get(970)
    lru.put(1000, b"y", 300)
    assert lru.get(970) is not None  # recently used survives
    lru.put(2000, b"z" * 5000, 5000)  # bigger than a quarter of the budget: not kept
    assert lru.get(2000) is None and lru.bytes <= 10_000


def test_cli_thumbs(data_dir: Path, tree: Path) -> None:
    Image.new("RGB", (50, 50)).save(tree / "c.png")
    run_cli(data_dir, "scan", str(tree), check=True)
    out = run_cli(data_dir, "thumbs", "--all", check=True).stdout.decode()
    assert "1 built" in out
    out = run_cli(data_dir, "thumbs", str(tree / "c.png"), check=True).stdout.decode()
    assert "1 fresh" in out
    assert run_cli(data_dir, "thumbs").returncode == 2
