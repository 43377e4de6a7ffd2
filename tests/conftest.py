"""Shared fixtures: real temp trees, a real library on disk, the CLI as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmedia import Library


@pytest.fixture(autouse=True)
def _hermetic_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process libraries never read the machine's ~/.config/kvmedia/config.toml."""
    monkeypatch.setenv("KVMEDIA_CONFIG", str(tmp_path / "absent-config.toml"))
    # Watchers started by tests skip background analysis unless a test asks for it.
    monkeypatch.setenv("KVMEDIA_WATCH_ANALYZE", "no")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "vol"
    root.mkdir()
    return root


@pytest.fixture
def lib(data_dir: Path) -> Iterator[Library]:
    library = Library.open(data_dir)
    yield library
    library.close()


def write(path: Path | bytes, data: bytes = b"x") -> Path | bytes:
    """Create a file (and its parents) with `data`."""
    p = os.fsencode(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as fh:
        fh.write(data)
    return path


def run_cli(data_dir: Path, *args: str | bytes, check: bool = False,
            input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run `kvmedia` as a real subprocess with its own data dir."""
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir), KVMEDIA_CONFIG=str(data_dir) + ".toml")
    proc = subprocess.run([sys.executable, "-m", "kvmedia", *args], env=env, capture_output=True,
                          input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kvmedia {args} failed ({proc.returncode}): {proc.stderr!r}")
    return proc
