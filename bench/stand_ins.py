"""Benchmark-only stages that do no model work, so the stream and the driver can be measured at
catalog scale on a CPU (``python -m bench.cpu_scale --stages stand-in``).

- :class:`CanvasStage` stands in for ``GenerateStage``: its image is the prepared canvas (the product
  composited on white), with the stage's columns.
- :class:`HashScorer` stands in for the RFNet scorer (the scorer-stage contract of
  :mod:`pipelines.inspect`): ``p_available`` is a uniform draw from a hash of ``(sku_id, attempt)``, an
  attempt is accepted when it is at least ``threshold`` (default 0.436: accepted with the paper's
  p = 0.564), and a rejected attempt gets a defect label from the same hash, so retries are planned
  and steered as in a real run.

- :func:`driver_only` takes Ray out altogether: the driver runs its waves against in-process stand-ins
  that return the rows the pipeline would (no image is made or written), so the driver's memory can
  be measured at a million items in minutes (``--stages driver-only``).

Nothing here belongs in the package: a run that used them would produce meaningless images.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from unittest import mock

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


# ----------------------------------------------------------------------------------------------------
# The driver alone: waves simulated in this process.


class InProcessWave:
    """Stands in for a wave's Ray Data dataset: ``iter_batches`` yields, in blocks, the attempt rows
    the real pipeline would return for the wave's work rows (URIs of images that are never written,
    the :class:`HashScorer`'s verdicts), so the driver does all its own work and nothing else runs."""

    def __init__(self, rows: list[dict], cfg, out: str, block_rows: int, counter: list[int]):
        self.rows, self.cfg, self.out, self.block_rows, self.counter = rows, cfg, out, block_rows, counter

    def iter_batches(self, batch_size=None, batch_format="pyarrow"):
        import pyarrow as pa

        from pipelines.writer import image_uri, product_uri

        scorer = HashScorer(threshold=self.cfg.inspect.threshold)
        for start in range(0, len(self.rows), self.block_rows):
            block = self.rows[start : start + self.block_rows]
            n = len(block)
            batch = {k: np.array([r[k] for r in block], dtype=object) for k in ("sku_id", "error")}
            batch["attempt"] = np.array([r["attempt"] for r in block])
            scored = scorer(batch) if self.cfg.inspect.enabled else batch
            table = {k: [r[k] for r in block] for k in block[0]}
            table.update(
                image=[image_uri(self.out, r["sku_id"], r["attempt"]) for r in block],
                product=[product_uri(self.out, r["sku_id"]) for r in block],
                content_hash=["0123456789abcdef"] * n,
                **{k: [0.001] * n for k in ("prepare_s", "generate_s", "write_s")},
            )
            if self.cfg.inspect.enabled:
                for k in [f"prob_{name}" for name in LABELS] + ["label", "p_available", "accepted"]:
                    table[k] = scored[k].tolist()
                table["inspect_s"] = [0.001] * n
            self.counter[0] += n
            yield pa.table(table)


class InProcessPool:
    """Stands in for a :class:`pipelines.pool.StagePool` (no workers)."""

    def __init__(self, counter: list[int]):
        self.counter, self.created = counter, time.monotonic()

    def done_rows(self) -> int:
        return self.counter[0]

    def stats(self) -> dict[str, float]:
        return {
            "starts": 1,
            "setup_s": 0.0,
            "rows": self.counter[0],
            "capacity_s": time.monotonic() - self.created,
        }

    close = stats


@contextmanager
def driver_only(block_rows: int = 64) -> Iterator[None]:
    """Within the block, a catalog run needs no Ray: waves are :class:`InProcessWave`, the pools
    :class:`InProcessPool`, the resource check is skipped. The driver's own work is all real."""
    import pipelines.resources
    import pipelines.runner as runner

    counter = [0]

    def pools(self):
        if not self.pools:
            self.pools["generation"] = InProcessPool(counter)
        return self.pools["generation"], None

    def waves(rows, cfg, out, generation, inspection=None):
        return InProcessWave(rows, cfg, out, block_rows, counter)

    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(pipelines.resources, "require_catalog_resources", lambda cfg: None)
        )
        stack.enter_context(mock.patch.object(runner.CatalogRun, "_pools_for_run", pools))
        stack.enter_context(mock.patch.object(runner, "build_wave_dataset", waves))
        yield
