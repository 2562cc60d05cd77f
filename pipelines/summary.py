"""Run summaries: the numbers of ``run.json``, computed from the tables alone, and the run history.

:func:`summarize` derives every yield number from ``attempts/`` and ``results/`` of one run, a part
file at a time, so ``reliable-ad report --out DIR`` can rebuild them at any time (e.g. after a resumed
run) and a run of millions of items is summarised in bounded memory. Numbers:

- ``counts``: results per status; ``items``.
- ``available_rate``: accepted / (accepted + exhausted) (inspected items only).
- ``available_rate_by_attempt``: ``{k: share of inspected items accepted within k attempts}``;
  ``available_rate_first_attempt`` is ``k = 1``.
- ``mean_attempts_per_accepted``, ``share_exhausted``.
- ``stage_throughput``: images per second of busy time per stage (prepare, generate, inspect, write),
  i.e. what one worker of that stage sustains.
- ``steering``: for retries, the acceptance rate per steering action (``steer`` column).

:func:`write_run_json` adds what the driver measured (waves, the long-lived pools: starts, busy
fraction, device-seconds) and writes ``run.json`` and the run's own copy ``runs/<run_id>/run.json``;
:func:`load_history` reads those copies back for the report's history.
"""

from __future__ import annotations

import json
import logging
import platform
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, now

logger = logging.getLogger(__name__)

HISTORY_RUNS = 100  # runs the report reads back for its history


def _for_run(table: pa.Table, run_id: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    """The rows of ``run_id`` (only ``columns``, when given: tables can hold millions of rows)."""
    if columns is not None:
        table = table.select(list(columns))
    return table.filter(pc.equal(table["run_id"], run_id)) if len(table) else table


STAGES = ("prepare", "generate", "inspect", "write")
SUMMARY_ATTEMPT_COLUMNS = (
    "run_id",
    "attempt",
    "error",
    "accepted",
    "steer",
    "label",
    *(f"{s}_s" for s in STAGES),
)


def _counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Occurrences of each non-null, non-empty string."""
    out = {}
    for entry in pc.value_counts(values).to_pylist():
        if entry["values"]:
            out[entry["values"]] = int(entry["counts"])
    return out


def _ok(mask) -> np.ndarray:
    """A boolean column as numpy, null -> False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parts(tables: pa.Table | Iterable[pa.Table]) -> Iterable[pa.Table]:
    return [tables] if isinstance(tables, pa.Table) else tables


class Summary:
    """The yield numbers of one run, accumulated a part file at a time (see the module docstring)."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.accepted_attempts: Counter[int] = Counter()  # attempts an accepted item took -> items
        self.items = self.max_k = self.attempts = self.failed = 0
        self.stage_busy = dict.fromkeys(STAGES, 0.0)
        self.stage_rows = dict.fromkeys(STAGES, 0)
        self.steer: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # action -> [retries, accepted]
        self.labels: Counter[str] = Counter()

    def add_results(self, res: pa.Table) -> None:
        self.items += len(res)
        self.statuses.update(_counts(res["status"]))
        attempts = pc.fill_null(res["attempts"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(attempts):
            self.max_k = max(self.max_k, int(attempts.max()))
        accepted = attempts[_ok(pc.equal(res["status"], "accepted"))]
        values, counts = np.unique(accepted, return_counts=True)
        self.accepted_attempts.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))

    def add_attempts(self, att: pa.Table) -> None:
        self.attempts += len(att)
        for stage in STAGES:
            seconds = pc.fill_null(att[f"{stage}_s"], 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            self.stage_busy[stage] += float(seconds.sum())
            self.stage_rows[stage] += int((seconds > 0).sum())
        failed = _ok(pc.not_equal(pc.fill_null(att["error"], ""), ""))
        self.failed += int(failed.sum())
        retried = (pc.fill_null(att["attempt"], 0).to_numpy(zero_copy_only=False) > 1) & ~failed
        steer = pc.fill_null(att["steer"], "")
        steer = pc.if_else(pc.equal(steer, ""), "reseed", steer)  # no steering: a plain reseed
        accepted = pa.array(_ok(att["accepted"]).astype(np.int64))
        retries = pa.table({"steer": steer, "accepted": accepted}).filter(pa.array(retried))
        for g in (
            retries.group_by("steer").aggregate([("accepted", "count"), ("accepted", "sum")]).to_pylist()
        ):
            self.steer[g["steer"]][0] += g["accepted_count"]
            self.steer[g["steer"]][1] += g["accepted_sum"]
        self.labels.update(_counts(att["label"]))

    def numbers(self, max_attempts: int | None = None) -> dict[str, Any]:
        counts = self.statuses
        inspected = counts["accepted"] + counts["exhausted"]
        max_k = max(self.max_k, max_attempts or 0)
        by_attempt = {}
        if inspected:
            for k in range(1, max_k + 1):
                by_attempt[str(k)] = sum(n for a, n in self.accepted_attempts.items() if a <= k) / inspected
        n_accepted = sum(self.accepted_attempts.values())
        total = sum(a * n for a, n in self.accepted_attempts.items())
        return {
            "items": self.items,
            "counts": {s: counts.get(s, 0) for s in ("accepted", "exhausted", "generated", "error")},
            "attempts_total": self.attempts,
            "attempts_failed": self.failed,
            "available_rate": (counts["accepted"] / inspected) if inspected else None,
            "available_rate_first_attempt": by_attempt.get("1"),
            "available_rate_by_attempt": by_attempt,
            "mean_attempts_per_accepted": total / n_accepted if n_accepted else None,
            "share_exhausted": (counts["exhausted"] / self.items) if self.items else None,
            "stage_throughput": {
                s: self.stage_rows[s] / self.stage_busy[s] for s in STAGES if self.stage_busy[s] > 0
            },
            "steering": {
                k: {"attempts": n, "accept_rate": acc / n} for k, (n, acc) in sorted(self.steer.items())
            },
            "predicted_labels": dict(self.labels),
        }


def summarize(
    attempts: pa.Table | Iterable[pa.Table],
    results: pa.Table | Iterable[pa.Table],
    run_id: str,
    max_attempts: int | None = None,
) -> dict[str, Any]:
    """The run's yield numbers (see the module docstring), aggregated column-wise with pyarrow, one
    table (or part file) at a time: a run of a million items is summarised without holding its
    tables or a Python object per row."""
    summary = Summary()
    for part in _parts(attempts):
        summary.add_attempts(_for_run(part, run_id, SUMMARY_ATTEMPT_COLUMNS))
    for part in _parts(results):
        summary.add_results(_for_run(part, run_id, ("run_id", "status", "attempts")))
    return summary.numbers(max_attempts)


def summarize_store(store: OutputStore, run_id: str, max_attempts: int | None = None) -> dict[str, Any]:
    """:func:`summarize` over the store's part files."""
    return summarize(
        store.iter_parts("attempts", ATTEMPT_SCHEMA, SUMMARY_ATTEMPT_COLUMNS, run_id=run_id),
        store.iter_parts("results", RESULT_SCHEMA, ("run_id", "status", "attempts"), run_id=run_id),
        run_id,
        max_attempts,
    )


# ----------------------------------------------------------------------------------------------------
# run.json and the run history.


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


def derived(run: dict[str, Any]) -> dict[str, Any]:
    """Per-run figures the history plots: images, throughput, attempts per accepted image."""
    images = sum(w.get("images", 0) for w in run.get("waves", []))
    counts = run.get("counts", {})
    accepted = counts.get("accepted", 0) or counts.get("generated", 0)
    wall = run.get("wall_s") or 0.0
    return {
        "images": images,
        "images_per_s": images / wall if wall else None,
        "attempts_per_accepted_image": run.get("attempts_total", 0) / accepted if accepted else None,
    }


def write_run_json(
    store: OutputStore,
    cfg,
    *,
    run_id: str,
    mode: str,
    catalog: str,
    config_hash: str,
    resumed: bool,
    wall_s: float,
    waves: list,
    pools: dict[str, dict[str, float]],
    skipped: int,
    removed: int,
    items_in_flight_peak: int = 0,
) -> dict[str, Any]:
    """Summarise the run from the store and write ``run.json``, its copy ``runs/<run_id>/run.json``
    and the report (:func:`pipelines.report.write_report`). ``pools``: the final
    :meth:`pipelines.pool.StagePool.stats` by pool name (empty when the run had no work)."""
    from pipelines.report import write_report

    summary = summarize_store(store, run_id, cfg.retry.max_attempts)
    gen, ins = pools.get("generation", {}), pools.get("inspection", {})
    gen_busy = sum(w.generate_busy_s for w in waves)
    capacity = gen.get("capacity_s", 0.0)
    accepted = summary["counts"].get("accepted", 0) or summary["counts"].get("generated", 0)
    device_kind = "gpu" if cfg.generation.num_gpus > 0 else "cpu"
    gen_units = cfg.generation.num_gpus if device_kind == "gpu" else cfg.generation.num_cpus
    ins_units = cfg.inspect.num_gpus if device_kind == "gpu" else cfg.inspect.num_cpus
    device_seconds = capacity * gen_units + ins.get("capacity_s", 0.0) * ins_units
    run = {
        "run_id": run_id,
        "mode": mode,
        "resumed": resumed,
        "catalog": catalog,
        "out": store.root,
        "config_hash": config_hash,
        "config": cfg.to_dict(),
        "versions": versions(),
        **summary,
        "skipped_unchanged": skipped,
        "removed": removed,
        "waves": [asdict(w) for w in waves],
        "items_in_flight_peak": items_in_flight_peak,
        "wall_s": wall_s,
        "finished_at": now().isoformat(),
        "generation_actor_starts": int(gen.get("starts", 0)),
        "inspection_actor_starts": int(ins.get("starts", 0)),
        "generation_setup_s": gen.get("setup_s", 0.0),
        "generation_pool_s": capacity,
        "generation_busy_fraction": gen_busy / capacity if capacity else None,
        f"{device_kind}_seconds_per_accepted_image": device_seconds / accepted if accepted else None,
        "device_seconds": device_seconds,
        "device_kind": device_kind,
    }
    run.update(derived(run))
    save_run_json(store, run)
    write_report(store.root, run_id, run=run)
    return run


def save_run_json(store: OutputStore, run: dict[str, Any]) -> None:
    """``run.json`` (the latest run) and ``runs/<run_id>/run.json``."""
    text = json.dumps(run, indent=2, default=str)
    storage.write_text(store.path("runs", run["run_id"], "run.json"), text, policy=store.policy)
    storage.write_text(store.path("run.json"), text, policy=store.policy)


def load_history(store: OutputStore, limit: int = HISTORY_RUNS) -> list[dict[str, Any]]:
    """The last ``limit`` runs kept under ``runs/`` (run ids start with their UTC start time, so name
    order is time order): ``run_id``, ``mode``, ``finished_at``, ``items``, ``available_rate`` and the
    :func:`derived` figures."""
    history = []
    for run_id in storage.list_dirs(store.path("runs"))[-limit:]:
        uri = store.path("runs", run_id, "run.json")
        try:
            run = json.loads(storage.read_bytes(uri, policy=store.policy))
        except (OSError, ValueError) as exc:
            logger.warning("history: skipping %s (%s)", uri, exc)
            continue
        history.append(
            {
                "run_id": run.get("run_id", run_id),
                "mode": run.get("mode"),
                "finished_at": run.get("finished_at"),
                "items": run.get("items"),
                "available_rate": run.get("available_rate"),
                **derived(run),
            }
        )
    return history
