"""Embeddings from an OpenAI-compatible `/embeddings` endpoint (optional, needs a URL).

The model id is "api:<model>" so its vectors never mix with a local model's. The dimension
is learnt from the first answer. Batches of up to 64 texts per request.
"""

from __future__ import annotations

import numpy as np

from ..analyze.apiclient import ApiClient, ApiError
from .base import clean_text, normalize_rows

BATCH = 64
MAX_CHARS = 4000


class ApiEmbedder:
    name = "api"

    def __init__(self, client: ApiClient, model: str) -> None:
        self.client = client
        self.model = model
        self.model_id = f"api:{model}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.query("dimension")
        assert self._dim is not None
        return self._dim

    def _call(self, texts: list[str]) -> np.ndarray:
        body = {"model": self.model, "input": [clean_text(t, MAX_CHARS) or "-" for t in texts]}
        out = self.client.post_json("embeddings", body)
        try:
            rows = sorted(out["data"], key=lambda r: r.get("index", 0))
            mat = np.array([r["embedding"] for r in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError("the embeddings API answered without `data[].embedding`; check "
                           "semantic.embed_api_url") from exc
        if mat.ndim != 2 or len(mat) != len(texts):
            raise ApiError("the embeddings API answered with the wrong number of vectors")
        self._dim = int(mat.shape[1])
        return normalize_rows(mat)

    def passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim or 0), np.float32)
        return np.vstack([self._call(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])

    def query(self, text: str) -> np.ndarray:
        return self._call([text])[0]
