"""``reliable-ad generate``: a catalog in, advertising images and their tables out.

    reliable-ad generate --preset tiny --catalog CATALOG --out OUT [--max-attempts K] [--seed S]
        [--controlnet SRC] [--rfnet SRC | --no-inspect]

As a Ray job: ``ray job submit --working-dir . -- python -m jobs.generate --config FILE.yaml ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.common import JobSpec, run_job
from pipelines.config import GenerateConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", metavar="SRC", help="catalog file or image folder (local or s3://)")
    parser.add_argument("--out", metavar="DST", help="output root (local or s3://)")
    parser.add_argument("--max-attempts", type=int, metavar="K", help="attempts per item, the first included")
    parser.add_argument("--seed", type=int, metavar="S", help="run seed (attempt seeds derive from it)")
    parser.add_argument("--controlnet", metavar="SRC", help="ControlNet source (hub id, dir, s3://, 'tiny')")
    parser.add_argument("--base", metavar="SRC", help="base SD1.5 model source")
    inspect = parser.add_mutually_exclusive_group()
    inspect.add_argument(
        "--rfnet", metavar="SRC", help="RFNet checkpoint (dir, s3://) or 'tiny'; enables inspection"
    )
    inspect.add_argument("--no-inspect", action="store_true", help="keep every image (status 'generated')")
    parser.add_argument(
        "--threshold", type=float, help="accept when p_available >= this (default: the checkpoint's)"
    )
    parser.add_argument(
        "--steering", choices=["reseed", "defect"], help="how retries change after a rejection"
    )
    parser.add_argument("--batch-size", type=int, help="generation batch size")
    parser.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "catalog": args.catalog,
        "out": args.out,
        "seed": args.seed,
        "retry.max_attempts": args.max_attempts,
        "retry.steering": args.steering,
        "models.controlnet": args.controlnet,
        "models.base": args.base,
        "inspect.threshold": args.threshold,
        "generation.batch_size": args.batch_size,
        "run.ray_address": args.ray_address,
    }
    if args.rfnet:
        out.update({"inspect.enabled": True, "inspect.rfnet": args.rfnet})
    if args.no_inspect:
        out["inspect.enabled"] = False
    return out


def main(cfg: GenerateConfig) -> int:
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    summary = run_catalog(cfg, mode="generate", inspect_stage=ScoreStage)
    print(f"{summary.mode} {summary.run_id}: {summary.counts} -> {summary.out}/report.html")
    return 0


SPEC = JobSpec(
    name="generate",
    config_cls=GenerateConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
