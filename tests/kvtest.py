"""Helpers shared by the test files: real files on disk, the CLI as a real subprocess.

Imported as `from kvtest import ...` (not from conftest: several conftest.py files exist, and
only one of them can be the module named `conftest`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
