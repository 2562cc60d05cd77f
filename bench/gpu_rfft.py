"""GPU benchmark of RFFT: step time and peak memory at full size (random-weight SD1.5 + RFNet).

One run on one GPU (a few minutes on an H100/H200; well under 10) measures, in this order:

1. **reward step** (the reference setting of DESIGN.md section 6, measured in this run): the graded
   pass alone at batch 8 - gradient through the ControlNet + one UNet step + VAE decode + the critic
   (RFNet, ``random:paper``: ResNet-50 per image at 384 px + RoBERTa + depth network), no CFG, no
   teacher, bf16 autocast, gradient checkpointing (graded step 0, so no no-grad sampling precedes it).
   DESIGN.md's anchor for that setting with a ConvNeXt-B critic: 0.45 s, 48 GiB on an H200.
2. **RFFT step** (the paper's setup, what ``reliable-ad rfft --preset sd15`` runs per GPU): per-GPU
   batch 4, 40 DDIM steps with CFG 7.5, the graded step drawn from the last 10 (the no-grad sampling
   before it included), F_AC through the graded step, the Consistent-Condition pass with the frozen
   teacher ControlNet (beta > 0, with gradient), clipping and the AdamW update: one full
   ``RFFTWorker.train_step`` (grad accumulation 1, so the time is per micro-batch of 4).

Both use the trainer's own code (one ``rfft.worker.RFFTWorker``, built once) on ``pipelines.models``
random ``sd15`` components: the same compute as the real models. Each variant is warmed up before it is
timed; the GPU is synchronised before every clock read; peak memory is
``torch.cuda.max_memory_allocated`` after a reset. It prints a short table naming the card and writes
every number to a JSON.

    python -m bench.gpu_rfft --out bench/results/gpu_rfft.json          # on a GPU
    python -m bench.gpu_rfft --smoke --out /tmp/gpu_rfft_smoke.json      # same code, CPU, tiny

``--smoke`` runs the same code path on the CPU with the tiny architecture and the tiny RFNet (128 px,
8 steps, batch 2); its numbers mean nothing, its fields are the real ones.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json

logger = logging.getLogger("bench.gpu_rfft")

# DESIGN.md section 6: reward step at batch 8 (ConvNeXt-B critic at 384 px), bf16, checkpointing, H200.
ANCHOR_REWARD_STEP_S = 0.45
ANCHOR_REWARD_STEP_GIB = 48.0
# Issue budget: per-GPU batch 4 with CFG + teacher must fit an 80 GiB GPU at 512 px.
MEMORY_BUDGET_GIB = 80.0


@dataclass(frozen=True)
class Plan:
    """What one run measures (the full GPU plan, or the CPU smoke plan with the same fields)."""

    preset: str  # RFFTConfig preset the config derives from
    models: str  # pipelines.models random source for base and ControlNet
    rfnet: str  # RFNet source (random weights)
    resolution: int  # px
    steps: int  # DDIM steps
    graded_last_k: int
    rfft_batch: int  # per-GPU batch of the RFFT step
    reward_batch: int  # batch of the reference reward step
    warmup: int  # untimed iterations per variant
    repeats: int  # timed iterations per variant


GPU_PLAN = Plan("sd15", "random:sd15", "random:paper", 512, 40, 10, 4, 8, warmup=1, repeats=4)
SMOKE_PLAN = Plan("tiny", "tiny", "tiny", 128, 8, 4, 2, 2, warmup=1, repeats=1)


def build_worker(plan: Plan, batch_size: int):
    """An ``RFFTWorker`` for ``plan`` (procedural products; nothing is read from disk)."""
    from pipelines.config import load_config
    from rfft.config import RFFTConfig
    from rfft.worker import RFFTWorker

    overrides = {
        "rfnet": plan.rfnet,
        "models.base": plan.models,
        "models.controlnet": plan.models,
        "prepare.resolution": plan.resolution,
        "sampling.num_inference_steps": plan.steps,
        "sampling.graded_last_k": plan.graded_last_k,
        "optim.batch_size": batch_size,
        "optim.grad_accum": 1,
        "data.num_procedural": 8,
        "data.num_eval_products": 2,
        "scaling.gradient_checkpointing": True,
    }
    return RFFTWorker(load_config(RFFTConfig, preset=plan.preset, overrides=overrides))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, worker, fn: Callable[[int], Any], plan: Plan) -> dict[str, Any]:
    """Warm up, then time ``fn(i)`` ``plan.repeats`` times; peak memory over the timed calls."""
    device = worker.placement.device
    for i in range(plan.warmup):
        fn(i)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(plan.warmup, plan.warmup + plan.repeats):
        synchronize(device)
        start = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    result = {
        "name": name,
        "times_s": [round(t, 4) for t in times],
        "mean_s": round(sum(times) / len(times), 4),
        "min_s": round(min(times), 4),
        "peak_memory_gib": round(peak, 2) if peak is not None else None,
    }
    logger.info("%s: %s", name, result)
    return result


def reward_step(worker, step: int, batch_size: int) -> None:
    """Graded pass only: one step with gradient through ControlNet + UNet, decode, RFNet, backward."""
    from pipelines.device import autocast
    from rfft import data as rfft_data
    from rfft.losses import feedback_loss

    examples = rfft_data.training_examples(
        worker.train_products,
        seed=worker.cfg.seed,
        step=step + 1,
        micro=0,
        global_size=batch_size,
        rank=0,
        local_size=batch_size,
        prepare=worker.cfg.prepare,
        prompts=worker.cfg.prompts,
    )
    batch = rfft_data.collate(examples, worker.placement.device)
    worker.optimizer.zero_grad(set_to_none=True)
    with autocast(worker.placement):
        out = worker.sampler(
            batch.prompt,
            batch.image,
            batch.mask_image,
            batch.control_image,
            num_inference_steps=worker.cfg.sampling.num_inference_steps,
            guidance_scale=1.0,
            generator=batch.generators(),
            product=batch.product,
            graded_step=0,
        )
        loss = feedback_loss(worker.reward.p_available(out.image, batch.product, batch.caption))
    loss.backward()
    worker.optimizer.zero_grad(set_to_none=True)


def rfft_step(worker, step: int) -> dict[str, Any]:
    return worker.train_step()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(plan: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {"plan": asdict(plan), "machine": machine(), "loadavg_before": loadavg()}
    started = time.perf_counter()

    worker = build_worker(plan, plan.rfft_batch)
    results["placement"] = worker.placement.describe()
    results["build_s"] = round(time.perf_counter() - started, 1)
    results["reward_step"] = measure(
        f"reward step, batch {plan.reward_batch}, no CFG/teacher",
        worker,
        lambda i: reward_step(worker, i, plan.reward_batch),
        plan,
    )
    release_memory()
    records: list[dict[str, Any]] = []
    results["rfft_step"] = measure(
        f"RFFT step, batch {plan.rfft_batch}, CFG + teacher",
        worker,
        lambda i: records.append(rfft_step(worker, i)),
        plan,
    )
    results["rfft_step"]["graded_steps"] = [r["graded_step"] for r in records[plan.warmup :]]
    results["rfft_step"]["loss_finite"] = all(
        math.isfinite(r[key]) for r in records for key in ("f_ac", "l_cc", "grad_norm")
    )

    reward_s, rfft_s = results["reward_step"]["mean_s"], results["rfft_step"]["mean_s"]
    results["ratios"] = {
        "rfft_step_over_reward_step": round(rfft_s / reward_s, 2),
        "reward_step_over_anchor": round(reward_s / ANCHOR_REWARD_STEP_S, 2),
    }
    peak = results["rfft_step"]["peak_memory_gib"]
    results["fits_80_gib"] = None if peak is None else peak < MEMORY_BUDGET_GIB
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_after"] = loadavg()
    return results


def print_summary(results: dict[str, Any]) -> None:
    card = results["machine"].get("gpu") or f"CPU ({results['machine']['cpu_model']})"

    def gib(v):
        return "-" if v is None else f"{v:.1f}"

    rows = [
        [
            results["reward_step"]["name"],
            f"{results['reward_step']['mean_s']:.3f}",
            gib(results["reward_step"]["peak_memory_gib"]),
        ],
        [
            results["rfft_step"]["name"],
            f"{results['rfft_step']['mean_s']:.3f}",
            gib(results["rfft_step"]["peak_memory_gib"]),
        ],
        [
            "anchor (DESIGN.md, H200): reward step, batch 8",
            f"{ANCHOR_REWARD_STEP_S:.3f}",
            gib(ANCHOR_REWARD_STEP_GIB),
        ],
    ]
    print(f"\nRFFT step on {card} ({results['placement']['dtype']}, total {results['total_s']} s)")
    print(format_table(["setting", "s/step", "peak GiB"], rows))
    print(f"ratios: {results['ratios']}; fits 80 GiB: {results['fits_80_gib']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models on the CPU: checks the code path only"
    )
    parser.add_argument("--repeats", type=int, help="timed iterations per variant (default: plan's)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "gpu_rfft.json"), help="JSON file for the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    if args.repeats:
        plan = Plan(**{**asdict(plan), "repeats": args.repeats})
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible; run with --smoke to check the code path on the CPU")
    results = run(plan)
    results["command"] = command_line("bench.gpu_rfft")
    path = write_json(Path(args.out), results)
    print_summary(results)
    print(f"details: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
