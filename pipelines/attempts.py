"""Attempt planning for recurrent generation: seeds, prompts, scales and defect steering.

Everything here is a pure function of the catalog item, the attempt number, the run seed, the
config and (for steering) the previous attempt's verdict, so a rerun plans exactly the same
attempts and a resumed run continues where the killed one stopped.

Defect steering (``retry.steering = "defect"``) changes what the predicted defect points at:

=====================  =========================================================================
previous verdict       next attempt
=====================  =========================================================================
size_mismatch          ``image_scale`` moves to the value in the allowed range farthest from every
                       scale tried so far (first retry: the other end of the range); scene kept
indistinctiveness      another colour and another template (contrast with the product); scale kept
space_mismatch         a *grounded* template (the product stands on a surface), not the last one;
                       colour and scale kept
shape_hallucination    another template, and a negative prompt against shapes merged with the
                       product; colour and scale kept
unsuitable             another template and colour; scale kept
(error / no verdict)   a new seed only
=====================  =========================================================================

A steered retry keeps every parameter the verdict did not implicate: a verdict names one defect, so
what it did not complain about is the best guess there is. ``retry.steering = "reseed"`` is the
paper's recurrent generation: each attempt draws template, colour and scale from its own seed,
ignoring the verdict.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass

from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig
from pipelines.prompts import choose_prompt, render

SHAPE_NEGATIVE = "objects merged with the product, extended product shape, duplicated product, attached parts"
SCALE_CANDIDATES = 7  # evenly spaced scales in the allowed range considered by size steering


def attempt_seed(run_seed: int, sku_id: str, attempt: int) -> int:
    """63-bit seed, a pure function of (run seed, sku_id, attempt); stable across processes."""
    digest = hashlib.blake2b(f"{run_seed}\x1f{sku_id}\x1f{attempt}".encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] >> 1


@dataclass(frozen=True)
class PreviousAttempt:
    """What planning needs to know about an earlier attempt of the same item."""

    attempt: int
    label: str  # predicted class name, "" if not inspected or failed
    template: int
    color: str | None
    image_scale: float


@dataclass(frozen=True)
class AttemptPlan:
    sku_id: str
    row: int
    attempt: int  # 1-based
    seed: int
    prompt: str
    negative_prompt: str
    template: int  # index in the prompt pool, -1 when the catalog row gave the prompt
    color: str | None
    image_scale: float
    steer: str  # why this attempt differs from a plain reseed ("" if it does not)


def _draw_scale(cfg: GenerateConfig, seed: int) -> float:
    lo, hi = cfg.prepare.image_scale_range
    return round(random.Random(seed ^ 0x5CA1E).uniform(lo, hi), 4)


def _farthest_scale(cfg: GenerateConfig, tried: list[float]) -> float:
    lo, hi = cfg.prepare.image_scale_range
    if hi - lo < 1e-6:
        return lo
    step = (hi - lo) / (SCALE_CANDIDATES - 1)
    candidates = [round(lo + i * step, 4) for i in range(SCALE_CANDIDATES)]
    return max(candidates, key=lambda c: (min(abs(c - t) for t in tried), -c))


def plan_attempt(
    item: CatalogItem, attempt: int, cfg: GenerateConfig, history: list[PreviousAttempt] | tuple = ()
) -> AttemptPlan:
    """The plan for ``item``'s attempt number ``attempt`` given the earlier attempts ``history``."""
    run_seed = item.seed if item.seed is not None else cfg.seed
    seed = attempt_seed(run_seed, item.sku_id, attempt)
    previous = history[-1] if history else None
    steering = (
        cfg.retry.steering == "defect" and previous is not None and previous.label not in ("", "available")
    )
    label = previous.label if steering and previous is not None else ""

    # A catalog image_scale is kept on every attempt, unless a Size Mismatch verdict says it is wrong.
    # A steered retry keeps what the verdict did not implicate (the previous scale, template, colour)
    # and changes only what it points at.
    scale = item.image_scale if item.image_scale is not None else _draw_scale(cfg, seed)
    if label and previous is not None and previous.image_scale > 0:
        scale = previous.image_scale
    steer = ""
    if label == "size_mismatch":
        scale = _farthest_scale(cfg, [h.image_scale for h in history])
        steer = "image_scale"

    if item.prompt is not None:
        # The catalog fixed the prompt: only the seed (and, when steered, the scale) may change.
        negative = (
            item.negative_prompt
            if item.negative_prompt is not None
            else cfg.prompts.templates[0].negative_prompt
        )
        if label == "shape_hallucination":
            negative = f"{negative}, {SHAPE_NEGATIVE}"
            steer = "negative_prompt"
        return AttemptPlan(
            item.sku_id, item.row, attempt, seed, item.prompt, negative, -1, None, scale, steer
        )

    prompts = cfg.prompts
    kept_color = previous.color if previous is not None and previous.color else None
    if label == "space_mismatch":
        choice = choose_prompt(prompts, seed, grounded_only=True, avoid_template=previous.template)
        choice = render(prompts, choice.template_index, kept_color or choice.color)
        steer = "grounded_template"
    elif label in ("indistinctiveness", "unsuitable"):
        choice = choose_prompt(prompts, seed, avoid_template=previous.template, avoid_color=previous.color)
        steer = "template_and_color"
    elif label == "shape_hallucination":
        choice = choose_prompt(prompts, seed, avoid_template=previous.template)
        choice = render(prompts, choice.template_index, kept_color or choice.color)
        steer = "template_and_negative_prompt"
    elif label and previous is not None and previous.template >= 0:  # size_mismatch: keep the scene
        choice = render(prompts, previous.template, previous.color)
    else:
        choice = choose_prompt(prompts, seed)
    negative = item.negative_prompt if item.negative_prompt is not None else choice.negative_prompt
    if label == "shape_hallucination":
        negative = f"{negative}, {SHAPE_NEGATIVE}"
    return AttemptPlan(
        item.sku_id,
        item.row,
        attempt,
        seed,
        choice.prompt,
        negative,
        choice.template_index,
        choice.color,
        scale,
        steer,
    )
