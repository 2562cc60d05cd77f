"""Warm start: the generation stage's start-up with a cold and with a warm compile cache.

Builds :class:`pipelines.generate.GenerateStage` with ``generation.compile`` on in two fresh
processes that share one cache root (``RELIABLE_AD_CACHE``: an empty temporary directory, or
``--cache DIR``). The first compiles cold and fills ``compile/`` (:mod:`pipelines.cache`); the second
is a new process, as the next night's actor would be, and starts warm. Each reports the model load,
the compile (the stage's warm-up batch, which traces and compiles UNet and ControlNet) and inductor's
FX graph cache hits and misses.

    python -m bench.warm_start                                              # CPU, tiny preset
    python -m bench.warm_start --gpu --out bench/results/warm_start_gpu.json  # one GPU, SD1.5 size

The CPU run uses the tiny preset at its batch size (``generation.compile`` is refused for CPU actors
in configs; the benchmark sets it directly, to measure the cache's wiring where no GPU is). ``--gpu``
uses random-weight SD1.5 models (``random:sd15``: the real architecture), 512 px, batch 16, bf16,
``channels_last``: the compiled setting of ``bench.gpu_generate``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json


def stage_config(gpu: bool):
    from pipelines.config import GenerateConfig, load_config

    if gpu:
        cfg = load_config(
            GenerateConfig,
            preset="sd15",
            overrides={
                "models.base": "random:sd15",
                "models.controlnet": "random:sd15",
                "generation.batch_size": 16,
                "generation.compile": True,
                "generation.channels_last": True,
                "inspect.enabled": False,
            },
        )
        return cfg
    cfg = load_config(GenerateConfig, preset="tiny", overrides={"inspect.enabled": False})
    # Configs refuse compile for CPU actors (slow to pay per run); here it measures the cache on a CPU.
    return cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"compile": True})})


def child(gpu: bool) -> None:
    """One start of the stage; prints its timings as one JSON line."""
    t0 = time.perf_counter()
    from pipelines.generate import GenerateStage

    imported = time.perf_counter() - t0
    stage = GenerateStage(stage_config(gpu))
    cache = stage.compile_cache
    print(
        json.dumps(
            {
                "import_s": round(imported, 2),
                "load_s": round(stage.load_s, 2),
                "compile_s": round(stage.compile_s, 2),
                "start_s": round(time.perf_counter() - t0, 2),
                "cache_dir": str(cache.directory),
                "warm_at_start": cache.warm,
                "cached_graphs_at_start": cache.entries_before,
                "fx_graph_cache": cache.report(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="one GPU, full-size random SD1.5")
    parser.add_argument("--cache", help="cache root to use (default: a new empty temporary directory)")
    parser.add_argument("--out", help="result JSON (default bench/results/warm_start_{cpu,gpu}.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.gpu)
        return
    out = Path(args.out or RESULTS_DIR / f"warm_start_{'gpu' if args.gpu else 'cpu'}.json")
    root = args.cache or tempfile.mkdtemp(prefix="reliable-ad-cache-")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {
        "RELIABLE_AD_CACHE": root
    }
    load_before = loadavg()
    starts = []
    for name in ("cold", "warm"):
        cmd = [sys.executable, "-m", "bench.warm_start", "--child", *(["--gpu"] if args.gpu else [])]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"{name} start failed with status {done.returncode}")
        starts.append({"start": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    cold, warm = starts
    result = {
        "command": command_line("bench.warm_start"),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "cache_root": root,
        "starts": starts,
        "compile_speedup": round(cold["compile_s"] / max(warm["compile_s"], 1e-9), 2),
    }
    write_json(out, result)
    rows = [
        [
            s["start"],
            s["load_s"],
            s["compile_s"],
            s["start_s"],
            s["fx_graph_cache"]["hits"],
            s["fx_graph_cache"]["misses"],
        ]
        for s in starts
    ]
    print(format_table(["start", "load s", "compile s", "total s", "cache hits", "misses"], rows))
    print(f"compile {result['compile_speedup']}x faster warm; written to {out}")


if __name__ == "__main__":
    main()
