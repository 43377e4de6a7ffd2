"""The extractor registry: built-ins by name and version, a plugin extractor whose version
bump marks exactly its outputs dirty, and `kvmedia reprocess`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kvtest import run_cli, write

from kvmedia import Library
from kvmedia.errors import UsageError
from kvmedia.pipeline.plugins import PluginAdapter
from kvmedia.pipeline.registry import stale
from tests.test_pipeline import jpeg
from tests.test_pipeline_sidecars import xmp


class RawSizer:
    """A third-party style extractor: reads the file, writes `raw_first_byte`."""

    name = "rawsizer"
    media_types = ("image",)
    extensions = ("cr2",)

    def __init__(self, version: int) -> None:
        self.version = version
        self.calls: list[bytes] = []

    def extract(self, rec: dict, path: bytes) -> dict:
        self.calls.append(path)
        with open(path, "rb") as fh:
            first = fh.read(1)
        return {"raw_first_byte": first[0], "raw_by": self.version, "uuid": "not allowed"}


def test_builtins_are_registered(lib: Library) -> None:
    names = lib.extractors().names()
    assert {"probe", "sidecars", "thumbnail", "offline"} <= set(names)
    info = {i.name: i for i in lib.extractors().info()}
    assert info["offline"].kind == "analyzer" and info["probe"].kind == "metadata"
    with pytest.raises(UsageError, match="no extractor named"):
        lib.reprocess("nope")


def test_plugin_version_bump_redoes_only_its_outputs(lib: Library, tree: Path) -> None:
    for i in range(3):
        write(tree / f"IMG_{i}.CR2", bytes([i + 1]) * 10)
    jpeg(tree / "IMG_9.JPG")
    write(tree / "IMG_9.xmp", xmp("3"))
    lib.scan([tree])
    v1 = RawSizer(1)
    lib.extractors().register(PluginAdapter(v1), source="test")
    out = lib.reprocess("rawsizer")
    assert out["stale"] == 3 and out["result"]["written"] == 3 and len(v1.calls) == 3
    rec = lib.find_by_path(str(tree / "IMG_1.CR2"))
    assert rec["raw_first_byte"] == 2 and rec["extracted"]["rawsizer"]["v"] == 1
    assert rec["uuid"] != "not allowed"
    assert lib.reprocess("rawsizer")["stale"] == 0  # fresh: nothing to redo
    sidecar_before = lib.find_by_path(str(tree / "IMG_9.JPG"))["sidecar"]

    v2 = RawSizer(2)
    lib.extractors().register(PluginAdapter(v2), source="test")
    assert lib.reprocess("rawsizer", dry_run=True)["stale"] == 3 and v2.calls == []
    lib.reprocess("rawsizer")
    assert len(v2.calls) == 3
    assert lib.find_by_path(str(tree / "IMG_0.CR2"))["raw_by"] == 2
    assert lib.find_by_path(str(tree / "IMG_9.JPG"))["sidecar"] == sidecar_before

    # a changed file makes its output stale too
    write(tree / "IMG_0.CR2", b"\x09" * 11)
    lib.scan([tree])
    assert lib.reprocess("rawsizer", dry_run=True)["stale"] == 1


def test_sidecar_version_stamp_drives_reprocess(lib: Library, tree: Path) -> None:
    jpeg(tree / "IMG_1.JPG")
    write(tree / "IMG_1.xmp", xmp("4", ("x",)))
    lib.scan([tree])
    rec = lib.find_by_path(str(tree / "IMG_1.JPG"))
    ex = lib.extractors().get("sidecars")
    assert not stale(ex, rec)

    def age(txn) -> None:  # a record made by an older sidecar deriver
        cur = lib.store.get(txn, rec["uuid"])
        w = lib.store.writer(txn)
        w.put({**cur, "sidecar": {**cur["sidecar"], "v": 0}, "user_tags": ["stale"]}, cur)
        w.finish()

    lib.env.write(age)
    out = lib.reprocess("sidecars")
    assert out["stale"] == 1
    rec = lib.find_by_path(str(tree / "IMG_1.JPG"))
    assert rec["sidecar"]["v"] == ex.version and rec["user_tags"] == ["x"]


def test_cli_reprocess(data_dir: Path, tree: Path) -> None:
    jpeg(tree / "IMG_1.JPG")
    run_cli(data_dir, "scan", str(tree), check=True)
    rows = [orjson.loads(line) for line in
            run_cli(data_dir, "reprocess", "--list", "--json", check=True).stdout.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["thumbnail"]["stale"] == 1 and by_name["sidecars"]["stale"] == 0
    out = orjson.loads(run_cli(data_dir, "reprocess", "--extractor", "thumbnail", "--json",
                               check=True).stdout)
    assert out["stale"] == 1 and out["result"]["built"] == 1
    again = run_cli(data_dir, "reprocess", "--extractor", "thumbnail", check=True)
    assert b"0 of 1 items redone" in again.stdout
    assert run_cli(data_dir, "reprocess").returncode == 2
