"""Seeded generator of realistic NAS file names for tests and benchmarks.

    paths(n, seed, root)          -> list of (path bytes, size, mtime_ns), deterministic
    write_records(lib, n, seed)   -> write n records straight into a Library (no file system),
                                     through the record writer so every listener runs
    make_tree(root, n, seed)      -> create the same files for real (sparse, with mtimes)

The corpus mixes camera rolls (IMG_20230714_153012.jpg, DSC01234.JPG, PXL_..., VID_...) in
year/month folders, music libraries with accents, CJK, Hangul and Vietnamese, TV episodes
(Show.Name.S01E02.1080p.mkv), films, documents and screenshots, with names repeated across
folders. Usage: python tools/gen_corpus.py --tree DIR --n 5000 [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

ARTISTS = ["Beyoncé", "Sigur Rós", "Mötley Crüe", "Björk", "Édith Piaf", "Łukasz Żal",
           "Đen Vâu", "Mỹ Tâm", "宇多田ヒカル", "坂本龍一", "방탄소년단", "아이유", "周杰倫",
           "Daft Punk", "The Beatles", "Miles Davis", "Nina Simone", "Zoë Keating",
           "Sơn Tùng M-TP", "Ólafur Arnalds", "Røyksopp", "Motörhead", "AC/DC Tribute",
           "Jean-Michel Jarre", "Queen", "Radiohead", "Tinariwen", "Beyonce Live Band"]
WORDS = ["love", "night", "summer", "rain", "dream", "city", "light", "home", "river",
         "fire", "blue", "heart", "road", "sea", "bãi biển", "mùa hè", "東京", "夜の街",
         "사랑", "bonjour", "café", "über", "straße", "niño", "fjörður", "ocean", "storm",
         "golden", "midnight", "halo", "paradise", "mirror", "echo", "sunrise"]
SHOWS = ["Breaking Bad", "The Office", "Dark", "Money Heist", "Squid Game", "Shōgun",
         "Game of Thrones", "Sherlock", "The Crown", "Stranger Things", "Friends",
         "Attack on Titan", "Đất Rừng Phương Nam", "Le Bureau des Légendes"]
FILMS = ["Amélie", "Spirited Away", "千と千尋の神隠し", "Parasite", "기생충", "Inception",
         "La Haine", "Das Boot", "Oldboy", "The Matrix", "Blade Runner 2049", "Cidade de Deus"]
PLACES = ["Paris", "Hà Nội", "Đà Nẵng", "Kyoto", "Seoul", "Reykjavík", "Zürich", "Kraków",
          "Lisbon", "New York", "beach", "mountains", "wedding", "birthday", "Christmas"]
DOC_WORDS = ["invoice", "report", "Tax Return", "CV", "meeting notes", "Rechnung",
             "contrat", "budget", "scan", "receipt"]


def _camera(rng: random.Random, root: str, t: int) -> str:
    y = 2012 + (t % 13)
    m = 1 + (t // 13) % 12
    d = 1 + (t // 7) % 28
    style = rng.random()
    folder = f"{root}/Photos/{y}/{m:02d}"
    if rng.random() < 0.25:
        folder += f"/{rng.choice(PLACES)} {y}"
    if style < 0.4:
        name = f"IMG_{y}{m:02d}{d:02d}_{rng.randrange(24):02d}{rng.randrange(60):02d}" \
               f"{rng.randrange(60):02d}.jpg"
    elif style < 0.6:
        name = f"IMG_{rng.randrange(10000):04d}.JPG"  # repeats across folders
    elif style < 0.75:
        name = f"DSC{rng.randrange(100000):05d}.{rng.choice(['JPG', 'ARW', 'NEF'])}"
    elif style < 0.85:
        name = f"PXL_{y}{m:02d}{d:02d}_{rng.randrange(10**9):09d}.MP.jpg"
    elif style < 0.95:
        name = f"VID_{y}{m:02d}{d:02d}_{rng.randrange(1000000):06d}.mp4"
    else:
        name = f"Screenshot {y}-{m:02d}-{d:02d} at {rng.randrange(24)}.{rng.randrange(60):02d}.png"
    return f"{folder}/{name}"


def _music(rng: random.Random, root: str) -> str:
    artist = rng.choice(ARTISTS)
    album = " ".join(rng.sample(WORDS, 2)).title()
    year = rng.randrange(1965, 2025)
    track = rng.randrange(1, 19)
    title = " ".join(rng.sample(WORDS, rng.randrange(1, 4)))
    ext = rng.choice(["flac", "mp3", "mp3", "m4a", "opus"])
    return f"{root}/Music/{artist}/{album} ({year})/{track:02d} - {title}.{ext}"


def _tv(rng: random.Random, root: str) -> str:
    show = rng.choice(SHOWS)
    season = rng.randrange(1, 8)
    ep = rng.randrange(1, 25)
    dotted = show.replace(" ", ".")
    q = rng.choice(["720p", "1080p", "2160p.HDR", "WEB-DL"])
    ext = rng.choice(["mkv", "mkv", "mp4", "srt"])
    return f"{root}/TV/{show}/Season {season:02d}/{dotted}.S{season:02d}E{ep:02d}.{q}.{ext}"


def _film(rng: random.Random, root: str) -> str:
    film = rng.choice(FILMS)
    year = rng.randrange(1970, 2025)
    ext = rng.choice(["mkv", "mp4", "avi", "nfo", "jpg"])
    extra = rng.choice(["", " (Director's Cut)", ".x264", " [BluRay]"])
    return f"{root}/Movies/{film} ({year})/{film}{extra}.{ext}"


def _doc(rng: random.Random, root: str) -> str:
    user = rng.choice(["anna", "bao", "chloé", "dmitri", "eun-ji"])
    word = rng.choice(DOC_WORDS)
    y = rng.randrange(2010, 2025)
    ext = rng.choice(["pdf", "docx", "xlsx", "txt", "odt"])
    return f"{root}/home/{user}/Documents/{y}/{word} {y}-{rng.randrange(1, 13):02d}.{ext}"


def paths(n: int, seed: int = 1, root: str = "/mnt/vol1") -> Iterator[tuple[bytes, int, int]]:
    """n distinct (path, size, mtime_ns) triples; the same for the same (n, seed, root)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    base_ns = 1_400_000_000 * 10**9
    i = 0
    while len(seen) < n:
        i += 1
        r = rng.random()
        if r < 0.55:
            p = _camera(rng, root, i)
        elif r < 0.8:
            p = _music(rng, root)
        elif r < 0.9:
            p = _tv(rng, root)
        elif r < 0.95:
            p = _film(rng, root)
        else:
            p = _doc(rng, root)
        if p in seen:
            continue
        seen.add(p)
        size = int(rng.lognormvariate(14, 2))
        mtime_ns = base_ns + rng.randrange(10**9) * 10**9 + rng.randrange(10**9)
        yield p.encode("utf-8"), size, mtime_ns


def record_for(path: bytes, size: int, mtime_ns: int, ino: int, root: bytes) -> dict[str, Any]:
    from kvmedia import records as R
    from kvmedia.identity import uuid_from_triplet
    from kvmedia.pathbytes import set_field

    name = path.rsplit(b"/", 1)[1]
    ctime_s = mtime_ns // 10**9
    rec: dict[str, Any] = {
        "uuid": uuid_from_triplet("corpus-fs", ino, ctime_s), "fs_uuid": "corpus-fs",
        "ino": ino, "ctime": ctime_s, "ctime_ns": mtime_ns, "ext": R.extension(name),
        "size": size, "mtime": mtime_ns / 1e9, "mtime_ns": mtime_ns,
        "type": R.infer_type(name), "is_trash": False, "trash_path": None,
        "deleted_at": None, "indexed_at": "2024-01-01T00:00:00+00:00",
    }
    set_field(rec, "path", path)
    set_field(rec, "original_path", path)
    set_field(rec, "name", name)
    set_field(rec, "root", root)
    return rec


def write_records(lib: Any, n: int, seed: int = 1, root: str = "/mnt/vol1",
                  batch: int = 5000) -> int:
    """Write n generated records into `lib` (a kvmedia Library) in batches; returns n."""
    rows = list(paths(n, seed, root))
    root_b = root.encode()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]

        def fn(txn: Any, chunk: list[tuple[bytes, int, int]] = chunk, start: int = start) -> None:
            w = lib.store.writer(txn)
            for i, (path, size, mtime_ns) in enumerate(chunk):
                w.put(record_for(path, size, mtime_ns, 1000 + start + i, root_b))
            w.finish()

        lib.env.write(fn)
    lib.search_engine.maintainer.maintain()  # fold the delta, as Library.scan does
    return len(rows)


def make_tree(root: str | bytes, n: int, seed: int = 1) -> list[bytes]:
    """Create n real (empty, sparse-sized) files under `root` with their generated mtimes."""
    root_s = os.fsdecode(root).rstrip("/")
    out = []
    for path, size, mtime_ns in paths(n, seed, root_s):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            if size:
                fh.truncate(min(size, 1 << 30))
        os.utime(path, ns=(mtime_ns, mtime_ns))
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tree", help="create real files under this directory")
    args = ap.parse_args(argv)
    if args.tree:
        make_tree(args.tree, args.n, args.seed)
    else:
        for path, _size, _mtime in paths(args.n, args.seed):
            sys.stdout.buffer.write(path + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
