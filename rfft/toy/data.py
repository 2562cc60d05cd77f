"""The toy generator's training data: painted scenes, their control images and prompts, in memory.

Scenes come from :func:`rfnet.data.scenes.toy.sample_scene` with the ``toy`` generation preset's
``prepare`` settings, so the product sits exactly where the generation pipeline puts it and the
control image is the one the pipeline computes (Canny of the product, background zeroed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from pipelines.config import PrepareConfig
from rfnet.data.scenes.toy import sample_scene

logger = logging.getLogger(__name__)


@dataclass
class ToyData:
    """``N`` painted scenes at canvas side ``R``."""

    images: np.ndarray  # (N, R, R, 3) uint8: scene with the product pasted back
    control: np.ndarray  # (N, R, R) uint8: Canny edges of the product (255 = edge)
    prompts: list[str]
    labels: np.ndarray  # (N,) int8 class index (pipelines.labels.LABELS)

    def __len__(self) -> int:
        return len(self.prompts)


def paint_scenes(seed: int, start: int, count: int, prepare: PrepareConfig) -> ToyData:
    """Scenes ``start .. start + count - 1`` of the toy world for ``seed`` (each a pure function of
    ``(seed, index)``), with classes in the painter's training shares."""
    r = prepare.resolution
    images = np.empty((count, r, r, 3), np.uint8)
    control = np.empty((count, r, r), np.uint8)
    labels = np.empty(count, np.int8)
    prompts = []
    t0 = time.perf_counter()
    for k in range(count):
        scene = sample_scene(seed, start + k, prepare)
        images[k] = scene.image
        control[k] = scene.prepared.control_image[..., 0]
        labels[k] = scene.label
        prompts.append(scene.prompt)
        if (k + 1) % 4000 == 0:
            logger.info("painted %d/%d scenes (%.0f s)", k + 1, count, time.perf_counter() - t0)
    return ToyData(images, control, prompts, labels)
