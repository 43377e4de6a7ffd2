"""The debounced event queue: file-system events in, batches of quiet, settled paths out.

Events are coalesced per path (a path is pending once, however many events it gets). Paths
are released in batches, so a burst of 10,000 new files becomes a few large transactions:

- everything quiet is released once the whole queue has been quiet for `debounce_s`;
- under continuous activity, every `batch_interval_s` (default: the debounce) the paths quiet
  for `debounce_s` are released anyway, so a steady trickle is applied within about two
  debounces while a burst still makes one transaction per interval, not one per file.
  Removals (paths gone from disk) wait one more `debounce_s` in such a partial release, so
  the new half of an unpaired move (across roots) is never applied after its old half;
- a path pushed by `kvmedia notify` (urgent) is released at the next tick.

A regular file is released only once it has settled: no write and no metadata change (its
ctime, which every write and `utime` moves and no one can set back) for `settle_s(size)`,
longer for big files, so a file still being copied is never half-probed. The two halves of a
move form a group (as do the paths one sweep found, or one notify sent): a group is released
together or not at all, so it lands in one transaction and a moved file keeps its uuid.
Groups merge when they share a path (a file moved twice).

Thread safety: `put` is called from observer and socket threads, `take` from the applying
thread; one lock guards the table.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

GIB = 1 << 30


@dataclass
class Pending:
    path: bytes
    first_s: float  # monotonic time of the first event since the path was last released
    last_s: float  # monotonic time of the latest event
    walk: bool = False  # a directory to walk (the new half of a directory move)
    group: int = 0  # paths of one group are released together; 0: none
    urgent: bool = False
    not_before_s: float = 0.0  # settle / retry hold
    waiters: list[threading.Event] = field(default_factory=list)


@dataclass
class Released:
    """One release: paths in groups that must share a transaction, with their metadata."""

    groups: list[list[bytes]] = field(default_factory=list)
    first_s: dict[bytes, float] = field(default_factory=dict)
    waiters: list[threading.Event] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)


@dataclass
class SettleRule:
    """How long a file must stay untouched before it is indexed: base + per GiB, capped."""

    base_s: float = 1.5
    per_gib_s: float = 2.0
    max_s: float = 60.0

    def seconds(self, size: int) -> float:
        return min(self.max_s, self.base_s + self.per_gib_s * size / GIB)


class DebounceQueue:
    def __init__(self, debounce_s: float, *, batch_interval_s: float | None = None,
                 settle: SettleRule | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.debounce_s = debounce_s
        self.batch_interval_s = batch_interval_s if batch_interval_s is not None else debounce_s
        self._last_partial_s = float("-inf")
        self.settle = settle or SettleRule(base_s=debounce_s)
        self.clock = clock
        self.wall_clock = wall_clock  # compared with file ctimes by the settle rule
        self._items: dict[bytes, Pending] = {}  # insertion order == first_s order
        self._groups: dict[int, set[bytes]] = {}
        self._next_group = 1
        self._latest_s = 0.0
        self._urgent = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, path: bytes, *, walk: bool = False, urgent: bool = False,
            waiter: threading.Event | None = None, delay_s: float = 0.0) -> None:
        """Note an event on `path` (coalesced with any pending one)."""
        self.put_group([path], walk=walk, urgent=urgent, waiter=waiter, delay_s=delay_s)

    def put_group(self, paths: list[bytes], *, walk: bool = False, urgent: bool = False,
                  waiter: threading.Event | None = None, delay_s: float = 0.0,
                  walk_first: bool = False) -> None:
        """Note events on `paths`, which must be applied in one transaction (a move: new path
        first, `walk_first` when it is a directory; a sweep; a notify). `waiter` is set once
        they are applied."""
        now = self.clock()
        with self._cond:
            gid = 0
            if len(paths) > 1:
                gid = self._next_group
                self._next_group += 1
                self._groups[gid] = set()
            for index, path in enumerate(paths):
                item = self._items.get(path)
                if item is None:
                    item = self._items[path] = Pending(path, now, now)
                item.last_s = now
                item.walk = item.walk or walk or (walk_first and index == 0)
                item.urgent = item.urgent or urgent
                if delay_s:
                    item.not_before_s = max(item.not_before_s, now + delay_s)
                if gid:
                    self._join(item, gid)
            if waiter is not None and paths:
                self._items[paths[0]].waiters.append(waiter)
            if urgent:
                self._urgent = True
                self._cond.notify_all()
            else:
                self._latest_s = now

    def _join(self, item: Pending, gid: int) -> None:
        """Put `item` in group `gid`, merging the group it was in (if any) into `gid`."""
        old = item.group
        if old and old != gid:
            for member in self._groups.pop(old, set()):
                other = self._items.get(member)
                if other is not None and other.group == old:
                    other.group = gid
                    self._groups[gid].add(member)
        item.group = gid
        self._groups[gid].add(item.path)

    def wait(self, timeout_s: float) -> None:
        """Sleep `timeout_s`, or less when an urgent path arrives."""
        with self._cond:
            if not self._urgent:
                self._cond.wait(timeout_s)

    def take(self) -> Released:
        """Remove and return what is due now (see the module docstring for the rules)."""
        now = self.clock()
        wall = self.wall_clock()
        out = Released()
        with self._cond:
            if not self._items:
                return out
            quiet = now - self._latest_s >= self.debounce_s
            overdue = now - self._last_partial_s >= self.batch_interval_s
            if overdue and not quiet:
                self._last_partial_s = now  # look at most once per interval: O(n) each time
            urgent, self._urgent = self._urgent, False
            if not (quiet or overdue or urgent):
                return out
            ready: set[bytes] = set()
            for path, item in self._items.items():
                if item.not_before_s > now:
                    continue
                if not item.urgent:
                    if not quiet and not overdue:
                        continue
                    if now - item.last_s < self.debounce_s:
                        continue
                hold = self._hold_s(item, now, wall, partial=not quiet)
                if hold > 0:
                    item.not_before_s = now + hold
                    continue
                ready.add(path)
            held: set[int] = set()  # groups seen with a member not ready: looked at once
            for path in list(self._items):
                if path not in ready:
                    continue
                item = self._items[path]
                members = [path]
                if item.group:
                    if item.group in held:
                        continue  # else a sweep's group of n paths costs n * n per take
                    members = [m for m in self._groups.get(item.group, ())
                               if m in self._items and self._items[m].group == item.group]
                    if not all(m in ready for m in members):
                        held.add(item.group)
                        continue  # hold the whole group until every member is ready
                    self._groups.pop(item.group, None)
                    members.sort(key=lambda m: not self._items[m].walk)  # walks first
                out.groups.append(members)
                for member in members:
                    ready.discard(member)
                    gone = self._items.pop(member)
                    out.first_s[member] = gone.first_s
                    out.waiters.extend(gone.waiters)
            if urgent:
                self._urgent = any(i.urgent for i in self._items.values())
        return out

    def _hold_s(self, item: Pending, now: float, wall: float, *, partial: bool) -> float:
        """Seconds `item` must still wait: 0 when it may be applied now."""
        if item.walk or item.urgent:  # a notify means "this is complete": apply at once
            return 0.0
        try:
            st = os.lstat(item.path)
        except OSError:
            # Gone: a removal. In a partial release it waits one more debounce (see above).
            if partial and not item.urgent and now - item.last_s < 2 * self.debounce_s:
                return 2 * self.debounce_s - (now - item.last_s)
            return 0.0
        if not stat.S_ISREG(st.st_mode):
            return 0.0
        quiet_for = wall - st.st_ctime_ns / 1e9
        need = self.settle.seconds(st.st_size)
        return max(0.0, need - quiet_for)
