"""A wave: one finite Ray Data pipeline over a batch of planned attempts, iterated in the background.

``from_items(work rows) -> prepare (CPU tasks) -> generate (proxy -> long-lived workers) -> inspect
(proxy -> long-lived workers) -> write (CPU tasks)``. The model stages run on the run's
:class:`pipelines.pool.StagePool` workers, so a wave starts in seconds (Ray Data's executor and a few
light proxy actors), not in the minutes a model load and compilation take; the driver can start the
next wave while one drains (:mod:`pipelines.runner`). Output batches go to the driver through a queue
(:class:`WaveExecution`), tagged with their wave.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.attempts import AttemptPlan
from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig
from pipelines.labels import LABELS
from pipelines.pool import StageOutputs, StagePool
from pipelines.prepare import prepare_batch
from pipelines.store import ATTEMPT_SCHEMA, now
from pipelines.writer import write_batch


def generation_outputs(cfg: GenerateConfig) -> StageOutputs:
    """The columns :class:`pipelines.generate.GenerateStage` adds and drops (see :func:`build_wave_dataset`)."""
    r = cfg.prepare.resolution
    return StageOutputs(
        "generation",
        add={
            "image": ((r, r, 3), np.uint8, 0),
            "generate_s": ((), np.float32, 0.0),
            "generate_batch_s": ((), np.float32, 0.0),
        },
        drop=("mask_image", "control_image"),
    )


def inspection_outputs() -> StageOutputs:
    """The columns :class:`pipelines.inspect.InspectStage` adds."""
    return StageOutputs(
        "inspection",
        add={
            **{f"prob_{name}": ((), np.float32, np.nan) for name in LABELS},
            "label": ((), object, ""),
            "p_available": ((), np.float32, np.nan),
            "accepted": ((), np.bool_, False),
            "inspect_s": ((), np.float32, 0.0),
            "threshold": ((), np.float32, np.nan),
        },
    )


def work_rows(plans: list[tuple[CatalogItem, AttemptPlan]]) -> list[dict[str, Any]]:
    """The driver's rows for a wave: one per planned attempt."""
    return [
        {
            "sku_id": item.sku_id,
            "row": item.row,
            "attempt": plan.attempt,
            "seed": plan.seed,
            "prompt": plan.prompt,
            "negative_prompt": plan.negative_prompt,
            "template": plan.template,
            "color": plan.color or "",
            "image_scale": plan.image_scale,
            "steer": plan.steer,
            "caption": item.caption,
            "source_image": item.image,
            "error": "",
        }
        for item, plan in plans
    ]


def build_wave_dataset(
    rows: list[dict[str, Any]],
    cfg: GenerateConfig,
    out: str,
    generation: StagePool,
    inspection: StagePool | None = None,
):
    """The Ray Data pipeline of one wave (lazy; executed by iterating it).

    Columns in the stream (R = canvas resolution):

    - work item (driver): ``sku_id``, ``row``, ``attempt``, ``seed``, ``prompt``, ``negative_prompt``,
      ``template``, ``color``, ``image_scale``, ``steer``, ``caption``, ``source_image``, ``error``
    - + prepare: ``product`` (R,R,4) uint8 RGBA, ``mask_image`` (R,R) uint8 (255 = regenerate),
      ``control_image`` (R,R,3) uint8, ``content_hash`` str, ``prepare_s``
    - + generate: ``image`` (R,R,3) uint8 (product pasted back), ``generate_s`` (busy seconds per row),
      ``generate_batch_s``; drops the mask and control image it consumed
    - + inspect (the job's scorer stage, in :class:`pipelines.inspect.InspectStage`): ``prob_<label>``,
      ``label``, ``p_available``, ``accepted``, ``inspect_s``, ``threshold``
    - write: PNGs to ``images/<sku>/<attempt>.png`` (+ ``products/<sku>.png``), then the pixel columns
      are replaced by their URIs (``image``, ``product``) and ``write_s`` is added.

    ``generation`` / ``inspection``: the run's long-lived stage pools (``inspection`` when
    ``inspect.enabled``).
    """
    import ray

    run = cfg.run
    num_blocks = max(1, math.ceil(len(rows) / run.prepare_batch_size))
    # Blocks reaching each model step: one per preparation task, then one per generation call
    # (a call takes whole blocks of at least generation.batch_size rows).
    generated_blocks = math.ceil(len(rows) / max(run.prepare_batch_size, cfg.generation.batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=num_blocks)
    ds = ds.map_batches(
        prepare_batch,
        fn_kwargs={"cfg": cfg},
        batch_size=run.prepare_batch_size,
        batch_format="numpy",
        num_cpus=run.prepare_num_cpus,
        # A memory reservation also keeps Ray Data from fusing preparation into the proxy actors (it
        # fuses a task into an actor stage with equal resource requests).
        memory=run.prepare_memory_mb * 2**20,
    )
    ds = ds.map_batches(**generation.map_batches_kwargs(cfg.generation.batch_size, num_blocks))
    if inspection is not None:
        ds = ds.map_batches(**inspection.map_batches_kwargs(cfg.inspect.batch_size, generated_blocks))
    return ds.map_batches(
        write_batch,
        fn_kwargs={"cfg": cfg, "out": out},
        batch_size=run.prepare_batch_size,
        batch_format="numpy",
        num_cpus=run.write_num_cpus,
    )


def attempt_rows(batch: pa.Table, base: dict[str, Any], cfg: GenerateConfig) -> list[dict[str, Any]]:
    """A wave's output batch as attempt rows (:data:`pipelines.store.ATTEMPT_SCHEMA` keys)."""
    created = now()
    out = []
    for r in batch.to_pylist():
        rec = {**base, **{k: v for k, v in r.items() if k in ATTEMPT_SCHEMA.names}}
        rec["created_at"] = created
        if not cfg.inspect.enabled:
            rec["accepted"] = False
            rec["label"] = ""
        if rec.get("error") is None:
            rec["error"] = ""
        out.append(rec)
    return out


@dataclass
class WaveStats:
    wave: int
    items: int  # attempts planned
    retries: int  # of which retries (attempt > 1)
    wall_s: float = 0.0
    images: int = 0
    generate_busy_s: float = 0.0
    inspect_busy_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)  # summed per-row busy seconds per stage


class WaveExecution:
    """Iterates one wave's dataset on a daemon thread; puts ``("batch", wave, pyarrow batch)`` for each
    output batch, then ``("done", wave, None)``, or ``("error", wave, exception)``, on ``events``."""

    def __init__(self, wave: int, plans: list[tuple[CatalogItem, AttemptPlan]], dataset, events: queue.Queue):
        self.stats = WaveStats(wave, len(plans), sum(1 for _, p in plans if p.attempt > 1))
        self.planned = {(item.sku_id, plan.attempt) for item, plan in plans}
        self.t0 = time.monotonic()
        self._dataset, self._events = dataset, events
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._iterate, name=f"wave-{wave}", daemon=True)
        self._thread.start()

    def _iterate(self) -> None:
        wave = self.stats.wave
        try:
            for batch in self._dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                if not self._put(("batch", wave, batch)):
                    return
        except BaseException as exc:  # handed to the driver's thread, which raises it
            self._put(("error", wave, exc))
        else:
            self._put(("done", wave, None))

    def _put(self, event: tuple) -> bool:
        """Queue ``event`` for the driver (waiting while the queue is full); ``False`` once the
        driver has stopped listening (:meth:`abandon`)."""
        while not self._abandoned.is_set():
            try:
                self._events.put(event, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False

    def abandon(self) -> None:
        """The driver stops reading this wave (it is failing): the thread ends at its next batch."""
        self._abandoned.set()

    def finish(self) -> WaveStats:
        self.stats.wall_s = time.monotonic() - self.t0
        return self.stats
