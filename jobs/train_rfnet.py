"""``reliable-ad train-rfnet``: train RFNet on an RF1M-layout set with Ray Train.

    reliable-ad train-rfnet --data DIR --out DIR [--epochs N] [--workers N] [--preset small]

``--data``: an RF1M-layout directory or ``s3://`` prefix (``label.txt``, ``products/``,
``captions.jsonl``). ``--out``: receives the best checkpoint (``model.safetensors``,
``config.json``, ``meta.json``; load it with ``rfnet.load_rfnet(OUT)``), ``tensorboard/`` and Ray
Train's run state (``ray_train/``: rerunning the same command resumes). The ``small`` preset
(default) fine-tunes ImageNet EfficientNet-Lite0 encoders on a CPU within a wall-clock budget,
starting from the weights shipped in the package (``builtin:small``; ``--set init_from=null`` for
the ImageNet encoders alone); ``paper`` is the
paper's ResNet-50 + RoBERTa model for GPUs. See docs/rfnet.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from jobs.common import JobSpec, run_job
from rfnet.config import TrainRFNetConfig

logger = logging.getLogger("reliable_ad.train_rfnet")
STARTED = time.time()  # the wall-clock budget counts from the process start (imports included)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="RF1M-layout directory or s3:// prefix")
    parser.add_argument("--out", help="output directory (local or s3://) for the best checkpoint")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs (optim.epochs)")
    parser.add_argument("--workers", type=int, help="Ray Train workers (DDP), workers.num_workers")
    parser.add_argument(
        "--gpu", action="store_true", default=None, help="one GPU per worker (workers.use_gpu)"
    )
    parser.add_argument(
        "--max-minutes", type=float, help="wall-clock budget in minutes (optim.max_train_minutes)"
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.root": args.data,
        "out": args.out,
        "optim.epochs": args.epochs,
        "workers.num_workers": args.workers,
        "workers.use_gpu": args.gpu,
        "optim.max_train_minutes": args.max_minutes,
    }


def main(cfg: TrainRFNetConfig) -> int:
    # Before torch is first imported: idle OpenMP threads sleep instead of spinning, many times faster
    # on a CPU shared with other work (see rfnet.train.worker_env).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rfnet.train import train_rfnet

    cfg.check_ready()
    result = train_rfnet(cfg, started=STARTED)
    summary = {
        "out": result.out,
        "best_epoch": result.best_epoch,
        "val_macro_f1": round(result.val_macro_f1, 4),
        "epochs": result.epochs,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "n_test": result.n_test,
        "wall_s": round(time.time() - STARTED, 1),
    }
    print(json.dumps(summary))
    return 0


SPEC = JobSpec(
    name="train-rfnet",
    config_cls=TrainRFNetConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
    default_preset="small",
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
