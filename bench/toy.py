"""The ``toy`` generator measured: first-attempt verdicts, smoothness, colour steering, sampling cost.

    python -m bench.toy [--items 96] [--run out/demo] [--out bench/results/toy.json]

Generates one first attempt for each of ``--items`` procedurally drawn products (a seed the training
scenes never used), planned exactly as ``reliable-ad generate --preset toy`` plans them
(:func:`pipelines.attempts.plan_attempt`), and measures, without Ray:

- ``first_attempt``: the inspector's verdicts (``--rfnet``, default the preset's ``builtin:small``):
  available rate at its threshold, share of each predicted class;
- ``neighbour_difference``: mean absolute difference between horizontally and vertically
  neighbouring pixels, in grey levels (0-255, all channels), of the generated images; the same for
  the images of a finished run (``--run``, e.g. ``make demo``'s ``out/demo``) and for painted
  training scenes, for scale;
- ``colour_words``: the same products, seeds and template with "red" and with "blue" as the wall
  colour: mean red-minus-blue of the regenerated background, per colour;
- ``seconds_per_image``: generation wall time per image at the preset's batch size, steps and CFG.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import machine
from pipelines.attempts import plan_attempt
from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig, load_config
from pipelines.generate import GenerateStage
from pipelines.labels import LABELS
from pipelines.prepare import prepare_product
from rfnet.data.scenes import draw_product
from rfnet.data.scenes.toy import sample_scene
from rfnet.scorer import RFNetScorer

RESULTS = Path(__file__).parent / "results"
PRODUCT_SEED = 90_210  # products no training scene was drawn with


def neighbour_difference(images) -> float:
    """Mean |I(x+1, y) - I(x, y)| and |I(x, y+1) - I(x, y)| over images, pixels and channels (0-255)."""
    diffs = []
    for img in images:
        a = np.asarray(img, np.float32)
        diffs.append((np.abs(np.diff(a, axis=1)).mean() + np.abs(np.diff(a, axis=0)).mean()) / 2)
    return float(np.mean(diffs))


def generate(
    stage: GenerateStage, cfg: GenerateConfig, items, plans, products=None
) -> tuple[np.ndarray, list, float]:
    """Attempts for ``items`` with their ``plans``; returns images, prepared inputs, s/image. Item j
    shows drawn product ``products[j]`` (default j)."""
    products = range(len(items)) if products is None else products
    prepared = [
        prepare_product(
            draw_product(np.random.default_rng([PRODUCT_SEED, i]), 256).rgba, cfg.prepare, p.image_scale
        )
        for i, p in zip(products, plans, strict=True)
    ]
    images, b = [], cfg.generation.batch_size
    t0 = time.perf_counter()
    for k in range(0, len(plans), b):
        chunk = list(range(k, min(k + b, len(plans))))
        images.append(
            stage._generate(
                [prepared[i].product for i in chunk],
                [prepared[i].mask_image for i in chunk],
                [prepared[i].control_image for i in chunk],
                [plans[i].prompt for i in chunk],
                [plans[i].negative_prompt for i in chunk],
                [plans[i].seed for i in chunk],
            )
        )
    return np.concatenate(images), prepared, (time.perf_counter() - t0) / len(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--rfnet", default=None, help="inspector (default: the toy preset's)")
    parser.add_argument("--run", default=None, help="a finished run's --out whose images to measure too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sheet", default=None, help="write a PNG contact sheet of the generated images")
    parser.add_argument("--out", default=str(RESULTS / "toy.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from pipelines.config import parse_assignment

    cfg = load_config(GenerateConfig, preset="toy", assignments=dict(parse_assignment(a) for a in args.set))
    stage = GenerateStage(cfg)
    scorer = RFNetScorer(args.rfnet or cfg.inspect.rfnet, device="cpu", threshold=cfg.inspect.threshold)

    items = [CatalogItem(row=i + 1, sku_id=f"toy-bench-{i:04d}", image="") for i in range(args.items)]
    plans = [plan_attempt(item, 1, cfg) for item in items]
    images, prepared, seconds = generate(stage, cfg, items, plans)
    captions = [
        draw_product(np.random.default_rng([PRODUCT_SEED, i]), 256).caption for i in range(len(items))
    ]
    probs = scorer.score_numpy(images, np.stack([p.product for p in prepared]), captions)
    verdicts = np.bincount(probs.argmax(1), minlength=len(LABELS)) / len(items)
    available = float((probs[:, 0] >= scorer.threshold).mean())

    # Colour words: one template, "red" vs "blue", the same products and seeds.
    template = next(t for t in cfg.prompts.templates if "{color}" in t.prompt and "wall" in t.prompt)
    shift = {}
    for colour in ("red", "blue"):
        recoloured = [
            type(p)(**{**p.__dict__, "prompt": template.prompt.format(color=colour)}) for p in plans[:16]
        ]
        imgs, prep, _ = generate(stage, cfg, items[:16], recoloured)
        bg = [img[q.mask_image > 0].astype(np.float32) for img, q in zip(imgs, prep, strict=True)]
        shift[colour] = float(np.mean([b[:, 0].mean() - b[:, 2].mean() for b in bg]))

    prepare = cfg.prepare
    painted = [sample_scene(PRODUCT_SEED, i, prepare).image for i in range(64)]
    result = {
        "command": "python -m bench.toy "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, [], False)
        ),
        "machine": machine(),
        "items": args.items,
        "inspector": scorer.source,
        "threshold": scorer.threshold,
        "first_attempt": {
            "available_rate": round(available, 3),
            "predicted_share": {k: round(float(v), 3) for k, v in zip(LABELS, verdicts, strict=True)},
        },
        "neighbour_difference": {
            "generated": round(neighbour_difference(images), 2),
            "painted_scenes": round(neighbour_difference(painted), 2),
        },
        "colour_words_red_minus_blue": {k: round(v, 1) for k, v in shift.items()},
        "seconds_per_image": round(seconds, 3),
        "settings": {
            "resolution": prepare.resolution,
            "num_inference_steps": cfg.generation.num_inference_steps,
            "guidance_scale": cfg.generation.guidance_scale,
            "batch_size": cfg.generation.batch_size,
        },
    }
    if args.run:
        files = sorted(Path(args.run, "images").rglob("*.png"))
        result["neighbour_difference"]["run"] = {
            "dir": args.run,
            "images": len(files),
            "value": round(neighbour_difference(Image.open(f).convert("RGB") for f in files), 2),
        }
    if args.sheet:
        rows = [np.concatenate(list(images[k : k + 12]), 1) for k in range(0, len(images) - 11, 12)]
        Image.fromarray(np.concatenate(rows, 0)).save(args.sheet)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
