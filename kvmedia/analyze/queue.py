"""The analysis queue in LMDB: items waiting for (another try at) remote analysis.

    sem:queue:<uuid> -> {"attempts": int, "next_at": unix seconds, "error": str | null,
                         "queued_at": ISO-8601}

An item enters when the watcher (or the change-feed follower) sees a new or changed file,
or when a remote analyzer failed for it; it leaves when its analysis is complete. `next_at`
holds a failed item back (the API's Retry-After, else exponential backoff) so a rate-limited
or broken API is not hammered; the rest of the library stays searchable meanwhile.
"""

from __future__ import annotations

from typing import Any

import lmdb
import orjson

from ..records import now_iso
from ..vectors import keys as V

MAX_BACKOFF_S = 6 * 3600


def backoff_s(attempts: int) -> float:
    return float(min(MAX_BACKOFF_S, 60 * 2 ** max(0, attempts - 1)))


def get(txn: lmdb.Transaction, uuid: str) -> dict[str, Any] | None:
    raw = txn.get(V.queue_key(uuid))
    return orjson.loads(raw) if raw is not None else None


def enqueue(txn: lmdb.Transaction, uuid: str) -> None:
    """Queue an item for analysis now (keeps the retry state of one already queued)."""
    if txn.get(V.queue_key(uuid)) is None:
        txn.put(V.queue_key(uuid), orjson.dumps(
            {"attempts": 0, "next_at": 0, "error": None, "queued_at": now_iso()}))


def failed(txn: lmdb.Transaction, uuid: str, error: str, now: float,
           retry_at: float | None) -> None:
    entry = get(txn, uuid) or {"attempts": 0, "queued_at": now_iso()}
    attempts = int(entry.get("attempts", 0)) + 1
    next_at = max(retry_at or 0.0, now + backoff_s(attempts))
    entry.update(attempts=attempts, next_at=next_at, error=error[:500])
    txn.put(V.queue_key(uuid), orjson.dumps(entry))


def done(txn: lmdb.Transaction, uuid: str) -> None:
    txn.delete(V.queue_key(uuid))


def entries(txn: lmdb.Transaction) -> list[tuple[str, dict[str, Any]]]:
    out = []
    cur = txn.cursor()
    if cur.set_range(V.P_QUEUE):
        for key, raw in cur:
            if not key.startswith(V.P_QUEUE):
                break
            out.append((key[len(V.P_QUEUE):].decode("ascii"), orjson.loads(raw)))
    return out


def due(txn: lmdb.Transaction, now: float) -> list[str]:
    return [uuid for uuid, e in entries(txn) if float(e.get("next_at") or 0) <= now]
