"""CPU benchmark: RFNet scoring throughput and the cost of each auxiliary map.

For the ``tiny`` and ``small`` presets (seeded random weights: the compute is that of a trained
model), measured on 128 px generated images with 512 px canvas-placed products (what the
generation pipeline passes):

- ``score_numpy``: the inspection path (uint8 in, product canonicalisation, maps, forward);
- ``predict_proba`` with a gradient w.r.t. the image: RFFT's reward path (forward + backward);
- the tensor operations one ``score_numpy`` call dispatches (views left out), at the batch and at
  three times it: on a GPU each is a kernel launch, a cost per call rather than per image;
- per-map cost per image: ``defocus`` and ``spectral_residual`` / ``frequency_tuned`` at 128 px,
  the product-match maps, the product search (`locate_product`), and the depth networks at their default size (``tiny_depth_anything``,
  ``depth_anything`` = Depth Anything Small, ``dpt`` = DPT ViT-B/16; random weights, same compute).

    python -m bench.rfnet_scoring            # writes bench/results/rfnet_cpu.json
    python -m bench.rfnet_scoring --quick    # fewer repeats, no DPT (a smoke run)
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _inputs(batch: int, size: int = 128, canvas: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    products = np.zeros((batch, canvas, canvas, 4), np.uint8)
    lo, hi = canvas // 6, canvas - canvas // 6
    products[:, lo:hi, canvas // 4 : canvas - canvas // 4, :3] = rng.integers(0, 255, (3,), dtype=np.uint8)
    products[:, lo:hi, canvas // 4 : canvas - canvas // 4, 3] = 255
    captions = ["a red ceramic mug with a white label"] * batch
    return images, products, captions


def dispatched_ops(fn: Callable[[], Any]) -> int:
    """Tensor operations ``fn`` runs, counted at torch's dispatcher, views left out: on a GPU each
    is at least one kernel launch, so a count that does not grow with the batch is a per-call cost."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.overloadpacket.__name__ not in (
                "empty",
                "empty_strided",
                "lift_fresh",
            ):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def bench_scoring(preset: str, batch: int, repeats: int) -> dict[str, Any]:
    from rfnet.scorer import RFNetScorer

    scorer = RFNetScorer("tiny" if preset == "tiny" else f"random:{preset}", device="cpu")
    images, products, captions = _inputs(batch)
    t_score = _timed(lambda: scorer.score_numpy(images, products, captions), repeats)

    image_t = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    product_t = torch.from_numpy(products).permute(0, 3, 1, 2).float() / 255

    def reward_step() -> None:
        x = image_t.clone().requires_grad_(True)
        scorer.predict_proba(x, product_t, captions)[:, 0].log().mean().backward()

    t_grad = _timed(reward_step, repeats)
    params = sum(p.numel() for p in scorer.model.parameters())
    ops = {}
    for n in (batch, 3 * batch):
        inputs = _inputs(n)
        ops[str(n)] = dispatched_ops(functools.partial(scorer.score_numpy, *inputs))
    return {
        "preset": preset,
        "batch": batch,
        "params": params,
        "score_img_per_s": batch / t_score,
        "score_ms_per_img": 1000 * t_score / batch,
        "reward_grad_img_per_s": batch / t_grad,
        "reward_grad_ms_per_img": 1000 * t_grad / batch,
        "score_ops_per_call": ops,  # at the batch and at three times it
    }


def bench_maps(repeats: int, with_dpt: bool) -> list[dict[str, Any]]:
    from rfnet.aux import build_aux, locate_product, product_match_maps

    out = []
    batch = 16
    image = torch.rand(batch, 3, 128, 128)
    product = torch.rand(batch, 4, 64, 64)
    has = torch.ones(batch, dtype=torch.bool)
    cases: list[tuple[str, int, Callable[[], Any], int]] = []
    for name in ("defocus", "spectral_residual", "frequency_tuned"):
        extractor = build_aux(name)
        cases.append((name, 128, lambda e=extractor: e(image), batch))
    cases.append(("product_match", 128, lambda: product_match_maps(image, product, has), batch))
    cases.append(("product_search", 128, lambda: locate_product(image, product, has), batch))
    networks = [("tiny_depth_anything", 56), ("depth_anything", 252)]
    if with_dpt:
        networks.append(("dpt", 384))
    for name, size in networks:
        extractor = build_aux(name, size=size)
        small_batch = 2 if name != "tiny_depth_anything" else batch
        x = image[:small_batch]
        cases.append((name, size, lambda e=extractor, x=x: e(x), small_batch))
    with torch.inference_mode():
        for name, size, fn, n in cases:
            t = _timed(fn, repeats if n == batch else max(2, repeats // 2))
            out.append({"map": name, "runs_at_px": size, "ms_per_img": 1000 * t / n})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="2 repeats and no DPT (a smoke run)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "rfnet_cpu.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    load_before = loadavg()
    scoring = [bench_scoring(p, args.batch, repeats) for p in ("tiny", "small")]
    maps = bench_maps(repeats, with_dpt=not args.quick)
    result = {
        "command": command_line("bench.rfnet_scoring"),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "scoring": scoring,
        "maps": maps,
    }
    path = write_json(args.out, result)
    print(
        format_table(
            ["preset", "params", "batch", "score img/s", "ms/img", "reward (grad) img/s", "ops per call"],
            [
                [
                    r["preset"],
                    f"{r['params']:,}",
                    r["batch"],
                    f"{r['score_img_per_s']:.1f}",
                    f"{r['score_ms_per_img']:.2f}",
                    f"{r['reward_grad_img_per_s']:.1f}",
                    " / ".join(f"{v:,} (b{k})" for k, v in r["score_ops_per_call"].items()),
                ]
                for r in scoring
            ],
        )
    )
    print()
    print(
        format_table(
            ["map", "px", "ms/img"], [[m["map"], m["runs_at_px"], f"{m['ms_per_img']:.2f}"] for m in maps]
        )
    )
    print(
        f"\nload average before/after: {load_before} / {result['loadavg_after']} (cores: {machine()['logical_cpus']})"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
