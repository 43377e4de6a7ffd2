"""Embedders: text -> unit vector. `get_embedder(settings)` picks one (see registry.py);
`pipeline` embeds library items and stores the vectors (see vectors/)."""

from .base import Embedder, clean_text
from .hashing import HashingEmbedder
from .registry import get_embedder, installed, status
from .settings import SemanticSettings

__all__ = ["Embedder", "HashingEmbedder", "SemanticSettings", "clean_text", "get_embedder",
           "installed", "status"]
