"""GPU benchmark: the reference setting against ours, the generation stage, and the full pipeline.

One run on one GPU (under 10 minutes on an H100/H200) measures, side by side and in this order:

1. **peak**: dense matmul TFLOP/s in the compute dtype (bf16 on Ampere+; the MFU denominator) and
   the FLOPs of one image (UNet + ControlNet, twice per step for CFG, times the steps, plus the VAE
   decode; counted with ``torch.utils.flop_counter`` on the model itself).
2. **variants**: ``StableDiffusionControlNetInpaintPipeline`` on random-weight SD1.5 (same compute
   as the real models) at 512 px, DDIM 40 steps, CFG 7.5 (both CFG branches in one UNet batch, as
   diffusers does): the paper's reference script setting (fp32, batch 10) first, then ours in eager
   mode: the ``pipelines.device`` policy dtype at batch 16, fused q/k/v projections, channels_last
   (``--compiled-variant`` adds ``torch.compile``; the stage below is compiled in any case). Each is
   warmed up before it is timed; the GPU is synchronised before every clock read; ratios are against
   the reference measured in this run. Then **where the time goes**: ControlNet, UNet and VAE decode
   timed apart, and one denoising step's GPU time by kernel class (``torch.profiler``).
3. **stage**: :class:`pipelines.generate.GenerateStage` called directly on prepared catalog rows (PIL
   conversion, per-row seeded generators and paste-back included), with the settings of step 4;
   plus the RFNet inspection stage alone on the generated images (its share of GPU time).
4. **pipeline**: :func:`pipelines.runner.run_catalog` on a generated catalog (read, prepare,
   generate, inspect with RFNet on a fractional GPU, write) on a local Ray with one GPU;
   steady-state throughput from the images as they are written (the slope between 10% and 90% of
   the catalog), so actor start-up and compilation are reported apart.

It writes a JSON with every number and prints a short table with the card's name. A step that
would overrun ``--budget-s`` is skipped and recorded as skipped rather than killing the run.

    python -m bench.gpu_generate --out bench/results/gpu_generate.json       # on a GPU
    python -m bench.gpu_generate --smoke --out /tmp/gpu_smoke.json           # same code, CPU, tiny

``--pipeline-only`` runs step 4 alone (after a change to the pipeline, when the rest is already
measured). ``--smoke`` runs the same code path on CPU with the tiny architecture (128 px, 4 steps,
small batches, no compile) in about a minute; its numbers mean nothing, its fields are the real ones.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    RESULTS_DIR,
    command_line,
    format_table,
    loadavg,
    machine,
    write_bench_catalog,
    write_json,
)

logger = logging.getLogger("bench.gpu_generate")

# The paper's reference script setting and the measured cost of one reference image (DESIGN.md):
# 40 DDIM steps x (UNet + ControlNet) x 2 for CFG at 512 px, plus the VAE decode.
REFERENCE_DTYPE = "float32"
REFERENCE_BATCH = 10
REFERENCE_TFLOP_PER_IMAGE = 89.4
# Targets of the performance work (docs/performance.md).
GOAL_IMAGES_PER_S = 4.4  # end to end at 512 px, 40 steps, CFG 7.5: half the bf16 compute ceiling
GOAL_SPEEDUP = 7.0  # pipeline vs the reference setting measured in the same run
GOAL_INSPECT_SHARE = 0.03  # inspection's share of GPU time
GOAL_PIPELINE_EFFICIENCY = 0.95  # pipeline vs the standalone generation stage


@dataclass(frozen=True)
class Plan:
    """What one run measures (the full GPU plan, or the CPU smoke plan with the same fields)."""

    arch: str  # random architecture of pipelines.models ("sd15" or "tiny")
    resolution: int  # px, square
    steps: int  # DDIM steps
    guidance_scale: float
    reference_batch: int
    batches: tuple[int, ...]  # batch sizes of our eager variants
    batch_size: int  # our batch size for the stage and the pipeline
    compile: bool  # torch.compile UNet + ControlNet in our best variant, the stage and the pipeline
    channels_last: bool
    fuse_qkv: bool  # fused attention q/k/v projections in our best variant, the stage and the pipeline
    compiled_variant: bool  # also time the compiled pipeline in step 2 (the stage always is compiled)
    stage_batches: int  # timed batches of the standalone stage (after one warm-up batch)
    pipeline_items: int  # catalog rows of the pipeline run (one attempt each)
    rfnet: str  # RFNet source for inspection
    inspect_num_gpus: float  # GPU fraction of the inspection actor
    inspect_batch_size: int
    smoke: bool = False

    @property
    def reference_workload(self) -> bool:
        return self.arch == "sd15" and self.resolution == 512 and self.steps == 40


def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(
            arch="tiny",
            resolution=128,
            steps=4,
            guidance_scale=7.5,
            reference_batch=2,
            batches=(2, 4),
            batch_size=args.batch_size or 4,
            compile=False,
            channels_last=False,
            fuse_qkv=True,
            compiled_variant=False,
            stage_batches=1,
            pipeline_items=args.items or 24,
            rfnet="tiny",
            inspect_num_gpus=0.0,
            inspect_batch_size=args.batch_size or 4,
            smoke=True,
        )
    compile_ = not args.no_compile
    return Plan(
        arch="sd15",
        resolution=512,
        steps=40,
        guidance_scale=7.5,
        reference_batch=REFERENCE_BATCH,
        batches=(16,),
        batch_size=args.batch_size or 16,
        compile=compile_,
        channels_last=compile_,  # channels_last alone is slower in eager mode (see the variants)
        fuse_qkv=True,
        compiled_variant=compile_ and args.compiled_variant,
        stage_batches=2,
        pipeline_items=args.items or 128,
        rfnet="random:small",
        inspect_num_gpus=0.1,
        # As large as a generation batch: a larger inspection batch waits for several generation
        # batches (for all of them in a short run), which holds images back and hides the steady rate.
        inspect_batch_size=args.batch_size or 16,
    )


# ----------------------------------------------------------------------------------------------------
# Clocks and budget.


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so a clock read covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def release_compiled(plan: Plan, device: torch.device) -> None:
    """Drop this process's compiled graphs (their GPU workspaces) once their models are gone."""
    if plan.compile:
        torch.compiler.reset()
    free_memory(device)


@dataclass
class Budget:
    """Wall-clock budget: a step is skipped when its estimate would overrun what is left."""

    total_s: float
    t0: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.t0)

    def allows(self, estimate_s: float) -> bool:
        return self.left() >= estimate_s


# ----------------------------------------------------------------------------------------------------
# 1. Peak and FLOPs.


def matmul_tflops(device: torch.device, dtype: torch.dtype, smoke: bool) -> dict[str, Any]:
    """Dense matmul throughput (TFLOP/s) in ``dtype``: the achievable peak MFU is measured against.

    The best of three timed rounds: a round slowed by other work on the machine would understate the
    peak and overstate every MFU computed against it."""
    n = 1024 if smoke else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    iters = 5 if smoke else 50
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": 2 * n**3 * iters / best / 1e12}


def count_flops(pipe, resolution: int, steps: int) -> dict[str, float]:
    """FLOPs of one image: (ControlNet + UNet) on a CFG batch of 2, times ``steps``, plus a VAE decode."""
    from torch.utils.flop_counter import FlopCounterMode

    device, dtype = pipe.unet.device, pipe.unet.dtype
    lat = resolution // 8
    x = torch.randn(2, 4, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    cond = torch.rand(2, 3, resolution, resolution, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        down, mid = pipe.controlnet(x, t, ctx, controlnet_cond=cond, return_dict=False)
        pipe.unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    step = fc.get_total_flops()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        pipe.vae.decode(torch.randn(1, 4, lat, lat, device=device, dtype=dtype))
    decode = fc.get_total_flops()
    return {"step_cfg": float(step), "vae_decode": float(decode), "per_image": float(step * steps + decode)}


# ----------------------------------------------------------------------------------------------------
# Where the time goes: per model, and per kernel class.

KERNEL_CLASSES = (  # first match wins; names lower-cased (CUDA kernels, or aten ops on CPU)
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "winograd", "implicit")),
    ("matmul", ("gemm", "nvjet", "cutlass", "matmul", "gemv", "addmm", "aten::mm", "aten::bmm", "linear")),
    ("normalisation", ("norm",)),
    ("copy / layout", ("copy", "memcpy", "memset", "transpose", "contiguous", "cat")),
)


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in lowered for k in keys):
            return cls
    return "elementwise / other"


def time_components(pipe, plan: Plan, batch: int, device: torch.device, iters: int = 5) -> dict[str, Any]:
    """Seconds per call of the ControlNet, the UNet (CFG batch) and the VAE decode, and one denoising
    step's GPU time by kernel class (torch.profiler): the profile behind the throughput numbers.

    Eager models in the policy dtype at ``batch`` images (CFG doubles the UNet/ControlNet batch);
    per image = steps x (ControlNet + UNet) + VAE decode + the rest (scheduler, CPU work, copies).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dtype = pipe.unet.dtype
    lat, n = plan.resolution // 8, 2 * batch
    x = torch.randn(n, 4, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(n, 77, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    cond = torch.rand(n, 3, plan.resolution, plan.resolution, device=device, dtype=dtype)
    t = torch.full((n,), 500, device=device)
    z = torch.randn(batch, 4, lat, lat, device=device, dtype=dtype)

    def controlnet():
        return pipe.controlnet(x, t, ctx, controlnet_cond=cond, return_dict=False)

    down, mid = None, None

    def unet():
        return pipe.unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def decode():
        return pipe.vae.decode(z / pipe.vae.config.scaling_factor)

    def timed(fn) -> float:
        fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / iters

    with torch.inference_mode():
        down, mid = controlnet()
        seconds = {"controlnet": timed(controlnet), "unet": timed(unet), "vae_decode": timed(decode)}
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            down, mid = controlnet()
            unet()
            sync(device)
    classes: dict[str, float] = {}
    total = 0.0
    for evt in prof.events():
        if device.type == "cuda":  # GPU kernels (and copies), each counted once
            us = evt.self_device_time_total if evt.device_type == DeviceType.CUDA else 0.0
        else:  # smoke run on CPU: the aten operators' own time
            us = evt.self_cpu_time_total if evt.name.startswith("aten::") else 0.0
        if us > 0:
            cls = kernel_class(evt.name)
            classes[cls] = classes.get(cls, 0.0) + us
            total += us
    per_image_s = (plan.steps * (seconds["controlnet"] + seconds["unet"]) + seconds["vae_decode"]) / batch
    return {
        "batch": batch,
        "cfg_batch": n,
        "seconds_per_call": {k: round(v, 5) for k, v in seconds.items()},
        # per image: steps x (ControlNet + UNet) on the CFG batch, plus the decode, divided by the batch
        "model_seconds_per_image": round(per_image_s, 4),
        "share_per_image": {
            "controlnet": round(plan.steps * seconds["controlnet"] / batch / per_image_s, 4),
            "unet": round(plan.steps * seconds["unet"] / batch / per_image_s, 4),
            "vae_decode": round(seconds["vae_decode"] / batch / per_image_s, 4),
        },
        "step_kernel_share": {
            k: round(v / total, 4) for k, v in sorted(classes.items(), key=lambda kv: -kv[1])
        }
        if total
        else {},
        "step_kernel_ms": round(total / 1e3, 2),
        "profiled": "cuda kernels" if device.type == "cuda" else "cpu aten ops",
    }


# ----------------------------------------------------------------------------------------------------
# 2. Pipeline variants.


def build_pipe(arch: str, device: torch.device, dtype: torch.dtype):
    from diffusers import StableDiffusionControlNetInpaintPipeline

    from pipelines.models import build_random_components

    components = build_random_components(arch)
    pipe = StableDiffusionControlNetInpaintPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def variant_inputs(batch: int, resolution: int) -> dict[str, Any]:
    """A batch of inpainting inputs: product in the centre square, canny-like sparse control image."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, resolution, resolution, generator=g)
    mask = torch.ones(batch, 1, resolution, resolution)
    q = resolution // 4
    mask[:, :, q : 3 * q, q : 3 * q] = 0  # 0 = keep (the product)
    control = (torch.rand(batch, 3, resolution, resolution, generator=g) > 0.9).float()
    return {
        "prompt": ["a product on a marble table, soft daylight, professional product photography"] * batch,
        "negative_prompt": ["lowres, blurry, watermark, deformed"] * batch,
        "image": image,
        "mask_image": mask,
        "control_image": control,
        "height": resolution,
        "width": resolution,
        "output_type": "np",
    }


def time_call(pipe, plan: Plan, batch: int, device: torch.device, warmup_steps: int) -> dict[str, Any]:
    """Warm up (``warmup_steps`` steps at the timed shape: compiles, autotunes), then time one call."""
    kwargs = variant_inputs(batch, plan.resolution)

    def call(steps: int) -> np.ndarray:
        gens = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        return pipe(
            num_inference_steps=steps, guidance_scale=plan.guidance_scale, generator=gens, **kwargs
        ).images

    t0 = time.perf_counter()
    call(warmup_steps)
    sync(device)
    warmup_s = time.perf_counter() - t0
    free_memory(device)
    t0 = time.perf_counter()
    images = call(plan.steps)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "batch": batch,
        "seconds": round(seconds, 3),
        "warmup_s": round(warmup_s, 2),
        "images_per_s": batch / seconds,
        "peak_gib": peak_memory_gib(device),
        "finite": bool(np.isfinite(images).all()),
    }


def run_variants(
    plan: Plan, device: torch.device, policy_dtype: torch.dtype, budget: Budget, reserve_s: float
) -> dict[str, Any]:
    """Reference setting first, then ours; one pipeline object converted in place between variants.

    The reference and our best setting always run (unless the budget is gone); the other variants
    only while ``reserve_s`` (what the stage and pipeline steps need) stays free.
    """
    from pipelines.device import DTYPES
    from pipelines.generate import speed_up

    ref_dtype = DTYPES[REFERENCE_DTYPE]
    t0 = time.perf_counter()
    pipe = build_pipe(plan.arch, device, ref_dtype)
    build_s = time.perf_counter() - t0
    flops = count_flops(pipe, plan.resolution, plan.steps)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    warm = 2  # steps of the warm-up call

    def add(
        name: str,
        estimate_s: float,
        batch: int,
        essential: bool,
        fn: Callable[[], None] | None = None,
        **info: Any,
    ) -> None:
        if not budget.allows(estimate_s + (0.0 if essential else reserve_s)):
            skipped.append(f"{name} (needs ~{estimate_s:.0f} s, {budget.left():.0f} s left)")
            return
        if fn is not None:
            fn()
        try:
            row = {"name": name, **info, **time_call(pipe, plan, batch, device, warm)}
        except torch.OutOfMemoryError:
            free_memory(device)
            skipped.append(f"{name} (out of memory at batch {batch})")
            return
        rows.append(row)
        logger.warning("variant %s: %.3f img/s", name, row["images_per_s"])

    applied = {"fuse_qkv": False, "channels_last": False}

    def apply(**settings: bool) -> Callable[[], None]:
        """Switch on the given exact speed settings (in place; later variants keep them)."""

        def fn() -> None:
            todo = {k: v and not applied.get(k, False) for k, v in settings.items()}
            speed_up(pipe, **{"channels_last": False, "fuse_qkv": False, "compile": False} | todo)
            applied.update({k: v or applied.get(k, False) for k, v in settings.items()})

        return fn

    name = str(policy_dtype).removeprefix("torch.")
    eager_ips = 1.0 if plan.smoke else 2.5  # rough eager img/s on an H100/H200, for the estimates
    ref_ips = 1.0 if plan.smoke else 0.6
    add(
        "reference",
        5 + 1.2 * plan.reference_batch / ref_ips,
        plan.reference_batch,
        True,
        dtype=REFERENCE_DTYPE,
        channels_last=False,
        fuse_qkv=False,
        compile=False,
    )
    pipe = pipe.to(dtype=policy_dtype)
    eager = {"dtype": name, "channels_last": False, "fuse_qkv": False, "compile": False}
    for b in plan.batches:
        add(f"{name} b{b}", 5 + b / eager_ips, b, False, **eager)
    b = plan.batch_size
    breakdown = None
    if budget.allows(15):  # the profile behind the numbers: always, unless the budget is gone
        breakdown = time_components(pipe, plan, b, device)
    if plan.fuse_qkv:
        add(
            f"{name} b{b} fused_qkv",
            5 + b / eager_ips,
            b,
            False,
            apply(fuse_qkv=True),
            **eager | {"fuse_qkv": True},
        )
    add(
        f"{name} b{b} channels_last" + (" fused_qkv" if plan.fuse_qkv else ""),
        5 + b / eager_ips,
        b,
        not plan.compile,
        apply(fuse_qkv=plan.fuse_qkv, channels_last=True),
        **eager | {"channels_last": True, "fuse_qkv": plan.fuse_qkv},
    )
    if plan.compiled_variant:
        add(
            f"{name} b{b} channels_last" + (" fused_qkv" if plan.fuse_qkv else "") + " compile",
            150,
            b,
            True,
            apply(fuse_qkv=plan.fuse_qkv, channels_last=True, compile=True),
            **eager | {"channels_last": True, "fuse_qkv": plan.fuse_qkv, "compile": True},
        )
    ref = next((r for r in rows if r["name"] == "reference"), None)
    for r in rows:
        r["speedup_vs_reference"] = round(r["images_per_s"] / ref["images_per_s"], 3) if ref else None
    return {
        "build_s": round(build_s, 1),
        "flops": flops,
        "rows": rows,
        "breakdown": breakdown,
        "skipped": skipped,
    }


# ----------------------------------------------------------------------------------------------------
# 3-4. The generation stage alone, inspection alone, and the full pipeline.


def pipeline_config(plan: Plan, catalog: str, out: str, device: torch.device):
    """The catalog-run config of our setting: random SD1.5 (or tiny), inspection on, one attempt."""
    from pipelines.config import GenerateConfig, load_config

    on_gpu = device.type == "cuda"
    overrides: dict[str, Any] = {
        "catalog": catalog,
        "out": out,
        "models.base": f"random:{plan.arch}",
        "models.controlnet": f"random:{plan.arch}",
        "prepare.resolution": plan.resolution,
        "generation.num_inference_steps": plan.steps,
        "generation.guidance_scale": plan.guidance_scale,
        "generation.scheduler": "ddim",
        "generation.batch_size": plan.batch_size,
        "generation.compile": plan.compile,
        "generation.channels_last": plan.channels_last,
        "generation.fuse_qkv": plan.fuse_qkv,
        # One GPU holds both pools: generation takes what inspection leaves (1.0 + 0.1 would not fit).
        "generation.num_gpus": (1.0 - plan.inspect_num_gpus) if on_gpu else 0.0,
        "generation.num_cpus": 1.0 if on_gpu else 0.5,
        "inspect.enabled": True,
        "inspect.rfnet": plan.rfnet,
        "inspect.num_gpus": plan.inspect_num_gpus if on_gpu else 0.0,
        "inspect.batch_size": plan.inspect_batch_size,
        "retry.max_attempts": 1,
        "run.chunk_size": max(plan.pipeline_items, 1),
        # Write tasks take one generation batch each, so images land as each batch finishes.
        "run.prepare_batch_size": plan.batch_size,
    }
    if plan.smoke:
        overrides["generation.torch_threads"] = 1
    return load_config(GenerateConfig, preset="tiny" if plan.smoke else "sd15", overrides=overrides)


def work_batches(cfg, n: int) -> list[dict[str, np.ndarray]]:
    """The first ``n`` catalog items as prepared numpy batches of ``generation.batch_size`` rows."""
    from bench.cpu_pipeline import to_batch
    from pipelines.attempts import plan_attempt
    from pipelines.catalog import read_catalog
    from pipelines.prepare import prepare_batch
    from pipelines.wave import work_rows

    items = read_catalog(cfg.catalog).items[:n]
    rows = work_rows([(item, plan_attempt(item, 1, cfg, [])) for item in items])
    size = cfg.generation.batch_size
    return [prepare_batch(to_batch(rows[i : i + size]), cfg) for i in range(0, len(rows), size)]


def run_stage(plan: Plan, cfg, device: torch.device) -> dict[str, Any]:
    """GenerateStage on real prepared rows: one warm-up batch, then ``plan.stage_batches`` timed ones."""
    from pipelines.generate import GenerateStage
    from pipelines.inspect import InspectStage
    from rfnet.scorer import ScoreStage

    batches = work_batches(cfg, cfg.generation.batch_size * (plan.stage_batches + 1))
    t0 = time.perf_counter()
    stage = GenerateStage(cfg)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = stage(dict(batches[0]))
    sync(device)
    warmup_s = time.perf_counter() - t0
    free_memory(device)
    images, seconds = 0, 0.0
    generated = [out]
    for batch in batches[1 : plan.stage_batches + 1]:
        t0 = time.perf_counter()
        out = stage(dict(batch))
        sync(device)
        seconds += time.perf_counter() - t0
        images += len(out["sku_id"])
        generated.append(out)
    result: dict[str, Any] = {
        "batch_size": cfg.generation.batch_size,
        "init_s": round(init_s, 1),
        "load_s": round(stage.load_s, 1),
        "compile_s": round(stage.compile_s, 1),
        "warmup_batch_s": round(warmup_s, 2),
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": images / seconds if seconds else None,
        "peak_gib": peak_memory_gib(device),
        "errors": int(sum(1 for b in generated for e in b["error"] if e)),
        "placement": stage.placement.describe(),
    }
    del stage
    free_memory(device)

    # Inspection alone on the generated images: GPU seconds per image next to generation's.
    ins = cfg.inspect
    scorer = InspectStage(
        ScoreStage, source=ins.rfnet, device=ins.device, dtype=ins.dtype, threshold=ins.threshold
    )
    scored = {
        k: np.concatenate([b[k] for b in generated])
        for k in ("sku_id", "image", "product", "caption", "error")
    }
    n = len(scored["sku_id"])
    reps = max(1, math.ceil(ins.batch_size / n))
    batch = {k: np.concatenate([v] * reps)[: max(n, ins.batch_size)] for k, v in scored.items()}
    scorer(dict(batch))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    scorer(dict(batch))
    sync(device)
    inspect_s = time.perf_counter() - t0
    per_image_inspect = inspect_s / len(batch["sku_id"])
    per_image_generate = 1.0 / result["images_per_s"] if result["images_per_s"] else None
    result["inspect"] = {
        "rfnet": ins.rfnet,
        "batch": len(batch["sku_id"]),
        "images_per_s": 1.0 / per_image_inspect,
        "placement": scorer.stage.scorer.placement.describe(),
        "share_of_gpu_time": per_image_inspect / (per_image_inspect + per_image_generate)
        if per_image_generate
        else None,
    }
    del scorer
    free_memory(device)
    return result


def run_pipeline(plan: Plan, cfg, device: torch.device) -> dict[str, Any]:
    """``run_catalog`` on a local Ray; steady-state images/s from the images as they are written."""
    import ray

    from bench.common import FileCountSampler, start_local_ray
    from pipelines import storage
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    init_s = start_local_ray(None)
    try:
        t0 = time.perf_counter()
        # The smoke run writes its few images within a second or two on a fast CPU: sample often
        # enough to see the curve rise in steps.
        interval = 0.05 if plan.smoke else 0.5
        with FileCountSampler(storage.join(cfg.out, "images"), interval_s=interval) as written:
            summary = run_catalog(cfg, inspect_stage=ScoreStage)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    run = summary.run_json
    waves = run["waves"]
    gen_busy = sum(w["generate_busy_s"] for w in waves)
    ins_busy = sum(w["inspect_busy_s"] for w in waves)
    images = sum(w["images"] for w in waves)
    return {
        "items": plan.pipeline_items,
        "images": images,
        "counts": summary.counts,
        "ray_init_s": round(init_s, 1),
        "wall_s": round(wall, 1),
        "images_per_s_end_to_end": images / wall if wall else None,
        # Slope of the written-images curve between 10% and 90% of the catalog: start-up excluded.
        "images_per_s_steady": written.steady_rate(images),
        # Ray Data start-up, actor start, model load and compilation, up to the first written image.
        "first_image_after_s": written.first_time(1),
        "written_series_s": [
            (round(t, 2), n) for t, n in written.series[:: max(1, len(written.series) // 200)]
        ],
        "generation_busy_fraction": run.get("generation_busy_fraction"),
        "generate_busy_s": round(gen_busy, 2),
        "inspect_busy_s": round(ins_busy, 2),
        # Inspection's share of accelerator busy time inside the pipeline (both pools on one device).
        "inspect_share_of_busy": ins_busy / (gen_busy + ins_busy) if gen_busy + ins_busy else None,
        "generation": cfg.generation.model_dump(
            include={"batch_size", "num_gpus", "num_cpus", "compile", "channels_last", "fuse_qkv", "dtype"}
        ),
        "inspect_settings": cfg.inspect.model_dump(include={"rfnet", "batch_size", "num_gpus", "num_cpus"}),
    }


# ----------------------------------------------------------------------------------------------------
# Main.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_generate", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny architecture: checks the code path only")
    p.add_argument("--batch-size", type=int, default=None, help="our batch size (default 16; smoke 4)")
    p.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (saves ~65 s per process on an H200)"
    )
    p.add_argument(
        "--compiled-variant",
        action="store_true",
        help="also time the compiled pipeline among the variants (~150 s more; the stage is compiled anyway)",
    )
    p.add_argument(
        "--pipeline-only",
        action="store_true",
        help="measure the full pipeline alone (no reference, variants or stage: no ratios to them)",
    )
    p.add_argument("--items", type=int, default=None, help="catalog rows of the pipeline run (default 128)")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip steps that would overrun this")
    p.add_argument("--work-dir", default=None, help="catalog and outputs (default: a temporary directory)")
    p.add_argument(
        "--out",
        default=None,
        help="result JSON (default bench/results/gpu_generate.json; gpu_pipeline.json with --pipeline-only)",
    )
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(RESULTS_DIR / ("gpu_pipeline.json" if args.pipeline_only else "gpu_generate.json"))
    return args


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The performance targets with the measured value next to each (None where a step was skipped)."""
    pipe = result.get("pipeline") or {}
    stage = result.get("stage") or {}
    ref = next((r for r in result["variants"]["rows"] if r["name"] == "reference"), None)
    steady = pipe.get("images_per_s_steady")
    stage_ips = stage.get("images_per_s")

    def goal(value: float | None, target: float, higher_is_better: bool = True) -> dict[str, Any]:
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        return {"value": None if value is None else round(value, 4), "target": target, "met": met}

    return {
        "pipeline_images_per_s": goal(steady, GOAL_IMAGES_PER_S),
        "pipeline_speedup_vs_reference": goal(
            steady / ref["images_per_s"] if steady and ref else None, GOAL_SPEEDUP
        ),
        "inspect_share_of_gpu_time": goal(pipe.get("inspect_share_of_busy"), GOAL_INSPECT_SHARE, False),
        "pipeline_vs_stage": goal(
            steady / stage_ips if steady and stage_ips else None, GOAL_PIPELINE_EFFICIENCY
        ),
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # A run stopped from outside (timeout, a job's deadline) still writes what it measured.
    signal.signal(signal.SIGTERM, _interrupt)
    budget = Budget(args.budget_s)
    plan = make_plan(args)

    from pipelines.device import place

    placement = place("cpu" if plan.smoke else "auto", "auto", component="generation")
    device = placement.device
    if not plan.smoke and device.type != "cuda":
        raise SystemExit(
            "bench.gpu_generate needs a CUDA GPU (found none); run with --smoke to check the code path on CPU"
        )
    if plan.smoke:
        torch.set_num_threads(1)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-gpu-"))
    result: dict[str, Any] = {
        "benchmark": "gpu_generate",
        "command": command_line("bench.gpu_generate"),
        "machine": machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "smoke": plan.smoke,
        "plan": asdict(plan),
        "placement": placement.describe(),
        "loadavg_before": loadavg(),
    }
    try:
        peak = matmul_tflops(device, placement.dtype, plan.smoke)
        result["peak_matmul"] = peak
        # Rough costs on an H200 (model build ~20 s; compiling UNet + ControlNet ~100 s in the stage,
        # and again in the pipeline's actor, a separate process).
        stage_estimate = 30 if plan.smoke else 40 + (100 if plan.compile else 0)
        pipe_estimate = 60 if plan.smoke else 40 + (100 if plan.compile else 0) + plan.pipeline_items / 3.0
        if args.pipeline_only:
            result["variants"] = {"rows": [], "skipped": ["variants and stage (--pipeline-only)"]}
            measured = None
        else:
            result["variants"] = run_variants(
                plan, device, placement.dtype, budget, reserve_s=stage_estimate + pipe_estimate
            )
            write_json(args.out, result)  # each step's numbers are kept as soon as it ends
            release_compiled(plan, device)  # the variants' pipeline is gone with run_variants' frame
            measured = result["variants"]["flops"]["per_image"]
        flops_per_image = REFERENCE_TFLOP_PER_IMAGE * 1e12 if plan.reference_workload else measured
        result["flops_per_image"] = {
            "used": flops_per_image,
            "measured": measured,
            "source": "reference 89.4 TFLOP" if plan.reference_workload else "measured",
        }

        def mfu(images_per_s: float | None) -> float | None:
            if not images_per_s or not flops_per_image:
                return None
            return images_per_s * flops_per_image / (peak["tflops"] * 1e12)

        for row in result["variants"]["rows"]:
            row["mfu"] = mfu(row["images_per_s"])

        catalog = write_bench_catalog(
            work / "catalog", plan.pipeline_items, distinct=min(24, plan.pipeline_items)
        )
        stage_cfg = pipeline_config(plan, str(catalog), str(work / "stage"), device)
        if args.pipeline_only:
            result["stage"] = None
        elif budget.allows(stage_estimate):
            result["stage"] = run_stage(plan, stage_cfg, device)
            release_compiled(plan, device)
            result["stage"]["mfu"] = mfu(result["stage"]["images_per_s"])
            logger.warning("stage: %s", result["stage"])
            write_json(args.out, result)
        else:
            result["stage"] = None
            result["variants"]["skipped"].append(f"stage ({budget.left():.0f} s left)")
        pipe_cfg = pipeline_config(plan, str(catalog), str(work / "pipeline"), device)
        if budget.allows(pipe_estimate):
            result["pipeline"] = run_pipeline(plan, pipe_cfg, device)
            result["pipeline"]["mfu"] = mfu(result["pipeline"]["images_per_s_steady"])
            logger.warning(
                "pipeline: %s", {k: v for k, v in result["pipeline"].items() if k != "written_series_s"}
            )
        else:
            result["pipeline"] = None
            result["variants"]["skipped"].append(f"pipeline ({budget.left():.0f} s left)")
        result["goals"] = goals(result)
    finally:
        result["loadavg_after"] = loadavg()
        result["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
        path = write_json(args.out, result)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(result)
    print(f"written: {path}")
    return result


def print_summary(result: dict[str, Any]) -> None:
    print(f"device: {result['device']} ({'smoke: numbers are meaningless' if result['smoke'] else 'full'})")
    peak = result["peak_matmul"]
    per_image = result["flops_per_image"]["used"]
    print(
        f"peak matmul {peak['dtype']}: {peak['tflops']:.1f} TFLOP/s; TFLOP per image: "
        + (f"{per_image / 1e12:.3g}" if per_image else "not counted (--pipeline-only)")
    )
    rows = []
    for r in result["variants"]["rows"]:
        rows.append(
            [
                r["name"],
                r["batch"],
                f"{r['images_per_s']:.3f}",
                f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] is not None else "-",
                f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-",
                r["peak_gib"] if r["peak_gib"] is not None else "-",
            ]
        )
    stage = result.get("stage")
    ref = next((r for r in result["variants"]["rows"] if r["name"] == "reference"), None)
    if stage and stage["images_per_s"]:
        rows.append(
            [
                "GenerateStage",
                stage["batch_size"],
                f"{stage['images_per_s']:.3f}",
                f"{stage['images_per_s'] / ref['images_per_s']:.2f}x" if ref else "-",
                f"{100 * stage['mfu']:.1f}%" if stage["mfu"] is not None else "-",
                stage["peak_gib"] if stage["peak_gib"] is not None else "-",
            ]
        )
    pipe = result.get("pipeline")
    if pipe and pipe["images_per_s_steady"]:
        rows.append(
            [
                "Ray pipeline (steady)",
                pipe["generation"]["batch_size"],
                f"{pipe['images_per_s_steady']:.3f}",
                f"{pipe['images_per_s_steady'] / ref['images_per_s']:.2f}x" if ref else "-",
                f"{100 * pipe['mfu']:.1f}%" if pipe["mfu"] is not None else "-",
                "-",
            ]
        )
    print(format_table(["setting", "batch", "img/s", "vs ref", "MFU", "peak GiB"], rows))
    bd = result["variants"].get("breakdown")
    if bd:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in bd["share_per_image"].items())
        kernels = ", ".join(f"{k} {100 * v:.0f}%" for k, v in bd["step_kernel_share"].items())
        print(f"eager b{bd['batch']} model time per image: {bd['model_seconds_per_image']:.3f} s ({shares})")
        print(f"one denoising step by kernel class ({bd['profiled']}, {bd['step_kernel_ms']} ms): {kernels}")
    for name, g in result.get("goals", {}).items():
        print(
            f"goal {name}: {g['value']} (target {g['target']}) -> {'met' if g['met'] else 'NOT met' if g['met'] is False else 'n/a'}"
        )
    for s in result["variants"]["skipped"]:
        print(f"skipped: {s}")


if __name__ == "__main__":
    main()
