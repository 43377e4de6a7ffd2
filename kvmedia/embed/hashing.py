"""The always-available embedder: feature hashing of folded words and character n-grams.

No model, no download, deterministic across machines and runs. It is lexical, not semantic:
"beach" finds "beach" and "beaches" (shared trigrams) and "bãi biển" finds "bai bien"
(diacritics folded), but not "seaside". It is what kvmedia uses when neither model package
is installed, and `kvmedia doctor` says so.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

from .base import clean_text

DIM = 384
NGRAM = 3
WORD_WEIGHT = 1.0
NGRAM_WEIGHT = 0.4
_WORD = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Case- and diacritic-insensitive form (đ/Đ -> d, as Vietnamese expects)."""
    text = text.casefold().replace("đ", "d")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def features(text: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for word in _WORD.findall(fold(text)):
        word = word.strip("_")
        if not word:
            continue
        out.append(("w:" + word, WORD_WEIGHT))
        padded = f"<{word}>"
        for i in range(max(1, len(padded) - NGRAM + 1)):
            out.append(("g:" + padded[i : i + NGRAM], NGRAM_WEIGHT))
    return out


class HashingEmbedder:
    name = "hashing"

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.model_id = f"hashing-v1-{dim}"

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, np.float32)
        counts: dict[str, float] = {}
        for feat, weight in features(clean_text(text)):
            counts[feat] = counts.get(feat, 0.0) + weight
        for feat, weight in counts.items():
            h = xxhash.xxh64_intdigest(feat.encode("utf-8"))
            sign = 1.0 if h & (1 << 63) else -1.0
            vec[h % self.dim] += sign * float(np.sqrt(weight))  # sublinear term weight
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.vstack([self._one(t) for t in texts])

    def query(self, text: str) -> np.ndarray:
        return self._one(text)
