"""RFNet quality protocol: train ``small`` on CPU, evaluate on the held-out test split, ablate modalities.

Runs the same commands an operator would (``reliable-ad train-rfnet --preset small`` then
``reliable-ad evaluate``) as subprocesses, so the wall clock includes Python and Ray start-up,
on one or more labelled sets:

- ``synthetic``: ``rfnet.data.synthetic.make_synthetic_set`` with drawn products;
- ``synthetic-real``: the same generator with the real cut-outs of ``--products-dir``;
- ``alt``: :func:`make_alt_set` below, a second generator written independently in another style
  (other scene textures, product shapes, defect parameters, and product files at their original
  resolution rather than the pasted size), to check that RFNet was not tuned to one generator;
- ``studio``: :func:`bench.rfnet_studio.make_studio_set`, a third generator written from the class
  definitions only, without reading the other two: perspective studio scenes, large centred
  products as the production pipeline places them, other defect variants;
- ``studio-real``: the same scenes and defects around the real cut-outs of ``--products-dir``
  (photographs of products: printed labels, gloss, several parts in one cut-out);
- ``lifestyle``: :func:`bench.rfnet_lifestyle.make_lifestyle_set`, a fourth, written the same way
  from the class definitions alone: kitchen counters, desks, bathroom shelves and outdoor scenes
  at varied camera heights.

``small`` fine-tunes from the shipped ``builtin:small`` weights, which were trained on the
``synthetic`` generator (another data seed): ``alt`` and ``studio`` are the sets it has never seen
anything of. ``--set init_from=null`` trains from random weights instead.

Modality sets (``--ablations``, default ``all``): ``all`` modalities; ``image_only``, the generated
image only (no product, caption, depth or saliency); ``no_product``, everything but the product
image. Results go to ``--out`` (``bench/results/rfnet_quality.json``) and a table; docs/rfnet.md
quotes them.

    python -m bench.rfnet_quality --sets synthetic,alt,studio --n-per-class 350
    python -m bench.rfnet_quality --sets studio --set init_from=null --tag=-scratch
    python -m bench.rfnet_quality --sets synthetic --ablations image_only,no_product \
        --out bench/results/rfnet_ablations.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json
from pipelines.labels import LABELS
from rfnet.config import DESCRIPTOR_EXTENSIONS

# Everything built on the product image: the product encoder, its match maps and placement, the
# centred view, and the descriptor with all its extensions and trees.
_NO_PRODUCT = [
    "model.use_product=false",
    "model.use_product_match=false",
    "model.use_placement=false",
    "model.local_view=false",
    "model.use_descriptor=false",
    *(f"model.{flag}=false" for flag in DESCRIPTOR_EXTENSIONS),
    "model.descriptor_trees=0",
]
ABLATIONS: dict[str, list[str]] = {
    "all": [],
    "image_only": [
        *_NO_PRODUCT,
        "model.use_caption=false",
        "model.use_depth=false",
        "model.use_saliency=false",
    ],
    "no_product": _NO_PRODUCT,
}


# ----------------------------------------------------------------------------------------------------
# A second, independent defect generator ("alt" style).


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    px = np.uint8([[[int(h) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _alt_texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    kind = rng.choice(["dots", "checker", "radial", "waves", "flat"])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "dots":
        p = rng.uniform(6, 14)
        t = 1 - 0.12 * (np.hypot((x % p) - p / 2, (y % p) - p / 2) < p / 5)
    elif kind == "checker":
        p = int(rng.integers(5, 12))
        t = 1 - 0.08 * (((x // p) + (y // p)) % 2)
    elif kind == "radial":
        t = 1.1 - 0.25 * np.hypot(x - rng.uniform(0, w), y - rng.uniform(0, h)) / max(h, w)
    elif kind == "waves":
        t = 1 + 0.07 * np.sin(x / rng.uniform(3, 8) + 2 * np.sin(y / rng.uniform(5, 15)))
    else:
        t = np.ones((h, w), np.float32)
    return np.clip(colour[None, None] * t[..., None], 0, 255)


def _alt_product(rng: np.random.Generator, height: int) -> tuple[np.ndarray, np.ndarray, str]:
    """An RGBA product at ``height`` px (its original resolution), its main colour, a caption."""
    hue = rng.uniform(0, 180)
    colour = _hsv(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    kind = rng.choice(["capsule", "flask", "prism", "lamp", "bag"])
    w = int(height * rng.uniform(0.35, 0.8))
    mask = np.zeros((height, w), np.uint8)
    if kind == "capsule":
        cv2.rectangle(mask, (0, w // 2), (w - 1, height - 1 - w // 2), 255, -1)
        cv2.circle(mask, (w // 2, w // 2), w // 2, 255, -1, cv2.LINE_AA)
        cv2.circle(mask, (w // 2, height - 1 - w // 2), w // 2, 255, -1, cv2.LINE_AA)
    elif kind == "flask":
        cv2.circle(mask, (w // 2, height - w // 2 - 1), w // 2, 255, -1, cv2.LINE_AA)
        cv2.rectangle(mask, (w // 3, 0), (w - w // 3, height - w), 255, -1)
    elif kind == "prism":
        pts = np.array(
            [[w // 2, 0], [w - 1, height // 3], [w - 1, height - 1], [0, height - 1], [0, height // 3]],
            np.int32,
        )
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    elif kind == "lamp":
        cv2.fillPoly(
            mask,
            [np.array([[w // 4, 0], [3 * w // 4, 0], [w - 1, height // 3], [0, height // 3]], np.int32)],
            255,
            cv2.LINE_AA,
        )
        cv2.rectangle(
            mask, (w // 2 - max(1, w // 12), height // 3), (w // 2 + max(1, w // 12), height - 4), 255, -1
        )
        cv2.rectangle(mask, (w // 6, height - 5), (w - w // 6, height - 1), 255, -1)
    else:
        cv2.rectangle(mask, (0, height // 4), (w - 1, height - 1), 255, -1)
        cv2.ellipse(
            mask, (w // 2, height // 4), (w // 3, height // 5), 0, 180, 360, 255, max(2, w // 10), cv2.LINE_AA
        )
    shade = np.linspace(1.15, 0.75, w, dtype=np.float32)[None, :, None]
    rgb = np.clip(colour[None, None] * shade, 0, 255) * np.ones((height, 1, 1), np.float32)
    stripe = _hsv(hue + rng.uniform(40, 140), 0.6, 0.9)
    y0 = int(rng.uniform(0.45, 0.7) * height)
    rgb[y0 : y0 + max(2, height // 10)] = stripe
    rgba = np.dstack([rgb, mask.astype(np.float32)]).round().astype(np.uint8)
    rgba[mask == 0] = 0
    return (
        rgba,
        colour,
        f"a {kind} in {['red', 'orange', 'yellow', 'green', 'cyan', 'blue', 'purple', 'pink'][int(hue // 22.5) % 8]}",
    )


def _paste(img: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    h, w = rgba.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(img.shape[1], x + w), min(img.shape[0], y + h)
    if x0 >= x1 or y0 >= y1:
        return
    src = rgba[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = src[..., 3:] / 255.0
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + src[..., :3] * a


def _resize_rgba(rgba: np.ndarray, w: int, h: int) -> np.ndarray:
    f = rgba.astype(np.float32)
    a = f[..., 3:] / 255.0
    pre = cv2.resize(
        np.dstack([f[..., :3] * a, f[..., 3:]]), (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA
    )
    alpha = np.clip(pre[..., 3:], 0, 255)
    rgb = np.where(alpha > 0.5, pre[..., :3] / np.maximum(alpha, 1e-3) * 255.0, 0)
    return np.dstack([np.clip(rgb, 0, 255), alpha]).round().astype(np.uint8)


def _furniture(rng: np.random.Generator, img: np.ndarray, cx: int, base: int, height: int) -> None:
    colour = tuple(float(v) for v in _hsv(rng.uniform(0, 180), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.8)))
    kind = rng.choice(["cabinet", "tree", "stool"])
    w = max(2, int(height * rng.uniform(0.4, 0.8)))
    if kind == "cabinet":
        cv2.rectangle(img, (cx - w // 2, base - height), (cx + w // 2, base), colour, -1)
        cv2.line(img, (cx, base - height), (cx, base), tuple(c * 0.6 for c in colour), 1)
    elif kind == "tree":
        cv2.rectangle(
            img, (cx - max(1, w // 10), base - height // 2), (cx + max(1, w // 10), base), (90, 60, 30), -1
        )
        cv2.circle(img, (cx, base - height + w // 2), w // 2, (40, 130, 50), -1, cv2.LINE_AA)
    else:
        cv2.rectangle(
            img, (cx - w // 2, base - height), (cx + w // 2, base - height + max(2, height // 8)), colour, -1
        )
        cv2.rectangle(img, (cx - w // 2, base - height), (cx - w // 2 + max(1, w // 8), base), colour, -1)
        cv2.rectangle(img, (cx + w // 2 - max(1, w // 8), base - height), (cx + w // 2, base), colour, -1)


def render_alt(label: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """One "alt" image of class ``label``: ``(image (S, S, 3) uint8, product RGBA at its own scale, caption)``."""
    product, colour, caption = _alt_product(rng, int(rng.integers(size, 2 * size)))
    name = LABELS[label]
    ph = int(size * rng.uniform(0.3, 0.55))
    pasted = _resize_rgba(product, round(product.shape[1] * ph / product.shape[0]), ph)
    pw = pasted.shape[1]
    horizon = int(size * rng.uniform(0.45, 0.7))
    far = np.float32(rng.uniform(0, 180))
    wall_c, floor_c = (
        _hsv(far, rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95)),
        _hsv(far + 90, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8)),
    )
    if np.linalg.norm(wall_c - colour) < 80:
        wall_c = 255 - wall_c
    if name == "indistinctiveness":
        wall_c = np.clip(colour + rng.normal(0, 8, 3), 0, 255)
        floor_c = np.clip(colour * rng.uniform(0.85, 1.0) + rng.normal(0, 8, 3), 0, 255)
    img = np.zeros((size, size, 3), np.float32)
    img[:horizon] = _alt_texture(rng, horizon, size, wall_c)
    img[horizon:] = _alt_texture(rng, size - horizon, size, floor_c)
    cx = int(size / 2 + rng.uniform(-0.15, 0.15) * size)
    base = int(rng.uniform(horizon + 0.1 * (size - horizon), size - 3))
    # Reference furniture on the floor, scaled by depth (lower = nearer = bigger).
    for _ in range(int(rng.integers(1, 3)) if name != "size_mismatch" else 2):
        side = rng.choice([-1, 1])
        fx = int(np.clip(cx + side * rng.uniform(0.3, 0.45) * size, 4, size - 4))
        fbase = int(rng.uniform(horizon + 2, base))
        depth = (fbase - horizon) / max(1, base - horizon)
        rel = (
            rng.uniform(1.6, 3.0)
            if name != "size_mismatch"
            else (rng.uniform(0.15, 0.35) if rng.random() < 0.5 else rng.uniform(6, 9))
        )
        _furniture(rng, img, fx, fbase, max(3, int(ph * rel * max(0.3, depth))))
    if name == "unsuitable":
        variant = rng.choice(["streaks", "blocks", "posterize"])
        if variant == "streaks":
            for _ in range(int(rng.integers(15, 40))):
                c = tuple(float(v) for v in rng.uniform(0, 255, 3))
                p0 = tuple(int(v) for v in rng.integers(0, size, 2))
                p1 = tuple(int(v) for v in rng.integers(0, size, 2))
                cv2.line(img, p0, p1, c, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif variant == "blocks":
            for _ in range(int(rng.integers(8, 20))):
                x0, y0 = (int(v) for v in rng.integers(0, size, 2))
                cv2.rectangle(
                    img,
                    (x0, y0),
                    (x0 + int(rng.integers(5, 30)), y0 + int(rng.integers(5, 30))),
                    tuple(float(v) for v in rng.uniform(0, 255, 3)),
                    -1,
                )
        else:
            img = np.floor(img / 85) * 85 + rng.uniform(0, 60, img.shape).astype(np.float32)
    y_top = base - ph
    if name == "space_mismatch":
        y_top -= int(rng.uniform(0.12, 0.3) * size)  # floating: a gap between base and floor
    else:
        cv2.ellipse(
            img,
            (cx, base),
            (int(pw * 0.55), max(2, ph // 12)),
            0,
            0,
            360,
            tuple(float(v) * 0.55 for v in floor_c),
            -1,
            cv2.LINE_AA,
        )
    x_left = cx - pw // 2
    if name == "shape_hallucination":
        variant = rng.choice(["blob", "echo"])
        tint = np.clip(colour * rng.uniform(0.9, 1.1), 0, 255)
        if variant == "blob":
            for _ in range(int(rng.integers(1, 3))):
                bx = x_left + (0 if rng.random() < 0.5 else pw)
                by = y_top + int(rng.uniform(0.1, 0.8) * ph)
                cv2.ellipse(
                    img,
                    (bx, by),
                    (int(pw * rng.uniform(0.25, 0.5)), int(ph * rng.uniform(0.08, 0.2))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    tuple(float(v) for v in tint),
                    -1,
                    cv2.LINE_AA,
                )
        else:
            echo = _resize_rgba(pasted, pw, int(ph * rng.uniform(1.2, 1.5)))
            _paste(
                img,
                echo,
                x_left + int(rng.choice([-1, 1]) * pw * rng.uniform(0.2, 0.4)),
                base - echo.shape[0],
            )
    img += rng.normal(0, rng.uniform(0, 4), img.shape).astype(np.float32)
    _paste(img, pasted, x_left, y_top)
    return np.clip(img, 0, 255).round().astype(np.uint8), product, caption


def make_alt_set(out: str, *, n_per_class: int, image_size: int, seed: int) -> str:
    """Write an "alt" style RF1M-layout set (label.txt, images/, products/, captions.jsonl) to ``out``."""
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "products").mkdir(parents=True, exist_ok=True)
    lines, captions = [], []
    for label in range(len(LABELS)):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, label, i, 99])
            image, product, caption = render_alt(label, rng, image_size)
            name = f"alt{seed}_{rng.integers(1 << 40):010x}.png"
            cv2.imwrite(str(root / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "products" / name), cv2.cvtColor(product, cv2.COLOR_RGBA2BGRA))
            lines.append(f"images/{name}\t{label + 1}\n")
            captions.append(json.dumps({"image": f"images/{name}", "caption": caption}) + "\n")
    (root / "captions.jsonl").write_text("".join(sorted(captions)))
    (root / "label.txt").write_text("".join(sorted(lines)))
    return out


# ----------------------------------------------------------------------------------------------------
# The protocol.


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("reliable-ad")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]


def run_protocol(data: str, work: str, extra: list[str], max_minutes: float | None) -> dict[str, Any]:
    """train-rfnet --preset small, then evaluate on the test split it held out; wall clock and eval.json."""
    model, evaluation = os.path.join(work, "model"), os.path.join(work, "eval")
    train = [
        *_cli(),
        "train-rfnet",
        "--preset",
        "small",
        "--data",
        data,
        "--out",
        model,
        "--set",
        "resume=false",
    ]
    if max_minutes:
        train += ["--max-minutes", str(max_minutes)]
    for assignment in extra:
        train += ["--set", assignment]
    t0 = time.time()
    subprocess.run(train, check=True)
    train_s = time.time() - t0
    subprocess.run([*_cli(), "evaluate", "--rfnet", model, "--data", data, "--out", evaluation], check=True)
    with open(os.path.join(evaluation, "eval.json")) as f:
        report = json.load(f)
    with open(os.path.join(model, "meta.json")) as f:
        meta = json.load(f)
    # meta.json is written at the best epoch; the last Ray Train checkpoint knows how many ran.
    states = sorted(
        glob.glob(os.path.join(model, "ray_train", "*", "checkpoint_*", "trainer_state.json")),
        key=os.path.getmtime,
    )
    epochs = len(meta["train"]["history"])
    if states:
        with open(states[-1]) as f:
            epochs = int(json.load(f)["epoch"])
    return {
        "train_wall_s": round(train_s, 1),
        "best_epoch": meta["train"]["best_epoch"],
        "epochs": epochs,
        "macro_f1": report["macro_f1"],
        "eval_split": report["split"]["mode"],
        # the best epoch's validation score: what chose the epoch and the tree weight (above the
        # test score by the luck of that choice)
        "val_macro_f1": meta["train"].get("val_macro_f1"),
        "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()},
        "available_ap": report["available"]["ap"],
        "n_eval": report["n"],
        "init_from": meta["train"].get("config", {}).get("init_from"),
        "train_command": " ".join(train),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets",
        default="synthetic,alt",
        help="comma list of synthetic, synthetic-real, alt, studio, studio-real, lifestyle",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=350,
        help="images per class (15 %% are held out for the test, 15 %% of the rest validate)",
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7, help="data seed (not a seed RFNet was tuned on)")
    parser.add_argument(
        "--products-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "products")
    )
    parser.add_argument(
        "--ablations",
        default="all",
        help=f"comma list of modality sets to train: {', '.join(ABLATIONS)} (default: all)",
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="override the small preset's budget")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to train-rfnet for every run, e.g. --set init_from=null (start from random weights)",
    )
    parser.add_argument("--tag", default="", help="suffix of the work directories (keeps runs apart)")
    parser.add_argument("--work", default="out/rfnet_quality")
    parser.add_argument("--out", default=str(RESULTS_DIR / "rfnet_quality.json"))
    args = parser.parse_args()
    from rfnet.data.synthetic import make_synthetic_set

    results: dict[str, Any] = {
        "command": command_line("bench.rfnet_quality"),
        "machine": machine(),
        "runs": [],
    }
    for name in args.sets.split(","):
        data = os.path.join(args.work, f"data-{name}-{args.seed}")
        if not os.path.exists(os.path.join(data, "label.txt")):
            if name == "alt":
                make_alt_set(data, n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed)
            elif name in ("studio", "studio-real"):
                from bench.rfnet_studio import make_studio_set

                make_studio_set(
                    data,
                    n_per_class=args.n_per_class,
                    image_size=args.image_size,
                    seed=args.seed,
                    products_dir=args.products_dir if name == "studio-real" else None,
                )
            elif name == "lifestyle":
                from bench.rfnet_lifestyle import make_lifestyle_set

                make_lifestyle_set(
                    data, n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed
                )
            else:
                products = args.products_dir if name == "synthetic-real" else None
                make_synthetic_set(
                    data,
                    n_per_class=args.n_per_class,
                    image_size=args.image_size,
                    seed=args.seed,
                    products_dir=products,
                )
        for ablation in args.ablations.split(","):
            if ablation not in ABLATIONS:
                parser.error(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
            extra = [*ABLATIONS[ablation], *args.assignments]
            load = loadavg()
            work = os.path.join(args.work, f"{name}-{ablation}{args.tag}")
            run = run_protocol(data, work, extra, args.max_minutes)
            results["runs"].append({"set": name, "ablation": ablation, "loadavg_before": load, **run})
            write_json(args.out, results)
    rows = [
        [
            r["set"],
            r["ablation"],
            r.get("init_from") or "random",
            f"{r['macro_f1']:.3f}",
            *(f"{r['per_class_f1'][k]:.2f}" for k in LABELS),
            r["epochs"],
            f"{r['train_wall_s']:.0f}",
        ]
        for r in results["runs"]
    ]
    print(
        format_table(
            ["set", "modalities", "init", "macro F1", *(k[:10] for k in LABELS), "epochs", "train s"], rows
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
