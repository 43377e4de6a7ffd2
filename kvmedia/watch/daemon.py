"""The watcher daemon: keeps the library equal to the volumes while it runs.

Start-up order, each step there so that no change is ever missed:

1. take the data-dir lock (a second watcher is refused with BusyError, exit code 4);
2. start the inotify watches (roots beyond the watch budget, and every root in poll mode,
   get a directory-mtime baseline instead), before the scan, so a change made during the
   scan is queued rather than lost;
3. open the notify socket;
4. scan-on-start: the incremental scan of every root catches up on whatever changed while no
   watcher ran (a `kill -9` included); unchanged files cost no write;
5. loop: released batches -> `Library.upsert_paths` (one write transaction per chunk of
   groups), sweeps and overflow rescans when due, `state.json` every `state_interval_s`.

SIGTERM / SIGINT: the loop finishes the batch in hand, writes the final state, releases the
lock and `run()` returns 0. All LMDB work happens on the thread that calls `run()`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KvmediaError, UsageError
from ..lockfile import DataDirLock
from ..pathbytes import display, get_field, is_under
from ..records import now_iso
from . import limits, runlog
from .debounce import DebounceQueue, Released, SettleRule
from .notify import NotifyServer
from .observe import EVENT_FILTER, QueueingHandler, WatchFD, WatchObserver
from .sweep import DirSweeper

if TYPE_CHECKING:
    from ..library import Library

RETRY_S = 5.0


@dataclass
class WatchOptions:
    """Every timing is a parameter, so tests can run with a 0.1 s debounce."""

    paths: list[bytes] = field(default_factory=list)  # empty: the known scan roots
    debounce_s: float = 1.5
    batch_interval_s: float | None = None  # partial releases under activity; default: debounce
    settle_s: float | None = None  # quiet time a file needs before indexing; default: debounce
    settle_per_gib_s: float = 2.0
    settle_max_s: float = 60.0
    poll_s: float | None = None  # poll mode: sweep every root this often, no inotify
    sweep_s: float = 30.0  # sweep interval of roots inotify cannot cover
    full_sweep_every: int = 10
    state_interval_s: float = 2.0
    batch_files: int = 5000  # paths per write transaction (a group is never split)
    scan_on_start: bool = True
    watch_budget: int | None = None  # default: 80% of max_user_watches minus those in use
    log_max_bytes: int = runlog.LOG_MAX_BYTES
    log_backups: int = runlog.LOG_BACKUPS
    echo: bool = True  # warnings also on stderr
    analyze: bool = False  # run the semantic worker (analyze + embed new files) in background


SHARE_CHECK_S = 5.0
"""How often the watcher counts its own inotify watches against its allowance."""


class Watcher:
    def __init__(self, lib: Library, options: WatchOptions) -> None:
        self.lib = lib
        self.opts = options
        self.stop = threading.Event()
        settle = SettleRule(
            base_s=options.settle_s if options.settle_s is not None else options.debounce_s,
            per_gib_s=options.settle_per_gib_s, max_s=options.settle_max_s)
        self.queue = DebounceQueue(options.debounce_s, batch_interval_s=options.batch_interval_s,
                                   settle=settle)
        self.log = logging.getLogger(runlog.LOGGER)
        self.roots: list[bytes] = []
        self.watched: list[bytes] = []
        self.sweepers: dict[bytes, DirSweeper] = {}
        self.observer: WatchObserver | None = None
        self.server: NotifyServer | None = None
        self.lock = DataDirLock(lib.data_dir)
        self.started_at = now_iso()
        self.processed_count = 0
        self.batch_count = 0
        self.last_processed_at: str | None = None
        self.last_processed_path: str | None = None
        self.last_error: str | None = None
        self.overflows = 0
        self._overflowed = threading.Event()
        self._refused: set[bytes] = set()  # dirs whose watch the kernel refused (ENOSPC)
        self._gone_roots: set[bytes] = set()
        self._root_ids: dict[bytes, tuple[int, int]] = {}  # (st_dev, st_ino) when watched
        self._watches: dict[bytes, Any] = {}  # root -> watchdog ObservedWatch
        self._flag_lock = threading.Lock()
        self._next_state_s = 0.0
        self._next_sweep_s = 0.0
        self.semantic_worker: Any = None
        self._watch_allowance: int | None = None
        self._next_share_check_s = 0.0

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        """Watch until SIGTERM/SIGINT (or `stop` is set). Returns the exit code (0)."""
        self.lock.acquire()  # BusyError when another watcher runs
        old_handlers = self._install_signals()
        try:
            runlog.setup_logs(self.lib.data_dir, max_bytes=self.opts.log_max_bytes,
                              backups=self.opts.log_backups, echo=self.opts.echo)
            self.roots = self._resolve_roots()
            self.log.info("starting (pid %d, %s, debounce %.2fs): %s", os.getpid(),
                          "poll" if self.opts.poll_s else "inotify", self.opts.debounce_s,
                          ", ".join(display(r) for r in self.roots))
            self._start_watching()
            self.server = NotifyServer(self.lib.data_dir, self._on_notify)
            self.server.start()
            self._write_state()
            if self.opts.scan_on_start:
                self._scan_on_start()
            if self.opts.analyze:
                from ..embed.background import start_background

                self.semantic_worker = start_background(self.lib)
                self.log.info("background analysis started")
            self._loop()
            return 0
        except KvmediaError as exc:
            self.log.error("the watcher stopped: %s", exc.message)
            raise
        except Exception:
            self.log.exception("the watcher stopped on an unexpected error")
            raise
        finally:
            self._shutdown()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: self.stop.set())
        return old

    def _resolve_roots(self) -> list[bytes]:
        if self.opts.paths:
            roots = [os.path.realpath(os.path.abspath(p)) for p in self.opts.paths]
        else:
            roots = [p for p in (get_field(r, "path") for r in self.lib.roots()) if p]
        if not roots:
            raise UsageError("nothing to watch: no scan roots are known; pass PATH or run "
                             "`kvmedia scan PATH` first")
        return sorted(set(roots))

    def _start_watching(self) -> None:
        if self.opts.poll_s:
            for root in self.roots:
                self._add_sweeper(root)
            return
        budget = self.opts.watch_budget
        if budget is None:
            budget = limits.watch_budget()
        self._watch_allowance = budget  # all this watcher may hold, also after start-up
        fd = WatchFD(self._on_overflow, self._on_watch_refused)
        self.observer = WatchObserver(fd)
        self.observer.start()
        data_dir = os.fsencode(self.lib.data_dir)
        for root in self.roots:
            if not os.path.isdir(root):
                self.log.warning("root %s is missing (volume not mounted?): sweeping it every "
                                 "%gs", display(root), self.opts.sweep_s)
                self._add_sweeper(root)
                continue
            if budget is not None:
                need = limits.count_dirs(root, stop_after=budget)
                if need > budget:
                    self.log.warning(
                        "watch limit: %s needs more than the %d inotify watches left (80%% of "
                        "fs.inotify.max_user_watches, see `kvmedia doctor`); sweeping it every "
                        "%gs instead", display(root), budget, self.opts.sweep_s)
                    self._add_sweeper(root)
                    continue
                budget -= need
            handler = QueueingHandler(root, data_dir, self._on_events, self._on_root_gone)
            try:
                st = os.lstat(root)
                self._watches[root] = self.observer.schedule(
                    handler, root, recursive=True,  # type: ignore[arg-type]
                    event_filter=EVENT_FILTER)
            except OSError as exc:
                self.log.warning("cannot watch %s (%s): sweeping it every %gs",
                                 display(root), exc.strerror or exc, self.opts.sweep_s)
                self._add_sweeper(root)
                continue
            self.watched.append(root)
            self._root_ids[root] = (st.st_dev, st.st_ino)

    def _add_sweeper(self, root: bytes) -> None:
        if root in self.sweepers:
            return
        sweeper = DirSweeper(root, full_every=self.opts.full_sweep_every)
        sweeper.baseline()
        self.sweepers[root] = sweeper

    def _scan_on_start(self) -> None:
        started = time.monotonic()
        summaries = self.lib.scan(self.roots, stop=self.stop)
        files = 0
        for s in summaries:
            files += s.added + s.updated + s.moved + s.unchanged
            if s.offline:
                self.log.warning("root %s is offline: %s", display(s.root), s.offline_reason)
        self.log.info("scan-on-start: %d files (%d added, %d updated, %d moved, %d removed) "
                      "in %.2fs", files, sum(s.added for s in summaries),
                      sum(s.updated for s in summaries), sum(s.moved for s in summaries),
                      sum(s.removed for s in summaries), time.monotonic() - started)
        self._write_state()

    def _loop(self) -> None:
        tick_s = max(0.02, min(0.1, self.opts.debounce_s / 4))
        interval = self.opts.poll_s or self.opts.sweep_s
        self._next_sweep_s = time.monotonic() + interval
        while not self.stop.is_set():
            self.queue.wait(tick_s)
            self._apply(self.queue.take())
            self._handle_trouble()
            now = time.monotonic()
            if self.sweepers and now >= self._next_sweep_s:
                self._sweep()
                self._next_sweep_s = time.monotonic() + interval
            if now >= self._next_state_s:
                self._check_roots()
                self._check_watch_share(now)
                self._write_state()

    # -- applying ----------------------------------------------------------------------------

    def _chunks(self, released: Released) -> list[list[bytes]]:
        chunks: list[list[bytes]] = []
        current: list[bytes] = []
        for group in released.groups:
            if current and len(current) + len(group) > self.opts.batch_files:
                chunks.append(current)
                current = []
            current.extend(group)
        if current:
            chunks.append(current)
        return chunks

    def _apply(self, released: Released) -> None:
        for chunk in self._chunks(released):
            outcomes: list[tuple[bytes, str]] = []
            started = time.monotonic()
            try:
                stats = self.lib.upsert_paths(chunk, outcomes=outcomes)
            except Exception as exc:  # keep watching; the paths are retried
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.log.error("applying %d paths failed; retrying in %.0fs", len(chunk),
                               RETRY_S, exc_info=True)
                self.queue.put_group(chunk, delay_s=RETRY_S)
                continue
            done = time.monotonic()
            default_first = min(released.first_s.values(), default=started)  # walked files
            self.batch_count += 1
            self.log.info("batch: %d paths in one transaction in %.0fms (%s)", len(chunk),
                          (done - started) * 1000,
                          ", ".join(f"{v} {k}" for k, v in stats.items() if v) or "no change")
            for path, outcome in outcomes:
                if outcome == "unchanged":
                    self.log.info("skipped %s", display(path))
                    continue
                first = released.first_s.get(path, default_first)
                self.log.info("processed %s in %dms (%s)", display(path),
                              (done - first) * 1000, outcome)
                self.processed_count += 1
                self.last_processed_path = display(path)
                self.last_processed_at = now_iso()
        for waiter in released.waiters:
            waiter.set()

    # -- trouble: overflow, watch limit, vanished roots, sweeps ------------------------------

    def _on_events(self, paths: list[bytes], walk_first: bool) -> None:
        self.queue.put_group(paths, walk_first=walk_first)

    def _on_notify(self, paths: list[bytes], waiter: threading.Event | None) -> None:
        self.queue.put_group([os.path.abspath(p) for p in paths], urgent=True, waiter=waiter)

    def _on_overflow(self) -> None:
        self._overflowed.set()

    def _on_watch_refused(self, path: bytes) -> None:
        with self._flag_lock:
            self._refused.add(path)

    def _on_root_gone(self, root: bytes) -> None:
        with self._flag_lock:
            self._gone_roots.add(root)

    def _check_roots(self) -> None:
        """An unmount or a renamed root sends inotify no event we see: look (cheap lstat)."""
        for root, ident in self._root_ids.items():
            try:
                st = os.lstat(root)
                same = (st.st_dev, st.st_ino) == ident
            except OSError:
                same = False
            if not same:
                self._on_root_gone(root)

    def _handle_trouble(self) -> None:
        """Say so once in the log, then make sure nothing is missed (on this thread)."""
        if self._overflowed.is_set():
            self._overflowed.clear()
            self.overflows += 1
            self.log.warning("inotify queue overflowed: events were lost; rescanning %s",
                             ", ".join(display(r) for r in self.watched))
            self._full_scan(self.watched)
        with self._flag_lock:
            refused, self._refused = self._refused, set()
            gone, self._gone_roots = self._gone_roots, set()
        for root in sorted({self._root_of(p) for p in refused} - set(self.sweepers)):
            self.log.warning(
                "watch limit reached under %s (fs.inotify.max_user_watches is used up, see "
                "`kvmedia doctor`): sweeping it every %gs", display(root), self.opts.sweep_s)
            self._add_sweeper(root)
            self._full_scan([root])
        for root in sorted(gone - set(self.sweepers)):
            self._unwatch(root)
            self.log.warning("root %s vanished or was unmounted: scanning it, then sweeping it "
                             "every %gs; restart the watcher to watch it with inotify again",
                             display(root), self.opts.sweep_s)
            self._full_scan([root])
            self._add_sweeper(root)

    def _check_watch_share(self, now: float) -> None:
        """Directories made after start-up get watches too (watchdog adds them): once this
        process holds more than its allowance (80% of what was left), move roots to sweeping,
        last watched first, so the watcher never eats the whole user limit."""
        if self._watch_allowance is None or not self.watched or now < self._next_share_check_s:
            return
        self._next_share_check_s = now + SHARE_CHECK_S
        held = limits.own_watches()
        while held > self._watch_allowance and self.watched:
            root = self.watched[-1]
            self.log.warning(
                "watch limit: %d inotify watches in use, over the %d this watcher may take (80%% "
                "of fs.inotify.max_user_watches, see `kvmedia doctor`); sweeping %s every %gs "
                "instead", held, self._watch_allowance, display(root), self.opts.sweep_s)
            self._unwatch(root)
            self._add_sweeper(root)
            self._full_scan([root])
            held = limits.own_watches()

    def _unwatch(self, root: bytes) -> None:
        """Stop inotify on `root`: its watches follow the old inodes, not the path."""
        self._root_ids.pop(root, None)
        watch = self._watches.pop(root, None)
        if root in self.watched:
            self.watched.remove(root)
        if watch is not None and self.observer is not None:
            try:
                self.observer.unschedule(watch)
            except (KeyError, OSError):
                pass

    def _root_of(self, path: bytes) -> bytes:
        found = [r for r in self.roots if is_under(path, r)]
        return max(found, key=len) if found else path

    def _full_scan(self, roots: list[bytes]) -> None:
        if not roots:
            return
        for s in self.lib.scan(roots, stop=self.stop):
            self.log.info("rescan %s: %d added, %d updated, %d moved, %d removed%s",
                          display(s.root), s.added, s.updated, s.moved, s.removed,
                          f" (offline: {s.offline_reason})" if s.offline else "")

    def _sweep(self) -> None:
        for root, sweeper in self.sweepers.items():
            if self.stop.is_set():
                return
            try:
                if sweeper.due_full():
                    sweeper.baseline()
                    self._full_scan([root])
                    continue
                paths = sweeper.changed(self.lib.env.read)
                if paths is None:  # looks unmounted: a scan decides (and marks it offline)
                    sweeper.baseline()
                    self._full_scan([root])
                elif paths:
                    self.queue.put_group(paths)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.log.error("sweeping %s failed", display(root), exc_info=True)

    # -- state and shutdown ------------------------------------------------------------------

    def state(self, *, running: bool = True) -> dict[str, Any]:
        mode = "poll" if self.opts.poll_s else (
            "inotify+sweep" if self.sweepers else "inotify")
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": now_iso(),
            "running": running,
            "mode": mode,
            "watch_paths": [display(r) for r in self.roots],
            "sweep_paths": [display(r) for r in self.sweepers],
            "debounce_seconds": self.opts.debounce_s,
            "queue_length": len(self.queue),
            "processed_count": self.processed_count,
            "batch_count": self.batch_count,
            "last_processed_at": self.last_processed_at,
            "last_processed_path": self.last_processed_path,
            "last_error": self.last_error,
            "overflows": self.overflows,
        }

    def _write_state(self, *, running: bool = True) -> None:
        self._next_state_s = time.monotonic() + self.opts.state_interval_s
        try:
            runlog.write_state(self.lib.data_dir, self.state(running=running))
        except OSError as exc:
            self.last_error = f"cannot write state.json: {exc}"
            self.log.error("cannot write state.json: %s", exc)

    def _shutdown(self) -> None:
        stoppers: list[Callable[[], None]] = []
        if self.semantic_worker is not None:
            stoppers.append(self.semantic_worker.stop)
        if self.observer is not None:
            observer = self.observer
            stoppers.append(observer.stop)
            stoppers.append(lambda: observer.join(timeout=5))
        if self.server is not None:
            stoppers.append(self.server.stop)
        for stop in stoppers:
            try:
                stop()
            except Exception:
                self.log.error("error while stopping", exc_info=True)
        if self.lock.held:
            self._write_state(running=False)
            self.log.info("stopped (%d files processed)", self.processed_count)
            self.lock.release()
        runlog.close_logs()
