"""Run ffprobe on one file with a timeout and a cap on its output, and read what we keep.

ffprobe gets the path as `file:<absolute path>` (never parsed as a protocol or an option),
`-v error`, JSON output; it is killed when it exceeds `timeout_s` and its output is cut at
MAX_OUTPUT_BYTES, so a hostile file can neither hang nor flood the prober.
"""

from __future__ import annotations

import subprocess
from typing import Any

import orjson

from ..errors import KvmediaError

TIMEOUT_S = 30.0
MAX_OUTPUT_BYTES = 4 << 20


class ProbeFailed(KvmediaError):
    code = "probe_failed"


def run(binary: str, path: bytes, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    cmd = [binary.encode(), b"-v", b"error", b"-hide_banner", b"-print_format", b"json",
           b"-show_format", b"-show_streams", b"file:" + path]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeFailed(f"ffprobe timed out after {timeout_s:.0f}s") from exc
    except OSError as exc:
        raise ProbeFailed(f"cannot run ffprobe: {exc.strerror or exc}") from exc
    out = proc.stdout[:MAX_OUTPUT_BYTES]
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        message = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ProbeFailed(message.rpartition(": ")[2] if "file:" in message else message)
    try:
        data = orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        raise ProbeFailed("ffprobe printed no usable JSON") from exc
    return data if isinstance(data, dict) else {}


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) and f >= 0 else None


def _rate(text: Any) -> float | None:
    if not isinstance(text, str) or "/" not in text:
        return _float(text)
    num, _, den = text.partition("/")
    n, d = _float(num), _float(den)
    return round(n / d, 3) if n and d else None


def _tags(obj: dict[str, Any]) -> dict[str, str]:
    tags = obj.get("tags") or {}
    return {str(k).lower(): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def parse(data: dict[str, Any], media_type: str) -> dict[str, Any]:
    """Record fields from ffprobe JSON: duration, size, fps, codecs, has_audio, tags."""
    fmt = data.get("format") or {}
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    out: dict[str, Any] = {}
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if media_type in ("audio", "video"):
        duration = _float(fmt.get("duration"))
        if duration is None:
            durations = [d for d in (_float(s.get("duration")) for s in streams) if d]
            duration = max(durations) if durations else None
        if duration is not None:
            out["duration_sec"] = round(duration, 3)
        if audio:
            out["audio_codec"] = audio[0].get("codec_name")
    if media_type in ("video", "image") and video:
        v = video[0]
        if (isinstance(v.get("width"), int) and isinstance(v.get("height"), int)
                and v["width"] > 0 and v["height"] > 0):
            out["width"], out["height"] = v["width"], v["height"]
        if media_type == "video":
            out["video_codec"] = v.get("codec_name")
            fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
            if fps:
                out["fps"] = fps
            rotation = _tags(v).get("rotate")
            for side in v.get("side_data_list") or []:
                if isinstance(side, dict) and "rotation" in side:
                    rotation = side["rotation"]
            try:
                if rotation is not None and int(float(rotation)) % 360:
                    out["rotation"] = int(float(rotation)) % 360
            except (TypeError, ValueError):
                pass
    if media_type == "video":
        out["has_audio"] = bool(audio)
    if media_type == "audio":
        tags = _tags(fmt)
        for key in ("artist", "album", "title"):
            if tags.get(key):
                out[key] = tags[key]
        track = tags.get("track") or tags.get("tracknumber")
        if track:
            head = track.split("/")[0].strip()
            if head.isdigit():
                out["track"] = int(head)
    return {k: v for k, v in out.items() if v is not None}
