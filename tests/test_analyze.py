"""The offline analyzer and the analyzer registry."""

from __future__ import annotations

import base64

from kvmedia.analyze.base import clean_output
from kvmedia.analyze.offline import OfflineAnalyzer, date_words, describe, words
from kvmedia.analyze.pipeline import basis, merge, needs_analysis
from kvmedia.analyze.registry import AnalyzerRegistry, default_registry
from kvmedia.embed.settings import SemanticSettings


def rec(path: str, **fields: object) -> dict:
    name = path.rsplit("/", 1)[1]
    out = {"uuid": "u", "path": path, "original_path": path, "name": name, "root": "/mnt/vol",
           "type": "image", "ext": name.rsplit(".", 1)[-1].lower(), "size": 10,
           "mtime": 1690000000.0, "mtime_ns": 1690000000 * 10**9}
    out.update(fields)
    return out


def test_words_split_and_drop_counters() -> None:
    assert words("IMG_0042") == []
    assert words("BeachSunset2023_final") == ["beach", "sunset", "2023"]
    assert words("Đà Lạt-trip") == ["đà", "lạt", "trip"]


def test_describe_uses_name_folders_date_camera_and_shape() -> None:
    text = describe(rec("/mnt/vol/Photos/Da Lat 2023/Wedding/IMG_0042.JPG",
                        taken_at="2023-07-14T18:30:00", camera_make="Canon",
                        camera_model="EOS R6", width=4000, height=3000))
    for part in ("wedding", "da lat 2023", "photo", "2023 july summer", "Canon", "EOS R6",
                 "landscape"):
        assert part in text
    assert "mnt" not in text and "0042" not in text and "vol" not in text


def test_describe_audio_and_video() -> None:
    text = describe(rec("/mnt/vol/Music/Jazz/track01.mp3", type="audio", ext="mp3",
                        artist="Miles Davis", album="Kind of Blue", duration_sec=545.0))
    assert "Miles Davis" in text and "Kind of Blue" in text and "medium length" in text
    text = describe(rec("/mnt/vol/Videos/concert.mkv", type="video", ext="mkv",
                        duration_sec=7300.0))
    assert "video" in text and "hours" in text


def test_describe_non_utf8_name_keeps_readable_parts() -> None:
    raw = b"/mnt/vol/Photos/beach\xff\xfesunset.jpg"
    r = rec("/mnt/vol/Photos/x.jpg")
    del r["path"], r["original_path"], r["name"]
    r["path_bytes"] = r["original_path_bytes"] = base64.b64encode(raw).decode()
    r["name_bytes"] = base64.b64encode(raw.rsplit(b"/", 1)[1]).decode()
    text = describe(r)
    assert "beach" in text and "sunset" in text
    text.encode("utf-8")


def test_date_words_fall_back_to_mtime() -> None:
    assert date_words({"mtime": 1700000000.0}) == ["2023", "november", "autumn"]
    assert date_words({"taken_at": "2021-01-02T03:04:05Z"}) == ["2021", "january", "winter"]
    assert date_words({}) == []


def test_clean_output_rejects_junk() -> None:
    out = clean_output({"summary": "  ok  ", "tags": "a, b,,c", "mood": [1, "", "calm"],
                        "scenes": {"x": 1}, "evil": "x", "style": None})
    assert out == {"summary": "ok", "tags": ["a", "b", "c"], "mood": ["1", "calm"]}
    assert clean_output(["not", "a", "dict"]) == {}


def test_merge_and_staleness() -> None:
    assert merge([{"tags": ["a"], "summary": "x"}, {"tags": ["b", "a"], "summary": "y"}]) == \
        {"tags": ["a", "b"], "summary": "y"}
    r = rec("/mnt/vol/a.jpg")
    names = ["offline@1"]
    assert needs_analysis(r, names)
    r["analysis"] = {"v": 1, "by": names, "basis": basis(r), "pending": []}
    assert not needs_analysis(r, names)
    assert needs_analysis(r, ["offline@1", "remote@m@1"])
    assert needs_analysis(dict(r, path="/mnt/vol/b.jpg"), names)
    assert not needs_analysis(dict(r, is_trash=True, path="/x"), names)


class Captioner:
    name = "captioner"
    version = 2
    media_types = frozenset({"image"})
    extensions = frozenset({"png"})
    uses_content = True
    cache_name = "captioner"

    def analyze(self, rec: dict, path: bytes) -> dict:
        return {"summary": "a picture"}


def test_registry_picks_by_type_and_extension() -> None:
    reg = default_registry(SemanticSettings())
    assert reg.names() == ["offline@1"]
    reg.register(Captioner())
    assert [a.name for a in reg.for_record({"type": "image", "ext": "png"})] == \
        ["offline", "captioner"]
    assert [a.name for a in reg.for_record({"type": "image", "ext": "jpg"})] == ["offline"]
    assert [a.name for a in reg.for_record({"type": "other", "ext": "pdf"})] == ["offline"]
    reg.register(Captioner())  # same cache name replaces
    assert len(reg.analyzers) == 2
    assert isinstance(AnalyzerRegistry([OfflineAnalyzer()]).analyzers[0], OfflineAnalyzer)


def test_describe_includes_sidecar_text_and_tags() -> None:
    r = rec("/mnt/vol/Movies/film.mkv", type="video", ext="mkv", user_tags=["Family", "Tết"],
            xmp_title="New Year at grandma's", sidecar_text="Happy new year everyone " * 100)
    text = describe(r)
    assert "Family Tết" in text and "New Year at grandma's" in text
    assert "Happy new year" in text and len(text) < 1000
    assert basis(r) != basis(dict(r, sidecar_text="other words"))
