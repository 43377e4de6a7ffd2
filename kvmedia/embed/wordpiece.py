"""BERT uncased tokenization (basic split + WordPiece), for models shipped without one.

Same steps as the `tokenizers` BertNormalizer / BertPreTokenizer / WordPiece pipeline with
lowercase=True: drop control characters, space out CJK ideographs, lowercase, strip accents,
split on whitespace and punctuation, then greedy longest-match-first sub-words with "##".
The `tokenizers` package, when installed, is used instead (faster); tests compare the two.
"""

from __future__ import annotations

import gzip
import os
import unicodedata
from functools import lru_cache

VOCAB_FILE = os.path.join(os.path.dirname(__file__), "data", "minilm-vocab.txt.gz")
MAX_WORD_CHARS = 100


@lru_cache(maxsize=1)
def load_vocab(path: str = VOCAB_FILE) -> dict[str, int]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return {line.rstrip("\n"): i for i, line in enumerate(fh)}


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


_DROP = frozenset({"Cc", "Cf", "Cn", "Co", "Cs"})


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text: str) -> list[str]:
    """Normalise (drop control/unassigned/private chars, strip accents, lowercase) and split
    at whitespace, punctuation and around CJK ideographs."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append("".join(buf))
            buf.clear()

    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in _DROP and ch not in "\t\n\r"):
            continue
        if ch.isspace():
            flush()
            continue
        if _is_cjk(cp):
            flush()
            out.append(ch)
            continue
        stripped = "".join(c for c in unicodedata.normalize("NFD", ch)
                           if unicodedata.category(c) != "Mn")
        for part in stripped.lower():
            if part.isspace():
                flush()
            elif _is_punct(part):
                flush()
                out.append(part)
            else:
                buf.append(part)
    flush()
    return out


class WordPiece:
    def __init__(self, vocab: dict[str, int] | None = None, unk: str = "[UNK]") -> None:
        self.vocab = vocab if vocab is not None else load_vocab()
        self.unk_id = self.vocab[unk]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

    def word_ids(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            piece_id = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                piece_id = self.vocab.get(piece)
                if piece_id is not None:
                    break
                end -= 1
            if piece_id is None:
                return [self.unk_id]
            ids.append(piece_id)
            start = end
        return ids

    def encode(self, text: str, max_len: int) -> list[int]:
        """[CLS] ids... [SEP], cut to `max_len` ids in all."""
        ids: list[int] = []
        for word in basic_tokens(text):
            ids.extend(self.word_ids(word))
            if len(ids) >= max_len - 2:
                break
        return [self.cls_id, *ids[: max_len - 2], self.sep_id]
