"""The catalog run: the catalog streamed through waves of Ray Data pipelines onto GPU workers that live
for the whole run, with recurrent generation, resumable from the store.

Mechanism (docs/pipeline.md has the measurements behind it):

- **Workers for the whole run.** Generation and inspection run on :class:`pipelines.pool.StagePool`
  workers created once per run: models load (and compile) once per GPU per run.
- **Waves.** A wave is one finite Ray Data pipeline (:mod:`pipelines.wave`) over every pending retry
  (items rejected earlier, with attempts left) and up to ``run.chunk_size`` new catalog items, so
  rejects ride along with the next chunk and batches stay full. The driver starts the next wave while
  the running one drains (once the generation workers have at most ``2 x generation.concurrency x
  generation.batch_size`` of its rows left), so the workers go from one wave's batches to the next
  one's without waiting.
- **A small driver.** The catalog is read a chunk at a time (:class:`pipelines.feed.CatalogFeed`); the
  driver keeps an :class:`pipelines.items.ItemState` only for items in flight and drops an item once
  its result row is written. Summary and report read the tables a part at a time.

Recovery: attempt rows are written to ``attempts/`` every ``run.flush_interval_s`` and the rows of
finished items to ``results/`` right after them. A rerun with the same ``--out`` and the same
output-relevant config (``config_hash``) reads both back: finished items are skipped, pending ones
continue at their next attempt with the same planned seeds. Attempt rows are keyed by
``(run_id, sku_id, attempt)``, so a batch delivered twice (an actor retry) never duplicates anything.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines import storage
from pipelines.catalog import CatalogReader
from pipelines.config import ConfigError, GenerateConfig
from pipelines.feed import CatalogFeed, Finished, load_resume
from pipelines.generate import model_ids
from pipelines.inspect import InspectStage
from pipelines.items import ItemState, compact, decide, next_plan
from pipelines.pool import StagePool
from pipelines.progress import Progress
from pipelines.refresh import ManifestUpdates, update_manifest
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, now, to_table
from pipelines.summary import write_run_json
from pipelines.wave import (
    WaveExecution,
    WaveStats,
    attempt_rows,
    build_wave_dataset,
    generation_outputs,
    inspection_outputs,
    work_rows,
)

logger = logging.getLogger(__name__)

LEASE_TTL_S = 600.0
WAVES_IN_FLIGHT = 2  # a wave draining and the next one filling
POLL_S = 0.5  # how often the driver asks the generation pool how far it got
FLUSH_ROWS = 16384  # attempt rows that trigger a flush before run.flush_interval_s (~3 KB each in memory)
EVENTS_QUEUED = 64  # output batches waiting for the driver; more blocks the waves (Ray Data backpressure)


def ensure_ray(cfg: GenerateConfig) -> None:
    """Connect to the configured/ambient Ray cluster, or start a local one (:mod:`pipelines.raystart`)."""
    from pipelines.raystart import ensure_ray as connect

    connect(cfg.run.ray_address, num_cpus=cfg.run.ray_num_cpus, dashboard=cfg.run.ray_dashboard)


@dataclass
class RunSummary:
    run_id: str
    mode: str
    out: str
    counts: dict[str, int]
    run_json: dict[str, Any]


class CatalogRun:
    """One ``generate`` or ``refresh`` run over a catalog into an output store.

    ``inspect_stage``: the job's scorer stage class (required when ``inspect.enabled``; the contract of
    :mod:`pipelines.inspect`). ``generate_stage``: the generation stage class, ``GenerateStage`` unless
    a benchmark measures the stream without a model.
    """

    def __init__(
        self,
        cfg: GenerateConfig,
        mode: str = "generate",
        *,
        inspect_stage: type | None = None,
        generate_stage: type | None = None,
    ):
        cfg.check_ready()
        if mode not in ("generate", "refresh"):
            raise ValueError(f"mode must be 'generate' or 'refresh', got {mode!r}")
        if cfg.inspect.enabled and inspect_stage is None:
            raise ValueError(
                "inspect.enabled needs a scorer stage: pass inspect_stage (e.g. rfnet.scorer.ScoreStage), "
                "or set inspect.enabled=false"
            )
        self.cfg, self.mode = cfg, mode
        self.inspect_stage = inspect_stage
        if generate_stage is None:
            from pipelines.generate import GenerateStage

            generate_stage = GenerateStage
        self.generate_stage = generate_stage
        self.out = storage.normalize(cfg.out)
        self.store = OutputStore(self.out, policy=cfg.storage.policy())
        self.config_hash = cfg.config_hash()
        self.base = {"config_hash": self.config_hash, **model_ids(cfg)}
        self.lease_owner: str | None = None
        self.waves: list[WaveStats] = []
        self.wave = 0
        self.active: dict[str, ItemState] = {}  # items in flight: planned, or waiting for a retry
        self.retry: deque[str] = deque()  # active items whose next attempt is not planned yet
        self.active_peak = 0
        self.attempt_buffer: list[dict[str, Any]] = []
        self.result_buffer: list[dict[str, Any]] = []
        self.manifest = ManifestUpdates(self.config_hash)
        self.pools: dict[str, StagePool] = {}
        self.pool_stats: dict[str, dict[str, float]] = {}
        self.overlap_rows = 2 * cfg.generation.concurrency * cfg.generation.batch_size
        self.planned_rows = 0  # attempts handed to waves so far
        self._polled = 0.0
        # Part files are named run, wave, driver session, counter. The session token keeps a resumed
        # run (which counts waves and parts from 1 again) from overwriting parts an earlier driver of
        # the same run wrote: a part is never rewritten, so nothing recorded before a crash is lost.
        self.session = uuid.uuid4().hex[:8]
        self.part = 0

    # --- opening -------------------------------------------------------------------------------
    def _open_run(self) -> tuple[str, bool]:
        state = self.store.read_state()
        if state and state.get("mode") == self.mode and state.get("status") == "running":
            if state["config_hash"] != self.config_hash:
                raise ConfigError(
                    f"{self.out} holds an unfinished {self.mode} run {state['run_id']} made with another config "
                    f"(config hash {state['config_hash']} != {self.config_hash}); rerun with the same settings to "
                    "resume it, or use a new --out"
                )
            return state["run_id"], True
        if self.mode == "generate" and state:
            if state["config_hash"] != self.config_hash:
                raise ConfigError(
                    f"{self.out} already holds a run made with another config (config hash {state['config_hash']} "
                    f"!= {self.config_hash}); use a new --out, or `reliable-ad refresh` to update it incrementally"
                )
            return state["run_id"], True
        run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        return run_id, False

    def _write_state(self, status: str, **extra: Any) -> None:
        self.store.write_state(
            {
                "run_id": self.run_id,
                "mode": self.mode,
                "config_hash": self.config_hash,
                "status": status,
                "catalog": self.reader.source,
                **extra,
            }
        )

    def run(self) -> RunSummary:
        t_start = time.monotonic()
        # Before anything is written under --out: pools the cluster can never place fail the run here.
        from pipelines.resources import require_catalog_resources

        require_catalog_resources(self.cfg)
        if self.mode == "refresh":
            self.lease_owner = self.store.acquire_lease(LEASE_TTL_S)
        try:
            return self._run(t_start)
        finally:
            self._close_pools()
            if self.lease_owner:
                self.store.release_lease(self.lease_owner)

    def _run(self, t_start: float) -> RunSummary:
        cfg = self.cfg
        self.reader = CatalogReader(cfg.catalog)
        self.run_id, resumed = self._open_run()
        self.base["run_id"] = self.run_id
        self._write_state("running", started_at=now().isoformat())
        logger.info(
            "%s run %s (%s) into %s", self.mode, self.run_id, "resumed" if resumed else "new", self.out
        )

        if resumed:
            finished, histories = load_resume(self.store, self.run_id)
        else:
            finished, histories = Finished(RESULT_SCHEMA.empty_table()), {}
        self.progress = Progress(
            self.run_id, self.mode, None, cfg.run.progress_interval_s, done_before=len(finished)
        )
        threading.Thread(target=self._count_catalog, name="catalog-count", daemon=True).start()
        self.feed = CatalogFeed(
            self.reader,
            self.store,
            cfg,
            run_id=self.run_id,
            mode=self.mode,
            config_hash=self.config_hash,
            finished=finished,
            histories=histories,
            manifest=self.manifest,
            on_bad_rows=lambda n: self.progress.item("error", n),
            on_skipped=self.progress.skip,
        )
        self._execute()
        self._close_pools()
        self.progress.maybe_log(force=True)
        if self.active:
            missing = sorted(self.active)[:5]
            raise RuntimeError(
                f"{len(self.active)} items have no result after the run (first: {missing}); rerun to resume"
            )
        if self.mode == "refresh":
            self.manifest.removed = self.feed.removed()
            logger.info(
                "refresh: %d unchanged, %d removed; %d images read to decide (%d bytes)",
                self.feed.skipped,
                len(self.manifest.removed),
                self.feed.images_read,
                self.feed.bytes_read,
            )
        update_manifest(self.store, self.manifest, self.run_id)
        run_json = write_run_json(
            self.store,
            self.cfg,
            run_id=self.run_id,
            mode=self.mode,
            catalog=self.reader.source,
            config_hash=self.config_hash,
            resumed=resumed,
            wall_s=time.monotonic() - t_start,
            waves=self.waves,
            pools=self.pool_stats,
            skipped=self.feed.skipped,
            removed=len(self.manifest.removed),
            items_in_flight_peak=self.active_peak,
        )
        self._write_state("complete", finished_at=now().isoformat())
        counts = run_json["counts"]
        logger.info(
            "%s run %s done: %s; see %s",
            self.mode,
            self.run_id,
            counts,
            storage.join(self.out, "report.html"),
        )
        return RunSummary(self.run_id, self.mode, self.out, counts, run_json)

    def _count_catalog(self) -> None:
        try:
            self.progress.set_total(self.reader.count_rows())
        except (OSError, ValueError) as exc:  # the total only feeds the progress line
            logger.warning("could not count the catalog's rows (no ETA): %s", exc)

    # --- waves -----------------------------------------------------------------------------------
    def _execute(self) -> None:
        """Run waves until every item is decided. When a wave fails, no wave is started any more; the
        running ones finish (their rows are recorded and flushed), then the first error is raised."""
        events: queue.Queue = queue.Queue(maxsize=EVENTS_QUEUED)
        running: dict[int, WaveExecution] = {}
        failure: BaseException | None = None
        last_flush = time.monotonic()
        try:
            while True:
                if failure is None and self._may_start(running):
                    plans = self._plan_wave()
                    if plans:
                        self._start_wave(plans, running, events)
                if not running:
                    break
                try:
                    kind, wave, payload = events.get(timeout=1.0)
                except queue.Empty:
                    kind = wave = payload = None
                if kind == "batch":
                    self._record(payload, running[wave])
                elif kind == "done":
                    self._end_wave(running.pop(wave))
                elif kind == "error":
                    running.pop(wave)
                    failure = failure or payload
                if (
                    time.monotonic() - last_flush >= self.cfg.run.flush_interval_s
                    or len(self.attempt_buffer) >= FLUSH_ROWS
                ):
                    self._flush()
                    last_flush = time.monotonic()
                self.progress.maybe_log()
        finally:
            for wave in running.values():  # only when the loop raised
                wave.abandon()
            self._flush()
        if failure is not None:
            raise failure

    def _may_start(self, running: dict[int, WaveExecution]) -> bool:
        """Start a wave when none runs, or when the generation workers are about to run out of the
        running wave's rows (at most ``overlap_rows`` of them not generated yet) and there is work."""
        if not running:
            return True
        if len(running) >= WAVES_IN_FLIGHT or not (self.retry or not self.feed.exhausted):
            return False
        now = time.monotonic()
        if now - self._polled < POLL_S:
            return False
        self._polled = now
        not_generated = self.planned_rows - self.pools["generation"].done_rows()
        return not_generated <= self.overlap_rows

    def _plan_wave(self) -> list[tuple[Any, Any]]:
        """Every pending retry, then up to ``run.chunk_size`` items from the catalog. Only what the wave
        takes is planned (attempt plans are pure functions: :func:`pipelines.items.next_plan`)."""
        plans = []
        while self.retry:
            st = self.active[self.retry.popleft()]
            plans.append((st.item, self._plan(st)))
        for st in self.feed.take(self.cfg.run.chunk_size):
            decided = decide(st, self.cfg) if st.attempts else None
            if decided is not None:  # a resumed item whose recorded attempts already decide it
                self._finish(st, decided)
                continue
            self.active[st.item.sku_id] = st
            plans.append((st.item, self._plan(st)))
        self.active_peak = max(self.active_peak, len(self.active))
        return plans

    def _plan(self, st: ItemState):
        plan = next_plan(st, self.cfg)
        st.planned = plan.attempt
        return plan

    def _pools_for_run(self) -> tuple[StagePool, StagePool | None]:
        if not self.pools:
            ensure_ray(self.cfg)
            import ray

            # Batches of decoded images are large; keep the output order free (no reordering buffers).
            ray.data.DataContext.get_current().execution_options.preserve_order = False
            g, ins = self.cfg.generation, self.cfg.inspect
            self.pools["generation"] = StagePool(
                self.generate_stage,
                {"cfg": self.cfg},
                generation_outputs(self.cfg),
                size=g.concurrency,
                num_gpus=g.num_gpus,
                num_cpus=g.num_cpus,
                resources=g.resources,
            )
            if ins.enabled:
                kwargs = {
                    "source": ins.rfnet,
                    "device": ins.device,
                    "dtype": ins.dtype,
                    "threshold": ins.threshold,
                }
                self.pools["inspection"] = StagePool(
                    InspectStage,
                    {"scorer_stage": self.inspect_stage, **kwargs},
                    inspection_outputs(),
                    size=ins.concurrency,
                    num_gpus=ins.num_gpus,
                    num_cpus=ins.num_cpus,
                )
        return self.pools["generation"], self.pools.get("inspection")

    def _close_pools(self) -> None:
        for name, pool in self.pools.items():
            if name not in self.pool_stats:
                try:
                    self.pool_stats[name] = pool.close()
                except Exception as exc:  # closing must not hide the run's own error
                    logger.warning("closing the %s pool failed: %s", name, exc)

    def _start_wave(self, plans, running: dict[int, WaveExecution], events: queue.Queue) -> None:
        generation, inspection = self._pools_for_run()
        self.wave += 1
        n_retry = sum(1 for _, p in plans if p.attempt > 1)
        logger.info(
            "wave %d: %d attempts (%d new items, %d retries)",
            self.wave,
            len(plans),
            len(plans) - n_retry,
            n_retry,
        )
        ds = build_wave_dataset(work_rows(plans), self.cfg, self.out, generation, inspection)
        running[self.wave] = WaveExecution(self.wave, plans, ds, events)
        self.planned_rows += len(plans)

    def _record(self, batch: pa.Table, wave: WaveExecution) -> None:
        stats = wave.stats
        for rec in attempt_rows(batch, self.base, self.cfg):
            st = self.active.get(rec["sku_id"])
            attempt = rec["attempt"]
            if st is None or attempt in st.attempts or attempt != st.planned:
                continue  # a duplicate delivery (a retried task): already recorded
            st.attempts[attempt] = compact(rec)
            st.planned = 0
            self.attempt_buffer.append(rec)
            self._count_attempt(rec)
            for key in ("prepare_s", "generate_s", "inspect_s", "write_s"):
                stats.stage_s[key] = stats.stage_s.get(key, 0.0) + float(rec.get(key) or 0.0)
            stats.images += not rec["error"]
            decided = decide(st, self.cfg)
            if decided is None:
                self.retry.append(st.item.sku_id)
            else:
                self._finish(st, decided)
        stats.generate_busy_s = stats.stage_s.get("generate_s", 0.0)
        stats.inspect_busy_s = stats.stage_s.get("inspect_s", 0.0)

    def _finish(self, st: ItemState, decided: dict[str, Any]) -> None:
        decided.update(run_id=self.run_id, updated_at=now())
        self.result_buffer.append(decided)
        self.progress.item(decided["status"])
        self.manifest.add(st.item, decided, st.identity, earlier_session=st.earlier_session)
        self.active.pop(st.item.sku_id, None)

    def _end_wave(self, wave: WaveExecution) -> None:
        stats = wave.finish()
        lost = 0
        for sku, attempt in wave.planned:
            st = self.active.get(sku)
            if st is not None and st.planned == attempt:  # its row never came back: plan it again
                st.planned = 0
                self.retry.append(sku)
                lost += 1
        if lost:
            logger.warning(
                "wave %d: %d planned attempts came back without a row; planned again", stats.wave, lost
            )
        self.waves.append(stats)
        gen = self.pools["generation"].stats()
        busy = sum(w.generate_busy_s for w in self.waves) / max(1e-9, gen["capacity_s"])
        self.progress.busy_fraction = busy
        logger.info(
            "wave %d done in %.1f s: %d images, generation busy %.0f%% so far",
            stats.wave,
            stats.wall_s,
            stats.images,
            100 * busy,
        )

    def _count_attempt(self, rec: dict[str, Any]) -> None:
        if rec["error"]:
            self.progress.attempt("failed")
        elif not self.cfg.inspect.enabled:
            self.progress.attempt("generated")
        else:
            self.progress.attempt("accepted" if rec.get("accepted") else "rejected")

    def _flush(self) -> None:
        """Attempt rows first, then the results they decide: a result is never on disk without its
        attempts."""
        if self.lease_owner:
            self.store.renew_lease(self.lease_owner, LEASE_TTL_S)
        for table_dir, buffer, schema in (
            ("attempts", self.attempt_buffer, ATTEMPT_SCHEMA),
            ("results", self.result_buffer, RESULT_SCHEMA),
        ):
            if buffer:
                self.part += 1
                name = f"{self.run_id}-w{self.wave:05d}-{self.session}-{self.part:04d}"
                self.store.write_part(table_dir, name, to_table(buffer, schema))
                buffer.clear()


def run_catalog(
    cfg: GenerateConfig,
    mode: str = "generate",
    *,
    inspect_stage: type | None = None,
    generate_stage: type | None = None,
) -> RunSummary:
    """Run ``generate`` (or ``refresh``) with ``cfg``; see :class:`CatalogRun`.

    ``inspect_stage``: the scorer stage class when ``cfg.inspect.enabled`` (the jobs pass
    ``rfnet.scorer.ScoreStage``; see :mod:`pipelines.inspect` for the contract).
    """
    return CatalogRun(cfg, mode, inspect_stage=inspect_stage, generate_stage=generate_stage).run()
