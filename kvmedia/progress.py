"""Progress reporting for long operations: a live line on a terminal, JSON lines for scripts.

Reporters receive `update(fields)` often (they throttle themselves) and `done(fields)` once.
Everything goes to stderr: stdout is data.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

import orjson

from .pathbytes import display


class Progress(Protocol):
    def update(self, fields: dict[str, Any]) -> None: ...
    def done(self, fields: dict[str, Any]) -> None: ...


class NullProgress:
    def update(self, fields: dict[str, Any]) -> None:
        pass

    def done(self, fields: dict[str, Any]) -> None:
        pass


class TerminalProgress:
    """One self-rewriting status line: files, rate, current directory."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        files = int(fields.get("files", 0))
        where = display(fields.get("current", b""))
        width = 60
        if len(where) > width:
            where = "…" + where[-(width - 1):]
        phase = fields.get("phase", "scan")
        line = f"\r{phase}: {files:,} files  {files / elapsed:,.0f}/s  {where}"
        self.stream.write(line[:160] + "\x1b[K")
        self.stream.flush()

    def done(self, fields: dict[str, Any]) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


class JsonProgress:
    """JSON lines `{"type": "progress", ...}` at most every `interval_s`, then one final line."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._last = 0.0

    def _emit(self, fields: dict[str, Any], final: bool) -> None:
        out = {"type": "progress", "final": final}
        for key, value in fields.items():
            out[key] = display(value) if isinstance(value, bytes) else value
        self.stream.write(orjson.dumps(out).decode() + "\n")
        self.stream.flush()

    def update(self, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._emit(fields, False)

    def done(self, fields: dict[str, Any]) -> None:
        self._emit(fields, True)


def make_progress(mode: str) -> Progress:
    """`auto` draws a line only when stderr is a terminal."""
    if mode == "json":
        return JsonProgress()
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        return TerminalProgress()
    return NullProgress()
