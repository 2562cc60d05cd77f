"""RFNet quality protocol: train ``small`` on CPU, evaluate on the held-out test split, ablate modalities.

Runs the same commands an operator would (``reliable-ad train-rfnet --preset small`` then
``reliable-ad evaluate``) as subprocesses, so the wall clock includes Python and Ray start-up,
on one or more labelled sets, each painted by :func:`rfnet.data.scenes.make_set`:

- ``synthetic``: the ``synthetic`` scenes with drawn products;
- ``synthetic-real``: the same scenes with the real cut-outs of ``--products-dir``;
- ``alt``: a second generator written independently in another style (other scene textures,
  product shapes, defect parameters, and product files at their original resolution rather than
  the pasted size), to check that RFNet was not tuned to one generator;
- ``studio``: a third generator written from the class definitions only, without reading the other
  two: perspective studio scenes, large centred products as the production pipeline places them,
  other defect variants;
- ``studio-real``: the same scenes and defects around the real cut-outs of ``--products-dir``
  (photographs of products: printed labels, gloss, several parts in one cut-out);
- ``lifestyle``: a fourth, written the same way from the class definitions alone: kitchen
  counters, desks, bathroom shelves and outdoor scenes at varied camera heights.

``small`` fine-tunes from the shipped ``builtin:small`` weights, which were trained on the
``synthetic`` generator (another data seed): ``alt`` and ``studio`` are the sets it has never seen
anything of. ``--set init_from=null`` starts from the ImageNet image encoders and random weights
for the rest instead.

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

from bench.common import RESULTS_DIR, command_line, format_table, loadavg, machine, write_json
from pipelines.labels import LABELS
from rfnet.config import DESCRIPTOR_EXTENSIONS
from rfnet.data.scenes import SETS, make_set

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
        help="comma list of scene sets (synthetic, alt, studio, lifestyle) and of the ones that take "
        "real cut-outs with -real (synthetic-real, studio-real)",
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
    sets = args.sets.split(",")
    for name in sets:
        family = name.removesuffix("-real")
        if family not in SETS or (name != family and not SETS[family].takes_products):
            takes = [f"{n}-real" for n, painter in SETS.items() if painter.takes_products]
            parser.error(f"unknown set {name!r}; choose from {', '.join([*SETS, *takes])}")
    for ablation in args.ablations.split(","):
        if ablation not in ABLATIONS:
            parser.error(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")

    results: dict[str, Any] = {
        "command": command_line("bench.rfnet_quality"),
        "machine": machine(),
        "runs": [],
    }
    for name in sets:
        data = os.path.join(args.work, f"data-{name}-{args.seed}")
        if not os.path.exists(os.path.join(data, "label.txt")):
            make_set(
                name.removesuffix("-real"),
                data,
                n_per_class=args.n_per_class,
                image_size=args.image_size,
                seed=args.seed,
                products_dir=args.products_dir if name.endswith("-real") else None,
            )
        for ablation in args.ablations.split(","):
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
