"""What an analyzer is and the record fields analysis writes.

An analyzer describes one file as fields of its record. Those that look at the file's bytes
(`uses_content`) are cached by content hash + `cache_name` + `version` (see cache.py), so a
rename, a move, a rescan or a rebuild never pays for the same analysis twice. Those that
only read the record (the offline analyzer) are cheap and simply run again.

Record fields (absent when no analyzer produced them):

    summary     str        one or two sentences: what the file shows or says
    tags        list[str]  short labels
    style       str        look of an image / video ("photo", "screenshot", "drawing", ...)
    mood        list[str]
    scenes      list[str]  video scenes / places in the picture
    transcript  str        speech in audio (and video) files
    audio_role  str        voice_over | background_music | sound_effect | ...
    keywords    str        the offline analyzer's words: name, folders, date, camera, tags
    analysis    dict       stamp: {"v", "by", "basis", "pending", "at"} (pipeline.py)
"""

from __future__ import annotations

from typing import Any, Protocol

Record = dict[str, Any]

ANALYSIS_FIELDS = ("summary", "tags", "style", "mood", "scenes", "transcript", "audio_role",
                   "keywords")
LIST_FIELDS = frozenset({"tags", "mood", "scenes"})
MAX_FIELD_CHARS = 4000
MAX_LIST_ITEMS = 32


class Analyzer(Protocol):
    name: str
    version: int
    media_types: frozenset[str]   # empty: every type
    extensions: frozenset[str]    # empty: every extension of those types
    uses_content: bool            # reads the file: cached by content hash

    @property
    def cache_name(self) -> str:
        """Name in cache keys: includes whatever changes the output (e.g. the model)."""
        ...

    def analyze(self, rec: Record, path: bytes) -> Record:
        """Fields from ANALYSIS_FIELDS describing the file. May raise ApiError."""
        ...


def clean_output(out: Any) -> Record:
    """Keep known fields with sane types and sizes (remote answers are untrusted)."""
    if not isinstance(out, dict):
        return {}
    clean: Record = {}
    for key in ANALYSIS_FIELDS:
        value = out.get(key)
        if value is None:
            continue
        if key in LIST_FIELDS:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            if not isinstance(value, list):
                continue
            items = [str(v).strip()[:100] for v in value if str(v).strip()]
            if items:
                clean[key] = items[:MAX_LIST_ITEMS]
        elif isinstance(value, (str, int, float)):
            text = str(value).strip()[:MAX_FIELD_CHARS]
            if text:
                clean[key] = text
    return clean
