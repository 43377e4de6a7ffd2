"""Which analyzers describe a file: keyed by media type and extension.

Built in: `offline` (every file) and, when `semantic.analyzer_api_url` is set, `remote`
(images, videos, audio). Third parties add analyzers under the entry-point group
`kvmedia.analyzers`: the entry point is a factory `f(settings) -> Analyzer | None`
(None: not configured). Later analyzers win for the same field; `tags` are merged.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..embed.settings import API_KEY_ENV, SemanticSettings
from .base import Analyzer, Record
from .offline import OfflineAnalyzer

ENTRY_POINT_GROUP = "kvmedia.analyzers"


class AnalyzerRegistry:
    def __init__(self, analyzers: list[Analyzer] | None = None) -> None:
        self.analyzers: list[Analyzer] = list(analyzers or [])

    def register(self, analyzer: Analyzer) -> None:
        self.analyzers = [a for a in self.analyzers if a.cache_name != analyzer.cache_name]
        self.analyzers.append(analyzer)

    def for_record(self, rec: Record) -> list[Analyzer]:
        media_type = rec.get("type") or "other"
        ext = str(rec.get("ext") or "")
        return [a for a in self.analyzers
                if (not a.media_types or media_type in a.media_types)
                and (not a.extensions or ext in a.extensions)]

    def names(self) -> list[str]:
        return [f"{a.cache_name}@{a.version}" for a in self.analyzers]


def default_registry(settings: SemanticSettings) -> AnalyzerRegistry:
    reg = AnalyzerRegistry([OfflineAnalyzer()])
    if settings.analyzer_api_url:
        from .apiclient import ApiClient, read_api_key
        from .remote import RemoteAnalyzer

        key = read_api_key(API_KEY_ENV, settings.api_key_file or None)
        reg.register(RemoteAnalyzer(ApiClient(settings.analyzer_api_url, key),
                                    settings.analyzer_api_model))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        analyzer = ep.load()(settings)
        if analyzer is not None:
            reg.register(analyzer)
    return reg
