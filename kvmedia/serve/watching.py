"""`kvmedia serve --watch PATH`: the watcher daemon on a thread of the server process, sharing
its Library, so one process keeps the index fresh and answers the web UI."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import KvmediaError

if TYPE_CHECKING:
    from ..library import Library
    from ..watch import Watcher


class BackgroundWatcher:
    def __init__(self, lib: Library, paths: list[bytes], **options: Any) -> None:
        from ..watch import Watcher, WatchOptions

        opts = WatchOptions(paths=list(paths), echo=False, **options)
        self.watcher: Watcher = Watcher(lib, opts)
        self.error: KvmediaError | Exception | None = None
        self._thread = threading.Thread(target=self._run, name="kvmedia-watch", daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except Exception as exc:  # reported by status(); start() re-raises a start-up failure
            self.error = exc

    def start(self, timeout_s: float = 30.0) -> None:
        """Start, and return once the watcher holds the data-dir lock; raise what stopped it
        (BusyError when another watcher runs)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            if self.watcher.lock.held or not self._thread.is_alive():
                return
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        running = self._thread.is_alive()
        out: dict[str, Any] = {"running": running, "error": None,
                               "state": self.watcher.state(running=running)}
        if self.error is not None:
            out["error"] = getattr(self.error, "message", None) or str(self.error)
        return out

    def stop(self, timeout_s: float = 30.0) -> None:
        self.watcher.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
