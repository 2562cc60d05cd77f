"""Reward-hacking guards: diversity, detail, product fidelity and the monitor's decisions."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.prepare import paste_back
from rfft.config import GuardConfig
from rfft.guards import (
    GuardMonitor,
    background_detail,
    background_diversity,
    background_features,
    product_fidelity,
)

R = 32


def _scenes(colors: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([np.full((R, R, 3), c, np.uint8) for c in colors])
    masks = np.zeros((len(colors), R, R), np.uint8)
    masks[:, 8:24, 8:24] = 1
    images[:, 8:24, 8:24] = 77  # the product: identical everywhere, must not count
    return images, masks


def test_identical_backgrounds_have_zero_diversity_and_different_ones_do_not():
    same = background_diversity(*background_features(*_scenes([(200, 10, 10)] * 3), grid=4))
    varied = background_diversity(
        *background_features(*_scenes([(200, 10, 10), (10, 200, 10), (10, 10, 200)]), grid=4)
    )
    assert same == 0.0
    assert varied > 0.5


def test_product_pixels_do_not_count_towards_diversity():
    images, masks = _scenes([(50, 50, 50), (50, 50, 50)])
    images[1, 8:24, 8:24] = 255  # only the product region differs
    assert background_diversity(*background_features(images, masks, grid=4)) == 0.0


def test_background_detail_is_zero_for_flat_scenes():
    images, masks = _scenes([(10, 10, 10), (90, 90, 90)])
    assert background_detail(images, masks) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, images.shape, dtype=np.uint8)
    assert background_detail(noisy, masks) > 0.2


def test_product_fidelity_after_paste_back():
    rng = np.random.default_rng(1)
    product = np.zeros((1, R, R, 4), np.uint8)
    product[0, 8:24, 8:24, :3] = 120
    product[0, 8:24, 8:24, 3] = 255
    decoded = rng.integers(0, 256, (1, R, R, 3), dtype=np.uint8)
    final = paste_back(decoded[0], product[0])[None]
    fidelity = product_fidelity(final, decoded, product, seam_width=2)
    assert fidelity["product_pixels_changed"] == 0.0
    assert fidelity["seam_error"] > 0.2  # random pixels disagree with the product at its edge
    agreeing = decoded.copy()
    agreeing[0, 8:24, 8:24] = 120
    assert product_fidelity(final, agreeing, product, seam_width=2)["seam_error"] == 0.0
    tampered = final.copy()
    tampered[0, 10, 10] = 0
    assert product_fidelity(tampered, decoded, product, seam_width=2)[
        "product_pixels_changed"
    ] == pytest.approx(1 / 256)


@pytest.mark.parametrize(("action", "stops"), [("warn", False), ("stop", True)])
def test_monitor_flags_a_diversity_collapse(action, stops):
    monitor = GuardMonitor(GuardConfig(min_diversity_ratio=0.5, action=action))
    assert not monitor.check(0, {"background_diversity": 0.2}, None).warnings
    healthy = monitor.check(10, {"background_diversity": 0.15}, 1e-4)
    assert not healthy.warnings and not healthy.stop
    collapsed = monitor.check(20, {"background_diversity": 0.05}, 1e-4)
    assert collapsed.stop is stops
    assert "diversity collapsed" in collapsed.warnings[0]


def test_monitor_flags_l_cc_drift_when_bounded():
    monitor = GuardMonitor(GuardConfig(max_l_cc=1e-3))
    monitor.check(0, {"background_diversity": 0.2}, None)
    assert "L_CC" in monitor.check(10, {"background_diversity": 0.2}, 5e-3).warnings[0]
