"""Reward-hacking guards: signals RFNet's reward does not optimise, watched during RFFT.

ReFL-style fine-tuning against a learned critic drifts towards whatever the critic likes, and without
regularisation it collapses to bland, uniform backgrounds (Du et al. 2024 report the aesthetic
collapse of plain ReFL). So beside RFNet's verdict the trainer tracks, on the held-out products:

- **background diversity** (:func:`background_diversity`): mean pairwise distance between the
  backgrounds of different products' images. Feature: the background's colour layout, a
  ``grid x grid`` masked average of RGB (product pixels excluded), compared on the cells both images
  cover. Collapse = the value falls below ``min_diversity_ratio`` x its step-0 value.
- **background detail** (:func:`background_detail`): mean standard deviation of background pixels;
  a bland, flat scene has little of it.
- **product fidelity** (:func:`product_fidelity`): the fraction of fully opaque product pixels that
  differ from the product in the final image (must stay 0: the paste-back guarantees it), and the
  seam error, the mean absolute difference between the generated image *before* paste-back and the
  product in a band just inside the product outline (a model that ignores the product's edges leaves
  a visible seam there).
- **L_CC drift**: the mean Consistent-Condition loss since the previous evaluation (optionally bounded
  by ``max_l_cc``).

:class:`GuardMonitor` turns these into warnings or an early stop (``guards.action``). All functions
take ``uint8`` arrays: images ``(N, R, R, 3)``, product RGBA ``(N, R, R, 4)``, masks ``(N, R, R)``
with nonzero = product.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from rfft.config import GuardConfig

logger = logging.getLogger(__name__)


def background_features(
    images: np.ndarray, product_masks: np.ndarray, grid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Colour layout of each background: ``(N, grid, grid, 3)`` means in [0, 1] and cell coverage.

    ``coverage`` ``(N, grid, grid)`` in [0, 1] is the fraction of background pixels in each cell;
    cells with none have feature 0 and coverage 0.
    """
    _check_images(images, product_masks)
    background = (product_masks == 0).astype(np.float32)
    feats, covs = [], []
    for image, weight in zip(images, background, strict=True):
        rgb = image.astype(np.float32) / 255.0
        summed = cv2.resize(rgb * weight[..., None], (grid, grid), interpolation=cv2.INTER_AREA)
        coverage = cv2.resize(weight, (grid, grid), interpolation=cv2.INTER_AREA)
        feats.append(np.where(coverage[..., None] > 0, summed / np.maximum(coverage[..., None], 1e-6), 0.0))
        covs.append(coverage)
    return np.stack(feats), np.stack(covs)


def background_diversity(features: np.ndarray, coverage: np.ndarray) -> float:
    """Mean over pairs (i < j) of the coverage-weighted RMS colour distance, in [0, 1].

    Pairs sharing no background cell are skipped; fewer than two images give NaN.
    """
    n = len(features)
    distances = []
    for i in range(n):
        for j in range(i + 1, n):
            w = np.minimum(coverage[i], coverage[j])
            total = float(w.sum())
            if total <= 0:
                continue
            sq = ((features[i] - features[j]) ** 2).mean(axis=-1)
            distances.append(math.sqrt(float((w * sq).sum()) / total))
    return float(np.mean(distances)) if distances else float("nan")


def background_detail(images: np.ndarray, product_masks: np.ndarray) -> float:
    """Mean over images of the standard deviation of background pixel values, in [0, 0.5]."""
    _check_images(images, product_masks)
    stds = []
    for image, mask in zip(images, product_masks, strict=True):
        pixels = image[mask == 0].astype(np.float32) / 255.0
        if pixels.size:
            stds.append(float(pixels.std()))
    return float(np.mean(stds)) if stds else float("nan")


def product_fidelity(
    final: np.ndarray, decoded: np.ndarray, product: np.ndarray, seam_width: int
) -> dict[str, float]:
    """``product_pixels_changed`` (fraction of alpha-255 pixels altered, should be 0) and ``seam_error``.

    ``final``: the delivered image (after paste-back); ``decoded``: the generated image before it;
    ``product``: the RGBA product on the canvas. ``seam_error`` is in [0, 1] (mean absolute difference
    over the band of ``seam_width`` px inside the product outline).
    """
    opaque = product[..., 3] == 255
    changed = np.any(final != product[..., :3], axis=-1) & opaque
    n_opaque = int(opaque.sum())
    kernel = np.ones((2 * seam_width + 1, 2 * seam_width + 1), np.uint8)
    seams = []
    for k in range(len(product)):
        inside = (product[k, ..., 3] > 0).astype(np.uint8)
        band = (inside > 0) & (cv2.erode(inside, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) == 0)
        if band.any():
            diff = np.abs(decoded[k].astype(np.float32) - product[k, ..., :3].astype(np.float32)) / 255.0
            seams.append(float(diff[band].mean()))
    return {
        "product_pixels_changed": float(changed.sum()) / n_opaque if n_opaque else 0.0,
        "seam_error": float(np.mean(seams)) if seams else float("nan"),
    }


@dataclass
class GuardVerdict:
    warnings: list[str] = field(default_factory=list)
    stop: bool = False


@dataclass
class GuardMonitor:
    """Compares each evaluation with the first (step-0) one and decides whether to warn or stop."""

    cfg: GuardConfig
    baseline_diversity: float | None = None

    def check(self, step: int, metrics: dict[str, float], recent_l_cc: float | None) -> GuardVerdict:
        verdict = GuardVerdict()
        diversity = metrics.get("background_diversity", float("nan"))
        if self.baseline_diversity is None:
            self.baseline_diversity = diversity
        elif math.isfinite(diversity) and self.baseline_diversity and math.isfinite(self.baseline_diversity):
            ratio = diversity / self.baseline_diversity
            metrics["diversity_ratio"] = ratio
            if ratio < self.cfg.min_diversity_ratio:
                verdict.warnings.append(
                    f"step {step}: background diversity collapsed to {ratio:.2f} x its step-0 value "
                    f"({diversity:.4f} vs {self.baseline_diversity:.4f}; limit guards.min_diversity_ratio="
                    f"{self.cfg.min_diversity_ratio}); raise loss.beta or lower optim.lr"
                )
        if metrics.get("product_pixels_changed", 0.0) > 0:
            verdict.warnings.append(
                f"step {step}: {metrics['product_pixels_changed']:.2%} of opaque product pixels changed; "
                "the paste-back is broken"
            )
        if recent_l_cc is not None and self.cfg.max_l_cc is not None and recent_l_cc > self.cfg.max_l_cc:
            verdict.warnings.append(
                f"step {step}: mean L_CC since the last evaluation is {recent_l_cc:.4g} > guards.max_l_cc="
                f"{self.cfg.max_l_cc}; the guidance direction is drifting from the original model"
            )
        for message in verdict.warnings:
            logger.warning("reward-hacking guard: %s", message)
        verdict.stop = bool(verdict.warnings) and self.cfg.action == "stop"
        return verdict


def _check_images(images: np.ndarray, masks: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise ValueError(
            f"images must be (N, R, R, 3) with masks (N, R, R); got {images.shape} and {masks.shape}"
        )
