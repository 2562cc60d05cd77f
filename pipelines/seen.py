"""A compact set of ``sku_id`` values: duplicate detection over a catalog of millions of rows.

A run streams its catalog and must still refuse a ``sku_id`` seen earlier in it; keeping every id as
a Python string would cost ~100 bytes per item on the driver. :class:`SeenSkus` keeps a 64-bit key
per id and the row where it first appeared, 16 bytes per item.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sku_key(sku_id: str) -> int:
    """64-bit key of a ``sku_id`` (blake2b). Two of a million distinct ids share a key with
    probability ~3e-8 (~3e-6 at ten million); a shared key reads as a duplicate."""
    return int.from_bytes(hashlib.blake2b(sku_id.encode("utf-8"), digest_size=8).digest(), "little")


class SeenSkus:
    """The ``sku_id`` keys a stream has produced, with the row of each first occurrence.

    Keys live in sorted numpy runs (an LSM-like set: a new run per chunk, merged with its neighbour
    while that is not more than twice its size, so there are O(log n) runs and each key is merged
    O(log n) times): 16 bytes per item, against ~100 for a Python dict of strings.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted uint64 keys, int64 rows)

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """The first row of each key, -1 where unseen."""
        first = np.full(len(keys), -1, np.int64)
        for run_keys, run_rows in self._runs:
            i = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = (run_keys[i] == keys) & (first < 0)
            first[hit] = run_rows[i[hit]]
        return first

    def contains(self, sku_ids: list[str]) -> np.ndarray:
        """Bool per id: seen before."""
        keys = np.fromiter((sku_key(s) for s in sku_ids), np.uint64, len(sku_ids))
        return self._lookup(keys) >= 0

    def first_rows(self, sku_ids: list[str], rows: list[int]) -> list[int | None]:
        """For each id, the row where it was first seen (``None``: new); new ids are added, so an id
        repeated within ``sku_ids`` is reported from its second occurrence on."""
        keys = np.fromiter((sku_key(s) for s in sku_ids), np.uint64, len(sku_ids))
        first = self._lookup(keys)
        new_at: dict[int, int] = {}
        for j, key in enumerate(keys.tolist()):
            if first[j] >= 0:
                continue
            if key in new_at:
                first[j] = rows[new_at[key]]
            else:
                new_at[key] = j
        if new_at:
            idx = np.fromiter(new_at.values(), np.int64, len(new_at))
            self._add(keys[idx], np.asarray(rows, np.int64)[idx])
        return [None if f < 0 else int(f) for f in first.tolist()]

    def _add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], rows[order]))
        while len(self._runs) >= 2 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (k1, r1), (k2, r2) = self._runs.pop(), self._runs.pop()
            keys, rows = np.concatenate([k2, k1]), np.concatenate([r2, r1])
            order = np.argsort(keys, kind="stable")
            self._runs.append((keys[order], rows[order]))
