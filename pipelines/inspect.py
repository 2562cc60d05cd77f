"""The inspection stage of the catalog pipeline: RFNet's :class:`~rfnet.scorer.ScoreStage`, timed.

RFNet itself (model, auxiliary depth/saliency maps, thresholds) lives in ``rfnet/``; this wrapper only
adds the per-row ``inspect_s`` column the run summary uses for per-stage throughput.
"""

from __future__ import annotations

import time

import numpy as np

from rfnet.scorer import ScoreStage


class InspectStage(ScoreStage):
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = super().__call__(batch)
        n = len(out["sku_id"])
        out["inspect_s"] = np.full(n, (time.perf_counter() - t0) / max(1, n), np.float32)
        out["threshold"] = np.full(n, self.scorer.threshold, np.float32)
        return out
