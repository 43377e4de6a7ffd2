"""Sidecar parsing and naming: real files' bytes, hostile XML refused."""

from __future__ import annotations

import pytest

from kvmedia.pipeline import safexml
from kvmedia.pipeline.sidecars import (
    media_stems,
    parse_sidecar,
    sidecar_kind,
    sidecar_stems,
)


def xmp(rating: str | None = "4", subjects: tuple[str, ...] = ("Beach", "Đà Lạt"),
        hierarchical: tuple[str, ...] = (), title: str | None = None) -> bytes:
    attr = f' xmp:Rating="{rating}"' if rating is not None else ""
    lis = "".join(f"<rdf:li>{s}</rdf:li>" for s in subjects)
    hier = "".join(f"<rdf:li>{s}</rdf:li>" for s in hierarchical)
    title_xml = (f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li>'
                 "</rdf:Alt></dc:title>") if title else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
     xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:lr="http://ns.adobe.com/lightroom/1.0/"{attr}>
   <dc:subject><rdf:Bag>{lis}</rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag>{hier}</rdf:Bag></lr:hierarchicalSubject>
   {title_xml}
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>""".encode()


def test_xmp_keywords_rating_title() -> None:
    out = parse_sidecar(xmp("5", ("Beach",), ("Places|Vietnam|Da Lat",), "Sunset"), b"a.xmp")
    assert out["rating"] == 5
    assert out["user_tags"] == ["Beach", "Places", "Vietnam", "Da Lat"]
    assert out["xmp_title"] == "Sunset"


def test_xmp_rating_as_element_and_rejected() -> None:
    data = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
      xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description
      xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Rating>-1</xmp:Rating>
      </rdf:Description></rdf:RDF></x:xmpmeta>"""
    assert parse_sidecar(data, b"x.XMP") == {"rating": -1}
    assert "rating" not in parse_sidecar(xmp("9"), b"x.xmp")


def test_billion_laughs_and_external_entities_are_refused() -> None:
    bomb = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
      <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
      <x>&lol2;</x>"""
    with pytest.raises(safexml.UnsafeXmlError):
        safexml.parse(bomb)
    external = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
      <x>&e;</x>"""
    with pytest.raises(safexml.UnsafeXmlError):
        safexml.parse(external)
    assert parse_sidecar(bomb, b"a.xmp") == {}
    assert parse_sidecar(b"<not closed", b"a.xmp") == {}


def test_subtitles_keep_only_spoken_text() -> None:
    srt = b"1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> there\r\n\r\n2\r\n" \
          b"00:00:03,000 --> 00:00:04,000\r\nGeneral Kenobi\r\n"
    assert parse_sidecar(srt, b"m.srt") == {"sidecar_text": "Hello there General Kenobi"}
    vtt = b"WEBVTT\n\nNOTE this is a comment\nstill comment\n\n00:01.000 --> 00:02.000\n" \
          b"Bonjour\n"
    assert parse_sidecar(vtt, b"m.vtt") == {"sidecar_text": "Bonjour"}
    ass = b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, " \
          b"Effect, Text\nDialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,," \
          b"{\\i1}Hi, you{\\i0}\\Nthere\n"
    assert parse_sidecar(ass, b"m.ass") == {"sidecar_text": "Hi, you there"}
    latin1 = "1\n00:00:01,000 --> 00:00:02,000\nCafé\n".encode("cp1252")
    assert parse_sidecar(latin1, b"m.srt") == {"sidecar_text": "Café"}


def test_lrc_cue_nfo_aae() -> None:
    lrc = b"[ar:Artist]\n[ti:Song]\n[00:01.00]First line\n[00:02.50]<00:02.50>Second\n"
    assert parse_sidecar(lrc, b"s.lrc") == {"lyrics_artist": "Artist", "lyrics_title": "Song",
                                            "sidecar_text": "First line Second"}
    cue = b'PERFORMER "Band"\nTITLE "Album"\nFILE "a.flac" WAVE\n  TRACK 01 AUDIO\n' \
          b'    TITLE "One"\n    INDEX 01 00:00:00\n  TRACK 02 AUDIO\n    TITLE "Two"\n' \
          b'    PERFORMER "Guest"\n    INDEX 01 03:25:37\n'
    out = parse_sidecar(cue, b"a.cue")
    assert out["cue_title"] == "Album" and out["cue_performer"] == "Band"
    assert out["cue_tracks"][1] == {"track": 2, "title": "Two", "performer": "Guest",
                                    "start_sec": round(205 + 37 / 75, 3)}
    nfo = b"<movie><title>Film</title><plot>A plot.</plot><genre>Drama</genre>" \
          b"<tag>fav</tag><userrating>8</userrating></movie>"
    assert parse_sidecar(nfo, b"f.nfo") == {"nfo_title": "Film", "sidecar_text": "A plot.",
                                            "user_tags": ["Drama", "fav"], "rating": 4}
    aae = b"""<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
      <key>adjustmentData</key><data>AAEC</data>
      <key>adjustmentFormatIdentifier</key><string>com.apple.photo</string>
      <key>adjustmentFormatVersion</key><string>1.4</string></dict></plist>"""
    assert parse_sidecar(aae, b"IMG_1.AAE") == {"apple_edits": {
        "format": "com.apple.photo", "version": "1.4", "bytes": 3}}


def test_names_and_stems() -> None:
    assert sidecar_kind(b"a.XMP") == "xmp" and sidecar_kind(b"a.jpg") is None
    assert sidecar_stems(b"IMG_1.xmp") == [b"IMG_1"]
    assert sidecar_stems(b"IMG_1.CR2.xmp") == [b"IMG_1.CR2"]  # only that raw file
    assert sidecar_stems(b"movie.en.srt") == [b"movie.en", b"movie"]
    assert sidecar_stems(b"IMG_O1234.AAE") == [b"IMG_O1234", b"IMG_1234"]
    assert media_stems(b"IMG_1.CR2") == [b"IMG_1.CR2", b"IMG_1"]
    assert sidecar_stems(b"\xff\xfe.srt") == [b"\xff\xfe"]  # bytes names kept as they are
