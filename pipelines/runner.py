"""The catalog run: waves of Ray Data pipelines with recurrent generation, resumable from the store.

Mechanism (see docs/pipeline.md for the measurements behind it): the driver keeps every item's
attempt history and runs **waves**. A wave is one Ray Data pipeline
``from_items -> prepare (CPU tasks) -> generate (actor pool) -> inspect (fractional actor pool) ->
write (CPU tasks)`` over

- every pending retry (items rejected in an earlier wave, with attempts left), and
- up to ``run.chunk_size`` new catalog items,

so rejects ride along with the next chunk of the catalog and batches stay full; once the catalog is
exhausted, the remaining waves hold only retries (at most ``max_attempts - 1`` of them). Within a
wave everything streams; the generation pool is fixed-size (``ActorPoolStrategy(size=n)``), its
models load once per wave and its busy time is measured per batch.

Recovery: each wave's attempt rows are written to ``attempts/`` as they arrive (a part every
``run.flush_interval_s``), and finished items to ``results/``. A rerun with the same ``--out`` and the
same output-relevant config (``config_hash``) reads both back: finished items are skipped, pending
ones continue at their next attempt with the same planned seeds. Attempt rows are keyed by
``(run_id, sku_id, attempt)``, so a part written twice (an actor retry, a resumed wave) never
duplicates anything.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.attempts import PreviousAttempt, plan_attempt
from pipelines.catalog import Catalog, CatalogItem, read_catalog
from pipelines.config import ConfigError, GenerateConfig
from pipelines.generate import GenerateStage, model_ids
from pipelines.inspect import InspectStage
from pipelines.prepare import prepare_batch
from pipelines.progress import Progress
from pipelines.refresh import select_changed, update_manifest
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, now, to_table
from pipelines.writer import write_batch

logger = logging.getLogger(__name__)

PERMANENT_ERROR_PREFIX = "invalid input:"
LEASE_TTL_S = 600.0


# ----------------------------------------------------------------------------------------------------
# Item accounting.


# What the driver keeps of each attempt (the full row goes to attempts/): enough to decide the item
# and plan its next attempt, a few hundred bytes instead of the ~3 KB row.
STATE_FIELDS = (
    "attempt",
    "error",
    "accepted",
    "p_available",
    "label",
    "image",
    "content_hash",
    "template",
    "color",
    "image_scale",
)


def compact(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in STATE_FIELDS}


@dataclass
class ItemState:
    item: CatalogItem
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt number -> attempt row
    result: dict[str, Any] | None = None

    def history(self) -> list[PreviousAttempt]:
        return [
            PreviousAttempt(
                attempt=a,
                label=(r.get("label") or "") if not r.get("error") else "",
                template=int(r.get("template") if r.get("template") is not None else -1),
                color=r.get("color"),
                image_scale=float(r.get("image_scale") or 0.0),
            )
            for a, r in sorted(self.attempts.items())
        ]


def decide(state: ItemState, cfg: GenerateConfig) -> dict[str, Any] | None:
    """The item's result row if it is finished, else ``None`` (it needs another attempt)."""
    rows = [state.attempts[a] for a in sorted(state.attempts)]
    if not rows:
        return None
    ok = [r for r in rows if not r.get("error")]
    last = rows[-1]

    def result(status: str, chosen: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
        return {
            "sku_id": state.item.sku_id,
            "row": state.item.row,
            "status": status,
            "error": error,
            "attempts": len(rows),
            "image": chosen.get("image") if chosen else "",
            "p_available": chosen.get("p_available") if chosen else None,
            "label": (chosen.get("label") or "") if chosen else "",
            "content_hash": next((r.get("content_hash") for r in rows if r.get("content_hash")), ""),
        }

    if last.get("error", "").startswith(PERMANENT_ERROR_PREFIX):
        return result("error", None, last["error"].removeprefix(PERMANENT_ERROR_PREFIX).strip())
    if cfg.inspect.enabled:
        accepted = [r for r in ok if r.get("accepted")]
        if accepted:
            return result("accepted", accepted[0])
        if len(rows) >= cfg.retry.max_attempts:
            if ok:
                best = max(ok, key=lambda r: (_num(r.get("p_available")), -r["attempt"]))
                return result("exhausted", best)
            return result("error", None, f"all {len(rows)} attempts failed; last: {last['error']}")
        return None
    if ok:
        return result("generated", ok[0])
    if len(rows) >= cfg.retry.max_attempts:
        return result("error", None, f"all {len(rows)} attempts failed; last: {last['error']}")
    return None


def next_wave_plans(states: Iterable[ItemState], cfg: GenerateConfig) -> list[tuple[CatalogItem, Any]]:
    """The next wave: every pending retry, then up to ``run.chunk_size`` items not attempted yet.

    ``states`` in catalog order. Only what the wave takes is planned: planning every waiting item
    each wave would cost O(catalog^2 / chunk) over a run (~30 s per wave, before any GPU work, at a
    million items).
    """
    retries, new = [], []
    room = cfg.run.chunk_size
    for st in states:
        if st.result is not None:
            continue
        if st.attempts:
            retries.append((st.item, plan_attempt(st.item, max(st.attempts) + 1, cfg, st.history())))
        elif len(new) < room:
            new.append((st.item, plan_attempt(st.item, 1, cfg)))
    return retries + new


def _num(x: Any) -> float:
    return float(x) if x is not None and x == x else -1.0


# ----------------------------------------------------------------------------------------------------
# Ray.


def ensure_ray(cfg: GenerateConfig) -> None:
    """Connect to the configured/ambient Ray cluster, or start a local one (:mod:`pipelines.raystart`)."""
    from pipelines.raystart import ensure_ray as connect

    connect(cfg.run.ray_address, num_cpus=cfg.run.ray_num_cpus, dashboard=cfg.run.ray_dashboard)


# ----------------------------------------------------------------------------------------------------
# A wave.


@dataclass
class WaveStats:
    wave: int
    items: int
    wall_s: float
    generate_busy_s: float
    generate_setup_s: float  # model load (+ compile) time of the wave's generation actors
    generate_pool_s: float  # actors x wall time: the pool's capacity during the wave
    inspect_busy_s: float
    stage_s: dict[str, float]
    images: int


def _work_rows(plans: list[tuple[CatalogItem, Any]], cfg: GenerateConfig) -> list[dict[str, Any]]:
    rows = []
    for item, plan in plans:
        rows.append(
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
        )
    return rows


def build_wave_dataset(
    rows: list[dict[str, Any]], cfg: GenerateConfig, out: str, inspect_stage: type | None = None
):
    """The Ray Data pipeline of one wave (lazy; executed by iterating it).

    Columns in the stream (R = canvas resolution):

    - work item (driver): ``sku_id``, ``row``, ``attempt``, ``seed``, ``prompt``, ``negative_prompt``,
      ``template``, ``color``, ``image_scale``, ``steer``, ``caption``, ``source_image``, ``error``
    - + prepare: ``product`` (R,R,4) uint8 RGBA, ``mask_image`` (R,R) uint8 (255 = regenerate),
      ``control_image`` (R,R,3) uint8, ``content_hash`` str, ``prepare_s``
    - + generate: ``image`` (R,R,3) uint8 (product pasted back), ``generate_s`` (busy seconds per row),
      ``generate_setup_s`` (the actor's model load + compile time, on its first row only); drops the mask
      and control image it consumed
    - + inspect (``rfnet.scorer.ScoreStage``): ``prob_<label>``, ``label``, ``p_available``, ``accepted``
    - write: PNGs to ``images/<sku>/<attempt>.png`` (+ ``products/<sku>.png``), then the pixel columns
      are replaced by their URIs (``image``, ``product``) and ``write_s`` is added.

    ``inspect_stage``: the scorer stage class (the contract of :mod:`pipelines.inspect`; the jobs pass
    ``rfnet.scorer.ScoreStage``), run inside :class:`pipelines.inspect.InspectStage`; required when
    ``inspect.enabled``.
    """
    import ray

    g, ins, run = cfg.generation, cfg.inspect, cfg.run
    num_blocks = max(1, math.ceil(len(rows) / run.prepare_batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=num_blocks)
    ds = ds.map_batches(
        prepare_batch,
        fn_kwargs={"cfg": cfg},
        batch_size=run.prepare_batch_size,
        batch_format="numpy",
        num_cpus=run.prepare_num_cpus,
        # A memory reservation also keeps Ray Data from fusing preparation into the generation actors
        # (it fuses a task into an actor stage with equal resource requests): the GPU never waits on
        # image decoding.
        memory=run.prepare_memory_mb * 2**20,
    )
    ds = ds.map_batches(
        GenerateStage,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=g.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=g.concurrency),
        num_gpus=g.num_gpus,
        num_cpus=g.num_cpus,
        resources=dict(g.resources),
    )
    if ins.enabled:
        ds = ds.map_batches(
            InspectStage,
            fn_constructor_kwargs={
                "scorer_stage": inspect_stage,
                "source": ins.rfnet,
                "device": ins.device,
                "dtype": ins.dtype,
                "threshold": ins.threshold,
            },
            batch_size=ins.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=ins.concurrency),
            num_gpus=ins.num_gpus,
            num_cpus=ins.num_cpus,
        )
    ds = ds.map_batches(
        write_batch,
        fn_kwargs={"cfg": cfg, "out": out},
        batch_size=run.prepare_batch_size,
        batch_format="numpy",
        num_cpus=run.write_num_cpus,
    )
    return ds


def _attempt_rows_from_batch(
    batch: pa.Table, base: dict[str, Any], cfg: GenerateConfig
) -> list[dict[str, Any]]:
    rows = batch.to_pylist()
    created = now()
    out = []
    for r in rows:
        rec = {**base, **{k: v for k, v in r.items() if k in ATTEMPT_SCHEMA.names}}
        rec["created_at"] = created
        if not cfg.inspect.enabled:
            rec["accepted"] = False
            rec["label"] = ""
        if rec.get("error") is None:
            rec["error"] = ""
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------
# The run.


@dataclass
class RunSummary:
    run_id: str
    mode: str
    out: str
    counts: dict[str, int]
    run_json: dict[str, Any]


class CatalogRun:
    """One ``generate`` or ``refresh`` run over a catalog into an output store."""

    def __init__(self, cfg: GenerateConfig, mode: str = "generate", *, inspect_stage: type | None = None):
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
        self.out = storage.normalize(cfg.out)
        self.store = OutputStore(self.out, policy=cfg.storage.policy())
        self.config_hash = cfg.config_hash()
        self.ids = model_ids(cfg)
        self.states: dict[str, ItemState] = {}
        self.waves: list[WaveStats] = []
        self.lease_owner: str | None = None
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
            if self.lease_owner:
                self.store.release_lease(self.lease_owner)

    def _run(self, t_start: float) -> RunSummary:
        cfg = self.cfg
        catalog = read_catalog(cfg.catalog)
        self.run_id, resumed = self._open_run()
        self.store.write_state(
            {
                "run_id": self.run_id,
                "mode": self.mode,
                "config_hash": self.config_hash,
                "status": "running",
                "catalog": catalog.source,
                "started_at": now().isoformat(),
            }
        )
        logger.info(
            "%s run %s (%s) into %s", self.mode, self.run_id, "resumed" if resumed else "new", self.out
        )

        # generate takes every item, but records the image identities the next refresh compares
        selection = select_changed(
            catalog, self.store, cfg, self.config_hash, process_all=self.mode == "generate"
        )
        items, skipped, removed = selection.todo, selection.skipped, selection.removed
        self.states = {it.sku_id: ItemState(it) for it in items}
        self._load_existing()
        self._write_catalog_errors(catalog)

        total = len(items) + len(catalog.errors)
        self.progress = Progress(self.run_id, self.mode, total, cfg.run.progress_interval_s)
        self.progress.item("error", len(catalog.errors))
        for st in self.states.values():
            if st.result is not None:
                self.progress.item(st.result["status"])
        self._finalize_decided(wave=0)

        if any(st.result is None for st in self.states.values()):
            ensure_ray(cfg)
            self._configure_ray_data()
            wave = max((w.wave for w in self.waves), default=0)
            while True:
                plans = self._next_wave_plans()
                if not plans:
                    break
                wave += 1
                self._run_wave(wave, plans)
        self.progress.maybe_log(force=True)

        missing = [s for s, st in self.states.items() if st.result is None]
        if missing:
            raise RuntimeError(
                f"{len(missing)} items have no result after the run (first: {missing[:5]}); rerun to resume"
            )
        update_manifest(self.store, self.states, selection, self.run_id, self.config_hash, resumed=resumed)
        attempts, results = self.store.attempts(), self.store.results()  # read once for both
        run_json = self._write_run_json(catalog, t_start, skipped, removed, resumed, attempts, results)
        from pipelines.report import write_report

        write_report(self.out, self.run_id, attempts=attempts, results=results)
        self.store.write_state(
            {
                "run_id": self.run_id,
                "mode": self.mode,
                "config_hash": self.config_hash,
                "status": "complete",
                "catalog": catalog.source,
                "finished_at": now().isoformat(),
            }
        )
        counts = run_json["counts"]
        logger.info(
            "%s run %s done: %s; see %s",
            self.mode,
            self.run_id,
            counts,
            storage.join(self.out, "report.html"),
        )
        return RunSummary(self.run_id, self.mode, self.out, counts, run_json)

    # --- state recovery ------------------------------------------------------------------------
    def _load_existing(self) -> None:
        attempts = self.store.attempts()
        if len(attempts):
            mine = attempts.filter(pa.compute.equal(attempts["run_id"], self.run_id))
            # Only what the driver keeps becomes Python objects (a resumed run can hold millions of rows).
            for r in mine.select(["sku_id", *STATE_FIELDS]).to_pylist():
                st = self.states.get(r["sku_id"])
                if st is not None:
                    st.attempts[int(r["attempt"])] = compact(r)
        results = self.store.results()
        if len(results):
            mine = results.filter(pa.compute.equal(results["run_id"], self.run_id))
            for r in mine.to_pylist():
                st = self.states.get(r["sku_id"])
                if st is not None and r["row"] == st.item.row:
                    st.result = r

    def _write_catalog_errors(self, catalog: Catalog) -> None:
        if not catalog.errors:
            return
        rows = [
            {
                "run_id": self.run_id,
                "sku_id": e.sku_id,
                "row": e.row,
                "status": "error",
                "error": e.reason,
                "attempts": 0,
                "image": "",
                "p_available": None,
                "label": "",
                "content_hash": "",
                "updated_at": now(),
            }
            for e in catalog.errors
        ]
        # A fixed name: a resumed run rewrites the same file instead of adding a second copy.
        self.store.write_part("results", f"{self.run_id}-catalog-errors", to_table(rows, RESULT_SCHEMA))

    def _part_name(self, wave: int) -> str:
        return f"{self.run_id}-w{wave:05d}-{self.session}-{self.part:04d}"

    def _finalize_decided(self, wave: int, skus: Iterable[str] | None = None) -> None:
        """Write result rows for items whose attempts decide them but that have no result yet.

        ``skus``: only these items (those with new attempt rows since the last call); ``None``: all.
        """
        rows = []
        states = self.states.values() if skus is None else (self.states[s] for s in skus)
        for st in states:
            if st.result is not None:
                continue
            decided = decide(st, self.cfg)
            if decided is not None:
                decided.update(run_id=self.run_id, updated_at=now())
                st.result = decided
                rows.append(decided)
                self.progress.item(decided["status"])
        if rows:
            self.part += 1
            self.store.write_part("results", self._part_name(wave), to_table(rows, RESULT_SCHEMA))

    # --- waves -----------------------------------------------------------------------------------
    def _next_wave_plans(self) -> list[tuple[CatalogItem, Any]]:
        return next_wave_plans(self.states.values(), self.cfg)

    def _configure_ray_data(self) -> None:
        import ray

        ctx = ray.data.DataContext.get_current()
        # Batches of decoded images are large; keep the output order free (no reordering buffers).
        ctx.execution_options.preserve_order = False

    def _run_wave(self, wave: int, plans: list[tuple[CatalogItem, Any]]) -> None:
        cfg = self.cfg
        n_retry = sum(1 for _, p in plans if p.attempt > 1)
        logger.info(
            "wave %d: %d attempts (%d new items, %d retries)", wave, len(plans), len(plans) - n_retry, n_retry
        )
        base = {"run_id": self.run_id, "config_hash": self.config_hash, **self.ids}
        rows = _work_rows(plans, cfg)
        ds = build_wave_dataset(rows, cfg, self.out, self.inspect_stage)
        t0 = time.monotonic()
        buffer: list[dict[str, Any]] = []
        last_flush = t0
        stage = defaultdict(float)
        gen_busy = ins_busy = 0.0
        images = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            recs = _attempt_rows_from_batch(batch, base, cfg)
            for rec in recs:
                st = self.states[rec["sku_id"]]
                if rec["attempt"] in st.attempts:  # a duplicate delivery (task retry): already recorded
                    continue
                st.attempts[rec["attempt"]] = compact(rec)
                buffer.append(rec)
                self._count_attempt(rec)
                for key in ("prepare_s", "generate_s", "inspect_s", "write_s"):
                    stage[key] += float(rec.get(key) or 0.0)
                if not rec["error"]:
                    images += 1
            stage["generate_setup_s"] += float(pa.compute.sum(batch["generate_setup_s"]).as_py() or 0.0)
            gen_busy = stage["generate_s"]
            ins_busy = stage["inspect_s"]
            if time.monotonic() - last_flush >= cfg.run.flush_interval_s:
                self._flush(wave, buffer)
                buffer = []
                last_flush = time.monotonic()
            self.progress.maybe_log()
        self._flush(wave, buffer)
        wall = time.monotonic() - t0
        stats = WaveStats(
            wave=wave,
            items=len(plans),
            wall_s=wall,
            generate_busy_s=gen_busy,
            generate_setup_s=stage["generate_setup_s"],
            generate_pool_s=wall * cfg.generation.concurrency,
            inspect_busy_s=ins_busy,
            stage_s=dict(stage),
            images=images,
        )
        self.waves.append(stats)
        busy = sum(w.generate_busy_s for w in self.waves) / max(
            1e-9, sum(w.generate_pool_s for w in self.waves)
        )
        self.progress.busy_fraction = busy
        logger.info(
            "wave %d done in %.1f s: %d images, generation busy %.0f%%", wave, wall, images, 100 * busy
        )

    def _count_attempt(self, rec: dict[str, Any]) -> None:
        if rec["error"]:
            self.progress.attempt("failed")
        elif not self.cfg.inspect.enabled:
            self.progress.attempt("generated")
        else:
            self.progress.attempt("accepted" if rec.get("accepted") else "rejected")

    def _flush(self, wave: int, buffer: list[dict[str, Any]]) -> None:
        if self.lease_owner:
            self.store.renew_lease(self.lease_owner, LEASE_TTL_S)
        if buffer:
            self.part += 1
            self.store.write_part("attempts", self._part_name(wave), to_table(buffer, ATTEMPT_SCHEMA))
        self._finalize_decided(wave, dict.fromkeys(rec["sku_id"] for rec in buffer))  # items with new rows

    # --- summary ---------------------------------------------------------------------------------
    def _write_run_json(
        self,
        catalog: Catalog,
        t_start: float,
        skipped,
        removed,
        resumed,
        attempts: pa.Table,
        results: pa.Table,
    ) -> dict[str, Any]:
        from pipelines.report import summarize

        summary = summarize(attempts, results, self.run_id, self.cfg.retry.max_attempts)
        waves = [asdict(w) for w in self.waves]
        gen_busy = sum(w.generate_busy_s for w in self.waves)
        pool = sum(w.generate_pool_s for w in self.waves)
        accepted = summary["counts"].get("accepted", 0) or summary["counts"].get("generated", 0)
        device_kind = "gpu" if self.cfg.generation.num_gpus > 0 else "cpu"
        gen_units = self.cfg.generation.num_gpus if device_kind == "gpu" else self.cfg.generation.num_cpus
        ins_units = (self.cfg.inspect.num_gpus if device_kind == "gpu" else self.cfg.inspect.num_cpus) * (
            self.cfg.inspect.concurrency
        )
        wall = sum(w.wall_s for w in self.waves)
        device_seconds = pool * gen_units + wall * ins_units
        run_json = {
            "run_id": self.run_id,
            "mode": self.mode,
            "resumed": resumed,
            "catalog": catalog.source,
            "out": self.out,
            "config_hash": self.config_hash,
            "config": self.cfg.to_dict(),
            "versions": versions(),
            **summary,
            "skipped_unchanged": len(skipped),
            "removed": len(removed),
            "waves": waves,
            "wall_s": time.monotonic() - t_start,
            "generation_busy_fraction": gen_busy / pool if pool else None,
            "generation_setup_s": sum(w.generate_setup_s for w in self.waves),
            f"{device_kind}_seconds_per_accepted_image": device_seconds / accepted if accepted else None,
            "device_seconds": device_seconds,
            "device_kind": device_kind,
        }
        storage.write_text(self.store.path("run.json"), json.dumps(run_json, indent=2, default=str))
        return run_json


def versions() -> dict[str, str]:
    import diffusers
    import ray
    import torch
    import transformers

    from pipelines import __version__

    return {
        "reliable_ad": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def run_catalog(
    cfg: GenerateConfig, mode: str = "generate", *, inspect_stage: type | None = None
) -> RunSummary:
    """Run ``generate`` (or ``refresh``) with ``cfg``; see :class:`CatalogRun`.

    ``inspect_stage``: the scorer stage class when ``cfg.inspect.enabled`` (the jobs pass
    ``rfnet.scorer.ScoreStage``; see :mod:`pipelines.inspect` for the contract).
    """
    return CatalogRun(cfg, mode, inspect_stage=inspect_stage).run()
