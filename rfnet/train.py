"""Training RFNet on Ray Train (``TorchTrainer``, DDP over N workers, CPU or GPU).

``reliable-ad train-rfnet --data DIR --out DIR`` calls :func:`train_rfnet`. The driver reads the
RF1M-layout set, splits it into train / validation / test (:func:`rfnet.data.holdout_split`, by
image-path hash, so evaluation can reproduce the split from the parameters stored in the
checkpoint; the test share is never trained or selected on) and starts one Ray Train run;
each worker runs :func:`train_loop_per_worker`:

- **data**: ``loader="memory"``: every worker decodes the train set once into RAM (and its share
  of the validation set), then each epoch takes its slice of one *global* seeded permutation, so
  N workers with global batch B see exactly the batches 1 worker would (the DDP equivalence test
  relies on it). ``loader="stream"``: Ray Data shards (``rfnet.data.to_ray_dataset``) streamed
  every epoch, for sets that do not fit in memory.
- **imbalance**: ``balance="weights"`` scales each sample's loss by ``N / (K * n_class)`` and
  divides by the *per-worker batch size* (not the batch's weight sum), so DDP's gradient average
  equals the single-worker loss exactly; ``"sampler"`` draws class-balanced epochs.
- **augmentations** (see :func:`augment`): joint horizontal flip of image and product, a small
  edge-replicated shift, and colour jitter applied identically to image and product. No vertical
  flips (gravity is what Space Mismatch is about), no crops (could cut the product or a
  hallucinated part), no scaling (sizes relative to the frame are Size Mismatch's evidence), no hue
  changes of the image alone (would fake or hide Indistinctiveness).
- **schedule**: AdamW, linear warm-up, cosine decay to zero at the last epoch. With a wall-clock
  budget (``optim.max_train_minutes``, counted from the job's start, Ray start-up included) the
  number of epochs is re-planned after every epoch from the measured epoch time, and the cosine is
  stretched to it; the epoch with the best validation macro F1 is kept. ``optim.ema_decay``: an
  exponential moving average of the weights is what is validated, selected and saved.
- **descriptor** (``data.cache_descriptor``): each example's product descriptor is computed once
  from the unaugmented image; its box entries follow the flip and shift of every batch.
- **precision**: bf16 autocast on GPUs through :mod:`pipelines.device`; weights stay fp32.
- **reporting**: every worker calls ``ray.train.report`` once per epoch (validation counts and
  timings are all-reduced first, so every decision is the same on every worker); rank 0 alone
  writes: the resume checkpoint (weights, optimizer, trainer state: safetensors + JSON, no pickle)
  handed to Ray Train, TensorBoard scalars under ``OUT/tensorboard``, and the best model to ``OUT``
  (``model.safetensors``, ``config.json``, ``meta.json``), loadable by ``rfnet.load_rfnet(OUT)``.
- **resume**: Ray Train's run directory is ``OUT/ray_train/rfnet-<config hash>``; rerunning the
  same command after a crash continues from the last reported epoch (Ray Train V2 restores the
  run's checkpoint manager from storage; ``ray.train.get_checkpoint()`` returns the last one). A
  worker lost during a run costs no rerun: Ray Train restarts the worker group
  (``workers.max_failures`` times) and it resumes the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pipelines import storage
from pipelines.config import ConfigError
from pipelines.device import autocast, place
from pipelines.labels import LABELS, NUM_CLASSES
from pipelines.resources import require_ray_train
from rfnet import metrics
from rfnet.aux import search_report, search_warning
from rfnet.checkpoint import init_from, save_rfnet
from rfnet.config import AugmentConfig, OptimConfig, TrainRFNetConfig
from rfnet.data import (
    ExampleError,
    Sample,
    holdout_split,
    load_example,
    read_rf1m,
    set_identity,
    split_samples,
)
from rfnet.model import RFNet, build_rfnet
from rfnet.trees import TreeParams, fit_trees

logger = logging.getLogger(__name__)

RUN_PREFIX = "rfnet"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_FILE = "ema.safetensors"
MODEL_FILE = "model.safetensors"
# Data preparation before the first epoch logs its progress at most this often (seconds).
PROGRESS_INTERVAL_S = 30.0
# Folds of the descriptor trees' out-of-fold training scores (descriptor_tree_mix="offset").
TREE_FOLDS = 5
# Mixing weights of the descriptor trees tried at every validation (RFNet.mix_trees).
TREE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Seconds kept free at the end of a time budget for the last checkpoint, the copy-out and shutdown.
END_MARGIN_S = 25.0


# ----------------------------------------------------------------------------------------------------
# Pure pieces (tested on their own).


def class_weights(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``N / (K * n_c)`` per class (mean sample weight 1); classes absent from ``labels`` get 0."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def weighted_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy, each sample scaled by its class weight, summed and divided by the batch size.

    Dividing by the batch size (not by the batch's weight sum, as ``F.cross_entropy(weight=...)``
    does) keeps the loss additive over samples, so DDP's gradient average over equal per-worker
    batches equals the loss over the whole global batch.
    """
    per_sample = F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=label_smoothing)
    if weights is not None:
        per_sample = per_sample * weights[labels]
    return per_sample.sum() / max(1, labels.numel())


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d * ema + (1 - d) * model`` over parameters, with ``d = min(decay, (1+step)/(10+step))``
    (early steps follow the model closely); buffers are copied."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(n: int, labels: np.ndarray, epoch: int, seed: int, balance: str) -> np.ndarray:
    """Indices of one epoch: a seeded permutation, or (``"sampler"``) a class-balanced draw."""
    rng = np.random.default_rng([seed, epoch, 7])
    if balance != "sampler":
        return rng.permutation(n)
    w = class_weights(labels)[labels].astype(np.float64)
    return rng.choice(n, size=n, replace=True, p=w / w.sum())


def augment(
    image: torch.Tensor,
    product: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    maps: torch.Tensor | None = None,
    box: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Defect-preserving augmentation of ``image (B, 3, S, S)`` and ``product (B, 4, P, P)`` in [0, 1].

    ``maps (B, C, S, S)``: precomputed auxiliary maps of the image; they get the image's flip and
    shift (the maps are equivariant to both) and no colour change; ``box (B, 4)`` (the located
    product, fractions of the side) moves with them. Random parameters come from ``generator``
    (seeded per global batch by the caller and drawn for the whole global batch, so they do not
    depend on the number of workers).
    """
    b = image.shape[0]
    dev = image.device
    flip = torch.rand(b, generator=generator) < 0.5 if cfg.hflip else torch.zeros(b, dtype=torch.bool)
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * cfg.translate
    colour = (torch.rand(b, 3, generator=generator) * 2 - 1) * cfg.color
    flip, shift, colour = flip.to(dev), shift.to(dev), colour.to(dev)
    if cfg.hflip:
        image = torch.where(flip.view(-1, 1, 1, 1), image.flip(-1), image)
        product = torch.where(flip.view(-1, 1, 1, 1), product.flip(-1), product)
        if maps is not None:
            maps = torch.where(flip.view(-1, 1, 1, 1), maps.flip(-1), maps)
        if box is not None:
            mirrored = torch.stack([1 - box[:, 2], box[:, 1], 1 - box[:, 0], box[:, 3]], dim=1)
            box = torch.where(flip.view(-1, 1), mirrored, box)
    if cfg.translate > 0:
        theta = torch.zeros(b, 2, 3, device=dev, dtype=image.dtype)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        # Whole-pixel shifts (no resampling blur); affine_grid uses [-1, 1] units: 2 / S per pixel.
        s = image.shape[-1]
        pixels = torch.round(shift * s)
        theta[:, :, 2] = pixels * (2.0 / s)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        if box is not None:
            # Sampling at x + d moves the content by -d.
            box = box - (pixels / s).repeat(1, 2).to(box.dtype)
        image = F.grid_sample(image, grid, mode="nearest", padding_mode="border", align_corners=False)
        if maps is not None:
            maps = F.grid_sample(maps, grid, mode="nearest", padding_mode="border", align_corners=False)
    if cfg.color > 0:
        brightness = (1 + colour[:, 0]).view(-1, 1, 1, 1)
        contrast = (1 + colour[:, 1]).view(-1, 1, 1, 1)
        saturation = (1 + colour[:, 2]).view(-1, 1, 1, 1)

        def jitter(rgb: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
            rgb = rgb * brightness
            rgb = (rgb - mean) * contrast + mean
            grey = rgb.mean(dim=1, keepdim=True)
            return ((rgb - grey) * saturation + grey).clamp(0, 1)

        # Contrast pivots on the *image's* mean for both, so product and scene change alike.
        mean = (image * brightness).mean(dim=(1, 2, 3), keepdim=True)
        image = jitter(image, mean)
        product = torch.cat([jitter(product[:, :3], mean) * (product[:, 3:] > 0), product[:, 3:]], dim=1)
    return image, product, maps, box


# ----------------------------------------------------------------------------------------------------
# Data held by a worker.


@dataclass
class Examples:
    """Decoded examples: ``image (N, S, S, 3)`` / ``product (N, P, P, 4)`` uint8, ``has_product``,
    ``label`` (N,) int64, ``caption`` list."""

    image: torch.Tensor
    product: torch.Tensor
    has_product: torch.Tensor
    label: torch.Tensor
    caption: list[str]
    skipped: int = 0
    index: torch.Tensor | None = None  # (N,) int64: each row's position in the samples it was decoded from
    maps: torch.Tensor | None = None  # (N, C, S, S) uint8: precomputed aux maps (see precompute_maps)
    map_names: tuple[str, ...] = ()  # which maps, in channel order, with their channel counts
    map_channels: tuple[int, ...] = ()
    box: torch.Tensor | None = (
        None  # (N, 5) float32: the located product (x0, y0, x1, y1) in [0, 1], search error
    )
    desc: torch.Tensor | None = None  # (N, D) float32: raw descriptors of the unaugmented examples
    tree_logits: torch.Tensor | None = None  # (N, K): out-of-fold descriptor-tree scores (training)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def batch(self, index: np.ndarray | torch.Tensor, device: torch.device) -> dict[str, Any]:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return {
            "image": self.image[idx].to(device).permute(0, 3, 1, 2).float().div_(255.0),
            "product": self.product[idx].to(device).permute(0, 3, 1, 2).float().div_(255.0),
            "has_product": self.has_product[idx].to(device),
            "label": self.label[idx].to(device),
            "caption": [self.caption[i] for i in idx.tolist()],
            "maps": None if self.maps is None else self.maps[idx].to(device).float().div_(255.0),
            "box": None if self.box is None else self.box[idx].to(device),
            "desc": None if self.desc is None else self.desc[idx].to(device),
            "tree_logits": None if self.tree_logits is None else self.tree_logits[idx].to(device),
        }

    def split_maps(
        self, maps: torch.Tensor | None, box: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | None:
        """``(B, C, S, S)`` stacked maps (and boxes) -> the model's ``maps`` dict."""
        if maps is None:
            return None
        out = dict(zip(self.map_names, torch.split(maps, list(self.map_channels), dim=1), strict=True))
        if box is not None:
            out["box"], out["box_error"] = box[:, :4], box[:, 4]
        return out


class PrepProgress:
    """Logs ``done / total`` of a step over examples at most every :data:`PROGRESS_INTERVAL_S`
    (nothing for a step that ends sooner): decoding, the maps or scoring of 100k images take many
    minutes before anything else is logged."""

    def __init__(self, what: str, total: int, enabled: bool = True) -> None:
        self.what, self.total, self.enabled = what, total, enabled
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < PROGRESS_INTERVAL_S or done >= self.total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        logger.info(
            "%s: %d/%d examples (%.0f%%), %.1f/s, about %.0f s left",
            self.what, done, self.total, 100.0 * done / max(self.total, 1), rate, eta,
        )  # fmt: skip


def precompute_maps(
    model: RFNet,
    data: Examples,
    device: torch.device,
    batch_size: int = 64,
    descriptor: bool = False,
    progress: bool = False,
) -> None:
    """Compute the depth / saliency / match maps of every example once and keep them as uint8.

    They are functions of the (unaugmented) image and product only, so computing them per epoch
    would repeat the same work; flips and shifts are applied to them like to the image.
    ``descriptor``: also the raw product descriptor of each example (``data.desc``), from the
    full-precision maps. ``progress``: log how far it got every :data:`PROGRESS_INTERVAL_S`.
    """
    report = PrepProgress("maps and measurements", len(data), enabled=progress)
    chunks, boxes, descs = [], [], []
    names: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            b = data.batch(np.arange(start, min(start + batch_size, len(data))), device)
            maps = model.aux_maps(
                b["image"], b["product"] if model.config.use_product else None, b["has_product"]
            )
            if descriptor and model.config.use_descriptor:
                descs.append(model.raw_descriptor(b["image"], maps).float().cpu())
            if "box" in maps:
                boxes.append(
                    torch.cat([maps.pop("box"), maps.pop("box_error").view(-1, 1)], dim=1).float().cpu()
                )
            if not maps:
                return
            names = tuple(maps)
            channels = tuple(int(m.shape[1]) for m in maps.values())
            stacked = torch.cat(list(maps.values()), dim=1)
            chunks.append((stacked.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu())
            report(start + len(b["label"]))
    if chunks:
        data.maps, data.map_names, data.map_channels = torch.cat(chunks), names, channels
    if boxes:
        data.box = torch.cat(boxes)
    if descs:
        data.desc = torch.cat(descs)


def log_search(report: dict[str, Any], where: str, log: logging.Logger = logger) -> None:
    """Log a :func:`rfnet.aux.search_report` in one line, and its warning if it has one."""
    if report.get("with_product"):
        log.info(
            "product search on the %s: median error %.4f over %d images with a product, %.0f%% over %.2f",
            where, report["median_error"], report["with_product"], 100 * report["poor_share"], report["poor_error"],
        )  # fmt: skip
    warning = search_warning(report)
    if warning:
        log.warning("%s: %s", where, warning)


def load_examples(
    samples: list[Sample], *, image_size: int, product_size: int, threads: int, progress: bool = False
) -> Examples:
    """Decode ``samples`` in a thread pool; unreadable ones are skipped, counted and logged.
    ``progress``: log how far it got every :data:`PROGRESS_INTERVAL_S`."""
    image = np.zeros((len(samples), image_size, image_size, 3), np.uint8)
    product = np.zeros((len(samples), product_size, product_size, 4), np.uint8)
    has_product = np.zeros(len(samples), bool)
    ok = np.zeros(len(samples), bool)
    captions = [""] * len(samples)

    def one(i: int) -> str | None:
        try:
            ex = load_example(samples[i], image_size=image_size, product_size=product_size)
        except ExampleError as exc:
            return str(exc)
        image[i], product[i], has_product[i] = ex["image"], ex["product"], ex["has_product"]
        captions[i] = ex["caption"]
        ok[i] = True
        return None

    report = PrepProgress("decoding", len(samples), enabled=progress)
    errors = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, error in enumerate(pool.map(one, range(len(samples)))):
            if error:
                errors.append(error)
            report(i + 1)
    for e in errors[:5]:
        logger.warning("skipped: %s", e)
    if errors:
        logger.warning("skipped %d of %d samples that could not be decoded", len(errors), len(samples))
    keep = np.flatnonzero(ok)
    return Examples(
        image=torch.from_numpy(image[keep]),
        product=torch.from_numpy(product[keep]),
        has_product=torch.from_numpy(has_product[keep]),
        label=torch.tensor([samples[i].label for i in keep], dtype=torch.long),
        caption=[captions[i] for i in keep],
        skipped=len(errors),
        index=torch.from_numpy(keep.astype(np.int64)),
    )


# ----------------------------------------------------------------------------------------------------
# Checkpoint state (safetensors + JSON).


def save_optimizer(optimizer: torch.optim.Optimizer, path: str) -> None:
    """AdamW state as flat safetensors (``state.<param index>.<name>``) + param groups in metadata."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{idx}.{name}"] = t.detach().cpu().contiguous()
    save_file(tensors, path, metadata={"param_groups": json.dumps(sd["param_groups"])})


def load_optimizer(optimizer: torch.optim.Optimizer, path: str) -> None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    tensors = load_file(path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------------------------------
# Distributed helpers (no-ops with one worker / no process group).


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    """Where the process group's collectives run: this worker's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The sum (or max) of ``t`` over all workers, on ``t``'s device (``t`` itself without
    torch.distributed); a copy travels to the backend's device and back."""
    if not _dist_on():
        return t
    moved = t.detach().to(_collective_device(), copy=True)
    dist.all_reduce(moved, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return moved.to(t.device)


# ----------------------------------------------------------------------------------------------------
# The worker loop.


def _threads(cfg: TrainRFNetConfig, world: int) -> int:
    if cfg.workers.threads_per_worker:
        return cfg.workers.threads_per_worker
    return max(1, (os.cpu_count() or 1) // world)


def fit_descriptor_stats(model: RFNet, batches) -> None:
    """Standardise the product descriptor with the training set's per-feature mean and std (summed
    over all workers, so every worker gets the same); no-op unless ``descriptor_norm="data"``."""
    c = model.config
    if not (c.use_descriptor and c.descriptor_norm == "data"):
        return
    size = c.descriptor_size
    sums = torch.zeros(2 * size + 1, dtype=torch.float64)
    with torch.inference_mode():
        for b in batches:
            m = b["maps"]
            d = m.get("descriptor")
            if d is None:
                d = model.raw_descriptor(b["image"], m)
            d = d[b["has_product"]].double().cpu()
            sums += torch.cat([d.sum(0), (d**2).sum(0), torch.tensor([float(len(d))], dtype=torch.float64)])
    sums = all_reduce(sums)
    n = float(sums[-1])
    if n < 2:
        return
    mean = sums[:size] / n
    std = (sums[size:-1] / n - mean**2).clamp(min=0).sqrt().clamp(min=1e-4)
    model.descriptor_mean.copy_(mean.float())
    model.descriptor_std.copy_(std.float())


def fit_descriptor_trees(
    model: RFNet, batches, oc: OptimConfig, *, install: bool = True, folds: int = 0
) -> tuple[int, torch.Tensor | None]:
    """Fit ``model``'s boosted trees (``descriptor_trees`` > 0) on the raw descriptors of the
    unaugmented training ``batches`` with a product, each row weighted like its loss
    (``balance="weights"``), and (``install``) install them with weight 0: the validation picks it.

    ``folds`` > 1 also returns every training example's out-of-fold scores ``(N, K)``: each from
    trees fitted on the other folds (zeros for examples without a product), what the network
    trains on top of with ``descriptor_tree_mix="offset"``. Returns ``(rows fitted on, scores or
    None)``; 0 rows (too few examples with a product): nothing is fitted."""
    c = model.config
    xs, ys, has = [], [], []
    with torch.inference_mode():
        for b in batches:
            d = b["maps"].get("descriptor")
            if d is None:
                d = model.raw_descriptor(b["image"], b["maps"])
            xs.append(d.float().cpu())
            ys.append(b["label"].cpu())
            has.append(b["has_product"].cpu())
    keep = torch.cat(has).numpy()
    x, y = torch.cat(xs).numpy()[keep], torch.cat(ys).numpy()[keep]
    if len(y) < NUM_CLASSES * max(2, folds):
        logger.warning("only %d training examples with a product: descriptor trees not fitted", len(y))
        return 0, None
    weight = class_weights(y)[y] if oc.balance == "weights" else None

    def params(seed: int) -> TreeParams:
        return TreeParams(rounds=c.descriptor_trees, depth=c.descriptor_tree_depth, seed=seed)

    if install:
        model.set_trees(fit_trees(x, y, NUM_CLASSES, params(oc.seed), weight=weight))
        model.tree_weight.zero_()
    if folds < 2:
        return len(y), None
    part = np.random.default_rng(oc.seed).permutation(len(y)) % folds
    scores = np.zeros((len(y), NUM_CLASSES), np.float32)
    for k in range(folds):
        fit = part != k
        trees = fit_trees(
            x[fit], y[fit], NUM_CLASSES, params(oc.seed + 1 + k), None if weight is None else weight[fit]
        )
        scores[~fit] = trees.logits(torch.from_numpy(x[~fit])).numpy()
    out = torch.zeros(len(keep), NUM_CLASSES)
    out[torch.from_numpy(keep)] = torch.from_numpy(scores)
    return len(y), out


def broadcast(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every worker (``t`` itself without torch.distributed)."""
    if not _dist_on():
        return t
    moved = t.detach().to(_collective_device(), copy=True)
    dist.broadcast(moved, src=0)
    return moved.to(t.device)


def broadcast_trees(model: RFNet) -> None:
    """Give every worker rank 0's trees (no-op without torch.distributed or trees)."""
    if not (_dist_on() and model.config.descriptor_trees):
        return
    for name in ("tree_feature", "tree_threshold", "tree_leaf", "tree_base", "tree_weight"):
        buffer = getattr(model, name)
        buffer.copy_(broadcast(buffer))


def evaluate_batches(
    model: RFNet, batches, placement, tree_weights: tuple[float, ...] = (0.0,)
) -> tuple[np.ndarray, float, int]:
    """``(confusions (W, K, K) int64, summed loss, count)`` over this worker's validation batches:
    one confusion matrix per mixing weight in ``tree_weights`` (:meth:`RFNet.mix_trees`; a model
    without trees has one, of its logits). The loss is of the logits training sees."""
    core: RFNet = model.module if hasattr(model, "module") else model
    trees_on = bool(core.config.descriptor_trees)
    weights = tree_weights if trees_on else (0.0,)
    cms = np.zeros((len(weights), NUM_CLASSES, NUM_CLASSES), np.int64)
    loss_sum, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for b in batches:
            with autocast(placement):
                net, trees, has_product = core.logit_parts(
                    b["image"], b["product"], b["has_product"], core.tokenize(b["caption"]), maps=b["maps"]
                )
            trained = net  # what the training loss sees (see RFNet.forward)
            if trees is not None and core.config.descriptor_tree_mix == "offset":
                trained = net + trees.to(net.dtype) * has_product.to(net.dtype).view(-1, 1)
            loss_sum += float(F.cross_entropy(trained.float(), b["label"], reduction="sum"))
            count += int(b["label"].numel())
            labels = b["label"].cpu().numpy()
            for i, w in enumerate(weights):
                logits = net if trees is None else core.mix_trees(net, trees, has_product, w)
                cms[i] += metrics.confusion_matrix(labels, logits.argmax(dim=1).cpu().numpy(), NUM_CLASSES)
    return cms, loss_sum, count


class MemoryData:
    """``loader="memory"``: the decoded train set (all of it, on every worker) and this worker's share
    of the validation set in RAM, with their maps precomputed. Each epoch's global batches come from
    one seeded permutation; each worker takes its slice, after augmenting the global batch with
    parameters drawn for the global batch, so the run does not depend on the number of workers."""

    def __init__(
        self, cfg: TrainRFNetConfig, config: dict[str, Any], session, model: RFNet, device: torch.device
    ):
        self.cfg, self.device, self.rank, self.world = cfg, device, session.rank, session.world
        mc, threads = cfg.model, cfg.data.load_threads
        chatty = self.rank == 0  # every worker prepares the same training set: one reports
        self.train = load_examples(
            [Sample(**s) for s in config["train"]],
            image_size=mc.image_size,
            product_size=mc.product_size,
            threads=threads,
            progress=chatty,
        )
        val = [Sample(**s) for s in config["val"]][self.rank :: self.world]
        self.val = load_examples(val, image_size=mc.image_size, product_size=mc.product_size, threads=threads)
        once = cfg.data.cache_descriptor
        precompute_maps(model, self.train, device, descriptor=once, progress=chatty)
        precompute_maps(model, self.val, device, descriptor=once)
        self.skipped = self.train.skipped + self.val.skipped
        # How well the product search matched on the training split (None without it).
        self.search = None
        if self.train.box is not None:
            self.search = search_report(self.train.box[:, 4], self.train.has_product)
            if chatty:
                log_search(self.search, "training split")
        if len(self.train) < cfg.optim.batch_size:
            raise ValueError(
                f"the training split has {len(self.train)} examples, fewer than one global batch "
                f"({cfg.optim.batch_size}); lower optim.batch_size or add data"
            )

    def describe(self) -> str:
        return f"memory: {len(self.train)} train, {len(self.val)} val examples on this worker"

    def steps_per_epoch(self) -> int:
        return len(self.train) // self.cfg.optim.batch_size

    def _batch(
        self, data: Examples, index, augment_with: torch.Generator | None, mine: slice | None
    ) -> dict[str, Any]:
        b = data.batch(index, self.device)
        image, product, maps, box = b["image"], b["product"], b["maps"], b["box"]
        if augment_with is not None:
            moved = None if box is None else box[:, :4]
            image, product, maps, moved = augment(image, product, self.cfg.augment, augment_with, maps, moved)
            box = None if box is None else torch.cat([moved, box[:, 4:]], dim=1)
        mine = mine or slice(None)
        split = data.split_maps(None if maps is None else maps[mine], None if box is None else box[mine])
        if b["desc"] is not None and split is not None:
            # Cached descriptor of the unaugmented image: its first four entries are the box, which
            # moved with the flip and shift; the other measurements do not change with them.
            desc = b["desc"][mine].clone()
            desc[:, :4] = split["box"].to(desc.dtype)
            split["descriptor"] = desc
        if b["tree_logits"] is not None and split is not None:
            split["tree_logits"] = b["tree_logits"][mine]
        return {
            "image": image[mine],
            "product": product[mine],
            "has_product": b["has_product"][mine],
            "caption": b["caption"][mine],
            "label": b["label"][mine],
            "maps": split,
        }

    def train_batches(self, epoch: int):
        oc = self.cfg.optim
        local = oc.batch_size // self.world
        mine = slice(self.rank * local, (self.rank + 1) * local)
        order = epoch_order(len(self.train), self.train.label.numpy(), epoch, oc.seed, oc.balance)
        for s in range(self.steps_per_epoch()):
            gen = torch.Generator().manual_seed(oc.seed * 1_000_003 + epoch * 10_007 + s)
            yield self._batch(
                self.train,
                order[s * oc.batch_size : (s + 1) * oc.batch_size],
                gen if self.cfg.augment.enabled else None,
                mine,
            )

    def stat_batches(self):
        """Unaugmented batches of the train set (for input statistics)."""
        for start in range(0, len(self.train), 64):
            yield self._batch(self.train, np.arange(start, min(start + 64, len(self.train))), None, None)

    def val_batches(self):
        size = max(32, self.cfg.optim.batch_size // self.world)
        for start in range(0, len(self.val), size):
            yield self._batch(self.val, np.arange(start, min(start + size, len(self.val))), None, None)


class StreamData:
    """``loader="stream"``: Ray Data shards (``rfnet.data.to_ray_dataset``, split equally across the
    workers by Ray Train) decoded as they are consumed, maps computed per batch. For sets that do not
    fit in memory; batches are shuffled within a local buffer, and the run is not bit-identical
    across worker counts (the memory loader is)."""

    SHUFFLE_BUFFER = 2048  # rows shuffled locally per worker

    def __init__(
        self, cfg: TrainRFNetConfig, config: dict[str, Any], session, model: RFNet, device: torch.device
    ):
        self.cfg, self.device, self.model, self.rank, self.world = (
            cfg,
            device,
            model,
            session.rank,
            session.world,
        )
        self.train = session.dataset_shard("train")
        self.val = session.dataset_shard("val")
        self.n_train = int(config["n_train"])
        self.skipped = 0
        self.search = None  # the maps are computed per batch: no set-wide product search report
        self.local = cfg.optim.batch_size // self.world
        if self.steps_per_epoch() == 0:
            raise ValueError(
                f"the training split has {self.n_train} examples, fewer than one global batch ({cfg.optim.batch_size})"
            )

    def describe(self) -> str:
        return f"stream: {self.n_train} train examples over {self.world} workers"

    def steps_per_epoch(self) -> int:
        # Ray Train splits each epoch equally (streaming_split(equal=True)); full batches only.
        return (self.n_train // self.world) // self.local

    def _convert(self, np_batch: dict[str, np.ndarray], gen: torch.Generator | None) -> dict[str, Any]:
        image = (
            torch.from_numpy(np.ascontiguousarray(np_batch["image"]))
            .to(self.device)
            .permute(0, 3, 1, 2)
            .float()
            / 255.0
        )
        product = (
            torch.from_numpy(np.ascontiguousarray(np_batch["product"]))
            .to(self.device)
            .permute(0, 3, 1, 2)
            .float()
            / 255.0
        )
        has_product = torch.from_numpy(np.asarray(np_batch["has_product"], bool)).to(self.device)
        with torch.no_grad():
            maps = self.model.aux_maps(image, product if self.cfg.model.use_product else None, has_product)
        if gen is not None:
            names = [k for k in maps if k not in ("box", "box_error")]
            stacked = torch.cat([maps[k] for k in names], dim=1) if names else None
            image, product, stacked, box = augment(
                image, product, self.cfg.augment, gen, stacked, maps.get("box")
            )
            if stacked is not None:
                sizes = [maps[k].shape[1] for k in names]
                maps.update(dict(zip(names, torch.split(stacked, sizes, dim=1), strict=True)))
            if box is not None:
                maps["box"] = box
        return {
            "image": image,
            "product": product,
            "has_product": has_product,
            "caption": [str(c) for c in np_batch["caption"]],
            "label": torch.from_numpy(np.asarray(np_batch["label"], np.int64)).to(self.device),
            "maps": maps or None,
        }

    def train_batches(self, epoch: int):
        oc = self.cfg.optim
        batches = self.train.iter_batches(
            batch_size=self.local,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=self.SHUFFLE_BUFFER,
            local_shuffle_seed=oc.seed * 1000 + epoch * 10 + self.rank,
        )
        for s, np_batch in enumerate(batches):
            if s >= self.steps_per_epoch():
                break
            gen = torch.Generator().manual_seed(oc.seed * 1_000_003 + epoch * 10_007 + s * 101 + self.rank)
            yield self._convert(np_batch, gen if self.cfg.augment.enabled else None)

    def stat_batches(self, limit: int = 32):
        """The first ``limit`` batches of this worker's train shard, unaugmented (input statistics)."""
        batches = self.train.iter_batches(batch_size=self.local, batch_format="numpy")
        for s, np_batch in enumerate(batches):
            if s >= limit:
                break
            yield self._convert(np_batch, None)

    def val_batches(self):
        for np_batch in self.val.iter_batches(batch_size=max(32, self.local), batch_format="numpy"):
            yield self._convert(np_batch, None)


class RaySession:
    """What the loop needs from Ray Train: rank, world size, the last checkpoint, ``report``."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def restore(self):
        """A context manager yielding the last checkpoint's local directory, or None."""
        import contextlib

        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(None)

    def dataset_shard(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def report(self, metrics_: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics_, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker. ``config``: ``cfg`` (TrainRFNetConfig dict), ``train``/``val``
    (lists of Sample fields, memory loader), ``deadline`` (unix time or None), ``meta``."""
    fit_worker(config, RaySession())


def fit_worker(config: dict[str, Any], session) -> None:
    """The training loop of one worker; ``session`` is a :class:`RaySession` (or a stand-in with the
    same four members for running the loop without Ray)."""
    cfg = TrainRFNetConfig.model_validate(config["cfg"])
    rank, world = session.rank, session.world
    torch.set_num_threads(_threads(cfg, world))
    if cfg.workers.use_gpu:
        import ray.train.torch as rtt

        device = rtt.get_device()
        placement = place(str(device), cfg.workers.dtype, component="rfnet-train")
    else:
        device = torch.device("cpu")
        placement = place(
            "cpu", "float32" if cfg.workers.dtype == "auto" else cfg.workers.dtype, component="rfnet-train"
        )
    deadline: float | None = config.get("deadline")
    oc = cfg.optim

    # --- model --------------------------------------------------------------------------------
    model = build_rfnet(cfg.model, pretrained=True, seed=oc.seed)
    descriptor_stats_loaded = False
    if cfg.init_from:
        copied, kept = init_from(model, cfg.init_from)
        descriptor_stats_loaded = "descriptor_mean" in copied and "descriptor_std" in copied
        if rank == 0:
            logger.info(
                "initialised %d of %d weight tensors from %s%s",
                len(copied),
                len(copied) + len(kept),
                cfg.init_from,
                f"; {len(kept)} keep their initialisation (e.g. {', '.join(kept[:3])})" if kept else "",
            )
    # On the device before the optimizer exists: a resumed optimizer state then lands on it too.
    model.to(device)
    torch.manual_seed(oc.seed * 1000 + rank)  # dropout: differs per worker, reproducible
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": oc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=oc.lr,
    )

    # --- resume -------------------------------------------------------------------------------
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "total_epochs": oc.epochs,
        "best_f1": -1.0,
        "best_epoch": -1,
        "history": [],
        "resumed_at": [],  # epochs after which a rerun picked the run up
    }
    ema_state = None
    with session.restore() as d:
        if d is not None:
            model.load_state_dict(load_file(os.path.join(d, MODEL_FILE)))
            if oc.ema_decay and os.path.exists(os.path.join(d, EMA_FILE)):
                ema_state = load_file(os.path.join(d, EMA_FILE))
            load_optimizer(optimizer, os.path.join(d, OPTIMIZER_FILE))
            with open(os.path.join(d, STATE_FILE)) as f:
                state.update(json.load(f))
            state["total_epochs"] = oc.epochs  # a rerun may extend the run; the budget re-plans below
            state["resumed_at"] = [*state.get("resumed_at", []), state["epoch"]]
            logger.info("resumed from epoch %d (best val macro F1 %.4f)", state["epoch"], state["best_f1"])
    if world > 1:
        import ray.train.torch as rtt

        model = rtt.prepare_model(model, move_to_device=False)
    core: RFNet = model.module if hasattr(model, "module") else model

    # --- data ---------------------------------------------------------------------------------
    t_load = time.time()
    data = (StreamData if cfg.data.loader == "stream" else MemoryData)(cfg, config, session, core, device)
    logger.info("rank %d: data ready in %.1f s (%s)", rank, time.time() - t_load, data.describe())
    counts = np.asarray(config["class_counts"], np.int64)
    weights = torch.from_numpy(class_weights(np.repeat(np.arange(NUM_CLASSES), counts))).to(device)
    weights = weights if oc.balance == "weights" else None
    if state["epoch"] == 0 and not descriptor_stats_loaded:
        # From an init checkpoint the statistics come with the weights that were trained on them.
        fit_descriptor_stats(core, data.stat_batches())
    # Refit the trees on train + validation after the last epoch (OptimConfig.refit_trees).
    refit = bool(cfg.model.descriptor_trees and oc.refit_trees and config.get("n_val", 1))
    refit_s = 0.0  # what the plan keeps free for it
    if cfg.model.descriptor_trees:
        # Fitted on every fresh start (an init checkpoint's trees belong to its own training data);
        # a resumed run has them in its checkpoint and refits only the out-of-fold scores, which
        # come out the same (seeded).
        offset = cfg.model.descriptor_tree_mix == "offset"
        fresh = state["epoch"] == 0
        oof = None
        t_fit = time.time()
        if rank == 0 and (fresh or offset):
            rows, oof = fit_descriptor_trees(
                core, data.stat_batches(), oc, install=fresh, folds=TREE_FOLDS if offset else 0
            )
            logger.info(
                "descriptor trees: %d rounds x %d classes on %d examples%s in %.1f s",
                cfg.model.descriptor_trees, NUM_CLASSES, rows,
                f" (+ {TREE_FOLDS} fits for out-of-fold scores)" if offset else "", time.time() - t_fit,
            )  # fmt: skip
        if refit:
            # the final refit costs about the first fit, scaled to the examples it adds
            estimate = 1.25 * (time.time() - t_fit) if rank == 0 else 0.0
            refit_s = float(broadcast(torch.tensor([estimate], dtype=torch.float64))[0])
        broadcast_trees(core)
        if offset:
            data.train.tree_logits = broadcast(
                oof if oof is not None else torch.zeros(len(data.train), NUM_CLASSES)
            )
    steps_per_epoch = data.steps_per_epoch()
    warmup_steps = round(oc.warmup_epochs * steps_per_epoch)
    ema: RFNet | None = None
    if oc.ema_decay:
        import copy

        ema = copy.deepcopy(core).requires_grad_(False)
        if ema_state is not None:
            ema.load_state_dict(ema_state)
    scored = ema if ema is not None else model  # what is validated, selected and saved
    saved = ema if ema is not None else core

    writer = None
    tb_dir = None
    if rank == 0 and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = (
            storage.join(cfg.out, "tensorboard")
            if not storage.is_remote(cfg.out)
            else tempfile.mkdtemp(prefix="rfnet-tb-")
        )
        writer = SummaryWriter(tb_dir)

    # --- epochs -------------------------------------------------------------------------------
    epoch_times: list[float] = []
    while state["epoch"] < state["total_epochs"]:
        epoch = state["epoch"]
        t0 = time.time()
        model.train()
        # Summed on the loss's device (no host sync per step), read once per epoch.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for b in data.train_batches(epoch):
            factor = lr_factor(state["step"], warmup_steps, state["total_epochs"] * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = oc.lr * factor
            with autocast(placement):
                logits = model(
                    b["image"], b["product"], b["has_product"], core.tokenize(b["caption"]), maps=b["maps"]
                )
            loss = weighted_loss(logits, b["label"], weights, oc.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if oc.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, oc.grad_clip)
            optimizer.step()
            if ema is not None:
                ema_update(ema, core, oc.ema_decay, state["step"])
            loss_sum += loss.detach().double()
            state["step"] += 1
        train_time = time.time() - t0

        cms, val_loss, val_count = evaluate_batches(scored, data.val_batches(), placement, TREE_WEIGHTS)
        reduced = all_reduce(
            torch.tensor([*cms.ravel().tolist(), val_loss, val_count, float(loss_sum)], dtype=torch.float64)
        )
        cms = reduced[: cms.size].numpy().round().astype(np.int64).reshape(cms.shape)
        # How much the trees weigh: the grid weight with the best validation macro F1 (the first
        # of equals, so the network alone wins ties), like the epoch itself.
        # Without validation examples: the middle of the grid.
        f1s = [metrics.macro_f1(m) for m in cms]
        pick = int(np.argmax(f1s)) if val_count else len(cms) // 2
        cm, tree_weight = cms[pick], (TREE_WEIGHTS[pick] if len(cms) > 1 else 0.0)
        if cfg.model.descriptor_trees:
            for m in {id(core): core, id(saved): saved}.values():  # the EMA copies core's buffers
                m.tree_weight.fill_(tree_weight)
        val_loss, val_count, train_loss = (
            float(reduced[-3]),
            int(reduced[-2]),
            float(reduced[-1]) / (world * steps_per_epoch),
        )
        per = metrics.per_class_metrics(cm)
        f1 = metrics.macro_f1(cm) if val_count else float("nan")
        state["epoch"] = epoch + 1
        improved = val_count == 0 or f1 > state["best_f1"]
        if improved:
            state["best_f1"], state["best_epoch"] = (f1 if val_count else -1.0), epoch + 1
        epoch_metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss / max(1, val_count),
            "val_macro_f1": f1,
            "val_accuracy": float(np.trace(cm) / max(1, cm.sum())),
            "val_macro_f1_network": f1s[0] if val_count else float("nan"),
            "tree_weight": tree_weight,
            "lr": oc.lr * factor,
            "epoch_s": time.time() - t0,
            "train_s": train_time,
            "best_val_macro_f1": state["best_f1"],
            "best_epoch": state["best_epoch"],
        }
        state["history"].append(
            {k: (round(v, 5) if isinstance(v, float) else v) for k, v in epoch_metrics.items()}
        )

        # Re-plan the number of epochs from the slowest worker's epoch time.
        epoch_times.append(float(all_reduce(torch.tensor([time.time() - t0], dtype=torch.float64), "max")[0]))
        if deadline is not None:
            # Recent and pessimistic; the plan may grow again when epochs get faster than the first
            # ones (start-up, a busy machine), so the budget is not left unused.
            per_epoch = max(epoch_times[-2:])
            left = deadline - time.time() - END_MARGIN_S - refit_s
            fit = state["epoch"] + max(0, math.floor(left / per_epoch))
            state["total_epochs"] = max(state["epoch"], min(oc.epochs, fit))
        if oc.early_stop_patience and state["epoch"] - state["best_epoch"] >= oc.early_stop_patience:
            state["total_epochs"] = state["epoch"]

        if rank == 0:
            if improved:
                save_rfnet(
                    saved,
                    cfg.model,
                    cfg.out,
                    meta=_best_meta(cfg, config["meta"], state, per, cm, data.skipped, data.search),
                )
            if writer is not None:
                for k, v in epoch_metrics.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
                for i, name in enumerate(LABELS):
                    writer.add_scalar(f"val_f1/{name}", per.f1[i], epoch + 1)
                writer.flush()
                if tb_dir and storage.is_remote(cfg.out):
                    _upload_dir(tb_dir, storage.join(cfg.out, "tensorboard"))
            logger.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val macro F1 %.4f (best %.4f @ %d), %.1f s",
                epoch + 1, state["total_epochs"], train_loss, epoch_metrics["val_loss"], f1, state["best_f1"],
                state["best_epoch"], epoch_metrics["epoch_s"],
            )  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()},
                    os.path.join(tmp, MODEL_FILE),
                )
                save_optimizer(optimizer, os.path.join(tmp, OPTIMIZER_FILE))
                if ema is not None:
                    save_file(
                        {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()},
                        os.path.join(tmp, EMA_FILE),
                    )
                with open(os.path.join(tmp, STATE_FILE), "w") as f:
                    json.dump(state, f)
                session.report(epoch_metrics, tmp)
        else:
            session.report(epoch_metrics, None)
    if writer is not None:
        writer.close()
    if refit and rank == 0 and state["best_epoch"] > 0:
        refit_saved_trees(cfg, data, str(device))


def refit_saved_trees(cfg: TrainRFNetConfig, data, device: str = "cpu") -> None:
    """Refit the descriptor trees of the best model saved under ``cfg.out`` on ``data``'s training
    and validation examples, keep the tree weight validation chose, and save it again (weights
    first, meta.json last, with ``train.trees_refit`` saying on how many examples). ``device``:
    where ``data``'s batches are (the model measures descriptors that were not cached there)."""
    from rfnet.checkpoint import load_rfnet

    t0 = time.time()
    loaded = load_rfnet(cfg.out, device=device, dtype="float32")
    model, weight = loaded.model, loaded.model.tree_weight.clone()
    batches = itertools.chain(data.stat_batches(), data.val_batches())
    rows, _ = fit_descriptor_trees(model, batches, cfg.optim)
    if not rows:
        return
    model.tree_weight.copy_(weight)
    meta = dict(loaded.meta)
    meta["train"] = {
        **meta.get("train", {}),
        "trees_refit": {"examples": rows, "seconds": round(time.time() - t0, 1)},
    }
    save_rfnet(model, model.config, cfg.out, meta=meta)
    logger.info(
        "descriptor trees refitted on %d training + validation examples in %.1f s", rows, time.time() - t0
    )


def _upload_dir(local: str, remote: str) -> None:
    for name in os.listdir(local):
        path = os.path.join(local, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                storage.write_bytes(storage.join(remote, name), f.read())


def _best_meta(
    cfg: TrainRFNetConfig,
    base: dict[str, Any],
    state: dict[str, Any],
    per,
    cm: np.ndarray,
    skipped: int,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **base,
        "train": {
            "best_epoch": state["best_epoch"],
            "val_macro_f1": state["best_f1"],
            "val_per_class_f1": {name: round(float(per.f1[i]), 5) for i, name in enumerate(LABELS)},
            "val_confusion": cm.tolist(),
            "history": state["history"],
            "skipped_examples": skipped,
            "product_search": search,
            "config_hash": cfg.config_hash(),
            "config": cfg.to_dict(),
        },
    }


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
