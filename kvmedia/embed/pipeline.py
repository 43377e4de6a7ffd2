"""Embed library items: description text -> vector, stored per item, folded into the index.

The text embedded (`embed_source`) is the analysis fields in a fixed order — summary, tags,
style, mood, scenes, the start of the transcript — then the offline keywords (computed here
if `kvmedia analyze` has not run yet). Vectors are cached by (model, text digest) in LMDB, so
a rescan, a rebuild of the records or of `vectors/`, or two files with the same description
cost no embedding. Records get `embed_source`, `embed_model`, `embed_dim` through
`RecordWriter.put`. Like analysis, the model runs with no transaction open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analyze.offline import describe
from ..progress import NullProgress, Progress
from ..store.env import Env
from ..store.recordstore import Record, RecordStore
from ..vectors import VectorIndex, current_vid_matches, load_embedding, store_embedding
from ..vectors import keys as V
from .base import Embedder, clean_text

BATCH = 64
TRANSCRIPT_CHARS = 600
DELTA_FOLD = 2000


def embed_source(rec: Record) -> str:
    parts: list[str] = []
    for key in ("summary", "tags", "style", "mood", "scenes"):
        value = rec.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value:
            parts.append(str(value).rstrip(".") + ".")
    transcript = rec.get("transcript")
    if transcript:
        parts.append(str(transcript)[:TRANSCRIPT_CHARS])
    parts.append(rec.get("keywords") or describe(rec))
    return clean_text(" ".join(parts))


@dataclass
class EmbedReport:
    considered: int = 0
    embedded: int = 0      # vectors computed by the model
    reused: int = 0        # vectors found in the embedding cache
    unchanged: int = 0
    interrupted: bool = False
    index: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "op": "embed", **self.__dict__}


def is_current(txn: Any, rec: Record, model_id: str, text: str) -> bool:
    return (rec.get("embed_model") == model_id and rec.get("embed_source") == text
            and current_vid_matches(txn, rec["uuid"], model_id, V.text_digest(text)))


class EmbedPipeline:
    def __init__(self, env: Env, store: RecordStore, embedder: Embedder, vindex: VectorIndex,
                 *, progress: Progress | None = None,
                 stop: threading.Event | None = None) -> None:
        self.env = env
        self.store = store
        self.embedder = embedder
        self.vindex = vindex
        self.progress = progress or NullProgress()
        self.stop = stop

    def select(self, uuids: list[str] | None) -> list[str]:
        with self.env.read() as txn:
            if uuids is not None:
                return list(dict.fromkeys(uuids))
            model = self.embedder.model_id
            return [rec["uuid"] for rec in self.store.iter_records(txn)
                    if not rec.get("is_trash")
                    and not is_current(txn, rec, model, embed_source(rec))]

    def run(self, uuids: list[str] | None = None, *, refresh: str = "always") -> EmbedReport:
        """refresh: "always" folds the delta into the vector file when anything changed;
        "auto" only once the delta is big (DELTA_FOLD items) — background work embeds a few
        items at a time and the delta is searched by brute force meanwhile."""
        report = EmbedReport()
        todo = self.select(uuids)
        for start in range(0, len(todo), BATCH):
            if self.stop is not None and self.stop.is_set():
                report.interrupted = True
                break
            self._batch(todo[start : start + BATCH], report)
            self.progress.update({"phase": "embed", "files": report.considered,
                                  "total": len(todo), "current": b""})
        if refresh != "never":
            status = self.vindex.status()
            wanted = (status["pending"] >= DELTA_FOLD if refresh == "auto"
                      else bool(report.embedded or report.reused or status["pending"]))
            if wanted or not status["kind"] or status["damaged"]:
                report.index = self.vindex.refresh()
        self.progress.done({"phase": "embed", "files": report.considered})
        return report

    def _batch(self, uuids: list[str], report: EmbedReport) -> None:
        model = self.embedder.model_id
        work: dict[str, tuple[str, bytes]] = {}
        vectors: dict[bytes, np.ndarray] = {}
        with self.env.read() as txn:
            for uuid in uuids:
                rec = self.store.get(txn, uuid)
                if rec is None or rec.get("is_trash"):
                    continue
                report.considered += 1
                text = embed_source(rec)
                digest = V.text_digest(text)
                if is_current(txn, rec, model, text):
                    report.unchanged += 1
                    continue
                work[uuid] = (text, digest)
                vec = load_embedding(txn, model, digest)
                if vec is not None:
                    vectors[digest] = vec
        misses = list(dict.fromkeys(t for t, d in work.values() if d not in vectors))
        if misses:
            mat = self.embedder.passages(misses)
            for text, vec in zip(misses, mat, strict=True):
                vectors[V.text_digest(text)] = vec
        fresh = {V.text_digest(t) for t in misses}

        def fn(txn: Any) -> tuple[int, int]:
            writer = self.store.writer(txn)
            embedded = reused = 0
            for uuid, (text, digest) in work.items():
                cur = self.store.get(txn, uuid)
                if cur is None or embed_source(cur) != text:
                    continue  # changed meanwhile; the next run embeds the new text
                store_embedding(txn, uuid, model, digest, vectors[digest])
                new = dict(cur, embed_source=text, embed_model=model,
                           embed_dim=int(len(vectors[digest])))
                if new != cur:
                    writer.put(new, cur)
                if digest in fresh:
                    embedded += 1
                else:
                    reused += 1
            writer.finish()
            return embedded, reused

        embedded, reused = self.env.write(fn)
        report.embedded += embedded
        report.reused += reused
