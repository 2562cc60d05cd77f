"""How far RFNet's hand measurements go alone: cross-validated macro F1 of a small classifier on them.

RFNet's descriptor (``rfnet.aux.product_descriptor`` + ``scene_descriptor``: box geometry,
contrasts, attached product-coloured matter, base contact, standing-object heights, ...) is one of
its inputs. This measures what the descriptor alone can tell apart on a labelled RF1M set: the
numbers of every image are computed once with ``--rfnet`` (default ``builtin:small``, which fixes
the image size and the product search), then each of ``--classifiers`` is scored by
``--folds``-fold cross-validation over all images (the same folds for each):

- ``mlp``: one hidden layer of 64 (GELU, dropout 0.2, AdamW, 300 full-batch steps on standardised
  inputs);
- ``trees``: the boosted trees RFNet fits on its descriptor (:mod:`rfnet.trees`, the ``small``
  preset's settings).

Next to the full model's macro F1 on the same set, it says how much the CNNs add over the
measurements, and what each kind of classifier makes of them::

    python -m bench.rfnet_descriptor_cv out/rfnet_quality/data-alt-7 out/rfnet_quality/data-lifestyle-7

``--jpeg Q`` measures every image after a JPEG round trip at quality Q, as a set of JPEG files
would be: how much of what the measurements see survives compression. ``--products-on-white Q``
replaces every product file by the product flattened onto white and saved as a JPEG at quality Q
(a catalogue's product photos that were never cut out), read as RFNet reads a product file without
alpha (:func:`rfnet.data.transforms.white_background`).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import tempfile
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.common import RESULTS_DIR, command_line, format_table, machine, write_json
from pipelines import storage
from pipelines.labels import DISPLAY_NAMES, NUM_CLASSES
from rfnet.checkpoint import load_rfnet
from rfnet.data.rf1m import read_rf1m
from rfnet.metrics import confusion_matrix, macro_f1, per_class_metrics
from rfnet.train import load_examples, precompute_maps
from rfnet.trees import TreeParams, fit_trees

CLASSIFIERS = ("mlp", "trees")


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 RGB images encoded as JPEG at ``quality`` (4:2:0 chroma, as most
    encoders write photos) and decoded again."""
    out = images.numpy().copy()
    for i, rgb in enumerate(out):
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(out)


def product_on_white(data: bytes, quality: int) -> bytes:
    """A product file's bytes -> the product flattened onto white, as JPEG bytes at ``quality``."""
    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = np.clip(np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def descriptors(
    model, root: str, threads: int, jpeg: int | None = None, products_on_white: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` raw descriptors and ``(N,)`` labels of every labelled image under ``root``;
    ``jpeg``: measure the images after a JPEG round trip at that quality; ``products_on_white``:
    with each product file flattened onto white and saved as a JPEG at that quality."""
    cfg = model.config
    samples = [s for s in read_rf1m(root).samples if s.label >= 0]
    with tempfile.TemporaryDirectory(prefix="products-on-white-") as tmp:
        if products_on_white is not None:
            for i, s in enumerate(samples):
                if s.product is not None:
                    path = os.path.join(tmp, f"{i}.jpg")
                    with open(path, "wb") as f:
                        f.write(product_on_white(storage.read_bytes(s.product), products_on_white))
                    samples[i] = dataclasses.replace(s, product=path)
        data = load_examples(
            samples, image_size=cfg.image_size, product_size=cfg.product_size, threads=threads
        )
    if jpeg is not None:
        data.image = jpeg_round_trip(data.image, jpeg)
    precompute_maps(model, data, torch.device("cpu"), descriptor=True)
    if data.desc is None:
        raise ValueError(
            f"the RFNet's config has no descriptor (use_descriptor=false); nothing to measure on {root}"
        )
    return data.desc.numpy(), data.label.numpy()


def cross_validate(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int, classifier: str = "mlp"
) -> np.ndarray:
    """Out-of-fold predictions of ``classifier`` (``"mlp"`` or ``"trees"``)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose from {CLASSIFIERS}")
    order = np.random.default_rng(seed).permutation(len(y))
    parts = np.array_split(order, folds)
    pred = np.zeros_like(y)
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        if classifier == "trees":
            trees = fit_trees(x[train], y[train], NUM_CLASSES, TreeParams(seed=seed * 100 + k))
            pred[test] = trees.logits(torch.from_numpy(x[test])).argmax(1).numpy()
            continue
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        xt = torch.tensor((x[train] - mean) / std, dtype=torch.float32).clamp(-6, 6)
        xe = torch.tensor((x[test] - mean) / std, dtype=torch.float32).clamp(-6, 6)
        yt = torch.tensor(y[train], dtype=torch.long)
        torch.manual_seed(seed * 100 + k)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 64),
            torch.nn.GELU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(64, NUM_CLASSES),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
        net.train()
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(net(xt), yt).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred[test] = net(xe).argmax(1).numpy()
    return pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="RF1M sets (label.txt, images/, products/)")
    parser.add_argument("--rfnet", default="builtin:small", help="RFNet whose measurements are used")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifiers", default="mlp,trees", help=f"comma list of {', '.join(CLASSIFIERS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--jpeg",
        type=int,
        metavar="Q",
        help="measure every image after a JPEG round trip at quality Q (1-100)",
    )
    parser.add_argument(
        "--products-on-white",
        type=int,
        metavar="Q",
        help="replace every product file by the product flattened onto white, as a JPEG at quality Q",
    )
    parser.add_argument("--out", default=str(RESULTS_DIR / "rfnet_descriptor_cv.json"))
    args = parser.parse_args()
    for flag, value in (("--jpeg", args.jpeg), ("--products-on-white", args.products_on_white)):
        if value is not None and not 1 <= value <= 100:
            parser.error(f"{flag}: a quality from 1 to 100")
    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown or not classifiers:
        parser.error(f"--classifiers: unknown {unknown}; choose from {', '.join(CLASSIFIERS)}")
    torch.set_num_threads(args.threads)
    model = load_rfnet(args.rfnet, device="cpu", dtype="float32").model
    result = {
        "command": command_line("bench.rfnet_descriptor_cv"),
        "machine": machine(),
        "rfnet": args.rfnet,
        "jpeg_quality": args.jpeg,
        "products_on_white_quality": args.products_on_white,
    }
    rows, sets = [], {}
    for root in args.data:
        t0 = time.perf_counter()
        x, y = descriptors(model, root, args.threads, args.jpeg, args.products_on_white)
        name = os.path.basename(os.path.normpath(root))
        sets[name] = {"data": root, "images": len(y), "descriptor_size": int(x.shape[1]), "folds": args.folds}
        for classifier in classifiers:
            pred = cross_validate(x, y, args.folds, args.seed, classifier)
            cm = confusion_matrix(y, pred, NUM_CLASSES)
            f1 = per_class_metrics(cm).f1
            sets[name][classifier] = {
                "macro_f1": round(macro_f1(cm), 4),
                "per_class_f1": {DISPLAY_NAMES[c]: round(float(f1[c]), 4) for c in range(NUM_CLASSES)},
                "confusion": cm.tolist(),
            }
            rows.append([name, classifier, len(y), f"{macro_f1(cm):.3f}", *(f"{v:.2f}" for v in f1)])
        sets[name]["seconds"] = round(time.perf_counter() - t0, 1)
    result["sets"] = sets
    write_json(args.out, result)
    print(format_table(["set", "classifier", "images", "macro F1", *DISPLAY_NAMES], rows))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
