"""Configuration precedence: flags > KVMEDIA_* environment > config file > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from kvtest import run_cli

from kvmedia import Library
from kvmedia.config import Config, config_path, default_data_dir, read_file, write_setting
from kvmedia.errors import UsageError


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in list(os.environ):
        if var.startswith("KVMEDIA_") or var.startswith("XDG_"):
            monkeypatch.delenv(var)
    cfg = tmp_path / "cfg.toml"
    monkeypatch.setenv("KVMEDIA_CONFIG", str(cfg))
    return cfg


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    c = Config()
    assert c["data_dir"] == str(tmp_path / "xdg" / "kvmedia") == default_data_dir()
    assert c["scan.include"] == [] and c["scan.exclude"] == []
    assert c["scan.batch_files"] == 8000 and c["progress"] == "auto"
    assert {r["source"] for r in c.describe()} == {"default"}


def test_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text('data_dir = "/from/file"\n[scan]\nbatch_files = 10\n'
                         'exclude = ["*.tmp"]\n')
    c = Config()
    assert (c["data_dir"], c["scan.batch_files"], c["scan.exclude"]) == (
        "/from/file", 10, ["*.tmp"])
    assert c.sources["scan.batch_files"] == "config file"
    monkeypatch.setenv("KVMEDIA_SCAN_BATCH_FILES", "20")
    monkeypatch.setenv("KVMEDIA_DATA_DIR", "/from/env")
    monkeypatch.setenv("KVMEDIA_SCAN_INCLUDE", f"/a{os.pathsep}/b")
    monkeypatch.setenv("KVMEDIA_SCAN_EXCLUDE", "*.part,Downloads/")
    c = Config()
    assert (c["data_dir"], c["scan.batch_files"]) == ("/from/env", 20)
    assert c["scan.include"] == ["/a", "/b"] and c["scan.exclude"] == ["*.part", "Downloads/"]
    assert c.sources["data_dir"] == "env KVMEDIA_DATA_DIR"
    c = Config({"data_dir": "/from/flag", "scan.batch_files": None})
    assert c["data_dir"] == "/from/flag" and c.sources["data_dir"] == "flag"
    assert c["scan.batch_files"] == 20, "a flag left unset does not hide the env"


@pytest.mark.parametrize("var,value", [("KVMEDIA_SCAN_BATCH_FILES", "many"),
                                       ("KVMEDIA_PROGRESS", "loud")])
def test_bad_values_are_usage_errors(monkeypatch: pytest.MonkeyPatch, var: str, value: str
                                     ) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(UsageError) as err:
        Config()
    assert var in err.value.message


def test_bad_config_file_is_a_usage_error(clean_env: Path) -> None:
    clean_env.write_text("this is = = not toml")
    with pytest.raises(UsageError) as err:
        Config()
    assert str(clean_env) in err.value.message and "fix or remove" in err.value.message


def test_write_setting_round_trip(clean_env: Path) -> None:
    assert write_setting("scan.exclude", '*.tmp,we"ird\\') == str(clean_env)
    write_setting("scan.batch_files", "50")
    write_setting("progress", "json")
    assert read_file() == {"scan.exclude": ["*.tmp", 'we"ird\\'], "scan.batch_files": 50,
                           "progress": "json"}
    write_setting("scan.batch_files", None)
    assert "scan.batch_files" not in read_file()
    with pytest.raises(UsageError):
        write_setting("no.such.key", "1")
    with pytest.raises(UsageError):
        write_setting("scan.batch_files", "lots")


def test_config_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KVMEDIA_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == str(tmp_path / "kvmedia" / "config.toml")


def test_data_dir_is_private(tmp_path: Path) -> None:
    d = tmp_path / "new" / "data"
    with Library.open(d):
        pass
    assert os.stat(d).st_mode & 0o777 == 0o700
    os.chmod(d, 0o755)
    with Library.open(d):
        pass
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(d / "media.lmdb" / "data.mdb").st_mode & 0o077 == 0


def test_cli_config_show_says_where_values_come_from(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_cli(data, "config", "set", "scan.exclude", "*.tmp,cache/", check=True)
    proc = run_cli(data, "config", "show", "--json", check=True)
    rows = {r["key"]: r for r in map(orjson.loads, proc.stdout.splitlines())}
    assert rows["scan.exclude"]["value"] == ["*.tmp", "cache/"]
    assert rows["scan.exclude"]["source"] == "config file"
    assert rows["data_dir"]["source"] == "env KVMEDIA_DATA_DIR"
    assert rows["data_dir"]["value"] == str(data)
    assert rows["progress"]["source"] == "default"
    proc = run_cli(data, "--data-dir", str(tmp_path / "flag"), "config", "show", "--json",
                   check=True)
    rows = {r["key"]: r for r in map(orjson.loads, proc.stdout.splitlines())}
    assert rows["data_dir"]["source"] == "flag"
    run_cli(data, "config", "unset", "scan.exclude", check=True)
    proc = run_cli(data, "config", "show", "--json", check=True)
    rows = {r["key"]: r for r in map(orjson.loads, proc.stdout.splitlines())}
    assert rows["scan.exclude"]["source"] == "default"
    bad = run_cli(data, "config", "set", "nope", "1")
    assert bad.returncode == 2 and b"unknown setting" in bad.stderr
