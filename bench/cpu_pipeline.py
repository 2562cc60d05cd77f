"""CPU benchmark: the full Ray pipeline against a direct in-process loop over the same stages.

Both paths run the ``tiny`` preset on the same catalog (``--items`` rows over a pool of drawn
products), with inspection on and ``retry.max_attempts=1``, so each makes exactly one image per
item and does the same work:

- **direct**: one process, ``prepare_batch -> GenerateStage -> InspectStage -> write_batch`` as
  Python generators with the batch sizes of the config (``run.prepare_batch_size``,
  ``generation.batch_size``, ``inspect.batch_size``), then the attempts table as Parquet; timed
  from reading the catalog to the last write, model construction included.
- **ray**: :func:`pipelines.runner.run_catalog` on a fresh local Ray (the production path: waves of
  Ray Data pipelines, results/attempts tables, ``run.json``, ``report.html``); timed the same way,
  actor start-up and model loading included. Starting the Ray cluster itself is timed apart
  (``ray_init_s``): on a cluster it is paid once, not per run; ``ratio_with_ray_start`` adds it.

Both use the same intra-op thread count (``--torch-threads``, i.e. ``generation.torch_threads``).
Each path runs ``--repeats`` times in ABBA order (direct, ray, ray, direct, ...), so a load that
drifts during the benchmark hits both alike; throughput is total images over total wall time. Peak
RSS and CPU time are sampled every second over this process and all its descendants (the Ray
workers and Ray's own services included): CPU-seconds per image are the load-independent view.
A cProfile pass over ``--profile-items`` rows of the direct loop comes first (not timed).

    python -m bench.cpu_pipeline                       # writes bench/results/cpu.json
    python -m bench.cpu_pipeline --items 64 --repeats 1 --out /tmp/cpu.json --set generation.num_inference_steps=2
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.common import (
    RESULTS_DIR,
    RssSampler,
    command_line,
    format_table,
    loadavg,
    machine,
    start_local_ray,
    write_bench_catalog,
    write_json,
)
from pipelines import storage
from pipelines.config import GenerateConfig, load_config, parse_assignment

logger = logging.getLogger("bench.cpu_pipeline")

Batch = dict[str, np.ndarray]

TARGET_RATIO = 0.85  # the Ray path must reach this fraction of the direct loop's throughput


# ----------------------------------------------------------------------------------------------------
# Config.


def bench_config(
    catalog: str, out: str, torch_threads: int, assignments: Iterable[str] = ()
) -> GenerateConfig:
    """The ``tiny`` preset with one attempt per item and a fixed thread count, plus ``--set`` values."""
    overrides: dict[str, Any] = {
        "catalog": catalog,
        "out": out,
        "retry.max_attempts": 1,
        "generation.torch_threads": torch_threads,
    }
    overrides.update(dict(parse_assignment(a) for a in assignments))
    return load_config(GenerateConfig, preset="tiny", overrides=overrides)


# ----------------------------------------------------------------------------------------------------
# The direct loop.


def to_batch(rows: list[dict[str, Any]]) -> Batch:
    """Work rows (dicts of scalars) -> a numpy batch as Ray Data would hand it to a stage."""
    batch: Batch = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        batch[key] = np.array(values, dtype=object) if isinstance(values[0], str) else np.array(values)
    return batch


def concat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Re-cut a stream of batches into batches of ``size`` rows (the last may be smaller)."""
    pending: list[Batch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch["sku_id"])
        while count >= size:
            whole = concat(pending)
            yield {k: v[:size] for k, v in whole.items()}
            rest = {k: v[size:] for k, v in whole.items()}
            count -= size
            pending = [rest] if count else []
    if count:
        yield concat(pending)


def timed(name: str, fn: Callable[[Batch], Batch], batches: Iterable[Batch], seconds: dict[str, float]):
    for batch in batches:
        t0 = time.perf_counter()
        out = fn(batch)
        seconds[name] += time.perf_counter() - t0
        yield out


def run_direct(cfg: GenerateConfig, limit: int | None = None) -> dict[str, Any]:
    """Run every catalog item (the first ``limit``) once through the stages in this process."""
    from pipelines.attempts import plan_attempt
    from pipelines.catalog import read_catalog
    from pipelines.generate import GenerateStage, model_ids
    from pipelines.inspect import InspectStage
    from pipelines.prepare import prepare_batch
    from pipelines.store import ATTEMPT_SCHEMA, to_table
    from pipelines.wave import attempt_rows, work_rows
    from pipelines.writer import write_batch
    from rfnet.scorer import ScoreStage

    seconds: dict[str, float] = defaultdict(float)
    t_start = time.perf_counter()
    catalog = read_catalog(cfg.catalog)
    items = catalog.items[:limit] if limit else catalog.items
    plans = [(item, plan_attempt(item, 1, cfg, [])) for item in items]
    rows = work_rows(plans)

    t0 = time.perf_counter()
    generate = GenerateStage(cfg)
    seconds["generate_init"] = time.perf_counter() - t0
    ins = cfg.inspect
    inspect = None
    if ins.enabled:
        t0 = time.perf_counter()
        inspect = InspectStage(
            ScoreStage, source=ins.rfnet, device=ins.device, dtype=ins.dtype, threshold=ins.threshold
        )
        seconds["inspect_init"] = time.perf_counter() - t0

    size = cfg.run.prepare_batch_size
    stream: Iterable[Batch] = (to_batch(rows[i : i + size]) for i in range(0, len(rows), size))
    stream = timed("prepare", lambda b: prepare_batch(b, cfg), stream, seconds)
    stream = timed("generate", generate, rebatch(stream, cfg.generation.batch_size), seconds)
    if inspect is not None:
        stream = timed("inspect", inspect, rebatch(stream, ins.batch_size), seconds)
    stream = timed("write", lambda b: write_batch(b, cfg, cfg.out), rebatch(stream, size), seconds)

    base = {"run_id": "direct", "config_hash": cfg.config_hash(), **model_ids(cfg)}
    attempts: list[dict[str, Any]] = []
    for batch in stream:
        t0 = time.perf_counter()
        table = pa.table({k: v for k, v in batch.items() if k in ATTEMPT_SCHEMA.names and v.ndim == 1})
        attempts += attempt_rows(table, base, cfg)
        seconds["driver"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    storage.write_parquet(storage.join(cfg.out, "attempts.parquet"), to_table(attempts, ATTEMPT_SCHEMA))
    seconds["driver"] += time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    images = sum(1 for a in attempts if not a["error"])
    return {
        "items": len(items),
        "images": images,
        "errors": len(attempts) - images,
        "wall_s": round(wall, 2),
        "images_per_s": images / wall,
        "stage_s": {k: round(v, 2) for k, v in seconds.items()},
    }


# Where generation time goes: (file suffix, function) -> cumulative seconds under cProfile.
PROFILE_COMPONENTS = {
    "unet": ("unets/unet_2d_condition.py", "forward"),
    "controlnet": ("controlnets/controlnet.py", "forward"),
    "vae_encode": ("autoencoders/autoencoder_kl.py", "encode"),
    "vae_decode": ("autoencoders/autoencoder_kl.py", "decode"),
    "text_encoder": ("controlnet/pipeline_controlnet_inpaint.py", "encode_prompt"),
    "scheduler_step": ("schedulers/scheduling_ddim.py", "step"),
    "paste_back": ("pipelines/prepare.py", "paste_back"),
}


def profile_direct(cfg: GenerateConfig, items: int) -> dict[str, Any]:
    """The direct loop on ``items`` rows under cProfile: stage totals and generation's components.

    Profiling slows Python-heavy code more than kernels, so shares are indicative; the timed runs
    are made without it.
    """
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run = run_direct(cfg, limit=items)
    profiler.disable()
    stats = pstats.Stats(
        profiler
    ).stats  # (file, line, function) -> (calls, ncalls, tottime, cumtime, callers)

    def cumulative(suffix: str, function: str) -> float:
        return max(
            (v[3] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn == function), default=0.0
        )

    generate = cumulative("pipelines/generate.py", "__call__")
    parts = {name: round(cumulative(*where), 3) for name, where in PROFILE_COMPONENTS.items()}
    parts["other"] = round(max(0.0, generate - sum(parts.values())), 3)
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    return {
        "items": run["images"],
        "stage_s": run["stage_s"],
        "generate_s": round(generate, 3),
        "generate_components_s": parts,
        "generate_components_share": {k: round(v / generate, 3) for k, v in parts.items()}
        if generate
        else {},
        "top_tottime": [
            {"function": f"{Path(f).name}:{line}:{fn}", "tottime_s": round(v[2], 3), "calls": v[1]}
            for (f, line, fn), v in top
        ],
    }


# ----------------------------------------------------------------------------------------------------
# The Ray path.


def run_ray(cfg: GenerateConfig) -> dict[str, Any]:
    """``run_catalog`` on an already started Ray; return counts, timings and the run's own stats."""
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    t0 = time.perf_counter()
    summary = run_catalog(cfg, inspect_stage=ScoreStage)
    wall = time.perf_counter() - t0
    run = summary.run_json
    images = sum(w["images"] for w in run["waves"])
    stage: dict[str, float] = defaultdict(float)
    for w in run["waves"]:
        for k, v in w["stage_s"].items():
            stage[k.removesuffix("_s")] += v
    return {
        "items": sum(summary.counts.values()),
        "images": images,
        "counts": summary.counts,
        "wall_s": round(wall, 2),
        "images_per_s": images / wall,
        "waves": len(run["waves"]),
        "waves_wall_s": round(sum(w["wall_s"] for w in run["waves"]), 2),
        "generation_busy_fraction": run.get("generation_busy_fraction"),
        # Summed per-row busy time of each stage inside the workers (they overlap in wall time).
        "stage_s": {k: round(v, 2) for k, v in stage.items()},
    }


# ----------------------------------------------------------------------------------------------------
# Main.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_pipeline", description=__doc__.splitlines()[0])
    p.add_argument(
        "--items", type=int, default=240, help="catalog rows (one image each) per run; default 240"
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="runs of each path, in ABBA order (default 2: 480 images each)"
    )
    p.add_argument("--distinct", type=int, default=48, help="distinct drawn products the rows cycle through")
    p.add_argument(
        "--torch-threads", type=int, default=1, help="intra-op threads of the generation stage, both paths"
    )
    p.add_argument(
        "--ray-num-cpus",
        type=int,
        default=None,
        help="logical CPUs of the local Ray (default: run.ray_num_cpus)",
    )
    p.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    p.add_argument(
        "--order", choices=["direct-first", "ray-first"], default="direct-first", help="path of the first run"
    )
    p.add_argument(
        "--profile-items", type=int, default=32, help="rows of the cProfile pass before timing (0: none)"
    )
    p.add_argument("--work-dir", default=None, help="catalog and outputs (default: a temporary directory)")
    p.add_argument("--out", default=str(RESULTS_DIR / "cpu.json"), help="result JSON")
    return p.parse_args(argv)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the repeats of one path: throughput is total images over total wall time."""
    images = sum(r["images"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    stage: dict[str, float] = defaultdict(float)
    roles: dict[str, float] = {}
    cpu_roles: dict[str, float] = defaultdict(float)
    for r in runs:
        for k, v in r["cpu_s_by_role"].items():
            cpu_roles[k] += v
        for k, v in r["stage_s"].items():
            stage[k] += v
        for k, v in r["peak_rss_mib_by_role"].items():
            roles[k] = max(roles.get(k, 0.0), v)
    out = {
        "repeats": len(runs),
        "images": images,
        "errors": sum(r.get("errors", r.get("counts", {}).get("error", 0)) for r in runs),
        "wall_s": round(wall, 2),
        "images_per_s": images / wall,
        "cpu_s": round(cpu, 1),
        "cpu_s_per_image": round(cpu / images, 4) if images else None,
        "cpu_s_by_role": {k: round(v, 1) for k, v in sorted(cpu_roles.items())},
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "peak_rss_mib_by_role": roles,
        "stage_s": {k: round(v, 2) for k, v in stage.items()},
        "runs": runs,
    }
    if "ray_init_s" in runs[0]:
        out["ray_init_s"] = round(sum(r["ray_init_s"] for r in runs), 2)
        out["waves"] = [r["waves"] for r in runs]
        busy = [r["generation_busy_fraction"] for r in runs if r["generation_busy_fraction"] is not None]
        out["generation_busy_fraction"] = round(sum(busy) / len(busy), 3) if busy else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-cpu-"))
    for old in work.glob("*-[0-9]*") if args.work_dir else []:
        shutil.rmtree(old, ignore_errors=True)
    catalog = write_bench_catalog(work / "catalog", args.items, args.distinct)
    cfg = bench_config(str(catalog), str(work / "direct"), args.torch_threads, args.assignments)
    num_cpus = args.ray_num_cpus if args.ray_num_cpus is not None else cfg.run.ray_num_cpus

    result: dict[str, Any] = {
        "benchmark": "cpu_pipeline",
        "command": command_line("bench.cpu_pipeline"),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "workload": {
            "preset": "tiny",
            "items": args.items,
            "repeats": args.repeats,
            "distinct_products": min(args.distinct, args.items),
            "resolution": cfg.prepare.resolution,
            "num_inference_steps": cfg.generation.num_inference_steps,
            "guidance_scale": cfg.generation.guidance_scale,
            "inspect": cfg.inspect.enabled,
            "max_attempts": cfg.retry.max_attempts,
            "overrides": args.assignments,
        },
        "settings": {
            "torch_threads": args.torch_threads,
            "ray_num_cpus": num_cpus,
            "generation": cfg.generation.model_dump(
                include={"batch_size", "concurrency", "num_cpus", "torch_threads"}
            ),
            "inspect": cfg.inspect.model_dump(include={"batch_size", "concurrency", "num_cpus"}),
            "run": cfg.run.model_dump(
                include={"chunk_size", "prepare_batch_size", "prepare_num_cpus", "write_num_cpus"}
            ),
        },
    }

    if args.profile_items:
        result["profile"] = profile_direct(
            cfg.model_copy(update={"out": str(work / "profile")}), args.profile_items
        )

    def direct(i: int) -> dict[str, Any]:
        load = loadavg()
        with RssSampler() as rss:
            run = run_direct(cfg.model_copy(update={"out": str(work / f"direct-{i}")}))
        return {"repeat": i, "loadavg_before": load, **run, **rss.summary()}

    def ray_path(i: int) -> dict[str, Any]:
        import ray

        load = loadavg()
        with RssSampler() as rss:
            init_s = start_local_ray(num_cpus)
            try:
                run = run_ray(cfg.model_copy(update={"out": str(work / f"ray-{i}")}))
            finally:
                ray.shutdown()
        return {"repeat": i, "loadavg_before": load, **run, "ray_init_s": round(init_s, 2), **rss.summary()}

    # ABBA order (direct, ray, ray, direct, ...): a load that drifts linearly hits both paths alike.
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "ray": []}
    first_direct = args.order == "direct-first"
    for i in range(args.repeats):
        pair = ("direct", "ray") if (i % 2 == 0) == first_direct else ("ray", "direct")
        for name in pair:
            runs[name].append(direct(i) if name == "direct" else ray_path(i))
    result["direct"], result["ray"] = d, r = aggregate(runs["direct"]), aggregate(runs["ray"])

    if d["images"] != r["images"]:
        raise RuntimeError(
            f"the two paths made different numbers of images: direct {d['images']}, ray {r['images']}"
        )
    result["ratio"] = round(r["images_per_s"] / d["images_per_s"], 3)
    with_start = r["images"] / (r["wall_s"] + r["ray_init_s"])
    result["ratio_with_ray_start"] = round(with_start / d["images_per_s"], 3)
    # CPU-seconds per image of the direct loop over the Ray path's (every Ray process included).
    result["cpu_efficiency_ratio"] = round(d["cpu_s_per_image"] / r["cpu_s_per_image"], 3)
    result["target_ratio"] = TARGET_RATIO
    result["meets_target"] = result["ratio"] >= TARGET_RATIO
    result["loadavg_after"] = loadavg()
    path = write_json(args.out, result)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for name, agg in (("direct", d), ("ray", r)):
        note = f"+{agg['ray_init_s']:.1f} s ray.init, waves {agg['waves']}" if name == "ray" else ""
        rows.append(
            [
                name,
                agg["images"],
                f"{agg['wall_s']:.1f}",
                f"{agg['images_per_s']:.3f}",
                f"{agg['cpu_s_per_image']:.3f}",
                agg["peak_rss_mib"],
                note,
            ]
        )
    print(format_table(["path", "images", "wall s", "img/s", "CPU s/img", "peak RSS MiB", "notes"], rows))
    print(
        f"ray / direct = {result['ratio']:.3f} (target >= {TARGET_RATIO}; with Ray start-up "
        f"{result['ratio_with_ray_start']:.3f}; CPU efficiency {result['cpu_efficiency_ratio']:.3f}); "
        f"load {result['loadavg_before']} -> {result['loadavg_after']}"
    )
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
