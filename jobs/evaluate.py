"""``reliable-ad evaluate``: score a labelled RF1M-layout set with an RFNet checkpoint.

    reliable-ad evaluate --rfnet DIR --data DIR --out DIR [--target-precision 0.9] [--write-threshold]

Writes ``OUT/eval.json`` (macro F1, per-class precision / recall / F1 / support, Available
precision / recall / F1 / AP, the confusion matrix, the chosen accept threshold),
``OUT/confusion.png``, ``OUT/predictions.parquet`` (one row per image: annotation, class
probabilities, argmax label, p_available, accepted) and ``OUT/errors.png`` (the most confident
mistakes of the most frequent confusions). By default only the test split the checkpoint held out from training is
scored (see ``rfnet.evaluate``); ``--split val`` scores its validation split, ``--split all``
every labelled sample.
``--write-threshold`` stores the chosen threshold in the checkpoint, where every scorer picks it up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from jobs.common import JobSpec, run_job
from rfnet.config import EvaluateConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rfnet", help="RFNet checkpoint directory, s3:// prefix or 'tiny'")
    parser.add_argument("--data", help="labelled RF1M-layout directory or s3:// prefix")
    parser.add_argument(
        "--out", help="output directory for eval.json, confusion.png, predictions.parquet and errors.png"
    )
    parser.add_argument(
        "--split", choices=["auto", "test", "val", "all"], help="which samples to score (default auto)"
    )
    parser.add_argument(
        "--target-precision", type=float, help="precision on Available the accept threshold must reach"
    )
    parser.add_argument(
        "--write-threshold",
        action="store_true",
        default=None,
        help="store the chosen threshold in the checkpoint",
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rfnet": args.rfnet,
        "data": args.data,
        "out": args.out,
        "split": args.split,
        "target_precision": args.target_precision,
        "write_threshold": args.write_threshold,
    }


def main(cfg: EvaluateConfig) -> int:
    # Before torch is first imported: idle OpenMP threads sleep instead of spinning, many times faster
    # on a CPU shared with other work (see rfnet.train.worker_env).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rfnet.evaluate import evaluate_rfnet

    cfg.check_ready()
    result = evaluate_rfnet(cfg)
    summary = {
        "n": result["n"],
        "split": result["split"]["mode"],
        "macro_f1": round(result["macro_f1"], 4),
        "available_ap": round(result["available"]["ap"], 4),
        "threshold": result["threshold"],
        "per_class_f1": {k: round(v["f1"], 4) for k, v in result["per_class"].items()},
    }
    print(json.dumps(summary))
    return 0


SPEC = JobSpec(
    name="evaluate",
    config_cls=EvaluateConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
    default_preset="small",
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
