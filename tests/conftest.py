"""Shared fixtures: real temp trees, a real library on disk, the CLI as a real subprocess."""

from __future__ import annotations

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long reliability runs (100+ kills, many mutations); "
                          "see tests/reliability/")
