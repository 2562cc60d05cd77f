"""The pure pieces of a training step, tested on their own: class weights and the weighted loss, the
EMA update, the learning-rate schedule, the epoch order and the augmentations."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.labels import NUM_CLASSES
from rfnet.config import AugmentConfig

logger = logging.getLogger(__name__)


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
