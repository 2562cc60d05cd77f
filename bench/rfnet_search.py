"""Product search accuracy: how often `locate_product` puts the box somewhere else than an exhaustive search.

Every RFNet measurement that depends on where the product is (the placement channel, the centred
view, the product and scene descriptors) is read at the box `rfnet.aux.locate_product` returns. This
runs the default search and an exhaustive one (every position and 30 scales at the full 128 px) on
the first ``--per-class`` images of each class of an RF1M set, and reports per class the share of
images whose boxes overlap less than half (IoU < 0.5), with the time per image of each::

    python -m bench.rfnet_search out/rfnet_quality/data-lifestyle-7   # prints a table, --out for JSON

The exhaustive search is the reference, not the truth (it can be fooled too, mostly on Unsuitable
images where the product itself is broken), and takes ~1 s per image on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import command_line, format_table, machine, write_json
from pipelines.labels import DISPLAY_NAMES
from rfnet.aux import locate_product
from rfnet.data.rf1m import read_rf1m
from rfnet.train import load_examples

EXHAUSTIVE = {
    "work_size": 128,
    "refine_size": 128,
    "min_scale": 0.15,
    "num_scales": 30,
    "candidates": 1,
    "verify_size": None,
}


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two ``(N, 4)`` box tensors (x0, y0, x1, y1)."""
    lo, hi = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(dim=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def timed_search(batch: dict, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.inference_mode():
        box, _ = locate_product(batch["image"], batch["product"], batch["has_product"], **kwargs)
    return box, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="an RF1M set (label.txt, images/, products/)")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = read_rf1m(args.data)
    samples = [
        s for label in range(6) for s in [s for s in index.samples if s.label == label][: args.per_class]
    ]
    examples = load_examples(samples, image_size=128, product_size=64, threads=args.threads)
    batch = examples.batch(np.arange(len(samples)), torch.device("cpu"))
    labels = examples.label
    box, seconds = timed_search(batch)
    reference, ref_seconds = timed_search(batch, **EXHAUSTIVE)
    off = box_iou(box, reference) < 0.5
    per_class = {
        DISPLAY_NAMES[c]: round(float(off[labels == c].float().mean()), 3)
        for c in range(6)
        if (labels == c).any()
    }
    result = {
        "command": command_line("bench.rfnet_search"),
        "machine": machine(),
        "data": str(args.data),
        "images": len(samples),
        "torch_threads": torch.get_num_threads(),
        "off_share": round(float(off.float().mean()), 3),
        "off_share_per_class": per_class,
        "ms_per_img": round(1000 * seconds / len(samples), 1),
        "exhaustive_ms_per_img": round(1000 * ref_seconds / len(samples), 1),
    }
    if args.out:
        write_json(args.out, result)
    print(
        format_table(
            ["class", "IoU < 0.5 with the exhaustive search"],
            [[name, f"{share:.1%}"] for name, share in per_class.items()]
            + [["all", f"{result['off_share']:.1%}"]],
        )
    )
    print(
        f"default search {result['ms_per_img']} ms/img, exhaustive {result['exhaustive_ms_per_img']} ms/img"
    )


if __name__ == "__main__":
    main()
