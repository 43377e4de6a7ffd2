"""The LMDB environment: opening, read/write transactions, and map growth in one place.

Every write goes through `Env.write(fn)`: `fn(txn)` runs inside one write transaction and is
re-run from scratch when the map is full (the map is grown first) or was grown by another
process, so `fn` must only depend on its arguments and the transaction. A `MapFullError` never
leaves this module. Readers use `with env.read() as txn:`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import lmdb

from ..errors import BusyError, StorageError

T = TypeVar("T")

DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2**32 else (256 << 20)
"""Address space reserved up front. LMDB files are sparse: only pages in use take disk."""

MAX_MAP_SIZE = (1 << 40) if sys.maxsize > 2**32 else (1536 << 20)

READER_CHECK_S = 1.0
"""How often a writer clears lock-table slots of dead readers (see Env._clear_dead_readers)."""


_MADV_DONTNEED = 4
_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    """glibc with madvise and malloc_trim, or None elsewhere."""
    if not _LIBC:
        lib = None
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None, use_errno=True)
                lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                lib = None
        _LIBC.append(lib)
    return _LIBC[0]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
SEARCH_HEAP_MMAP_BYTES = 16 << 20
SEARCH_HEAP_KEEP_BYTES = 32 << 20


def keep_heap_for_searches() -> bool:
    """Let a process that answers many searches keep its freed heap for the next one.

    A search builds arrays of ~0.1-8 MB (doc ids, tiers, a tier a doc) and frees them.
    glibc maps and unmaps such blocks on its own (or trims the heap top past a threshold
    that moves with the process's history), so the next search faults the same pages in
    again: ~500 faults, ~1.3 ms of a 4 ms two-word query at 1M records. Blocks under 16 MB
    now come from the heap, and up to 32 MB of free heap top stays mapped. Explicit
    `malloc_trim` (after scans, `release_pages`) still returns memory. Called by the
    processes that serve searches (serve's search workers, or the server itself with
    `--search-workers 0`), not by the library on its own: it is a setting of the whole
    process. False where the C library has no mallopt."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, SEARCH_HEAP_MMAP_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, SEARCH_HEAP_KEEP_BYTES))


_OPEN: dict[str, Env] = {}
_OPEN_LOCK = threading.Lock()


class Env:
    """One LMDB environment (a `media.lmdb/` directory).

    LMDB allows one open handle per environment per process, so opening the same directory
    again in this process returns the same `Env` (reference-counted; `close()` releases one).
    """

    def __new__(cls, path: str, *, map_size: int | None = None, readonly: bool = False) -> Env:
        with _OPEN_LOCK:
            shared = _OPEN.get(os.path.realpath(path))
            if shared is not None:
                shared._refs += 1
                return shared
        return super().__new__(cls)

    def __init__(self, path: str, *, map_size: int | None = None, readonly: bool = False):
        if getattr(self, "_refs", 0):
            return  # a shared, already open environment (see __new__)
        self.path = path
        self.readonly = readonly
        env_map = os.environ.get("KVMEDIA_LMDB_MAP_SIZE")
        size = map_size or (int(env_map) if env_map else DEFAULT_MAP_SIZE)
        self._resize_lock = threading.Condition()
        self._active_readers = 0
        self._next_reader_check = 0.0
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            self.env = lmdb.open(
                path,
                map_size=size,
                subdir=True,
                max_dbs=0,
                max_readers=254,
                readonly=readonly,
                lock=True,
                writemap=False,
                metasync=True,
                sync=True,
                meminit=False,
                max_spare_txns=4,
                readahead=False,  # random access: readahead only inflates RSS and I/O
            )
        except lmdb.LockError as exc:
            raise BusyError(f"LMDB lock in {path} is unavailable: {exc}", path=path) from exc
        except lmdb.Error as exc:
            raise StorageError(
                f"cannot open LMDB environment {path}: {exc}; check permissions and free space",
                path=path,
            ) from exc
        self._fix_modes()
        self._key = os.path.realpath(path)
        self._refs = 1
        with _OPEN_LOCK:
            _OPEN[self._key] = self

    def _fix_modes(self) -> None:
        """Data files hold the only copy of trash bookkeeping and share keys: owner-only."""
        for name in ("data.mdb", "lock.mdb"):
            try:
                os.chmod(os.path.join(self.path, name), 0o600)
            except OSError:
                pass

    def close(self) -> None:
        with _OPEN_LOCK:
            if self._refs <= 0:
                return
            self._refs -= 1
            if self._refs:
                return
            _OPEN.pop(self._key, None)
        self.env.close()

    # -- reads -----------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        txn = self._begin_read()
        try:
            yield txn
        finally:
            txn.abort()
            self._release_reader()

    def _begin_read(self) -> lmdb.Transaction:
        """A read transaction, counted so no map resize in this process runs under it. The
        count is dropped while adopting a map another process grew (else we wait on us)."""
        for attempt in range(4):
            with self._resize_lock:
                self._active_readers += 1
            try:
                return self.env.begin(write=False, buffers=False)
            except lmdb.MapResizedError:
                self._release_reader()
                if attempt == 3:
                    raise
                self._adopt_size()
            except BaseException:
                self._release_reader()
                raise
        raise AssertionError("unreachable")

    def _release_reader(self) -> None:
        with self._resize_lock:
            self._active_readers -= 1
            if self._active_readers == 0:
                self._resize_lock.notify_all()

    def _begin(self, *, write: bool) -> lmdb.Transaction:
        for _ in range(3):
            try:
                return self.env.begin(write=write, buffers=False)
            except lmdb.MapResizedError:
                # Another process grew the map: adopt its size, then retry.
                self._adopt_size()
        return self.env.begin(write=write, buffers=False)

    def _adopt_size(self) -> None:
        with self._resize_lock:
            while self._active_readers:
                self._resize_lock.wait()
            self.env.set_mapsize(0)

    # -- writes ----------------------------------------------------------------------------

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fn(txn)` in one write transaction and commit it; grow the map as needed."""
        if self.readonly:
            raise StorageError("the library is open read-only", path=self.path)
        self._clear_dead_readers()
        while True:
            txn = self._begin(write=True)
            try:
                result = fn(txn)
                txn.commit()
                return result
            except lmdb.MapFullError:
                txn.abort()
                self._grow()
            except lmdb.MapResizedError:
                txn.abort()
                self._adopt_size()
            except lmdb.DiskError as exc:
                txn.abort()
                raise StorageError(f"LMDB write failed: {exc}", path=self.path) from exc
            except lmdb.Error as exc:
                txn.abort()
                if getattr(exc, "errno", None) == errno.ENOSPC or "No space" in str(exc):
                    raise StorageError(
                        "no space left on device while writing the library; free space and retry",
                        path=self.path,
                    ) from exc
                raise StorageError(f"LMDB write failed: {exc}", path=self.path) from exc
            except BaseException:
                txn.abort()
                raise

    def _clear_dead_readers(self) -> None:
        """A reader killed inside a read transaction (kill -9, OOM) leaves its slot in the lock
        table, and its old snapshot pins every page freed since: while any process keeps the
        environment open (a watcher: for days) no page is reused and the file grows with each
        write. Clear such slots before writing, at most once every READER_CHECK_S."""
        now = time.monotonic()
        if now < self._next_reader_check:
            return
        self._next_reader_check = now + READER_CHECK_S
        try:
            self.env.reader_check()
        except lmdb.Error:
            pass  # only housekeeping: the write itself reports real trouble

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        if current >= MAX_MAP_SIZE:
            raise StorageError(
                f"library database reached its size limit ({current >> 20} MiB)", path=self.path
            )
        new_size = min(MAX_MAP_SIZE, max(current * 2, current + (64 << 20)))
        with self._resize_lock:
            while self._active_readers:
                self._resize_lock.wait()
            self.env.set_mapsize(new_size)

    def release_pages(self, *, trim: bool = True) -> None:
        """Unmap the pages of data.mdb this process touched and hand freed heap back to the OS.

        A scan reads and writes every leaf page of a large tree once; they stay resident in
        our mapping (counted in RSS) although nothing needs them again soon. MADV_DONTNEED on
        LMDB's read-only shared mapping only drops our page-table entries: the data stays in
        the page cache and is faulted back in when read, also inside an open transaction
        (dirty pages live in LMDB's heap until commit, not in the map). `trim`: also
        malloc_trim. Best effort, Linux/glibc only."""
        libc = _libc()
        if libc is None:
            return
        data = os.path.realpath(os.path.join(self.path, "data.mdb")).encode()
        try:
            with open("/proc/self/maps", "rb") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return
        for line in lines:
            if not line.endswith(data):
                continue
            start, end = (int(x, 16) for x in line.split(b" ", 1)[0].split(b"-"))
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
        if trim:
            libc.malloc_trim(0)

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def disk_bytes(self) -> int:
        try:
            return os.stat(os.path.join(self.path, "data.mdb")).st_size
        except OSError:
            return 0
