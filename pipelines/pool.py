"""Stage workers that live for the whole run: models load (and compile) once per GPU per run.

A run executes many Ray Data pipelines (waves, :mod:`pipelines.wave`). A Ray Data actor pool lives
as long as its pipeline, so a model stage built as one would load its models again in every wave: on
a GPU cluster with ``generation.compile`` that is ~75 s of every GPU per wave, all GPUs at once. So the
model stages are split in two:

- :class:`StagePool` (driver side) creates ``size`` plain Ray actors once per run, each holding one
  stage instance (``GenerateStage``, ``InspectStage``) with the stage's resources (GPUs, CPUs, custom
  resources), ``max_restarts=-1`` and ``max_task_retries`` = :data:`WORKER_RETRIES`;
- :class:`StageProxy` is the Ray Data callable class each wave maps its batches with: a light actor
  (no model, no torch import, no CPU reserved) that hands each batch to the least busy worker and
  returns its output. Ray Data still streams, bounds what is in flight and retries a proxy that dies;
  the proxies of consecutive (and overlapping) waves share the same workers.

A :class:`PoolLedger` actor per pool counts how many times a stage was constructed (a restarted
worker constructs it again; ``run.json``'s ``generation_actor_starts``) with their start-up seconds,
and balances calls (each batch goes to the worker with the fewest calls in flight).

Failures: a worker that dies is restarted by Ray and the call retried on the new worker; a crash costs
a retry of the batch. When the retries are spent, the proxy returns the batch with every row failed
(``error`` = ``"<stage> worker lost: ..."``) and the stage's columns filled (:class:`StageOutputs`), so
the items get their next attempt: a lost worker costs attempts, never items. An exception raised by
the stage itself propagates as before (the wave fails; the run resumes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

WORKER_RETRIES = 3  # calls retried on a restarted worker before the batch's rows fail
# A proxy only forwards batches and waits: it reserves no CPU, so it can neither starve preparation
# and write tasks of logical CPUs nor wait for them (a local Ray has few).
PROXY_NUM_CPUS = 0
PROXY_CONCURRENCY = 2  # batches a proxy keeps in flight: the worker starts the next as one finishes


@dataclass(frozen=True)
class StageOutputs:
    """The columns a stage adds (name -> per-row shape, dtype, fill value) and drops, used to fill a
    batch whose worker was lost with failed rows of the stage's schema."""

    name: str  # "generation", "inspection": named in the error of a failed row
    add: dict[str, tuple[tuple[int, ...], Any, Any]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def failed(self, batch: dict[str, np.ndarray], reason: str) -> dict[str, np.ndarray]:
        n = len(batch["sku_id"])
        errors = [str(e) if e is not None else "" for e in batch["error"]]
        batch["error"] = np.array([e or f"{self.name} worker lost: {reason}" for e in errors], dtype=object)
        for column, (shape, dtype, fill) in self.add.items():
            if dtype is object:
                batch[column] = np.array([fill] * n, dtype=object)
            else:
                batch[column] = np.full((n, *shape), fill, dtype=dtype)
        for column in self.drop:
            batch.pop(column, None)
        return batch


class PoolLedger:
    """One per pool (a Ray actor): stage starts and their seconds, and calls in flight per worker."""

    def __init__(self, size: int):
        self.inflight = [0] * size
        self.starts = 0
        self.setup_s = 0.0
        self.rows = 0  # rows the workers have returned
        self.next = 0

    def started(self, setup_s: float) -> None:
        self.starts += 1
        self.setup_s += setup_s

    def acquire(self) -> int:
        """The worker with the fewest calls in flight (ties: round robin)."""
        n = len(self.inflight)
        best = min(range(n), key=lambda k: (self.inflight[(self.next + k) % n], k))
        index = (self.next + best) % n
        self.next = (index + 1) % n
        self.inflight[index] += 1
        return index

    def release(self, index: int, rows: int = 0) -> None:
        self.inflight[index] = max(0, self.inflight[index] - 1)
        self.rows += rows

    def done_rows(self) -> int:
        return self.rows

    def stats(self) -> dict[str, float]:
        return {"starts": self.starts, "setup_s": self.setup_s, "rows": self.rows}


class StageWorker:
    """A long-lived Ray actor holding one stage instance; reports its construction to the ledger."""

    def __init__(self, stage_cls: type, stage_kwargs: dict[str, Any], ledger: Any):
        import ray

        t0 = time.perf_counter()
        self.stage = stage_cls(**stage_kwargs)
        ray.get(ledger.started.remote(time.perf_counter() - t0))

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.stage(batch)


class StageProxy:
    """Ray Data callable class: each batch goes to the least busy worker of the pool (see module)."""

    def __init__(self, workers: list, ledger: Any, outputs: StageOutputs):
        self.workers, self.ledger, self.outputs = workers, ledger, outputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        index = ray.get(self.ledger.acquire.remote())
        rows = 0
        try:
            out = ray.get(self.workers[index].run.remote(batch))
            rows = len(out["sku_id"])
            return out
        except ray.exceptions.RayActorError as exc:
            logger.error(
                "%s worker %d lost after %d retries: %s", self.outputs.name, index, WORKER_RETRIES, exc
            )
            return self.outputs.failed(batch, f"{type(exc).__name__} after {WORKER_RETRIES} retries")
        finally:
            self.ledger.release.remote(index, rows)


class StagePool:
    """``size`` long-lived workers of ``stage_cls(**stage_kwargs)`` with the given resources, created
    once per run (driver side); :meth:`map_batches_kwargs` wires a wave's pipeline to them."""

    def __init__(
        self,
        stage_cls: type,
        stage_kwargs: dict[str, Any],
        outputs: StageOutputs,
        *,
        size: int,
        num_gpus: float,
        num_cpus: float,
        resources: dict[str, float] | None = None,
    ):
        import ray

        self.outputs, self.size = outputs, size
        self.ledger = ray.remote(num_cpus=0)(PoolLedger).remote(size)
        # A subclass named after the stage, so the actors read "GenerateStageWorker" in `ray list actors`.
        worker_cls = type(f"{stage_cls.__name__}Worker", (StageWorker,), {})
        remote = ray.remote(worker_cls).options(
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            resources=dict(resources or {}),
            max_restarts=-1,
            max_task_retries=WORKER_RETRIES,
            scheduling_strategy="SPREAD",
        )
        self.workers = [remote.remote(stage_cls, stage_kwargs, self.ledger) for _ in range(size)]
        self.created = time.monotonic()
        self._final: dict[str, float] | None = None

    def map_batches_kwargs(self, batch_size: int, inputs: int) -> dict[str, Any]:
        """Keyword arguments of ``Dataset.map_batches`` that run the stage on this pool. ``inputs``:
        how many blocks the step receives; it gets no more proxies than that (Ray Data warns of a
        pool larger than its input), and at most one per worker."""
        import ray

        return {
            "fn": StageProxy,
            "fn_constructor_kwargs": {
                "workers": self.workers,
                "ledger": self.ledger,
                "outputs": self.outputs,
            },
            "batch_size": batch_size,
            "batch_format": "numpy",
            "compute": ray.data.ActorPoolStrategy(
                size=max(1, min(self.size, inputs)), max_concurrent_calls_per_actor=PROXY_CONCURRENCY
            ),
            "num_cpus": PROXY_NUM_CPUS,
        }

    def done_rows(self) -> int:
        """Rows the workers have returned so far (every wave; a retried batch counts again)."""
        import ray

        return ray.get(self.ledger.done_rows.remote())

    def stats(self) -> dict[str, float]:
        """``starts`` (stage constructions, restarts included), ``setup_s`` (their seconds), ``rows``
        (returned) and ``capacity_s`` (workers x seconds since the pool was created, or until it was
        closed)."""
        import ray

        if self._final is not None:
            return self._final
        stats = ray.get(self.ledger.stats.remote())
        return {**stats, "capacity_s": self.size * (time.monotonic() - self.created)}

    def close(self) -> dict[str, float]:
        """Stop the workers (their GPUs are free afterwards); returns the final :meth:`stats`."""
        import ray

        if self._final is None:
            self._final = self.stats()
            for worker in self.workers:
                ray.kill(worker)
            ray.kill(self.ledger)
        return self._final
