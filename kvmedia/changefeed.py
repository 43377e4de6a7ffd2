"""The change feed: what changed, in commit order, so firmware can sync without rescanning.

    feed:<seq %016d>  -> entry JSON (below)
    meta:feed_next    -> next seq to hand out (ascii int; the first entry is seq 1)

An entry:

    seq         int    position in the feed; a reader's cursor is the last seq it consumed
    at          str    ISO-8601 UTC time of the change
    op          str    added | modified | moved | trashed | restored | deleted | offline
                       (`modified`: size, mtime or inode changed; kvmedia's own metadata
                       updates — probing, analysis, tags — make no entry)
    uuid        str    the record's uuid (null for `offline`)
    path        bytes  the record's path after the change (before it, for `deleted`);
                       the root's path for `offline`. `pathbytes` encoding (`path_bytes`).
    from        bytes  `moved` only: the path before the move
    media_type  str    audio | video | image | other (null for `offline`)
    size        int    bytes (null for `offline`)
    reason      str    `offline` only: why the root is offline

Entries are written by a `RecordStore` listener inside the write transaction of the change
itself: a change that committed is in the feed, one that rolled back is not. The feed is
bounded: past `max_entries` the oldest entries are dropped (in batches of TRIM_EVERY, in the
same transaction). A reader whose cursor is older than the oldest kept entry gets `gap=True`
and must resync from a full listing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lmdb
import orjson

from .pathbytes import get_field, set_field
from .records import now_iso
from .store.recordstore import Record, RecordStore, RecordWriter

P_FEED = b"feed:"
K_NEXT = b"meta:feed_next"
FEED_MAX = 100_000
TRIM_EVERY = 256
OPS = ("added", "modified", "moved", "trashed", "restored", "deleted", "offline")


def feed_key(seq: int) -> bytes:
    return P_FEED + b"%016d" % seq


def classify(old: Record | None, new: Record | None) -> str | None:
    """The feed op of a record change (old -> new; None for absent), or None when the file
    itself did not change (only kvmedia's own fields did: probe results, analysis, tags) —
    the feed tells firmware about files, and those updates would only make it redo work."""
    if old is None:
        return "added"
    if new is None:
        return "deleted"
    was_trash, is_trash = bool(old.get("is_trash")), bool(new.get("is_trash"))
    if is_trash and not was_trash:
        return "trashed"
    if was_trash and not is_trash:
        return "restored"
    if get_field(old, "path") != get_field(new, "path"):
        return "moved"
    if all(old.get(k) == new.get(k) for k in ("size", "mtime_ns", "ino", "fs_uuid")):
        return None
    return "modified"


@dataclass
class FeedPage:
    """Entries after a cursor. `cursor` is what to pass as `since` next time."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    oldest: int = 0
    latest: int = 0
    gap: bool = False


class ChangeFeed:
    """Writes feed entries in the caller's transaction; reads pages of them."""

    def __init__(self, max_entries: int = FEED_MAX) -> None:
        self.max_entries = max_entries

    def attach(self, store: RecordStore) -> None:
        """Register on the store's write path. The feed object itself is the listener, so the
        scan can find its `root_offline` among the store's listeners."""
        if self not in store.listeners:
            store.listeners.append(self)

    # -- writing (inside the change's transaction) -------------------------------------------

    def __call__(self, writer: RecordWriter, old: Record | None, new: Record | None) -> None:
        rec = new if new is not None else old
        assert rec is not None
        op = classify(old, new)
        if op is None:
            return
        entry: dict[str, Any] = {"op": op, "uuid": rec["uuid"]}
        set_field(entry, "path", get_field(rec, "path"))
        if op == "moved" and old is not None:
            set_field(entry, "from", get_field(old, "path"))
        entry["media_type"] = rec.get("type")
        entry["size"] = rec.get("size")
        at_finish = getattr(writer, "at_finish", None)
        if at_finish is None:
            self.append(writer.txn, entry)
            return
        # Appended by the writer's finish(), still in this transaction: one seq read and one
        # sorted putmulti for the whole batch instead of three LMDB calls per change.
        writer.scratch.setdefault(self, []).append(entry)
        at_finish(self, self._flush)

    def _flush(self, writer: RecordWriter) -> None:
        entries = writer.scratch.pop(self, None)
        if entries:
            self.append_many(writer.txn, entries)

    def root_offline(self, txn: lmdb.Transaction, root: bytes, reason: str) -> None:
        """A scan found `root` unmounted: its records are kept but are unreachable."""
        entry: dict[str, Any] = {"op": "offline", "uuid": None}
        set_field(entry, "path", root)
        entry.update(media_type=None, size=None, reason=reason)
        self.append(txn, entry)

    def append(self, txn: lmdb.Transaction, entry: dict[str, Any]) -> int:
        seq = int(txn.get(K_NEXT) or b"1")
        txn.put(feed_key(seq), orjson.dumps({"seq": seq, "at": now_iso(), **entry}))
        txn.put(K_NEXT, b"%d" % (seq + 1))
        if seq % TRIM_EVERY == 0 and seq > self.max_entries:
            self._trim(txn, seq + 1 - self.max_entries)
        return seq

    def append_many(self, txn: lmdb.Transaction, entries: list[dict[str, Any]]) -> int:
        """Append `entries` in order (consecutive seqs, one timestamp). Returns the last seq."""
        first = int(txn.get(K_NEXT) or b"1")
        at = now_iso()
        dumps = orjson.dumps
        items = [(feed_key(seq), dumps({"seq": seq, "at": at, **entry}))
                 for seq, entry in enumerate(entries, first)]
        txn.cursor().putmulti(items)
        last = first + len(entries) - 1
        txn.put(K_NEXT, b"%d" % (last + 1))
        # trim when the batch crossed a TRIM_EVERY boundary, like append() would have
        if last > self.max_entries and last // TRIM_EVERY != (first - 1) // TRIM_EVERY:
            self._trim(txn, last + 1 - self.max_entries)
        return last

    @staticmethod
    def _trim(txn: lmdb.Transaction, keep_from: int) -> None:
        cur = txn.cursor()
        limit = feed_key(keep_from)
        if not cur.set_range(P_FEED):
            return
        while cur.key().startswith(P_FEED) and cur.key() < limit:
            if not cur.delete():
                break

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def page(txn: lmdb.Transaction, since: int, limit: int | None = None) -> FeedPage:
        """Entries with seq > `since`, oldest first, at most `limit`."""
        out = FeedPage(cursor=since)
        latest = int(txn.get(K_NEXT) or b"1") - 1
        out.latest = latest
        cur = txn.cursor()
        if cur.set_range(P_FEED) and cur.key().startswith(P_FEED):
            out.oldest = int(cur.key()[len(P_FEED):])
        else:
            out.oldest = latest + 1
        out.gap = since < latest and since + 1 < out.oldest
        if since >= latest or not cur.set_range(feed_key(max(since + 1, 0))):
            return out
        for key, raw in cur:
            if not key.startswith(P_FEED) or (limit is not None and len(out.entries) >= limit):
                break
            entry = orjson.loads(raw)
            out.entries.append(entry)
            out.cursor = entry["seq"]
        return out
