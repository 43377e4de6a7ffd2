"""Vector storage and K-NN: embeddings in LMDB (`sem:` keys), FAISS files under `vectors/`.

`keys` documents the LMDB layout, `snapshot` the file format, `ann` the index kinds and
`vindex.VectorIndex` how readers combine the file with the not-yet-folded delta.
"""

from .ann import EXACT_MAX, backend_name, faiss_module
from .vindex import (
           Hit,
           VectorIndex,
           cache_embedding,
           current_vid_matches,
           forget_item,
           load_embedding,
           store_embedding,
)

__all__ = ["EXACT_MAX", "Hit", "VectorIndex", "backend_name", "cache_embedding",
           "current_vid_matches", "faiss_module", "forget_item", "load_embedding",
           "store_embedding"]
