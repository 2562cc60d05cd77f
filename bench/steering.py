"""Defect-steered retries vs plain reseeding: attempts per accepted image, through the real pipeline.

    python -m bench.steering [--items 120] [--max-attempts 4] [--out out/bench-steering]

Both runs use the real catalog pipeline (waves, planning, generation with the tiny preset, tables) and
differ only in ``retry.steering``. The inspector is an **oracle** (:class:`DefectOracle`), because the
tiny random models cannot produce real defects: every item has hidden, seeded preferences, and the
oracle rejects an attempt with the defect its parameters cause:

- a scale band of width 0.05 inside the allowed range: outside it -> Size Mismatch;
- one colour of the pool close to the product's colour: that colour -> Indistinctiveness;
- half the items need a grounded template (a surface to stand on): otherwise -> Space Mismatch;
- independently of the parameters, 15% of attempts show Unsuitable / Shape Hallucination (noise no
  steering can fix).

So the benchmark measures the *mechanism* (does the planner turn a verdict into a change that removes
that defect, at no cost elsewhere?), not the real-world gain, which depends on how well RFNet's labels
match what the generator got wrong; measuring that needs the full models on a GPU. Results go to
``bench/results/steering.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

from pipelines.config import GenerateConfig, load_config
from pipelines.labels import LABELS
from pipelines.runner import run_catalog
from rfnet.data.sample import write_sample_catalog

RESULTS = Path(__file__).parent / "results"


class DefectOracle:
    """Ray Data stage with RFNet's column contract; verdicts from hidden per-item preferences."""

    def __init__(self, source, device="auto", dtype="auto", threshold=None):
        self.spec = json.loads(source)  # scale range and colours, passed through inspect.rfnet
        self.threshold = 0.5 if threshold is None else threshold

    def _truth(self, sku: str) -> tuple[float, str, bool]:
        rng = random.Random(int(hashlib.sha256(sku.encode()).hexdigest()[:12], 16))
        lo, hi = self.spec["scale_range"]
        centre = rng.uniform(lo + 0.025, hi - 0.025)
        return centre, rng.choice(self.spec["colors"]), rng.random() < 0.5

    def verdict(self, sku: str, attempt: int, scale: float, color: str, grounded: bool) -> str:
        centre, bad_color, needs_ground = self._truth(sku)
        rng = random.Random(f"{sku}/{attempt}/noise")
        if rng.random() < 0.15:
            return rng.choice(["unsuitable", "shape_hallucination"])
        checks = []
        if abs(scale - centre) > 0.025:
            checks.append("size_mismatch")
        if color == bad_color:
            checks.append("indistinctiveness")
        if needs_ground and not grounded:
            checks.append("space_mismatch")
        return rng.choice(checks) if checks else "available"

    def __call__(self, batch):
        n = len(batch["sku_id"])
        grounded = self.spec["grounded"]
        labels = []
        for i in range(n):
            if batch["error"][i]:
                labels.append("")
                continue
            t = int(batch["template"][i])
            labels.append(
                self.verdict(
                    str(batch["sku_id"][i]),
                    int(batch["attempt"][i]),
                    float(batch["image_scale"][i]),
                    str(batch["color"][i]),
                    t >= 0 and grounded[t],
                )
            )
        probs = np.zeros((n, len(LABELS)), np.float32)
        for i, label in enumerate(labels):
            if label:
                probs[i] = 0.04
                probs[i, LABELS.index(label)] = 0.8
            else:
                probs[i] = np.nan
        for k, name in enumerate(LABELS):
            batch[f"prob_{name}"] = probs[:, k]
        batch["label"] = np.array(labels, dtype=object)
        batch["p_available"] = probs[:, 0]
        batch["accepted"] = np.nan_to_num(probs[:, 0]) >= self.threshold
        batch["threshold"] = np.full(n, self.threshold, np.float32)
        return batch


def run(mode: str, catalog: Path, out: Path, items: int, max_attempts: int) -> dict:
    base = load_config(GenerateConfig, preset="tiny")
    spec = {
        "scale_range": list(base.prepare.image_scale_range),
        "colors": list(base.prompts.colors),
        "grounded": [t.grounded for t in base.prompts.templates],
    }
    cfg = load_config(
        GenerateConfig,
        preset="tiny",
        overrides={
            "catalog": str(catalog),
            "out": str(out / mode),
            "inspect.rfnet": json.dumps(spec),
            "inspect.threshold": 0.5,
            "retry.max_attempts": max_attempts,
            "retry.steering": mode,
            "generation.num_inference_steps": 1,
            "prepare.resolution": 64,
            "prepare.mask_dilation": 3,
            "generation.batch_size": 32,
            "run.chunk_size": items,
            "run.progress_interval_s": 60,
        },
    )
    t0 = time.time()
    summary = run_catalog(cfg, inspect_stage=DefectOracle).run_json
    attempts_per_accepted_image = summary["attempts_total"] / max(1, summary["counts"]["accepted"])
    return {
        "steering": mode,
        "accepted": summary["counts"]["accepted"],
        "exhausted": summary["counts"]["exhausted"],
        "attempts_total": summary["attempts_total"],
        "attempts_per_accepted_image": attempts_per_accepted_image,
        "mean_attempts_per_accepted": summary["mean_attempts_per_accepted"],
        "available_rate_by_attempt": summary["available_rate_by_attempt"],
        "retry_accept_rate_by_action": summary["steering"],
        "wall_s": time.time() - t0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--max-attempts", type=int, default=4)
    parser.add_argument("--out", default="out/bench-steering")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    catalog = write_sample_catalog(out / "catalog", items=args.items - 1)
    rows = [run(mode, catalog, out, args.items, args.max_attempts) for mode in ("reseed", "defect")]
    result = {
        "command": "python -m bench.steering " + " ".join(sys.argv[1:] if argv is None else argv),
        "items": args.items,
        "max_attempts": args.max_attempts,
        "oracle": "DefectOracle (see bench/steering.py): defects caused by scale/colour/template, 15% unfixable noise",
        "runs": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "steering.json").write_text(json.dumps(result, indent=2))
    print(
        f"{'steering':<10}{'accepted':>10}{'exhausted':>10}{'attempts/accepted':>20}{'avail@1':>9}{'avail@max':>10}"
    )
    for r in rows:
        by = r["available_rate_by_attempt"]
        print(
            f"{r['steering']:<10}{r['accepted']:>10}{r['exhausted']:>10}{r['attempts_per_accepted_image']:>20.2f}"
            f"{by['1']:>9.1%}{by[str(args.max_attempts)]:>10.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
