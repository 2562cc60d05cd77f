"""Build a checkpoint shipped with the package (``builtin:<name>``, under ``rfnet/weights/<name>/``).

RFNet's ``small`` preset is trained on a CPU from a few thousand labelled images. Its image
encoders start from ImageNet (EfficientNet-Lite0, ``builtin:efficientnet_lite0``), but
everything after them (fusion, caption encoder, descriptor MLP, head, trees) is new. So the
``small`` preset starts from a whole checkpoint trained on a larger synthetic defect set (the ``synthetic`` set of
:mod:`rfnet.data.scenes`, products drawn procedurally, no external data):

    python -m rfnet.pretrain --out rfnet/weights/small

1. writes ``--n-per-class`` images per class of the synthetic set (seed ``--seed``, 128 px); with
   ``--generator NAME`` (repeatable, a set of :data:`rfnet.data.scenes.SETS`) the images per class
   are shared between several scene sets, merged into one (file names prefixed by the set's
   position);
2. trains ``--preset small`` on it from the ImageNet encoders and otherwise random weights
   (``train_rfnet``, Ray Train, the same loop as ``reliable-ad train-rfnet``) for ``--minutes``;
3. exports the best epoch: parameters in float16 (half the size; they are cast back to float32
   when loaded, a difference far below what fine-tuning changes), buffers (the descriptor
   statistics) in float32, ``config.json``, and a ``meta.json`` that records how it was made.

The toy world's reward and judge (docs/toy.md) are built the same way from painted toy scenes,
with different data and training seeds (``--preset toy --generator toy --image-size 96``).

``reliable-ad train-rfnet --preset small`` then fine-tunes from it (``init_from="builtin:small"``),
and ``load_rfnet("builtin:small")`` is an inspector that judges the synthetic defects out of the box.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipelines.config import load_config, parse_assignment
from rfnet.checkpoint import CONFIG, META, WEIGHTS
from rfnet.data.scenes import SETS, make_set

logger = logging.getLogger(__name__)


def export_checkpoint(trained: str, out: str, provenance: dict) -> dict:
    """Copy the checkpoint in ``trained`` to ``out`` with float16 parameters; returns the new meta."""
    from rfnet.checkpoint import load_model, state_dict_tensors

    model, _, meta = load_model(trained)
    params = {name for name, _ in model.named_parameters()}
    tensors = {
        k: (v.half() if k in params and v.is_floating_point() else v)
        for k, v in state_dict_tensors(model).items()
    }
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, WEIGHTS))
    shutil.copyfile(os.path.join(trained, CONFIG), os.path.join(out, CONFIG))
    model.save_assets(out)  # configs / tokenizer of components built from pretrained sources
    history = meta.get("train", {}).get("history", [])
    new_meta = {
        "labels": meta.get("labels"),
        "split": meta.get("split"),
        "versions": meta.get("versions"),
        "pretrain": {
            **provenance,
            "best_epoch": meta.get("train", {}).get("best_epoch"),
            "val_macro_f1": meta.get("train", {}).get("val_macro_f1"),
            "history": history,
        },
    }
    with open(os.path.join(out, META), "w") as f:
        json.dump(new_meta, f, indent=2, sort_keys=True)
    return new_meta


SYNTHETIC = "synthetic"


def check_generator(name: str) -> str:
    """``name`` if it names a scene set (a clear error if not)."""
    if name not in SETS:
        raise SystemExit(f"--generator {name!r}: not a scene set; choose from {', '.join(SETS)}")
    return name


def merge_sets(parts: list[str], out: str) -> str:
    """Merge RF1M-layout sets (``label.txt``, ``images/``, ``products/``, ``captions.jsonl``) into
    ``out``; the files of part ``i`` are linked (copied across devices) as ``g<i>-<name>``."""
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "products"):
        os.makedirs(os.path.join(tmp, sub))
    labels: list[str] = []
    captions: list[str] = []
    for i, part in enumerate(parts):
        prefix = f"g{i}-"
        for sub in ("images", "products"):
            for name in sorted(os.listdir(os.path.join(part, sub))):
                src, dst = os.path.join(part, sub, name), os.path.join(tmp, sub, prefix + name)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        with open(os.path.join(part, "label.txt")) as f:
            for line in f:
                if line.strip():
                    path, label = line.rstrip("\n").split("\t")
                    head, name = path.rsplit("/", 1)
                    labels.append(f"{head}/{prefix}{name}\t{label}")
        caption_file = os.path.join(part, "captions.jsonl")
        if os.path.exists(caption_file):
            with open(caption_file) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        head, name = row["image"].rsplit("/", 1)
                        captions.append(json.dumps({**row, "image": f"{head}/{prefix}{name}"}))
    with open(os.path.join(tmp, "label.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    with open(os.path.join(tmp, "captions.jsonl"), "w") as f:
        f.write("\n".join(captions) + ("\n" if captions else ""))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def build_data(generators: list[str], work: str, *, n_per_class: int, image_size: int, seed: int) -> str:
    """The pretraining set under ``work``: one generator's set, or the merge of several that share
    ``n_per_class`` (the first ones take the remainder). A generator's set is reused only if it was
    written with the same seed, size and count."""
    parts = []
    for i, name in enumerate(generators):
        share = n_per_class // len(generators) + (i < n_per_class % len(generators))
        part = os.path.join(work, f"data-{check_generator(name)}-{seed}-{share}-{image_size}")
        if not os.path.exists(os.path.join(part, "label.txt")):
            make_set(name, part, n_per_class=share, image_size=image_size, seed=seed)
        parts.append(part)
    return parts[0] if len(parts) == 1 else merge_sets(parts, os.path.join(work, f"data-mix-{seed}"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "weights" / "small"))
    parser.add_argument(
        "--preset",
        default="small",
        choices=["small", "toy", "tiny"],
        help="toy: the toy world's; tiny: tests only",
    )
    parser.add_argument("--n-per-class", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=101, help="data seed of the synthetic set")
    parser.add_argument(
        "--generator",
        action="append",
        default=None,
        metavar="NAME",
        help=f"a scene set (repeatable; default {SYNTHETIC}); several share --n-per-class",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (Ray start included)")
    parser.add_argument("--work", default="out/pretrain", help="where the set and the full run are kept")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from rfnet.config import TrainRFNetConfig
    from rfnet.train import train_rfnet

    started = time.time()
    generators = args.generator or [SYNTHETIC]
    for name in generators:
        check_generator(name)  # fail before any work
    data = build_data(
        generators, args.work, n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed
    )
    assignments = {
        "data.root": data,
        "out": os.path.join(args.work, "model"),
        "init_from": None,  # from random weights
        "resume": False,
        "optim.max_train_minutes": args.minutes,
        # the generator can always draw more images to test on: every drawn image trains or validates
        "data.test_fraction": 0.0,
        **dict(parse_assignment(a) for a in args.set),
    }
    cfg = load_config(TrainRFNetConfig, preset=args.preset, assignments=assignments)
    result = train_rfnet(cfg, started=started)
    meta = export_checkpoint(
        result.out,
        args.out,
        {
            "command": " ".join(["python -m rfnet.pretrain", *(argv if argv is not None else sys.argv[1:])]),
            "data": {
                "generator": generators[0] if len(generators) == 1 else generators,
                "n_per_class": args.n_per_class,
                "image_size": args.image_size,
                "seed": args.seed,
                "n_train": result.n_train,
                "n_val": result.n_val,
            },
            "epochs": result.epochs,
            "wall_s": round(time.time() - started, 1),
            "torch_threads": torch.get_num_threads(),
        },
    )
    print(
        f"wrote {args.out}: best epoch {meta['pretrain']['best_epoch']} of {result.epochs}, "
        f"val macro F1 {meta['pretrain']['val_macro_f1']:.3f} on {result.n_val} held-out images; "
        f"{os.path.getsize(os.path.join(args.out, WEIGHTS)) / 2**20:.1f} MiB"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
