"""Benchmark-only stages that do no model work, so the stream and the driver can be measured at
catalog scale on a CPU (``python -m bench.cpu_scale --stages stand-in``).

- :class:`CanvasStage` stands in for ``GenerateStage``: its image is the prepared canvas (the product
  composited on white), with the stage's columns.
- :class:`HashScorer` stands in for the RFNet scorer (the scorer-stage contract of
  :mod:`pipelines.inspect`): ``p_available`` is a uniform draw from a hash of ``(sku_id, attempt)``, an
  attempt is accepted when it is at least ``threshold`` (default 0.436: accepted with the paper's
  p = 0.564), and a rejected attempt gets a defect label from the same hash, so retries are planned
  and steered as in a real run.

Nothing here belongs in the package: a run that used them would produce meaningless images.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from pipelines.labels import LABELS

PAPER_ACCEPT_RATE = 0.564


class CanvasStage:
    """``GenerateStage``'s columns without a model: ``image`` is the product composited on white."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        product = batch["product"].astype(np.uint16)
        alpha = product[..., 3:4]
        batch["image"] = ((product[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        n = len(batch["sku_id"])
        elapsed = time.perf_counter() - t0
        batch["generate_s"] = np.full(n, elapsed / max(1, n), np.float32)
        batch["generate_batch_s"] = np.full(n, elapsed, np.float32)
        del batch["mask_image"], batch["control_image"]
        return batch


def uniform(sku_id: str, attempt: int) -> float:
    digest = hashlib.blake2b(f"{sku_id}\x1f{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class HashScorer:
    """A scorer stage whose verdicts are a hash of ``(sku_id, attempt)`` (see the module docstring)."""

    def __init__(self, source=None, device="auto", dtype="auto", threshold=None):
        self.threshold = 1.0 - PAPER_ACCEPT_RATE if threshold is None else threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["sku_id"])
        ok = np.array([not e for e in batch["error"]])
        u = np.array(
            [uniform(str(s), int(a)) for s, a in zip(batch["sku_id"], batch["attempt"], strict=True)]
        )
        p = np.where(ok, u, np.nan).astype(np.float32)
        accepted = ok & (u >= self.threshold)
        defects = LABELS[1:]
        label = [
            "" if not ok[i] else ("available" if accepted[i] else defects[int(u[i] * 1e6) % len(defects)])
            for i in range(n)
        ]
        for k, name in enumerate(LABELS):
            batch[f"prob_{name}"] = (
                p if k == 0 else np.where(ok, (1 - u) / (len(LABELS) - 1), np.nan).astype(np.float32)
            )
        batch["label"] = np.array(label, dtype=object)
        batch["p_available"] = p
        batch["accepted"] = accepted
        return batch
