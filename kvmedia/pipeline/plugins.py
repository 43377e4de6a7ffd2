"""Adapters that put every deriver behind the registry's one interface (registry.py).

Built-ins wrap the probe prober, each analyzer and the sidecar deriver without copying
their logic; `PluginAdapter` runs a third-party extractor and stores its outputs with the
stamp `extracted: {name: {"v": version, "size": bytes, "mtime_ns": ns, "fields": [...]}}`,
so its fields are replaced (not accumulated) on every run and a changed file is stale.
"""

from __future__ import annotations

from typing import Any

import lmdb

from ..pathbytes import display, get_field
from . import deps as D
from .derive import SIDECAR_VERSION
from .registry import ExtractorRegistry, Record, matches

PROTECTED = frozenset({"uuid", "path", "path_bytes", "name", "name_bytes", "size", "mtime_ns",
                       "mtime", "ctime", "ctime_ns", "ino", "fs_uuid", "type", "ext",
                       "is_trash", "original_path", "original_path_bytes", "root",
                       "root_bytes", "trash_path", "deleted_at", "indexed_at", "extracted"})
"""Record fields a plugin may not overwrite."""


class ProbeAdapter:
    name = "probe"
    kind = "metadata"
    media_types = frozenset({"audio", "video", "image"})
    extensions: frozenset[str] = frozenset()

    def __init__(self) -> None:
        from ..probe import PROBE_VERSION

        self.version = PROBE_VERSION

    def applies(self, rec: Record) -> bool:
        return matches(self, rec)

    def recorded(self, rec: Record) -> int | None:
        stamp = rec.get("probe")
        if not isinstance(stamp, dict):
            return None
        if (stamp.get("size"), stamp.get("mtime_ns")) != (rec.get("size"), rec.get("mtime_ns")):
            return None
        return stamp.get("v")

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        return lib.probe(uuids, force=True).to_json()


class AnalyzerAdapter:
    kind = "analyzer"

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer
        self.name = analyzer.name
        self.version = int(analyzer.version)
        self.media_types = frozenset(analyzer.media_types)
        self.extensions = frozenset(analyzer.extensions)

    def applies(self, rec: Record) -> bool:
        return matches(self, rec)

    def recorded(self, rec: Record) -> int | None:
        stamp = rec.get("analysis")
        if not isinstance(stamp, dict):
            return None
        for entry in stamp.get("by") or []:
            name, _, version = str(entry).rpartition("@")
            if name == self.analyzer.cache_name and version.isdigit():
                return int(version)
        return None

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        return lib.semantic.analyze(uuids).to_json()


class SidecarAdapter:
    name = "sidecars"
    kind = "sidecar"
    version = SIDECAR_VERSION
    media_types: frozenset[str] = frozenset()
    extensions: frozenset[str] = frozenset()

    def applies(self, rec: Record) -> bool:
        return matches(self, rec) and "sidecar" in rec

    def recorded(self, rec: Record) -> int | None:
        stamp = rec.get("sidecar")
        return stamp.get("v") if isinstance(stamp, dict) else None

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        def fn(txn: lmdb.Transaction) -> None:
            D.mark_dirty(txn, [D.record_node(u) for u in uuids], "reprocess")

        lib.env.write(fn)
        return lib.pipeline.process_dirty().to_json()


class ThumbnailAdapter:
    name = "thumbnail"
    kind = "derived"
    media_types = frozenset({"audio", "video", "image"})
    extensions: frozenset[str] = frozenset()

    def __init__(self, thumbs: Any) -> None:
        from ..thumbs import THUMB_VERSION

        self.thumbs = thumbs
        self.version = THUMB_VERSION

    def applies(self, rec: Record) -> bool:
        return matches(self, rec)

    def recorded(self, rec: Record) -> int | None:
        return self.version if self.thumbs.is_fresh(rec) else None

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        recs = [r for r in (lib.get(u) for u in uuids) if r is not None]
        return self.thumbs.build_many(recs, force=True).to_json()


class PluginAdapter:
    """A third-party extractor: `extract(record, path) -> fields`, stamped per record."""

    kind = "plugin"

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.name = str(plugin.name)
        self.version = int(plugin.version)
        self.media_types = frozenset(getattr(plugin, "media_types", ()) or ())
        self.extensions = frozenset(getattr(plugin, "extensions", ()) or ())

    def applies(self, rec: Record) -> bool:
        return matches(self, rec)

    def recorded(self, rec: Record) -> int | None:
        stamp = (rec.get("extracted") or {}).get(self.name)
        if not isinstance(stamp, dict):
            return None
        if (stamp.get("size"), stamp.get("mtime_ns")) != (rec.get("size"), rec.get("mtime_ns")):
            return None
        return stamp.get("v")

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        outputs: dict[str, tuple[Record, dict[str, Any]]] = {}
        errors = []
        for uuid in uuids:
            rec = lib.get(uuid)
            if rec is None or not self.applies(rec):
                continue
            path = get_field(rec, "path") or b""
            try:
                fields = dict(self.plugin.extract(rec, path) or {})
            except Exception as exc:  # noqa: BLE001 - a plugin's failure is its item's error
                errors.append(f"{display(path)}: {exc}")
                fields = {}
            outputs[uuid] = (rec, {k: v for k, v in fields.items() if k not in PROTECTED})

        def fn(txn: lmdb.Transaction) -> int:
            w = lib.store.writer(txn)
            written = 0
            for uuid, (seen, fields) in outputs.items():
                cur = lib.store.get(txn, uuid)
                if cur is None or (cur.get("size"), cur.get("mtime_ns")) != (
                        seen.get("size"), seen.get("mtime_ns")):
                    continue
                stamps = dict(cur.get("extracted") or {})
                before = (stamps.get(self.name) or {}).get("fields") or []
                new = {k: v for k, v in cur.items() if k not in before}
                new.update(fields)
                stamps[self.name] = {"v": self.version, "size": cur.get("size"),
                                     "mtime_ns": cur.get("mtime_ns"), "fields": sorted(fields)}
                new["extracted"] = stamps
                w.put(new, cur)
                written += 1
            w.finish()
            return written

        written = lib.env.write(fn) if outputs else 0
        return {"type": "summary", "op": "extract", "extractor": self.name,
                "written": written, "errors": errors}


def builtin_registry(lib: Any) -> ExtractorRegistry:
    """Probe, every configured analyzer, sidecars, thumbnails, then entry-point plugins."""
    reg = ExtractorRegistry()
    reg.register(ProbeAdapter())
    reg.register(SidecarAdapter())
    reg.register(ThumbnailAdapter(lib.thumbs))
    try:
        analyzers = list(lib.semantic.analyzers.analyzers)
    except Exception:  # noqa: BLE001 - semantic layer unavailable: no analyzer extractors
        analyzers = []
    for analyzer in analyzers:
        reg.register(AnalyzerAdapter(analyzer), source="analyzer registry")
    reg.load_entry_points()
    return reg
