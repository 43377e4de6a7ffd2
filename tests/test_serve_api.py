"""`kvmedia serve` over real HTTP: a server in a subprocess on a real library and tree."""

from __future__ import annotations

import json
import os
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve_support import Server, serve_extra_or_skip, wait_for

serve_extra_or_skip()

from kvmedia import Library  # noqa: E402

VIDEO = bytes((i * 7 + i // 256) % 256 for i in range(200_003))  # odd size, no repeats nearby
SECRET = b"root:secret-bytes-that-must-never-be-served\n"


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _real_jpeg(path: bytes) -> bool:
    """A real 64x48 JPEG when Pillow is there (else a stand-in); True when real."""
    try:
        from PIL import Image
    except ImportError:
        _write(path, b"not really a jpeg")
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (64, 48), (200, 120, 40)).save(os.fsdecode(path), "JPEG")
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("serve")
    vol = os.fsencode(base / "vol")
    files = {
        b"Photos/2023/beach_sunset_01.jpg": b"a" * 10,
        b"Photos/2023/beach_sunset_02.jpg": b"b" * 20,
        b"Photos/2023/beach_sunset_03.jpg": b"c" * 30,
        b"Photos/2023/beach_sunset_04.jpg": b"d" * 40,
        b"Photos/2023/beach_sunset_05.jpg": b"e" * 50,
        b"Photos/mountain.png": b"png",
        b"Video/holiday.mp4": VIDEO,
        b"Video/clip.mkv": b"mkv" * 100,
        b"Music/song.mp3": b"mp3" * 10,
        b"Docs/page.html": b"<script>alert(1)</script>",
        b"Docs/empty.txt": b"",
        b"odd/caf\xe9 \xff.jpg": b"latin-1 name",
        b"swap/victim.jpg": b"victim",
    }
    for i in range(6):
        files[b"trashme/t_%d.jpg" % i] = b"t%d" % i
    for i in range(4):
        files[b"byquery/qq_zebra_%d.jpg" % i] = b"q%d" % i
    for i in range(8):
        files[b"busy/cc_%d.jpg" % i] = b"c%d" % i
    for rel, data in files.items():
        _write(os.path.join(vol, rel), data)
    _write(os.fsencode(base / "outside" / "secret.txt"), SECRET)
    pillow = _real_jpeg(os.path.join(vol, b"Photos/real_photo.jpg"))
    data_dir = base / "data"
    with Library.open(data_dir) as lib:
        lib.scan([vol])
        if hasattr(Library, "semantic"):
            lib.semantic.embed()
    server = Server(data_dir)
    yield {"server": server, "vol": vol, "data_dir": data_dir, "base": base, "pillow": pillow}
    assert server.stop() == 0, server.log()  # SIGTERM: a clean exit
    with Library.open(data_dir) as lib:  # ... that leaves a library that opens and agrees
        assert lib.search("beach_sunset").total == 5


@pytest.fixture(scope="module")
def srv(site: dict[str, Any]) -> Server:
    return site["server"]


def search(srv: Server, **params: Any) -> Any:
    answer = srv.get("/api/search?" + urlencode(params))
    assert answer.status == 200, answer
    return answer.json()


def one(srv: Server, q: str) -> dict[str, Any]:
    hits = search(srv, q=q)["hits"]
    assert len(hits) == 1, hits
    return hits[0]


def share(srv: Server, item_id: str) -> str:
    answer = srv.post(f"/api/items/{item_id}/share")
    assert answer.status == 200, answer
    return answer.json()["url"]


# -- reads --------------------------------------------------------------------------------------

def test_search_total_paging_and_sort(srv: Server) -> None:
    full = search(srv, q="beach_sunset", sort="name")
    assert full["total"] == 5
    names = [h["name"] for h in full["hits"]]
    assert names == sorted(names) and all("beach_sunset" in n for n in names)
    pages = []
    for offset in (0, 2, 4):
        page = search(srv, q="beach_sunset", sort="name", limit=2, offset=offset)
        assert page["total"] == 5
        pages += page["hits"]
    assert [h["uuid"] for h in pages] == [h["uuid"] for h in full["hits"]]
    desc = search(srv, q="beach_sunset", sort="sizedesc")
    assert [h["size"] for h in desc["hits"]] == [50, 40, 30, 20, 10]


def test_search_filters(srv: Server, site: dict[str, Any]) -> None:
    videos = search(srv, q="", type="video", limit=100)
    assert {h["name"] for h in videos["hits"]} == {"holiday.mp4", "clip.mkv"}
    assert search(srv, q="type:audio")["hits"][0]["name"] == "song.mp3"
    photos = os.fsdecode(site["vol"]) + "/Photos/2023"
    assert search(srv, q="beach", path=photos)["total"] == 5
    assert search(srv, q="beach", path=photos + "|/nowhere")["total"] == 5
    assert search(srv, q="beach", path="/nowhere")["total"] == 0


@pytest.mark.parametrize("q, position", [
    ('beach "sun', 6),        # unterminated quote: at the quote
    ("beach | ", 6),          # `|` with nothing after it: at the bar
])
def test_bad_query_is_400_with_position(srv: Server, q: str, position: int) -> None:
    answer = srv.get("/api/search?" + urlencode({"q": q}))
    assert answer.status == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_query"
    assert error["position"] == position
    assert q[position] in "\"|"


@pytest.mark.parametrize("query", ["limit=abc", "limit=-1", "limit=100000", "type=bogus",
                                   "sort=size_desc", "trash=maybe", "offset=x"])
def test_bad_parameters_are_400(srv: Server, query: str) -> None:
    answer = srv.get("/api/search?" + query)
    assert answer.status == 400, answer
    assert answer.json()["error"]["code"] == "bad_request"
    assert answer.json()["error"]["position"] is None


def test_unknown_ids_routes_and_methods(srv: Server) -> None:
    for item_id in (str(uuidlib.uuid4()), "not-a-uuid", "../../etc/passwd"):
        answer = srv.get(f"/api/items/{quote(item_id, safe='')}")
        assert answer.status == 404, answer
        assert answer.json()["error"]["code"] == "not_found"
    answer = srv.post(f"/api/items/{uuidlib.uuid4()}/share")
    assert answer.status == 404
    answer = srv.get("/api/nothing-here")
    assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found")
    answer = srv.request("DELETE", "/api/count")
    assert (answer.status, answer.json()["error"]["code"]) == (405, "method_not_allowed")


def test_item_media_and_count_agree(srv: Server) -> None:
    hit = one(srv, "mountain.png")
    assert srv.get(f"/api/items/{hit['uuid']}").json() == hit
    assert srv.get(f"/api/items/{hit['uuid'].upper()}").json()["uuid"] == hit["uuid"]
    listing = srv.get("/api/media?type=image&sort=name&limit=1000").json()
    count = srv.get("/api/count?type=image").json()["count"]
    assert listing["total"] == count == len(listing["items"])
    names = [h["name"] for h in listing["items"] if "name" in h]
    assert names == sorted(names)
    page = srv.get("/api/media?type=image&sort=name&limit=3&offset=2").json()
    assert page["items"] == listing["items"][2:5]


def test_buckets_and_status(srv: Server) -> None:
    buckets = srv.get("/api/buckets?type=image").json()["buckets"]
    photos = [b for b in buckets if b["path"].endswith("/Photos/2023")]
    assert len(photos) == 1 and photos[0]["count"] == 5
    status = srv.get("/api/status").json()
    assert status["token_required"] is False and status["watcher"] is None
    assert status["stats"]["types"]["video"]["count"] == 2
    assert set(status["features"]) >= {"semantic", "similar", "thumbnails", "watcher"}


def test_thumbnails(srv: Server, site: dict[str, Any]) -> None:
    hit = one(srv, "real_photo.jpg")
    answer = srv.get(f"/api/items/{hit['uuid']}/thumbnail")
    if not srv.get("/api/status").json()["features"]["thumbnails"]:
        assert (answer.status, answer.json()["error"]["code"]) == (501, "not_implemented")
        return
    if not site["pillow"]:
        pytest.skip("thumbnails need Pillow (the media extra)")
    assert answer.status == 200, answer
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.body.startswith(b"\xff\xd8\xff")
    again = srv.get(f"/api/items/{hit['uuid']}/thumbnail",
                    headers={"If-None-Match": answer.headers["etag"]})
    assert again.status == 304 and again.body == b""
    fake = one(srv, "mountain.png")  # "png" is not an image: no thumbnail, not an error
    answer = srv.get(f"/api/items/{fake['uuid']}/thumbnail")
    assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found")
    assert srv.get(f"/api/items/{uuidlib.uuid4()}/thumbnail").status == 404


def test_semantic_hybrid_and_similar(srv: Server) -> None:
    features = srv.get("/api/status").json()["features"]
    target = one(srv, "beach_sunset_01")
    if not features["semantic"]:
        for path in ("/api/search?mode=semantic&q=beach", f"/api/items/{target['uuid']}/similar"):
            answer = srv.get(path)
            assert (answer.status, answer.json()["error"]["code"]) == (501, "not_implemented")
        return
    for mode in ("semantic", "hybrid"):
        body = search(srv, q="beach sunset", mode=mode, limit=3)
        assert body["mode"] == mode and len(body["hits"]) == 3
        scores = [h["score"] for h in body["hits"]]
        assert scores == sorted(scores, reverse=True)
    hybrid = search(srv, q="beach_sunset", mode="hybrid", limit=5)
    assert {h["name"] for h in hybrid["hits"]} == {f"beach_sunset_0{i}.jpg" for i in range(1, 6)}
    near = srv.get(f"/api/items/{target['uuid']}/similar?limit=3").json()
    assert target["uuid"] not in [h["uuid"] for h in near["hits"]]
    assert near["hits"][0]["name"].startswith("beach_sunset_0")
    only_video = srv.get(f"/api/items/{target['uuid']}/similar?q=type:video").json()
    assert {h["type"] for h in only_video["hits"]} == {"video"}
    assert srv.get("/api/search?mode=semantic&q=beach&sort=name").status == 400
    empty = srv.get("/api/search?mode=semantic&q=")
    assert (empty.status, empty.json()["error"]["code"]) == (400, "bad_request")
    assert srv.get(f"/api/items/{uuidlib.uuid4()}/similar").status == 404


# -- trash, restore, delete -------------------------------------------------------------------

def test_trash_then_restore(srv: Server, site: dict[str, Any]) -> None:
    hit = one(srv, "t_0.jpg")
    disk = os.fsencode(hit["path"])
    cursor = srv.get("/api/events?limit=1").json()["latest"]
    out = srv.post("/api/trash", {"ids": [hit["uuid"]]})
    assert out.status == 200 and out.json()["ok"] == 1
    assert not os.path.exists(disk)
    assert search(srv, q="t_0.jpg")["total"] == 0
    assert search(srv, q="t_0.jpg", trash="true")["hits"][0]["uuid"] == hit["uuid"]
    feed = srv.get(f"/api/events?since={cursor}").json()
    assert [(e["op"], e["uuid"]) for e in feed["entries"]] == [("trashed", hit["uuid"])]
    out = srv.post("/api/restore", {"ids": [hit["uuid"]]})
    assert out.status == 200 and out.json()["results"][0]["ok"]
    assert os.path.exists(disk)
    assert one(srv, "t_0.jpg")["uuid"] == hit["uuid"]


def test_batch_reports_each_item(srv: Server) -> None:
    good = one(srv, "t_1.jpg")["uuid"]
    missing = str(uuidlib.uuid4())
    out = srv.post("/api/trash", {"ids": [good, missing]})
    assert out.status == 200
    body = out.json()
    assert (body["ok"], body["failed"]) == (1, 1)
    assert body["results"][1]["error"]["code"] == "not_found"
    out = srv.post("/api/trash", {"ids": [missing]})  # nothing worked: the item's status
    assert out.status == 404 and out.json()["results"][0]["ok"] is False
    for bad in ({"ids": ["t_1.jpg"]}, {"ids": [good], "query": "x"}, {}, {"ids": "x"},
                {"query": 5}):
        out = srv.post("/api/trash", bad)
        assert out.status == 400, (bad, out)
        assert out.json()["error"]["code"] == "bad_request"


def test_trash_and_delete_by_query(srv: Server, site: dict[str, Any]) -> None:
    out = srv.post("/api/trash", {"query": "qq_zebra", "limit": 3}).json()
    assert (out["ok"], out["matched"]) == (3, 4)
    out = srv.post("/api/trash", {"query": "qq_zebra"}).json()
    assert (out["ok"], out["matched"]) == (1, 1)
    assert search(srv, q="qq_zebra")["total"] == 0
    out = srv.post("/api/delete", {"query": "qq_zebra trash:true"}).json()
    assert out["ok"] == 4
    assert search(srv, q="qq_zebra", trash="any")["total"] == 0
    leftovers = [n for n in os.listdir(os.path.join(site["vol"], b"byquery"))]
    assert leftovers == []


def test_write_guards(srv: Server) -> None:
    item = one(srv, "t_2.jpg")["uuid"]
    body = json.dumps({"ids": [item]}).encode()
    answer = srv.request("POST", "/api/trash", raw=body, headers={"Content-Type": "text/plain"})
    assert (answer.status, answer.json()["error"]["code"]) == (415, "unsupported_media")
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        answer = srv.post("/api/trash", {"ids": [item]}, headers=headers)
        assert (answer.status, answer.json()["error"]["code"]) == (403, "forbidden"), headers
    answer = srv.get("/api/count", headers={"Host": "evil.example:80"})
    assert answer.status == 403
    assert one(srv, "t_2.jpg")["uuid"] == item  # none of the above trashed it
    origin = f"http://127.0.0.1:{srv.port}"
    answer = srv.post("/api/trash", {"ids": [item]}, headers={"Origin": origin})
    assert answer.status == 200
    assert srv.post("/api/restore", {"ids": [item]}).status == 200


# -- downloads --------------------------------------------------------------------------------

def test_download_full_head_and_types(srv: Server) -> None:
    url = share(srv, one(srv, "holiday.mp4")["uuid"])
    answer = srv.get(url)
    assert answer.status == 200 and answer.body == VIDEO
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.headers["accept-ranges"] == "bytes"
    head = srv.request("HEAD", url)
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(VIDEO))
    mkv = srv.get(share(srv, one(srv, "clip.mkv")["uuid"]))
    assert mkv.headers["content-type"] == "video/x-matroska" and mkv.body == b"mkv" * 100
    page = srv.get(share(srv, one(srv, "page.html")["uuid"]))
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["content-security-policy"] == "sandbox"


def test_download_non_utf8_name(srv: Server) -> None:
    hits = search(srv, q="latin")["hits"] or search(srv, q="caf")["hits"]
    rec = next(h for h in hits if "path_bytes" in h)
    answer = srv.get(share(srv, rec["uuid"]))
    assert answer.status == 200 and answer.body == b"latin-1 name"


def range_oracle(header: tuple[str, int | None, int | None], size: int
                 ) -> tuple[int, bytes | None]:
    """Expected (status, body) for one `bytes=` range of VIDEO, straight from RFC 9110."""
    kind, a, b = header
    if kind == "suffix":
        assert a is not None
        if a == 0:
            return 416, None
        return 206, VIDEO[max(0, size - a):]
    assert a is not None
    if b is not None and b < a:
        return 200, VIDEO
    if a >= size:
        return 416, None
    return 206, VIDEO[a:(size if b is None else min(b, size - 1) + 1)]


@pytest.fixture(scope="module")
def video_url(srv: Server) -> str:
    return share(srv, one(srv, "holiday.mp4")["uuid"])


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["closed", "open", "suffix"]),
       a=st.integers(0, 220_000) | st.sampled_from([0, 1, 199_999, 200_002, 200_003]),
       b=st.integers(0, 220_000) | st.sampled_from([0, 200_002, 200_003]))
def test_range_requests_return_the_right_bytes(srv: Server, video_url: str, kind: str, a: int,
                                               b: int) -> None:
    url = video_url
    spec = {"closed": f"bytes={a}-{b}", "open": f"bytes={a}-", "suffix": f"bytes=-{a}"}[kind]
    expected = range_oracle((kind, a, b if kind == "closed" else None), len(VIDEO))
    answer = srv.get(url, headers={"Range": spec})
    assert answer.status == expected[0], (spec, answer.status)
    if answer.status == 206:
        assert answer.body == expected[1]
        first = len(VIDEO) - len(answer.body) if kind == "suffix" else a
        assert answer.headers["content-range"] == (
            f"bytes {first}-{first + len(answer.body) - 1}/{len(VIDEO)}")
    elif answer.status == 416:
        assert answer.headers["content-range"] == f"bytes */{len(VIDEO)}"
    else:
        assert answer.body == VIDEO


def test_range_conditionals_and_odd_headers(srv: Server) -> None:
    url = share(srv, one(srv, "holiday.mp4")["uuid"])
    tag = srv.request("HEAD", url).headers["etag"]
    assert srv.get(url, headers={"Range": "bytes=0-1,5-6"}).body == VIDEO  # several: all
    assert srv.get(url, headers={"Range": "items=0-5"}).body == VIDEO      # unknown unit
    assert srv.get(url, headers={"Range": "bytes=a-b"}).body == VIDEO      # malformed
    fresh = srv.get(url, headers={"Range": "bytes=10-19", "If-Range": tag})
    assert (fresh.status, fresh.body) == (206, VIDEO[10:20])
    stale = srv.get(url, headers={"Range": "bytes=10-19", "If-Range": '"old"'})
    assert (stale.status, stale.body) == (200, VIDEO)
    assert srv.get(url, headers={"If-None-Match": tag}).status == 304
    empty = share(srv, one(srv, "empty.txt")["uuid"])
    assert srv.get(empty).body == b""
    assert srv.get(empty, headers={"Range": "bytes=0-"}).status == 416


def test_download_refuses_a_symlink_swapped_in(srv: Server, site: dict[str, Any]) -> None:
    hit = one(srv, "victim.jpg")
    url = share(srv, hit["uuid"])
    disk = os.fsencode(hit["path"])
    os.unlink(disk)
    os.symlink(os.fsencode(site["base"] / "outside" / "secret.txt"), disk)
    answer = srv.get(url)
    assert answer.status == 403, answer
    assert SECRET not in answer.body


def test_download_bad_or_stale_tokens(srv: Server) -> None:
    assert srv.get("/f/not-a-token").status == 404
    hit = one(srv, "t_3.jpg")
    url = share(srv, hit["uuid"])
    assert srv.get(url).status == 200
    srv.post("/api/trash", {"ids": [hit["uuid"]]})
    answer = srv.get(url)
    assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found")
    srv.post("/api/restore", {"ids": [hit["uuid"]]})
    assert srv.get(url).status == 200


# -- jobs -------------------------------------------------------------------------------------

def test_scan_job_with_server_sent_events(srv: Server, site: dict[str, Any]) -> None:
    _write(os.path.join(site["vol"], b"new/fresh_arrival.jpg"), b"new")
    started = srv.post("/api/scan", {"paths": [os.fsdecode(site["vol"])]})
    assert started.status == 202, started
    job_id = started.json()["job"]["id"]
    events = srv.get("/api/job/events")
    assert events.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in events.body.decode().split("\n\n") if f.strip()]
    last = frames[-1].splitlines()
    assert last[0] == "event: done"
    job = json.loads(last[1][len("data: "):])
    assert job["id"] == job_id and job["state"] == "done"
    assert job["result"][0]["added"] == 1
    assert srv.get("/api/job").json()["job"]["state"] == "done"
    assert one(srv, "fresh_arrival")["name"] == "fresh_arrival.jpg"
    assert srv.post("/api/job/stop").status == 404  # nothing running any more


def test_rebuild_index_job_by_polling(srv: Server) -> None:
    started = srv.post("/api/rebuild-index", {})
    assert started.status == 202
    job = wait_for(lambda: (j := srv.get("/api/job").json()["job"])["state"] == "done" and j)
    assert job["kind"] == "rebuild-index" and job["result"]["index"]["docs"] > 0
    assert search(srv, q="beach_sunset")["total"] == 5


def test_scan_rejects_relative_paths(srv: Server) -> None:
    answer = srv.post("/api/scan", {"paths": ["relative/dir"]})
    assert answer.status == 400


def test_probe_by_ids(srv: Server) -> None:
    hit = one(srv, "song.mp3")
    answer = srv.post("/api/probe", {"ids": [hit["uuid"]]})
    assert answer.status == 200, answer
    assert answer.json()["type"] == "summary"
    assert srv.post("/api/probe", {"ids": [str(uuidlib.uuid4())]}).status == 404
    assert srv.post("/api/probe", {}).status == 400


# -- many clients at once ---------------------------------------------------------------------

def test_parallel_requests_with_writes(srv: Server) -> None:
    expected_busy = {h["uuid"] for h in search(srv, q="cc_", limit=100)["hits"]}
    assert len(expected_busy) == 8
    movers = sorted(expected_busy)[:2]
    errors: list[str] = []
    stop = threading.Event()

    def reader(n: int) -> None:
        for i in range(25):
            checks = [("beach_sunset", 5), ("mountain.png", 1), ("type:video", 2)]
            q, total = checks[(n + i) % len(checks)]
            body = search(srv, q=q)
            if body["total"] != total:
                errors.append(f"{q}: {body['total']} != {total}")
            visible = search(srv, q="cc_", trash="any", limit=100)["total"]
            if visible != 8:
                errors.append(f"cc_ total {visible} != 8 (trash=any)")

    def writer() -> None:
        while not stop.is_set():
            for verb in ("trash", "restore"):
                out = srv.post(f"/api/{verb}", {"ids": movers})
                if out.status != 200 or out.json()["ok"] != 2:
                    errors.append(f"{verb}: {out!r}")

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    write_thread = threading.Thread(target=writer)
    write_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    write_thread.join()
    assert errors == []
    assert {h["uuid"] for h in search(srv, q="cc_", limit=100)["hits"]} == expected_busy


def test_page_is_served(srv: Server) -> None:
    answer = srv.get("/")
    assert answer.status == 200 and b'id="q"' in answer.body
    csp = answer.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp


def test_openapi_document_validates_and_lists_every_route(srv: Server, tmp_path: Path) -> None:
    validator = pytest.importorskip("openapi_spec_validator",
                                    reason="needs the test extra (openapi-spec-validator)")
    from kvmedia.serve import create_app

    doc = srv.get("/openapi.json").json()
    validator.validate(doc)
    with Library.open(tmp_path / "data") as lib:
        app = create_app(lib)
        routes = {(r.path, m.lower()) for r in app.routes
                  for m in (getattr(r, "methods", None) or ()) if m != "HEAD"}
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == listed
    assert {"/api/search", "/api/items/{id}/thumbnail", "/f/{token}", "/api/job/events",
            "/api/trash", "/openapi.json", "/"} <= {path for path, _ in listed}
    search_params = {p["name"] for p in doc["paths"]["/api/search"]["get"]["parameters"]}
    assert search_params == {"q", "type", "trash", "path", "sort", "limit", "offset", "mode"}
