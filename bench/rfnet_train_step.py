"""CPU benchmark: one RFNet training step of the ``small`` preset's structure per image backbone.

Wall-clock seconds per step (median, range) and CPU seconds (all threads; on a shared machine
the steadier figure). A step as the trainer runs it with its per-example caches (maps and descriptor computed once per
example, outside the step): forward through the encoders and the fusion, cross-entropy, backward,
AdamW. Backbones: ``compact`` (the preset's, from scratch) and ``efficientnet_lite0`` from the
shipped ImageNet weights (frozen BatchNorm statistics), with the generated image encoded at 64 px
(the preset's ``global_size``) and at 128 px; the product and the product-centred view at 64 px.

    python -m bench.rfnet_train_step                 # batch 32, writes bench/results/rfnet_train_step.json
    python -m bench.rfnet_train_step --batch 8 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json

SETTINGS = {
    "compact (small preset)": {},
    "efficientnet_lite0, image at 64 px": {
        "backbone": "efficientnet_lite0",
        "backbone_source": "builtin:efficientnet_lite0",
    },
    "efficientnet_lite0, image at 128 px": {
        "backbone": "efficientnet_lite0",
        "backbone_source": "builtin:efficientnet_lite0",
        "global_size": 128,
    },
}


def step_seconds(overrides: dict[str, Any], batch: int, repeats: int) -> dict[str, Any]:
    from pipelines.config import load_config
    from rfnet.config import RFNetConfig
    from rfnet.model import build_rfnet

    config = load_config(RFNetConfig, preset="small", overrides=overrides)
    model = build_rfnet(config, seed=0).train()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, config.image_size, config.image_size, generator=g)
    product = torch.zeros(batch, 4, config.product_size, config.product_size)
    s = config.product_size
    product[:, :3, s // 4 : 3 * s // 4, s // 3 : 2 * s // 3] = torch.rand(batch, 3, 1, 1, generator=g)
    product[:, 3, s // 4 : 3 * s // 4, s // 3 : 2 * s // 3] = 1.0
    has_product = torch.ones(batch, dtype=torch.bool)
    captions = model.tokenize(["a red ceramic mug with a white label"] * batch)
    labels = torch.arange(batch) % 6
    with torch.no_grad():  # the trainer's per-example caches
        maps = model.aux_maps(image, product, has_product)
        maps["descriptor"] = model.raw_descriptor(image, maps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(image, product, has_product, captions, maps=maps)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()

    step()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "median_s": round(float(np.median(times)), 3),
        # CPU seconds of all threads per step: what the step costs, less disturbed by other load
        "cpu_s": round(float(np.median(cpu)), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS_DIR / "rfnet_train_step.json"))
    args = parser.parse_args(argv)
    before = loadavg()
    results = {name: step_seconds(o, args.batch, args.repeats) for name, o in SETTINGS.items()}
    rows = [
        [name, r["median_s"], f"{r['min_s']}-{r['max_s']}", r["cpu_s"], r["parameters_m"]]
        for name, r in results.items()
    ]
    print(format_table(["backbone", "step s (median)", "range", "CPU s", "params M"], rows))
    write_json(
        args.out,
        {
            "command": command_line("bench.rfnet_train_step"),
            "machine": machine(),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "batch": args.batch,
            "repeats": args.repeats,
            "loadavg_before": before,
            "loadavg_after": loadavg(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
