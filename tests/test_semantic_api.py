"""The remote analyzer and API embedder against a local server playing the OpenAI API.

The server counts requests per endpoint. Proven here: a rename, a move (new inode, as
across filesystems), a rescan and a full rebuild make zero new calls; 429 with Retry-After is
waited out and retried; a failing API leaves the library searchable and the item queued.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading
import time
import wave
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from kvmedia import Library
from kvmedia.analyze.apiclient import ApiClient, ApiError, parse_retry_after, read_api_key
from kvmedia.config import Config
from kvmedia.embed import HashingEmbedder
from kvmedia.errors import UsageError
from kvmedia.vectors import keys as V

Image = pytest.importorskip("PIL.Image", reason="Pillow (extra [media]) makes the test images")

SUNSET = {"summary": "An orange sunset over a sandy beach with waves.",
          "tags": ["sunset", "beach", "sea"], "style": "photo", "mood": ["calm"],
          "scenes": ["beach"]}
DOCUMENT = {"summary": "A scanned tax form with printed text.",
            "tags": ["document", "tax", "form"], "style": "document scan"}


class FakeApi:
    """OpenAI-compatible endpoints on 127.0.0.1; `script` holds statuses to answer first."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.script: list[tuple[int, str | None]] = []  # (status, Retry-After)
        self.fail_status: int | None = None
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with api.lock:
                    api.calls[self.path] += 1
                    scripted = api.script.pop(0) if api.script else None
                status, retry_after = scripted or (api.fail_status, None)
                if status is not None:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                self._answer(api.respond(self.path, body, self.headers))

            def _answer(self, obj: object) -> None:
                data = orjson.dumps(obj)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def respond(self, path: str, body: bytes, headers: object) -> object:
        if path.endswith("/chat/completions"):
            req = orjson.loads(body)
            url = req["messages"][1]["content"][1]["image_url"]["url"]
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
            r, g, b = img.resize((1, 1)).getpixel((0, 0))
            answer = SUNSET if r > 150 and b < 120 else DOCUMENT
            return {"choices": [{"message": {"content": orjson.dumps(answer).decode()}}]}
        if path.endswith("/embeddings"):
            texts = orjson.loads(body)["input"]
            vecs = HashingEmbedder(64).passages(texts)
            return {"data": [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]}
        if path.endswith("/audio/transcriptions"):
            return {"text": "a voice memo recorded at the beach at sunset"}
        return {}

    def total(self) -> int:
        return sum(self.calls.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    yield server
    server.close()


def make_tree(root: Path) -> None:
    def jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path, "JPEG")

    jpeg(root / "Holidays" / "IMG_0001.jpg", (240, 120, 40), (64, 48))
    jpeg(root / "Holidays" / "IMG_0002.jpg", (250, 140, 60), (48, 64))
    jpeg(root / "Scans" / "scan_001.jpg", (245, 245, 245), (60, 80))
    (root / "Documents").mkdir()
    (root / "Documents" / "tax_return_2022.pdf").write_bytes(b"%PDF-1.4 tax")
    (root / "Memos").mkdir()
    with wave.open(str(root / "Memos" / "memo.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)


def open_lib(data_dir: Path, api: FakeApi, **extra: str) -> Library:
    flags = {"data_dir": str(data_dir), "semantic.analyzer_api_url": api.url,
             "semantic.embedder": "hashing", **extra}
    lib = Library.open(data_dir, config=Config(flags))
    for analyzer in lib.semantic.analyzers.analyzers:  # fast retries for the tests
        if hasattr(analyzer, "client"):
            analyzer.client.backoff_s = 0.01
    return lib


def by_name(lib: Library, name: str) -> dict:
    hits = [r for r in lib.list_media(limit=None) if r.get("name") == name]
    assert len(hits) == 1, name
    return hits[0]


def wipe_records(lib: Library) -> None:
    """A full rebuild of the records: every record deleted, as if the library were new."""
    def fn(txn):  # type: ignore[no-untyped-def]
        w = lib.store.writer(txn)
        for rec in list(lib.store.iter_records(txn)):
            w.delete(rec)
        w.finish()

    lib.env.write(fn)
    assert lib.count() == 0


def test_rename_move_rescan_rebuild_make_no_new_calls(tmp_path: Path, api: FakeApi) -> None:
    vol = tmp_path / "vol"
    make_tree(vol)
    lib = open_lib(tmp_path / "data", api)
    lib.scan([vol])
    report = lib.semantic.analyze(everything=True)
    assert report.calls == 4 and report.queued == 0 and not report.errors
    assert api.calls["/v1/chat/completions"] == 3 and api.calls["/v1/audio/transcriptions"] == 1
    assert by_name(lib, "IMG_0001.jpg")["summary"] == SUNSET["summary"]
    assert "voice memo" in by_name(lib, "memo.wav")["transcript"]
    lib.semantic.embed()
    calls = api.total()

    # rename, move to another folder, and a copy+delete (new inode: a cross-filesystem move)
    os.rename(vol / "Holidays" / "IMG_0001.jpg", vol / "Holidays" / "beach.jpg")
    (vol / "Archive").mkdir()
    os.rename(vol / "Holidays" / "IMG_0002.jpg", vol / "Archive" / "IMG_0002.jpg")
    shutil.copyfile(vol / "Scans" / "scan_001.jpg", vol / "Archive" / "scan_copy.jpg")
    os.unlink(vol / "Scans" / "scan_001.jpg")
    lib.scan([vol])
    report = lib.semantic.analyze(everything=True)
    assert report.analyzed == 3 and report.calls == 0 and report.cache_hits == 3
    assert by_name(lib, "beach.jpg")["summary"] == SUNSET["summary"]
    assert by_name(lib, "scan_copy.jpg")["summary"] == DOCUMENT["summary"]

    # a rescan of unchanged files, then a full rebuild of records, text index and vectors
    lib.scan([vol])
    assert lib.semantic.analyze(everything=True).analyzed == 0
    wipe_records(lib)
    lib.scan([vol])
    lib.rebuild_index()
    shutil.rmtree(tmp_path / "data" / "vectors", ignore_errors=True)
    report = lib.semantic.analyze(everything=True)
    assert report.analyzed == 5 and report.calls == 0
    lib.semantic.embed()
    assert api.total() == calls
    hits = lib.semantic.search("beach sunset", limit=2).hits
    assert {h["name"] for h in hits} == {"beach.jpg", "IMG_0002.jpg"}
    lib.close()


def test_api_embedder_is_not_called_again_for_the_same_text(tmp_path: Path,
                                                            api: FakeApi) -> None:
    vol = tmp_path / "vol"
    make_tree(vol)
    lib = open_lib(tmp_path / "data", api, **{"semantic.embedder": "api",
                                               "semantic.embed_api_url": api.url,
                                               "semantic.embed_api_model": "fake-embed"})
    lib.scan([vol])
    lib.semantic.analyze(everything=True)
    report = lib.semantic.embed()
    assert report.embedded == 5 and api.calls["/v1/embeddings"] >= 1
    assert by_name(lib, "memo.wav")["embed_model"] == "api:fake-embed"
    before = api.total()
    lib.scan([vol])
    wipe_records(lib)
    lib.scan([vol])
    shutil.rmtree(tmp_path / "data" / "vectors")
    lib.semantic.analyze(everything=True)
    report = lib.semantic.embed()
    assert report.embedded == 0 and report.reused == 5
    assert lib.semantic.rebuild_index()["count"] == 5
    # one call embeds the query; no item is embedded again
    hits = lib.semantic.search("sunset beach", limit=3).hits
    assert api.total() == before + 1 and hits[0]["type"] in ("image", "audio")
    lib.close()


def test_429_with_retry_after_is_retried(tmp_path: Path, api: FakeApi) -> None:
    vol = tmp_path / "vol"
    (vol / "p").mkdir(parents=True)
    Image.new("RGB", (32, 32), (240, 120, 40)).save(vol / "p" / "a.jpg", "JPEG")
    lib = open_lib(tmp_path / "data", api)
    lib.scan([vol])
    api.script = [(429, "1"), (503, "0")]
    started = time.monotonic()
    report = lib.semantic.analyze(everything=True)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert report.analyzed == 1 and report.queued == 0
    assert api.calls["/v1/chat/completions"] == 3
    assert by_name(lib, "a.jpg")["tags"] == SUNSET["tags"]
    assert lib.semantic.queued() == []
    lib.close()


def test_failing_api_keeps_library_searchable_and_item_queued(tmp_path: Path,
                                                             api: FakeApi) -> None:
    vol = tmp_path / "vol"
    make_tree(vol)
    lib = open_lib(tmp_path / "data", api)
    lib.scan([vol])
    api.fail_status = 500
    report = lib.semantic.analyze(everything=True)
    assert report.queued == 4 and report.analyzed == 1  # the pdf needs no remote call
    assert len(report.errors) == 4 and "HTTP 500" in report.errors[0]
    rec = by_name(lib, "IMG_0001.jpg")
    assert rec["analysis"]["pending"] and "holidays" in rec["keywords"]
    queued = dict(lib.semantic.queued())
    assert rec["uuid"] in queued and queued[rec["uuid"]]["attempts"] == 1
    assert queued[rec["uuid"]]["next_at"] > time.time()
    # searchable meanwhile: text search and semantic search over the offline keywords
    assert [r["name"] for r in lib.search("IMG_0001").hits] == ["IMG_0001.jpg"]
    lib.semantic.embed()
    assert lib.semantic.search("holidays", limit=1).hits[0]["name"].startswith("IMG_000")
    # the queue holds back items until their retry time: no calls now
    calls = api.total()
    assert lib.semantic.analyze().considered == 0 and api.total() == calls
    # a long Retry-After is not slept through: the item is queued until then
    api.fail_status = None
    api.script = [(429, "7200")]
    report = lib.semantic.analyze([rec["uuid"]])
    assert report.queued == 1
    entry = dict(lib.semantic.queued())[rec["uuid"]]
    assert entry["attempts"] == 2 and entry["next_at"] >= time.time() + 7000
    # the API is back: named items are analyzed and leave the queue
    report = lib.semantic.analyze([u for u, _ in lib.semantic.queued()])
    assert report.analyzed == 4 and lib.semantic.queued() == []
    assert by_name(lib, "IMG_0001.jpg")["summary"] == SUNSET["summary"]
    assert lib.semantic.analyze(everything=True).considered == 0
    lib.close()


def test_api_client_units(tmp_path: Path, api: FakeApi) -> None:
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None
    client = ApiClient(api.url, max_attempts=2, backoff_s=0.01)
    api.script = [(400, None)]
    with pytest.raises(ApiError, match="HTTP 400") as err:
        client.post_json("embeddings", {"model": "m", "input": ["x"]})
    assert err.value.status == 400 and client.requests == 1  # not retried
    api.fail_status = 502
    with pytest.raises(ApiError, match="stays queued") as err:
        client.post_json("embeddings", {"input": ["x"]})
    assert client.requests == 3 and err.value.retry_at is not None
    with pytest.raises(UsageError, match="http"):
        ApiClient("ftp://example")
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    key.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        read_api_key("KVMEDIA_TEST_NO_SUCH_VAR", str(key))
    key.chmod(0o600)
    assert read_api_key("KVMEDIA_TEST_NO_SUCH_VAR", str(key)) == "sk-test"


def test_cache_keys_are_content_addressed(tmp_path: Path, api: FakeApi) -> None:
    vol = tmp_path / "vol"
    make_tree(vol)
    lib = open_lib(tmp_path / "data", api)
    lib.scan([vol])
    lib.semantic.analyze(everything=True)
    rec = by_name(lib, "IMG_0001.jpg")
    assert rec["content_hash"].startswith("xxh3_128:")
    with lib.env.read() as txn:
        keys = [k for k, _ in lib.store.iter_prefix(txn, V.P_ACACHE)]
    assert len(keys) == 4
    assert any(k.startswith(V.P_ACACHE + rec["content_hash"].encode() + b":remote@gpt-4o-mini:1")
               for k in keys)
    lib.close()
