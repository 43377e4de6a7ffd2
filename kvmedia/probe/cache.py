"""The probe cache lives in the record: metadata fields plus a validity stamp (see __init__).

`needs_probe(rec, tools)` says whether the cached answer (success or failure) is stale;
`with_probe(rec, result, size, mtime_ns, tools)` returns the record carrying a new answer.
"""

from __future__ import annotations

from typing import Any

from . import METADATA_FIELDS, PROBE_VERSION, PROBED_TYPES, ProbeResult
from .tools import Tools

Record = dict[str, Any]


def needs_probe(rec: Record, tools: Tools) -> bool:
    if rec.get("type") not in PROBED_TYPES or rec.get("is_trash"):
        return False
    stamp = rec.get("probe")
    if not isinstance(stamp, dict) or stamp.get("v") != PROBE_VERSION:
        return True
    if stamp.get("size") != rec.get("size") or stamp.get("mtime_ns") != rec.get("mtime_ns"):
        return True
    return bool(set(tools.names()) - set(stamp.get("with") or []))


def with_probe(rec: Record, result: ProbeResult, size: int, mtime_ns: int, tools: Tools
               ) -> Record:
    new = {k: v for k, v in rec.items() if k not in METADATA_FIELDS}
    new.update(result.fields)
    new["probe"] = {"size": size, "mtime_ns": mtime_ns, "v": PROBE_VERSION, "ok": result.ok,
                    "error": result.error, "with": tools.names()}
    return new
