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
    background_drift,
    background_features,
    diversity,
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
    assert not monitor.check(0, {"diversity": 0.2}, None).warnings
    healthy = monitor.check(10, {"diversity": 0.15}, 1e-4)
    assert not healthy.warnings and not healthy.stop
    collapsed = monitor.check(20, {"diversity": 0.05}, 1e-4)
    assert collapsed.stop is stops
    assert "diversity collapsed" in collapsed.warnings[0]


def test_monitor_flags_l_cc_drift_when_bounded():
    monitor = GuardMonitor(GuardConfig(max_l_cc=1e-3))
    monitor.check(0, {"diversity": 0.2}, None)
    assert "L_CC" in monitor.check(10, {"diversity": 0.2}, 5e-3).warnings[0]


def test_the_default_guard_stops():
    assert GuardConfig().action == "stop"


def test_diversity_is_across_seeds_of_one_product_when_there_are_several():
    # Two products, two seeds each: each product's seeds share a colour, the products differ.
    features, coverage = background_features(
        *_scenes([(200, 10, 10), (200, 10, 10), (10, 200, 10), (10, 200, 10)]), grid=4
    )
    assert diversity(features, coverage, ["a", "a", "b", "b"]) == (0.0, "seeds")
    value, basis = diversity(features, coverage, ["a", "b", "c", "d"])
    assert basis == "products" and value > 0.3


def test_drift_is_the_distance_to_the_same_draw_of_the_reference():
    features, coverage = background_features(*_scenes([(200, 10, 10), (10, 200, 10)]), grid=4)
    assert background_drift(features, coverage, features, coverage) == 0.0
    swapped = background_drift(features, coverage, features[::-1], coverage[::-1])
    assert swapped == pytest.approx(background_diversity(features, coverage))


def _rates(reward: float, judge: float | None) -> dict:
    return {"diversity": 0.2, "available_rate": reward, "judge_available_rate": judge}


@pytest.mark.parametrize(("action", "stops"), [("warn", False), ("stop", True)])
def test_a_reward_judge_gap_trips_after_patience_evaluations(action, stops):
    monitor = GuardMonitor(GuardConfig(max_reward_judge_gap=0.2, patience=2, action=action))
    assert not monitor.check(0, _rates(0.4, 0.5), None).warnings
    both_rise = _rates(0.9, 0.9)  # the reward gains 0.5, the judge 0.4: a gap of 0.1
    assert not monitor.check(10, both_rise, None).warnings and both_rise["reward_judge_gap"] == pytest.approx(
        0.1
    )
    assert not monitor.check(20, _rates(0.9, 0.5), None).warnings  # gap 0.5, once
    assert not monitor.check(30, _rates(0.5, 0.5), None).warnings  # closed: the streak restarts
    assert not monitor.check(40, _rates(0.9, 0.4), None).warnings
    tripped = monitor.check(50, _rates(0.9, 0.4), None)
    assert tripped.stop is stops
    assert "judge's -0.100" in tripped.warnings[0] and "2 evaluations in a row" in tripped.warnings[0]


def test_without_a_judge_the_gap_guard_is_off():
    monitor = GuardMonitor(GuardConfig(max_reward_judge_gap=0.0, patience=1))
    monitor.check(0, _rates(0.0, None), None)
    verdict = monitor.check(10, metrics := _rates(1.0, None), None)
    assert not verdict.warnings and metrics["reward_judge_gap"] is None
