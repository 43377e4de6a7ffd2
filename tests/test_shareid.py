"""Share IDs: round trips, every tampering refused, key file rules, rotation, the CLI."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from kvtest import run_cli, write

from kvmedia import Library, NotFoundError, StorageError, UsageError
from kvmedia.pathbytes import get_field
from kvmedia.shareid import KEY_NAME, load_key, open_token, seal


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _tok(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def shared(lib: Library, tree: Path) -> tuple[Library, dict, str]:
    write(tree / "vidéo/holiday.mp4", b"v")
    lib.scan([tree])
    rec = lib.resolve(os.fsencode(tree / "vidéo/holiday.mp4"))
    return lib, rec, lib.share_id(rec["uuid"])


def test_roundtrip_and_key_file(shared: tuple[Library, dict, str], data_dir: Path) -> None:
    lib, rec, token = shared
    assert token.isascii() and all(c.isalnum() or c in "-_" for c in token)
    assert lib.resolve_share(token)["uuid"] == rec["uuid"]
    key = data_dir / KEY_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    assert lib.share_id(rec["uuid"]) != token  # fresh nonce per token


def test_every_bit_flip_and_truncation_is_refused(shared: tuple[Library, dict, str]) -> None:
    lib, _rec, token = shared
    key = load_key(lib.data_dir)
    raw = _raw(token)
    accepted = 0
    tried = 0
    for i in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[i // 8] ^= 1 << (i % 8)
        tried += 1
        try:
            open_token(key, _tok(bytes(bad)))
            accepted += 1
        except UsageError:
            pass
    for i in range(len(token)):  # flips in the text itself, including padding bits
        for bit in range(7):
            text = token[:i] + chr(ord(token[i]) ^ (1 << bit)) + token[i + 1:]
            tried += 1
            try:
                open_token(key, text)
                accepted += 1
            except UsageError:
                pass
    for cut in range(len(token)):
        tried += 1
        with pytest.raises(UsageError):
            open_token(key, token[:cut])
    for extra in ("A", "AA", token):
        with pytest.raises(UsageError):
            open_token(key, token + extra)
    assert tried > 1000 and accepted == 0


def test_tokens_from_another_key_and_after_rotation(shared: tuple[Library, dict, str],
                                                    tmp_path: Path) -> None:
    lib, rec, token = shared
    other = seal(os.urandom(32), rec["uuid"], get_field(rec, "path"))
    with pytest.raises(UsageError):
        lib.resolve_share(other)
    lib.rotate_share_key()
    with pytest.raises(UsageError, match="revoked"):
        lib.resolve_share(token)
    assert lib.resolve_share(lib.share_id(rec["uuid"]))["uuid"] == rec["uuid"]
    with Library.open(tmp_path / "other-lib") as second:  # no key there: nothing resolves
        with pytest.raises(UsageError):
            second.resolve_share(token)


def test_link_follows_rename_and_refuses_trash(shared: tuple[Library, dict, str],
                                               tree: Path) -> None:
    lib, rec, token = shared
    os.rename(tree / "vidéo/holiday.mp4", tree / "vidéo/renamed.mp4")
    lib.scan([tree])
    assert get_field(lib.resolve_share(token), "path") == os.fsencode(tree / "vidéo/renamed.mp4")
    assert lib.trash([rec["uuid"]])[0].ok
    with pytest.raises(NotFoundError, match="trash"):
        lib.resolve_share(token)
    with pytest.raises(UsageError):
        lib.share_id(rec["uuid"])


def test_key_file_symlink_and_loose_mode(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 32)
    os.symlink(victim, data / KEY_NAME)
    with pytest.raises(StorageError, match="symlink"):
        load_key(str(data))
    assert victim.read_bytes() == b"v" * 32
    os.unlink(data / KEY_NAME)
    key = load_key(str(data))
    os.chmod(data / KEY_NAME, 0o644)
    assert load_key(str(data)) == key
    assert stat.S_IMODE((data / KEY_NAME).stat().st_mode) == 0o600


def test_cli_share_and_resolve(tree: Path, data_dir: Path) -> None:
    name = os.fsencode(tree) + b"/a\xff b.jpg"
    write(name, b"x")
    run_cli(data_dir, "scan", str(tree), check=True)
    token = run_cli(data_dir, "share-id", os.fsdecode(name), check=True).stdout.strip()
    assert run_cli(data_dir, "resolve", token, check=True).stdout == name + b"\n"
    bad = token[:-2] + (b"A" if token[-2:-1] != b"A" else b"B") + token[-1:]
    proc = run_cli(data_dir, "resolve", bad, "--json")
    assert proc.returncode == 2 and b'"code":"usage"' in proc.stderr
    run_cli(data_dir, "share-key", "rotate", check=True)
    assert run_cli(data_dir, "resolve", token).returncode == 2
