"""Captions, tags and transcripts from an OpenAI-compatible API (optional; needs a URL).

Images (and one frame of a video, when `ffmpeg` is installed) go to `/chat/completions` as a
vision message asking for JSON {summary, tags, style, mood, scenes}; audio goes to
`/audio/transcriptions`. The answer is cached by content hash (pipeline.py), so a file is
sent once whatever happens to its name or place. Other files are not sent.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from typing import Any

import orjson

from ..pathbytes import display
from ..vectors.keys import model_slug
from .apiclient import ApiClient, ApiError
from .base import Record, clean_output

PROMPT = (
    "Describe this media file for a search index. Answer with one JSON object with keys "
    '"summary" (one or two sentences), "tags" (up to 12 short lowercase labels), "style" '
    '(e.g. photo, screenshot, drawing, document scan), "mood" (list) and "scenes" (list of '
    "places or scene types). No other text."
)
MAX_UPLOAD_BYTES = 20 << 20
IMAGE_SIDE = 768
TRANSCRIBE_MODEL = "whisper-1"
FRAME_TIMEOUT_S = 30


def _image_jpeg(path: bytes) -> bytes | None:
    """A JPEG of at most IMAGE_SIDE pixels per side (Pillow), or the raw file if small."""
    try:
        from PIL import Image
    except ImportError:
        Image = None  # noqa: N806
    if Image is not None:
        try:
            with Image.open(os.fsdecode(path)) as img:
                img = img.convert("RGB")
                img.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=85)
                return buf.getvalue()
        except Exception:  # noqa: BLE001 - a broken image is "not analysable", not a crash
            return None
    if os.path.getsize(path) <= MAX_UPLOAD_BYTES and path.lower().endswith((b".jpg", b".jpeg")):
        with open(path, "rb") as fh:
            return fh.read()
    return None


def _video_frame(path: bytes, duration: Any) -> bytes | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    try:
        at = max(0.0, float(duration or 0) / 2)
    except (TypeError, ValueError):
        at = 0.0
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-ss", f"{at:.2f}", "-i", os.fsdecode(path),
           "-frames:v", "1", "-vf", f"scale='min({IMAGE_SIDE},iw)':-2", "-f", "image2pipe",
           "-vcodec", "mjpeg", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=FRAME_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


def parse_json_answer(text: str) -> Record:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{"):] if "{" in text else text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return {"summary": text} if text else {}
    try:
        return clean_output(orjson.loads(text[start : end + 1]))
    except orjson.JSONDecodeError:
        return {"summary": text}


class RemoteAnalyzer:
    name = "remote"
    version = 1
    media_types = frozenset({"image", "video", "audio"})
    extensions: frozenset[str] = frozenset()
    uses_content = True

    def __init__(self, client: ApiClient, model: str) -> None:
        self.client = client
        self.model = model

    @property
    def cache_name(self) -> str:
        return f"remote@{model_slug(self.model)}"

    def analyze(self, rec: Record, path: bytes) -> Record:
        media_type = rec.get("type")
        if media_type == "audio":
            return self._transcribe(path)
        picture = (_image_jpeg(path) if media_type == "image"
                   else _video_frame(path, rec.get("duration_sec")))
        if picture is None:
            return {}
        return self._caption(picture)

    def _caption(self, jpeg: bytes) -> Record:
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": [
                    {"type": "text", "text": "Describe this file."},
                    {"type": "image_url", "image_url": {"url": url}},
                ]},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
        out = self.client.post_json("chat/completions", body)
        try:
            content = out["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ApiError("the chat API answered without choices[0].message.content; check "
                           "semantic.analyzer_api_url") from exc
        return parse_json_answer(str(content or ""))

    def _transcribe(self, path: bytes) -> Record:
        if os.path.getsize(path) > MAX_UPLOAD_BYTES:
            return {}
        with open(path, "rb") as fh:
            data = fh.read()
        name = display(os.path.basename(path))
        out = self.client.post_multipart("audio/transcriptions", {"model": TRANSCRIBE_MODEL},
                                         {"file": (name, data, "application/octet-stream")})
        return clean_output({"transcript": out.get("text")})
