"""``reliable-ad rfft``: fine-tune the ControlNet with RFNet as the reward (RFFT, Du et al. 2024).

Examples::

    reliable-ad rfft --preset tiny --out out/rfft-tiny --steps 40          # CPU, no download
    reliable-ad rfft --config jobs/configs/rfft.yaml --rfnet s3://models/rfnet \\
        --catalog s3://catalogs/train.jsonl --out s3://runs/rfft-01 --workers 8

Writes ``OUT/controlnet/`` (diffusers format; use it with ``reliable-ad generate --controlnet
OUT/controlnet``), ``OUT/metrics.json``, ``OUT/eval/step-*.png`` and ``OUT/checkpoints/``. Rerunning
the same command resumes from the last checkpoint. See docs/rfft.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.common import JobSpec, run_job
from rfft.config import RFFTConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output dir, local or s3:// (controlnet/, metrics.json, checkpoints/)")
    parser.add_argument("--steps", type=int, help="optimisation steps in total (a rerun resumes up to this)")
    parser.add_argument("--beta", type=float, help="weight of the Consistent-Condition loss (0 = plain ReFL)")
    parser.add_argument(
        "--catalog", help="catalog file or folder of product images (default: procedural products)"
    )
    parser.add_argument("--rfnet", help="RFNet reward: a checkpoint dir, an s3:// prefix, or 'tiny'")
    parser.add_argument(
        "--workers", type=int, help="data-parallel Ray Train workers (one GPU each when use_gpu)"
    )
    parser.add_argument("--seed", type=int, help="run seed (batches, prompts, noise, graded steps)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "out": args.out,
        "steps": args.steps,
        "loss.beta": args.beta,
        "data.catalog": args.catalog,
        "rfnet": args.rfnet,
        "scaling.workers": args.workers,
        "seed": args.seed,
    }


def main(cfg: RFFTConfig) -> int:
    from rfft.trainer import run

    metrics = run(cfg)
    return 0 if metrics["steps_completed"] > 0 else 1


SPEC = JobSpec(
    name="rfft",
    config_cls=RFFTConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
    default_preset="sd15",
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
