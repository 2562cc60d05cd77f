"""Helpers shared by the Ray Data stages: a batch is ``dict[str, np.ndarray]`` (``batch_format="numpy"``).

Every stage keeps the columns it does not own, and leaves rows whose ``error`` column is non-empty
untouched, so a bad input or a failed attempt is recorded with its reason instead of raising.
"""

from __future__ import annotations

import numpy as np

Batch = dict[str, np.ndarray]


def num_rows(batch: Batch) -> int:
    return len(batch["sku_id"])


def row_errors(batch: Batch) -> list[str]:
    """The ``error`` column as a list of strings ("" for a healthy row)."""
    return [str(e) if e is not None else "" for e in batch["error"]]
