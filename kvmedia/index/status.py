"""Does the search index need a writer's attention? Answered from LMDB and the manifest alone,
without numpy or opening a segment, so a writer that changed nothing (an unchanged rescan)
pays nothing for the index.
"""

from __future__ import annotations

import os

from ..errors import DamagedError
from ..store import keys as K
from ..store.env import Env
from . import manifest as M
from .delta import count_delta, read_gen

MERGE_DELTA_DOCS = 5000
"""Delta entries after which a writer folds the delta into a segment (searches evaluate the
delta row by row, so it must stay small)."""
DAMAGED_MARK = "DAMAGED"


def needs_rebuild(env: Env, index_dir: str) -> bool:
    """Cheap check (no checksums): missing index, damage mark, missing files."""
    if os.path.exists(os.path.join(index_dir, DAMAGED_MARK)):
        return True
    with env.read() as txn:
        gen = read_gen(txn)
        if gen is None:
            cur = txn.cursor()
            return bool(cur.set_range(K.P_UUID) and cur.key().startswith(K.P_UUID))
    try:
        man = M.read_manifest(index_dir)
    except DamagedError:
        return True
    if man is None:
        return gen > 0
    if man.gen < gen:
        return True
    return any(not os.path.exists(os.path.join(index_dir, f)) for f in man.files())


def needs_maintenance(env: Env, index_dir: str, merge_delta_docs: int = MERGE_DELTA_DOCS
                      ) -> bool:
    """What `IndexMaintainer.maintain` would act on: a rebuild, or a delta to fold."""
    if needs_rebuild(env, index_dir):
        return True
    with env.read() as txn:
        return count_delta(txn, stop_at=merge_delta_docs) >= merge_delta_docs
