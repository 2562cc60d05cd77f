"""The inspection stage of the catalog pipeline: a scorer stage, timed.

The scorer itself (RFNet: model, auxiliary maps, threshold) is not the platform's: the job hands its
stage class to :func:`pipelines.runner.run_catalog` (``jobs.generate`` passes
``rfnet.scorer.ScoreStage``). A scorer stage is a Ray Data callable class constructed with
``source``, ``device``, ``dtype`` and ``threshold`` keyword arguments, with a ``threshold``
attribute, that adds ``prob_<label>`` (see :data:`pipelines.labels.LABELS`), ``label``,
``p_available`` and ``accepted`` to a numpy batch and keeps every other column. This wrapper adds
what the run summary needs: the per-row ``inspect_s`` and the ``threshold`` applied.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class InspectStage:
    """Ray Data callable class: ``scorer_stage(**kwargs)`` on each batch, plus ``inspect_s`` and ``threshold``."""

    def __init__(self, scorer_stage: type, **kwargs: Any):
        self.stage = scorer_stage(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self.stage(batch)
        n = len(out["sku_id"])
        out["inspect_s"] = np.full(n, (time.perf_counter() - t0) / max(1, n), np.float32)
        out["threshold"] = np.full(n, self.stage.threshold, np.float32)
        return out
