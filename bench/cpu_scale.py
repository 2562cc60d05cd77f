"""CPU benchmark: memory of a whole catalog run against the catalog's size (1k vs 10k items).

Runs :func:`pipelines.runner.run_catalog` (the production path: waves of streaming Ray Data
pipelines) on a generated catalog of ``--items`` rows with the ``tiny`` preset, made cheap so that
10,000 items finish on a 2-core CPU: **1 denoising step at 64 px** (``generation.num_inference_steps=1``,
``prepare.resolution=64``; the images are noise either way, the stream, the tables and the driver's
bookkeeping are real) and ``run.chunk_size=2048`` (the production default; the ``tiny`` preset's 256
would restart the actor pools 40 times). Inspection stays on; ``--max-attempts`` defaults to 1 (one
image per item: 10,000 images), and the driver's cost of further attempts is measured per attempt.

Memory is the resident set size of every process of the job (this process, Ray's services and all
Ray workers), sampled every second. Bounded means: the peak does not grow with the catalog, apart
from the driver's per-item bookkeeping, which is measured separately: the attempt rows the driver
keeps for every item (:class:`pipelines.runner.ItemState`), rebuilt from the run's own attempts
table under ``tracemalloc`` -> bytes per item and per attempt.

Each ``--items`` value is a separate run (its own Ray); results merge into one JSON keyed by the
item count, so the runs can be made one at a time::

    python -m bench.cpu_scale --items 1000
    python -m bench.cpu_scale --items 10000          # ~15-25 min on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    RssSampler,
    command_line,
    current_rss_mib,
    format_table,
    loadavg,
    machine,
    start_local_ray,
    write_bench_catalog,
    write_json,
)
from pipelines.config import GenerateConfig, load_config, parse_assignment

logger = logging.getLogger("bench.cpu_scale")

# What makes 10,000 items affordable on 2 CPU cores (reported with the results).
CHEAP = {
    "generation.num_inference_steps": 1,
    "prepare.resolution": 64,
    "run.chunk_size": 2048,
}


def scale_config(catalog: str, out: str, max_attempts: int, assignments: list[str]) -> GenerateConfig:
    overrides: dict[str, Any] = {
        "catalog": catalog,
        "out": out,
        "retry.max_attempts": max_attempts,
        "generation.torch_threads": 1,
        **CHEAP,
    }
    overrides.update(dict(parse_assignment(a) for a in assignments))
    return load_config(GenerateConfig, preset="tiny", overrides=overrides)


def driver_state_cost(cfg: GenerateConfig, out: str, run_id: str) -> dict[str, Any]:
    """Bytes the driver holds per item and per attempt, rebuilt from the run's attempts table.

    The runner keeps, for every catalog item, an :class:`ItemState` with the item and one dict per
    attempt (the fields of the attempt row that deciding and planning read, ``runner.compact``);
    they live until the run ends. This rebuilds that structure the way a resumed run does
    (``CatalogRun._load_existing``) and measures it with ``tracemalloc``.
    """
    from pipelines.catalog import read_catalog
    from pipelines.runner import ItemState, compact
    from pipelines.store import OutputStore

    table = OutputStore(out).attempts()
    rows_table = table.filter(table["run_id"].to_numpy(zero_copy_only=False) == run_id)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    catalog = read_catalog(cfg.catalog)
    after_catalog = tracemalloc.get_traced_memory()[0]
    states = {item.sku_id: ItemState(item) for item in catalog.items}
    after_items = tracemalloc.get_traced_memory()[0]
    for r in rows_table.to_pylist():
        states[r["sku_id"]].attempts[int(r["attempt"])] = compact(r)
    after_attempts = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n_items, n_attempts = len(states), rows_table.num_rows
    per_item = (after_items - before) / max(1, n_items)
    per_attempt = (after_attempts - after_items) / max(1, n_attempts)
    cost = {
        "items": n_items,
        "attempts": n_attempts,
        "catalog_bytes": after_catalog - before,
        "item_state_bytes": after_items - after_catalog,
        "attempt_rows_bytes": after_attempts - after_items,
        "bytes_per_item": round(per_item),  # catalog row + ItemState, without attempts
        "bytes_per_attempt": round(per_attempt),
        "bytes_per_item_with_attempts": round(per_item + per_attempt * n_attempts / max(1, n_items)),
        "total_mib": round((after_attempts - before) / 2**20, 2),
    }
    del states
    return cost


def first_wave_planning(cfg: GenerateConfig) -> dict[str, Any]:
    """Driver time to plan the first wave of a fresh run over the catalog (no attempt yet).

    Waves run one after another, so planning time is time the whole cluster waits; it must not
    grow with the catalog (only the wave's ``run.chunk_size`` new items are planned).
    """
    from pipelines.catalog import read_catalog
    from pipelines.runner import ItemState, next_wave_plans

    states = [ItemState(item) for item in read_catalog(cfg.catalog).items]
    t0 = time.perf_counter()
    plans = next_wave_plans(states, cfg)
    return {"items": len(states), "planned": len(plans), "ms": round(1e3 * (time.perf_counter() - t0), 1)}


def run_one(items: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    catalog = write_bench_catalog(work / f"catalog-{items}", items, args.distinct)
    out = work / f"out-{items}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = scale_config(str(catalog), str(out), args.max_attempts, args.assignments)
    import ray

    load_before = loadavg()
    with RssSampler() as rss:
        driver_start = current_rss_mib()
        init_s = start_local_ray(cfg.run.ray_num_cpus)
        try:
            t0 = time.perf_counter()
            summary = run_catalog(cfg, inspect_stage=ScoreStage)
            wall = time.perf_counter() - t0
            driver_end = current_rss_mib()
        finally:
            ray.shutdown()
    run = summary.run_json
    images = sum(w["images"] for w in run["waves"])
    series = rss.series
    stride = max(1, len(series) // 400)  # keep the JSON small: at most ~400 points
    entry = {
        "items": items,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "config": {
            "max_attempts": cfg.retry.max_attempts,
            "num_inference_steps": cfg.generation.num_inference_steps,
            "resolution": cfg.prepare.resolution,
            "chunk_size": cfg.run.chunk_size,
            "generation_batch_size": cfg.generation.batch_size,
            "inspect_batch_size": cfg.inspect.batch_size,
            "overrides": {**CHEAP, **dict(parse_assignment(a) for a in args.assignments)},
        },
        "counts": summary.counts,
        "images": images,
        "attempts_total": run["attempts_total"],
        "mean_attempts_per_item": round(run["attempts_total"] / max(1, run["items"]), 3),
        "waves": len(run["waves"]),
        "wall_s": round(wall, 1),
        "ray_init_s": round(init_s, 1),
        "images_per_s": round(images / wall, 3),
        "generation_busy_fraction": run.get("generation_busy_fraction"),
        "driver_rss_mib_start": round(driver_start, 1),
        "driver_rss_mib_end": round(driver_end, 1),
        **rss.summary(),
        "rss_series_s_mib": series[::stride],
        "driver_state": driver_state_cost(cfg, str(out), summary.run_id),
        "first_wave_planning": first_wave_planning(cfg),
    }
    return entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_scale", description=__doc__.splitlines()[0])
    p.add_argument(
        "--items", type=int, action="append", help="catalog size (repeatable); default 1000 and 10000"
    )
    p.add_argument("--distinct", type=int, default=48, help="distinct drawn products the rows cycle through")
    p.add_argument("--max-attempts", type=int, default=1, help="retry.max_attempts (default 1)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--work-dir", default=None, help="catalogs and outputs (default: a temporary directory)")
    p.add_argument("--out", default=str(RESULTS_DIR / "cpu_scale.json"), help="result JSON (merged by items)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sizes = args.items or [1000, 10000]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-scale-"))
    path = Path(args.out)
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    result.update(benchmark="cpu_scale", machine=machine())
    runs: dict[str, Any] = result.setdefault("runs", {})
    try:
        for n in sizes:
            entry = run_one(n, args, work)
            entry["command"] = command_line("bench.cpu_scale")
            runs[str(n)] = entry
            write_json(path, result)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    ordered = sorted(runs.values(), key=lambda e: e["items"])
    print(
        format_table(
            [
                "items",
                "images",
                "waves",
                "wall s",
                "img/s",
                "peak RSS MiB",
                "driver MiB",
                "driver B/item",
                "wave plan ms",
            ],
            [
                [
                    e["items"],
                    e["images"],
                    e["waves"],
                    e["wall_s"],
                    e["images_per_s"],
                    e["peak_rss_mib"],
                    f"{e['driver_rss_mib_start']:.0f}->{e['driver_rss_mib_end']:.0f}",
                    e["driver_state"]["bytes_per_item_with_attempts"],
                    e.get("first_wave_planning", {}).get("ms", "-"),
                ]
                for e in ordered
            ],
        )
    )
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
