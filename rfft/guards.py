"""Reward-hacking guards: signals RFNet's reward does not optimise, watched during RFFT.

ReFL-style fine-tuning against a learned critic drifts towards whatever the critic likes, and without
regularisation it collapses to bland, uniform backgrounds (Du et al. 2024 report the aesthetic
collapse of plain ReFL). So beside RFNet's verdict the trainer tracks, on the held-out products:

- **the judge** (``judge``, an independent RFNet nothing trains against): the *reward-judge gap* is
  the reward's held-out available-rate gain since step 0 minus the judge's. Above
  ``max_reward_judge_gap`` for ``patience`` evaluations in a row, the ControlNet is learning what the
  reward likes rather than what the judge does.
- **diversity** (:func:`diversity`): mean pairwise distance between held-out backgrounds, across
  the seeds of one product (averaged over products) when the held-out set has several seeds per
  product (``data.eval_repeats >= 2``), else across products. Feature: the background's colour
  layout, a ``grid x grid`` masked average of RGB (product pixels excluded), compared on the cells
  both images cover. Collapse = the value falls below ``min_diversity_ratio`` x its step-0 value.
- **drift** (:func:`background_drift`): mean distance between each held-out background and the
  frozen teacher's on the same seed (the step-0 images: the student equals the teacher then).
- **background detail** (:func:`background_detail`): mean standard deviation of background pixels;
  a bland, flat scene has little of it.
- **product fidelity** (:func:`product_fidelity`): the fraction of fully opaque product pixels that
  differ from the product in the final image (must stay 0: the paste-back guarantees it), and the
  seam error, the mean absolute difference between the generated image *before* paste-back and the
  product in a band just inside the product outline (a model that ignores the product's edges leaves
  a visible seam there).
- **L_CC drift**: the mean Consistent-Condition loss since the previous evaluation (optionally bounded
  by ``max_l_cc``).

:class:`GuardMonitor` turns these into warnings or, by default, an early stop (``guards.action``). All functions
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


def background_distance(fa: np.ndarray, ca: np.ndarray, fb: np.ndarray, cb: np.ndarray) -> float | None:
    """Coverage-weighted RMS colour distance of two backgrounds, in [0, 1]; None if they share no cell."""
    w = np.minimum(ca, cb)
    total = float(w.sum())
    if total <= 0:
        return None
    sq = ((fa - fb) ** 2).mean(axis=-1)
    return math.sqrt(float((w * sq).sum()) / total)


def background_diversity(features: np.ndarray, coverage: np.ndarray) -> float:
    """Mean over pairs (i < j) of :func:`background_distance`, in [0, 1].

    Pairs sharing no background cell are skipped; fewer than two images give NaN.
    """
    n = len(features)
    distances = [
        d
        for i in range(n)
        for j in range(i + 1, n)
        if (d := background_distance(features[i], coverage[i], features[j], coverage[j])) is not None
    ]
    return float(np.mean(distances)) if distances else float("nan")


def diversity(features: np.ndarray, coverage: np.ndarray, groups: list[str]) -> tuple[float, str]:
    """``(value, basis)``: the mean within-group :func:`background_diversity` over groups (products)
    with two or more images (basis ``"seeds"``), else the diversity across all images (``"products"``)."""
    members: dict[str, list[int]] = {}
    for k, group in enumerate(groups):
        members.setdefault(group, []).append(k)
    within = [background_diversity(features[idx], coverage[idx]) for idx in members.values() if len(idx) > 1]
    within = [v for v in within if math.isfinite(v)]
    if within:
        return float(np.mean(within)), "seeds"
    return background_diversity(features, coverage), "products"


def background_drift(
    features: np.ndarray, coverage: np.ndarray, ref_features: np.ndarray, ref_coverage: np.ndarray
) -> float:
    """Mean :func:`background_distance` between each background and its reference (same index)."""
    distances = [
        d
        for f, c, rf, rc in zip(features, coverage, ref_features, ref_coverage, strict=True)
        if (d := background_distance(f, c, rf, rc)) is not None
    ]
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
    """Compares each evaluation with the first (step-0) one and decides whether to warn or stop.

    ``metrics`` keys read: ``diversity``, ``available_rate``, ``judge_available_rate`` (None without
    a judge), ``product_pixels_changed``; ``diversity_ratio`` and ``reward_judge_gap`` are added.
    """

    cfg: GuardConfig
    baseline_diversity: float | None = None
    baseline_rates: tuple[float, float | None] | None = None  # (reward, judge) available rates at step 0
    gap_streak: int = 0  # consecutive evaluations over guards.max_reward_judge_gap

    def check(self, step: int, metrics: dict[str, float], recent_l_cc: float | None) -> GuardVerdict:
        verdict = GuardVerdict()
        value = metrics.get("diversity", float("nan"))
        if self.baseline_diversity is None:
            self.baseline_diversity = value
        elif math.isfinite(value) and self.baseline_diversity and math.isfinite(self.baseline_diversity):
            ratio = value / self.baseline_diversity
            metrics["diversity_ratio"] = ratio
            if ratio < self.cfg.min_diversity_ratio:
                verdict.warnings.append(
                    f"step {step}: background diversity collapsed to {ratio:.2f} x its step-0 value "
                    f"({value:.4f} vs {self.baseline_diversity:.4f}; limit guards.min_diversity_ratio="
                    f"{self.cfg.min_diversity_ratio}); raise loss.beta or lower optim.lr"
                )
        self._check_gap(step, metrics, verdict)
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

    def _check_gap(self, step: int, metrics: dict[str, float], verdict: GuardVerdict) -> None:
        reward, judge = metrics.get("available_rate"), metrics.get("judge_available_rate")
        metrics["reward_judge_gap"] = None
        if reward is None or judge is None:
            return
        if self.baseline_rates is None:
            self.baseline_rates = (reward, judge)
        reward_gain, judge_gain = reward - self.baseline_rates[0], judge - self.baseline_rates[1]
        gap = reward_gain - judge_gain
        metrics["reward_judge_gap"] = gap
        self.gap_streak = self.gap_streak + 1 if gap > self.cfg.max_reward_judge_gap else 0
        if self.gap_streak >= self.cfg.patience:
            verdict.warnings.append(
                f"step {step}: the reward's available rate moved {reward_gain:+.3f} since step 0 and the "
                f"judge's {judge_gain:+.3f}, a gap of {gap:.3f} > guards.max_reward_judge_gap="
                f"{self.cfg.max_reward_judge_gap} for {self.gap_streak} evaluations in a row; the ControlNet "
                "learns what the reward likes, not what the judge does: lower optim.lr or raise loss.beta"
            )

    def state(self) -> dict:
        return {
            "baseline_diversity": self.baseline_diversity,
            "baseline_rates": list(self.baseline_rates) if self.baseline_rates is not None else None,
            "gap_streak": self.gap_streak,
        }

    def load_state(self, state: dict) -> None:
        self.baseline_diversity = state["baseline_diversity"]
        rates = state.get("baseline_rates")
        self.baseline_rates = tuple(rates) if rates is not None else None
        self.gap_streak = state.get("gap_streak", 0)


def _check_images(images: np.ndarray, masks: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise ValueError(
            f"images must be (N, R, R, 3) with masks (N, R, R); got {images.shape} and {masks.shape}"
        )
