"""GPU benchmark: the ``paper`` RFNet (random weights, the paper's compute) on one GPU.

The paper's RFNet: a ResNet-50 per image at 384 px (generated image, product, depth map, saliency
map), RoBERTa-base captions, the FFM and three fusion layers, with Depth Anything Small computing
the depth map. Random weights cost the same as trained ones. Measured, in one run on one card:

1. ``score``: inference throughput (bf16 weights, as the inspection stage runs it) at batch 64 and
   128, 384 px inputs, depth and saliency computed inside (the full inspection cost);
2. ``score_no_depth``: the same with the depth map precomputed (what RFNet itself costs);
3. ``train``: one optimiser step (fp32 weights, bf16 autocast, AdamW), maps precomputed as the
   trainer does, at batch 32;
4. ``reward``: RFFT's reward (``RFNetScorer.predict_proba`` on 512 px decoded images, gradient
   w.r.t. the image) at batch 8.

Each case warms up, then times ``--iters`` iterations between ``torch.cuda.synchronize()`` calls,
and records peak memory. The whole run takes a few minutes (the budget is < 10 min on an H100).

    python -m bench.gpu_rfnet                 # paper preset on the GPU; bench/results/rfnet_gpu.json
    python -m bench.gpu_rfnet --smoke         # tiny preset on CPU, seconds: checks the script itself

On the offline GPU machine install what it lacks first (pydantic, pyyaml if missing): see
``../shared/gpu/README.md`` (``make_carry.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> tuple[float, float]:
    """(seconds per iteration, peak GiB allocated during the timed iterations)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    elapsed = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return elapsed, peak


def _row(case: str, batch: int, dt: float, peak: float) -> dict[str, Any]:
    return {
        "case": case,
        "batch": batch,
        "img_per_s": batch / dt,
        "ms_per_batch": 1000 * dt,
        "peak_gib": peak,
    }


def _inference_cases(
    cfg, placement, device, batch, score_batches, iters, warmup, report: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    from rfnet.model import build_rfnet

    infer = build_rfnet(cfg, pretrained=False, seed=0).to(device=device, dtype=placement.dtype)
    infer = infer.eval().requires_grad_(False)
    rows = []
    for b in score_batches:
        image, product, captions = batch(b, placement.dtype)
        tokens = infer.tokenize(captions)
        has = torch.ones(b, dtype=torch.bool, device=device)
        with torch.inference_mode():
            maps = infer.aux_maps(image, product, has)

            def full(image=image, product=product, has=has, tokens=tokens):
                return infer(image, product, has, tokens)

            def no_maps(image=image, product=product, has=has, tokens=tokens, maps=maps):
                return infer(image, product, has, tokens, maps=maps)

            rows.append(_row("score", b, *_time(full, device, iters, warmup)))
            report(rows[-1])
            rows.append(_row("score_no_depth", b, *_time(no_maps, device, iters, warmup)))
            report(rows[-1])
    return rows


def _train_case(model, placement, device, batch, train_batch, gen, iters, warmup) -> dict[str, Any]:
    from pipelines.device import autocast

    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    image, product, captions = batch(train_batch, torch.float32)
    tokens = model.tokenize(captions)
    has = torch.ones(train_batch, dtype=torch.bool, device=device)
    with torch.no_grad():
        maps = model.aux_maps(image, product, has)
    labels = torch.randint(0, 6, (train_batch,), generator=gen).to(device)

    def train_step() -> None:
        with autocast(placement):
            logits = model(image, product, has, tokens, maps=maps)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _row("train", train_batch, *_time(train_step, device, iters, warmup))


def run(
    preset: str,
    device: torch.device,
    iters: int,
    warmup: int,
    score_batches: list[int],
    train_batch: int,
    reward_batch: int,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
) -> dict[str, Any]:
    """Measure the four cases; ``report`` sees each row as soon as it is measured."""
    from pipelines.config import load_config
    from pipelines.device import place
    from rfnet.config import RFNetConfig
    from rfnet.model import build_rfnet
    from rfnet.scorer import RFNetScorer

    cfg = load_config(RFNetConfig, preset=preset)
    placement = place(str(device), "auto", component="bench-rfnet")
    t0 = time.perf_counter()
    model = build_rfnet(cfg, pretrained=False, seed=0)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s, p = cfg.image_size, cfg.product_size
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)

    def batch(b: int, dtype: torch.dtype):
        image = torch.rand(b, 3, s, s, generator=gen).to(device, dtype)
        product = torch.rand(b, 4, p, p, generator=gen).to(device, dtype)
        captions = ["a red ceramic mug with a white label on a marble table"] * b
        return image, product, captions

    # 1-2. Inference in the compute dtype (bf16 on Ampere+), as the inspection stage runs it.
    rows += _inference_cases(cfg, placement, device, batch, score_batches, iters, warmup, report)
    # 3. A training step: fp32 master weights, bf16 autocast, maps precomputed (as rfnet.train does).
    rows.append(
        _train_case(model.to(device).train(), placement, device, batch, train_batch, gen, iters, warmup)
    )
    report(rows[-1])
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 4. RFFT's reward through the scorer contract: 512 px decoded images, gradient w.r.t. the image.
    scorer = RFNetScorer("random:" + preset if preset != "tiny" else "tiny", device=str(device))
    canvas = 512 if preset != "tiny" else 128
    decoded = torch.rand(reward_batch, 3, canvas, canvas, generator=gen).to(device)
    placed = torch.zeros(reward_batch, 4, canvas, canvas)
    placed[:, :, canvas // 6 : -canvas // 6, canvas // 4 : -canvas // 4] = 0.8
    placed = placed.to(device)
    captions = ["a red ceramic mug"] * reward_batch

    def reward() -> None:
        x = decoded.clone().requires_grad_(True)
        loss = -torch.log(scorer.predict_proba(x, placed, captions)[:, 0]).mean()
        loss.backward()

    dt, peak = _time(reward, device, iters, warmup)
    rows.append(
        {
            "case": "reward",
            "batch": reward_batch,
            "img_per_s": reward_batch / dt,
            "ms_per_batch": 1000 * dt,
            "peak_gib": peak,
        }
    )
    report(rows[-1])
    return {
        "preset": preset,
        "config": cfg.to_dict(),
        "placement": placement.describe(),
        "params": params,
        "trainable_params": trainable,
        "build_s": build_s,
        "results": rows,
    }


def _print_row(row: dict[str, Any]) -> None:
    """Each case as soon as it is measured (a run stopped early still shows what it measured)."""
    print(
        f"measured {row['case']} batch {row['batch']}: {row['img_per_s']:.1f} img/s, "
        f"{row['ms_per_batch']:.1f} ms/batch, peak {row['peak_gib']:.2f} GiB",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny preset on CPU, 1 iteration: checks the script"
    )
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON output (default bench/results/rfnet_gpu.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
        result = run(
            "tiny",
            device,
            iters=1,
            warmup=1,
            score_batches=[4],
            train_batch=4,
            reward_batch=2,
            report=_print_row,
        )
        out = args.out or os.path.join(RESULTS, "rfnet_gpu_smoke.json")
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --smoke for a CPU check of the script", file=sys.stderr)
            return 2
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        result = run(
            "paper",
            device,
            iters=args.iters,
            warmup=args.warmup,
            score_batches=[64, 128],
            train_batch=32,
            reward_batch=8,
            report=_print_row,
        )
        out = args.out or os.path.join(RESULTS, "rfnet_gpu.json")
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["torch"] = torch.__version__
    result["command"] = " ".join(["python -m bench.gpu_rfnet", *(argv if argv is not None else sys.argv[1:])])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(out + ".tmp", out)
    print(
        f"RFNet {result['preset']} on {result['device']} ({result['params'] / 1e6:.1f}M params, {result['placement']['dtype']})"
    )
    print(f"{'case':<16}{'batch':>6}{'img/s':>10}{'ms/batch':>11}{'peak GiB':>10}")
    for r in result["results"]:
        print(
            f"{r['case']:<16}{r['batch']:>6}{r['img_per_s']:>10.1f}{r['ms_per_batch']:>11.1f}{r['peak_gib']:>10.2f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
