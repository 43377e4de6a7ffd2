"""One registry of everything that derives data from a media file, by name and version.

Each extractor says which files it applies to (media types / extensions), its version, and
which version produced a record's current outputs (`recorded`). An output is stale when
that differs from the extractor's version (or is missing where the extractor applies), so
bumping a version marks exactly its outputs dirty, and `kvmedia reprocess --extractor NAME`
redoes only those. Built in:

    probe          metadata (ffprobe, Pillow, mutagen)  version in the record's `probe` stamp
    <analyzer>     one per analyzer (offline, remote, entry points `kvmedia.analyzers`),
                   version in the record's `analysis.by` list ("name@version")
    sidecars       XMP/subtitle/... fields and Live-Photo pairs   `sidecar.v`
    thumbnail      the cached thumbnail                  the cache file's validity stamp

The probe and analyzer modules keep their own registries and stamps; the adapters here wrap
them (no second copy of their logic). Third parties add metadata extractors, e.g. RAW or HEIC
support, under the entry-point group `kvmedia.extractors`: the entry point is a factory
`f() -> extractor | None` whose object has `name`, `version`, `media_types`, `extensions`
and `extract(record, path) -> dict of record fields`. Their outputs are stored with the
stamp `extracted: {name: {"v", "size", "mtime_ns", "fields"}}` (plugins.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from ..errors import UsageError

Record = dict[str, Any]
ENTRY_POINT_GROUP = "kvmedia.extractors"


class Extractor(Protocol):
    name: str
    version: int
    kind: str                     # "metadata" | "analyzer" | "sidecar" | "derived" | "plugin"
    media_types: frozenset[str]   # empty: every type
    extensions: frozenset[str]    # empty: every extension

    def applies(self, rec: Record) -> bool: ...

    def recorded(self, rec: Record) -> int | None:
        """Version that produced `rec`'s current outputs; None when there are none."""
        ...

    def run(self, lib: Any, uuids: list[str]) -> dict[str, Any]:
        """Redo these records' outputs now."""
        ...


def matches(ex: Any, rec: Record) -> bool:
    """The media type / extension filter shared by every extractor."""
    if rec.get("is_trash"):
        return False
    if ex.media_types and (rec.get("type") or "other") not in ex.media_types:
        return False
    return not ex.extensions or str(rec.get("ext") or "") in ex.extensions


def stale(ex: Extractor, rec: Record) -> bool:
    return ex.applies(rec) and ex.recorded(rec) != ex.version


@dataclass(frozen=True)
class Info:
    name: str
    version: int
    kind: str
    media_types: tuple[str, ...]
    extensions: tuple[str, ...]
    source: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ExtractorRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, tuple[Extractor, str]] = {}

    def register(self, extractor: Extractor, source: str = "builtin") -> None:
        """Add or replace (same name) an extractor."""
        self._by_name[extractor.name] = (extractor, source)

    def get(self, name: str) -> Extractor:
        try:
            return self._by_name[name][0]
        except KeyError:
            raise UsageError(f"no extractor named {name!r}; known: "
                             f"{', '.join(sorted(self._by_name))}") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Any:
        return iter(ex for ex, _ in self._by_name.values())

    def for_record(self, rec: Record) -> list[Extractor]:
        return [ex for ex, _ in self._by_name.values() if ex.applies(rec)]

    def info(self) -> list[Info]:
        return [Info(ex.name, ex.version, ex.kind, tuple(sorted(ex.media_types)),
                     tuple(sorted(ex.extensions)), src)
                for ex, src in sorted(self._by_name.values(), key=lambda t: t[0].name)]

    def stale_uuids(self, name: str, records: Iterable[Record]) -> list[str]:
        ex = self.get(name)
        return [r["uuid"] for r in records if stale(ex, r)]

    def load_entry_points(self) -> list[str]:
        """Register third-party extractors; returns the errors of those that failed."""
        errors = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ex = ep.load()()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the library
                errors.append(f"extractor {ep.name}: {exc}")
                continue
            if ex is not None:
                from .plugins import PluginAdapter

                self.register(PluginAdapter(ex), source=f"entry point {ep.value}")
        return errors
