"""The driver of a training run (:func:`train_rfnet`): split the set, start Ray Train, collect the
result."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipelines import storage
from pipelines.config import ConfigError
from pipelines.labels import LABELS, NUM_CLASSES
from pipelines.resources import require_ray_train
from rfnet.config import TrainRFNetConfig
from rfnet.data import (
    Sample,
    holdout_split,
    read_rf1m,
    set_identity,
    split_samples,
)
from rfnet.train.loop import train_loop_per_worker

logger = logging.getLogger(__name__)

RUN_PREFIX = "rfnet"


# ----------------------------------------------------------------------------------------------------
# Driver.


@dataclass
class TrainResult:
    """What a finished run produced: the output dir, the best epoch and its validation macro F1."""

    out: str
    best_epoch: int
    val_macro_f1: float
    epochs: int
    n_train: int
    n_val: int
    n_test: int = 0  # held out for evaluate (the test share or test file); 0 if none


def ensure_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to ``address`` / ``RAY_ADDRESS``, or start a local Ray (no dashboard), unless already up."""
    from pipelines.raystart import ensure_ray as connect

    connect(address, num_cpus=num_cpus)


def _sample_dicts(samples: list[Sample]) -> list[dict[str, Any]]:
    return [
        {"image": s.image, "label": s.label, "product": s.product, "caption": s.caption, "source": s.source}
        for s in samples
    ]


# Split label files the RF1M reader recognises (rfnet.data.read_rf1m), by role.
SPLIT_FILES = {
    "train": ("train.txt",),
    "val": ("val.txt", "valid.txt", "validation.txt"),
    "test": ("test.txt",),
}


def explicit_splits(index) -> dict[str, tuple[str, list[Sample]]]:
    """``{"train"|"val"|"test": (label file, labelled samples)}`` for the split files a set has."""
    by_name = {f.rsplit("/", 1)[-1].lower(): f for f in index.label_files}
    out = {}
    for role, names in SPLIT_FILES.items():
        for name in names:
            if name in by_name:
                out[role] = (by_name[name], [s for s in index.subset(by_name[name]) if s.label >= 0])
                break
    return out


def prepare_split(cfg: TrainRFNetConfig) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """Read ``cfg.data.root`` and split it; returns ``(train, val, split meta)``.

    A set with split files trains on ``train.txt`` and validates on its validation file (or, without
    one, on a hash split of ``train.txt``); ``test.txt`` is never trained or validated on. A set
    with one label file is split three ways by :func:`rfnet.data.holdout_split`: its test share is
    left for ``evaluate`` and is read by nothing here.
    """
    root = storage.normalize(cfg.data.root)
    index = read_rf1m(root)  # logs its own summary, with any problems
    splits = explicit_splits(index)
    if "train" in splits:
        train_file, train = splits["train"]
        if "val" in splits:
            val_file, val = splits["val"]
        else:
            val_file = None
            train, val = split_samples(train, cfg.data.val_fraction, cfg.data.split_seed)
        if not train:
            raise ConfigError(f"{train_file!r} in --data {root!r} holds no labelled samples")
        meta = {
            "split": {
                "data_root": root,
                "set": set_identity([s for s in index.samples if s.label >= 0]),
                "files": {"train": train_file, "val": val_file, "test": splits.get("test", (None,))[0]},
                "val_fraction": None if val_file else cfg.data.val_fraction,
                "seed": cfg.data.split_seed,
                "max_samples": None,
                "n_train": len(train),
                "n_val": len(val),
                "n_test": len(splits["test"][1]) if "test" in splits else 0,
            }
        }
        return train, val, meta
    labelled = [s for s in index.samples if s.label >= 0]
    if not labelled:
        raise ConfigError(f"--data {root!r} holds no labelled samples; {index.summary()}")
    identity = set_identity(labelled)  # evaluate recognises the set by it (all of it, before max_samples)
    if cfg.data.max_samples is not None and len(labelled) > cfg.data.max_samples:
        # By split hash order, so a capped set is a stable subset.
        keep, _ = split_samples(labelled, 1.0 - cfg.data.max_samples / len(labelled), cfg.data.split_seed + 1)
        labelled = keep
    train, val, test = holdout_split(
        labelled, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
    )
    if not train:
        raise ConfigError(
            f"--data {root!r}: the split (test_fraction={cfg.data.test_fraction}, "
            f"val_fraction={cfg.data.val_fraction}) leaves no training samples of {len(labelled)}"
        )
    counts = np.bincount([s.label for s in train], minlength=NUM_CLASSES)
    split_meta = {
        "split": {
            "data_root": root,
            "set": identity,
            "val_fraction": cfg.data.val_fraction,
            "test_fraction": cfg.data.test_fraction,
            "seed": cfg.data.split_seed,
            "max_samples": cfg.data.max_samples,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "train_class_counts": {name: int(c) for name, c in zip(LABELS, counts, strict=True)},
        }
    }
    return train, val, split_meta


def train_rfnet(cfg: TrainRFNetConfig, *, started: float | None = None) -> TrainResult:
    """Train RFNet as configured; the best checkpoint ends up in ``cfg.out``.

    ``started``: unix time the job started (the wall-clock budget counts from it; default now).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    started = time.time() if started is None else started
    cfg.check_ready()
    if cfg.init_from:
        from rfnet.checkpoint import check_source

        check_source(cfg.init_from)  # a wrong init_from fails here, before Ray starts
    train, val, split_meta = prepare_split(cfg)
    logger.info("training on %d samples, validating on %d (%s)", len(train), len(val), cfg.data.root)
    ensure_ray(cfg.workers.ray_address, cfg.workers.ray_num_cpus)
    # Workers no node can ever hold fail the job here instead of leaving Ray Train pending.
    require_ray_train(
        "workers",
        cfg.workers,
        workers_field="num_workers",
        gpu_fix="train on CPUs: --preset small, or leave out --gpu (--set workers.use_gpu=false)",
    )
    out = storage.normalize(cfg.out)
    cfg = cfg.model_copy(update={"out": out})
    if cfg.init_from and os.path.isdir(cfg.init_from):
        # Ray Train workers do not share the driver's working directory.
        cfg = cfg.model_copy(update={"init_from": os.path.abspath(cfg.init_from)})
    key = run_key(cfg)
    run_name = f"{RUN_PREFIX}-{key}" if cfg.resume else f"{RUN_PREFIX}-{key}-{int(started)}"
    deadline = started + 60.0 * cfg.optim.max_train_minutes if cfg.optim.max_train_minutes else None
    import torch as _torch  # noqa: F401  (the trainer pickles the loop; keep torch imported here)

    meta = {**split_meta, "versions": _versions()}
    loop_config: dict[str, Any] = {
        "cfg": cfg.to_dict(),
        "deadline": deadline,
        "meta": meta,
        "n_train": len(train),
        "n_val": len(val),
        "class_counts": np.bincount([s.label for s in train], minlength=NUM_CLASSES).tolist(),
    }
    datasets = None
    if cfg.data.loader == "stream":
        from rfnet.data import to_ray_dataset

        if not val:
            raise ConfigError("data.loader='stream' needs a validation split; set data.val_fraction > 0")
        size = {"image_size": cfg.model.image_size, "product_size": cfg.model.product_size}
        datasets = {"train": to_ray_dataset(train, **size), "val": to_ray_dataset(val, **size)}
    else:
        loop_config.update(train=_sample_dicts(train), val=_sample_dicts(val))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers.num_workers,
            use_gpu=cfg.workers.use_gpu,
            resources_per_worker={
                "CPU": cfg.workers.cpus_per_worker,
                **({"GPU": 1} if cfg.workers.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=_ray_storage(out),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=cfg.workers.max_failures),
            worker_runtime_env={"env_vars": worker_env()},
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"RFNet training failed: {result.error}") from result.error
    from rfnet.checkpoint import read_meta

    best = read_meta(out).get("train", {})
    last = result.metrics or {}  # None when a rerun found the run already finished
    return TrainResult(
        out=out,
        best_epoch=int(best.get("best_epoch", -1)),
        val_macro_f1=float(best.get("val_macro_f1", float("nan"))),
        epochs=int(last.get("epoch", len(best.get("history", [])))),
        n_train=len(train),
        n_val=len(val),
        n_test=int(split_meta["split"].get("n_test") or 0),
    )


# Fields that may change between a run and its resumption: how long to train and where it runs.
RESUMABLE_CHANGES = (
    "optim.epochs",
    "optim.max_train_minutes",
    "optim.early_stop_patience",
    "workers",
    "init_from",
)


def run_key(cfg: TrainRFNetConfig) -> str:
    """Identity of a training run: the config hash without :data:`RESUMABLE_CHANGES`.

    Rerunning with the same key (same data, model, optimiser) resumes the run under ``OUT``;
    raising ``--epochs`` extends a finished run (the cosine tail is re-planned from where it was).
    """
    import hashlib

    data = cfg.to_dict()
    for dotted in (*cfg.HASH_EXCLUDE, *RESUMABLE_CHANGES):
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def worker_env() -> dict[str, str]:
    """Environment of the training workers.

    ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. On a CPU shared
    with other processes, spinning threads wait for peers that are descheduled; measured on a
    busy 2-core machine, one training step took 17x longer with spinning (259 vs 15 ms per image),
    and on an idle machine the passive policy costs nothing measurable at these op sizes. An
    explicit value in the driver's environment wins.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _ray_storage(out: str) -> str:
    return storage.join(out, "ray_train")


def _versions() -> dict[str, str]:
    import ray
    import transformers

    return {"torch": torch.__version__, "ray": ray.__version__, "transformers": transformers.__version__}
