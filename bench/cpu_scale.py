"""CPU benchmark: memory of a whole catalog run against the catalog's size, the driver's above all.

Runs :func:`pipelines.runner.run_catalog` (the production path: the catalog streamed through waves
of Ray Data pipelines onto long-lived stage workers) on a generated catalog of ``--items`` rows, with
one of two sets of model stages:

- ``--stages tiny``: the ``tiny`` preset's random models made cheap (**1 denoising step at 64 px**:
  the images are noise either way; the stream, the tables and the driver are real), inspection by
  the tiny RFNet, ``--max-attempts`` 1 by default;
- ``--stages stand-in``: :mod:`bench.stand_ins`, a generation stage that returns the prepared canvas
  and a scorer that accepts a hash-drawn 56.4% of attempts (the paper's p) with a defect label on
  the rest, at 64 px, ``--max-attempts`` 3 by default: the stream, the retries and the driver at
  the scale of a nightly catalog; ~60 attempts/s on the 2-core machine (preparation and the writes
  are real), so 10^5 items take ~45 minutes;
- ``--stages driver-only``: the same verdicts, but no Ray: the driver's waves run against in-process
  stand-ins that return the rows the pipeline would (no image is prepared or written), so the driver
  alone is measured at 10^6 items in minutes. Everything the driver does (catalog stream, planning,
  deciding, flushing the tables, summary, report, manifest) is real; Ray Data's own driver-side state
  is not in it (the ``stand-in`` runs measure that).

Memory is the resident set size of every process of the job (this process, Ray's services and all
Ray workers), sampled every second, with the driver's (this process) reported apart: bounded means
the driver's peak does not grow with the catalog. ``items_in_flight_peak`` (from ``run.json``) is
the most items the driver held at once.

Each ``--items`` value is a separate run (its own Ray); results merge into one JSON keyed by the
item count, so the runs can be made one at a time::

    python -m bench.cpu_scale --items 1000 --items 10000                        # cpu_scale.json
    python -m bench.cpu_scale --stages stand-in --items 10000 --items 100000     # cpu_scale_driver.json
    python -m bench.cpu_scale --stages driver-only --items 100000 --items 1000000 # cpu_scale_driver_only.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from contextlib import nullcontext
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
from bench.stand_ins import PAPER_ACCEPT_RATE
from pipelines.config import GenerateConfig, load_config, parse_assignment

logger = logging.getLogger("bench.cpu_scale")

# What makes large catalogs affordable on 2 CPU cores (reported with the results).
CHEAP = {
    "generation.num_inference_steps": 1,
    "prepare.resolution": 64,
    "run.chunk_size": 2048,
}
STAND_IN = {
    "prepare.resolution": 64,
    "run.chunk_size": 4096,  # jobs/configs/cluster_generate.yaml
    "run.prepare_batch_size": 64,
    "generation.batch_size": 64,
    "inspect.batch_size": 64,
    "inspect.rfnet": "stand-in",
    "inspect.threshold": round(1 - PAPER_ACCEPT_RATE, 3),  # the stand-in scorer accepts 56.4%
    "run.ray_num_cpus": 8,  # logical CPUs: writes wait on the disk, more of them overlap
    "run.progress_interval_s": 60,
}
DEFAULT_OUT = {
    "tiny": "cpu_scale.json",
    "stand-in": "cpu_scale_driver.json",
    "driver-only": "cpu_scale_driver_only.json",
}


def scale_config(
    catalog: str, out: str, max_attempts: int, assignments: list[str], stages: str = "tiny"
) -> GenerateConfig:
    overrides: dict[str, Any] = {
        "catalog": catalog,
        "out": out,
        "retry.max_attempts": max_attempts,
        "generation.torch_threads": 1,
        **(CHEAP if stages == "tiny" else STAND_IN),
    }
    overrides.update(dict(parse_assignment(a) for a in assignments))
    return load_config(GenerateConfig, preset="tiny", overrides=overrides)


def run_one(items: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from pipelines.runner import run_catalog

    if args.stages == "tiny":
        from rfnet.scorer import ScoreStage

        stages: dict[str, Any] = {"inspect_stage": ScoreStage}
    else:
        from bench.stand_ins import CanvasStage, HashScorer, driver_only

        stages = {"inspect_stage": HashScorer, "generate_stage": CanvasStage}
    in_process = args.stages == "driver-only"
    catalog = write_bench_catalog(work / f"catalog-{items}", items, args.distinct)
    out = work / f"out-{items}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = scale_config(str(catalog), str(out), args.max_attempts, args.assignments, args.stages)
    import ray

    load_before = loadavg()
    with RssSampler() as rss:
        driver_start = current_rss_mib()
        init_s = 0.0 if in_process else start_local_ray(cfg.run.ray_num_cpus)
        try:
            t0 = time.perf_counter()
            with driver_only() if in_process else nullcontext():
                summary = run_catalog(cfg, **stages)
            wall = time.perf_counter() - t0
            driver_end = current_rss_mib()
        finally:
            ray.shutdown()
    run = summary.run_json
    series = rss.series
    stride = max(1, len(series) // 400)  # keep the JSON small: at most ~400 points
    return {
        "items": items,
        "stages": args.stages,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "config": {
            "max_attempts": cfg.retry.max_attempts,
            "num_inference_steps": cfg.generation.num_inference_steps,
            "resolution": cfg.prepare.resolution,
            "chunk_size": cfg.run.chunk_size,
            "generation_batch_size": cfg.generation.batch_size,
            "inspect_batch_size": cfg.inspect.batch_size,
            "overrides": {
                **(CHEAP if args.stages == "tiny" else STAND_IN),
                **dict(parse_assignment(a) for a in args.assignments),
            },
        },
        "counts": summary.counts,
        "images": run["images"],
        "attempts_total": run["attempts_total"],
        "mean_attempts_per_item": round(run["attempts_total"] / max(1, run["items"]), 3),
        "waves": len(run["waves"]),
        "wall_s": round(wall, 1),
        "ray_init_s": round(init_s, 1),
        "images_per_s": round(run["images"] / wall, 3),
        # In-process stand-ins have no workers to be busy or to start.
        "generation_busy_fraction": None if in_process else run.get("generation_busy_fraction"),
        "generation_actor_starts": None if in_process else run.get("generation_actor_starts"),
        "items_in_flight_peak": run.get("items_in_flight_peak"),
        "driver_rss_mib_start": round(driver_start, 1),
        "driver_rss_mib_end": round(driver_end, 1),
        "driver_rss_mib_peak": round(rss.peak_by_role.get("driver", 0) / 2**20, 1),
        **rss.summary(),
        "rss_series_s_mib": series[::stride],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_scale", description=__doc__.splitlines()[0])
    p.add_argument(
        "--items", type=int, action="append", help="catalog size (repeatable); default 1000 and 10000"
    )
    p.add_argument(
        "--stages",
        choices=["tiny", "stand-in", "driver-only"],
        default="tiny",
        help="model stages (see module)",
    )
    p.add_argument("--distinct", type=int, default=48, help="distinct drawn products the rows cycle through")
    p.add_argument("--max-attempts", type=int, help="retry.max_attempts (default: 1 tiny, 3 stand-in)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--work-dir", default=None, help="catalogs and outputs (default: a temporary directory)")
    p.add_argument("--out", default=None, help="result JSON, merged by items (default: see module)")
    args = p.parse_args(argv)
    if args.max_attempts is None:
        args.max_attempts = 1 if args.stages == "tiny" else 3
    args.out = args.out or str(RESULTS_DIR / DEFAULT_OUT[args.stages])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("reliable_ad.progress").setLevel(logging.INFO)
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
            shutil.rmtree(work / f"out-{n}", ignore_errors=True)
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
                "busy",
                "starts",
                "peak RSS MiB",
                "driver MiB (peak)",
                "in flight",
            ],
            [
                [
                    e["items"],
                    e["images"],
                    e["waves"],
                    e["wall_s"],
                    e["images_per_s"],
                    e.get("generation_busy_fraction"),
                    e.get("generation_actor_starts", "-"),
                    e["peak_rss_mib"],
                    f"{e['driver_rss_mib_start']:.0f}->{e['driver_rss_mib_end']:.0f} "
                    f"({e.get('driver_rss_mib_peak', '-')})",
                    e.get("items_in_flight_peak", "-"),
                ]
                for e in ordered
            ],
        )
    )
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
