"""The toy world's painter: the pipeline's layout, the product unchanged, real defects, prompts in the
toy preset's words, an RF1M-layout set."""

from __future__ import annotations

import re

import cv2
import numpy as np

from pipelines.config import GenerateConfig, load_config
from pipelines.prepare import prepare_product
from rfnet.data import read_rf1m
from rfnet.data.scenes import draw_product, make_set
from rfnet.data.scenes.toy import (
    COLOURS,
    LABEL_SHARES,
    SceneParams,
    product_colour,
    sample_scene,
    scene_prompt,
)

TOY = load_config(GenerateConfig, preset="toy")
PREPARE = TOY.prepare


def test_sample_is_a_pure_function_of_seed_and_index():
    a, b, c = sample_scene(3, 7, PREPARE), sample_scene(3, 7, PREPARE), sample_scene(3, 8, PREPARE)
    assert np.array_equal(a.image, b.image) and a.prompt == b.prompt and a.label == b.label
    assert not np.array_equal(a.image, c.image)


def test_product_is_laid_out_by_the_pipeline_and_pasted_unchanged():
    for index in range(12):
        s = sample_scene(0, index, PREPARE, label=index % 6)
        # The same product and scale through the pipeline's own prepare gives the same canvas.
        rng = np.random.default_rng([0, index, 1, index % 6])
        drawn = draw_product(rng, height=PREPARE.resolution)
        assert np.array_equal(prepare_product(drawn.rgba, PREPARE, s.image_scale).product, s.product)
        opaque = s.product[..., 3] == 255
        assert np.array_equal(s.image[opaque], s.product[opaque][:, :3])
        assert PREPARE.image_scale_range[0] <= s.image_scale <= PREPARE.image_scale_range[1]


def ring_distance(s) -> float:
    """Colour distance between the product and a 3-px ring around its outline."""
    mask = (s.product[..., 3] > 127).astype(np.uint8)
    ring = cv2.dilate(mask, np.ones((7, 7), np.uint8)) - mask
    around = s.image[ring > 0].astype(np.float32).mean(0)
    return float(np.linalg.norm(around - product_colour(s.product)))


def test_defects_are_real():
    available = [ring_distance(sample_scene(1, i, PREPARE, label=0)) for i in range(20)]
    indistinct = [ring_distance(sample_scene(1, i, PREPARE, label=4)) for i in range(20)]
    assert np.median(indistinct) < 0.5 * np.median(available)

    # Space Mismatch: more of the wall right under the product than when it stands on the surface.
    def below_is_wall(s) -> float:
        x0, x1 = np.nonzero(s.product[..., 3].any(0))[0][[0, -1]]
        base = np.nonzero(s.product[..., 3].any(1))[0][-1]
        strip = s.image[base + 2 : base + 5, x0 : x1 + 1].astype(np.float32).reshape(-1, 3).mean(0)
        wall = s.image[2:6, :].astype(np.float32).reshape(-1, 3).mean(0)
        return float(np.linalg.norm(strip - wall))

    grounded = [below_is_wall(sample_scene(2, i, PREPARE, label=0)) for i in range(30)]
    floating = [
        below_is_wall(s)
        for i in range(60)
        if (s := sample_scene(2, i, PREPARE, label=2)).variant == "no_surface"
    ]
    assert floating and np.median(floating) < np.median(grounded)


def test_classes_follow_the_shares():
    labels = [sample_scene(5, i, PREPARE).label for i in range(400)]
    share = np.bincount(labels, minlength=6) / len(labels)
    assert np.all(np.abs(share - np.asarray(LABEL_SHARES)) < 0.07)


def test_prompts_name_the_scene_in_the_pool_vocabulary():
    wall_words = "|".join(re.escape(c) for c in COLOURS)
    for i in range(40):
        s = sample_scene(4, i, PREPARE)
        assert s.prompt.startswith("a product")
        named = re.search(rf"(?:against a|in a|in front of a) ({wall_words}) (?:wall|room)", s.prompt)
        if named and s.variant != "whole_scene":
            assert named.group(1) == s.params.wall
    # Every pool colour is a painted colour, and every template is a prompt the painter writes.
    assert set(TOY.prompts.colors) <= set(COLOURS)
    rng = np.random.default_rng(0)
    written = {
        scene_prompt(rng, SceneParams("red", surface, desc, objects), label=0)
        for surface in ("table", "floor")
        for desc in ("wooden", "marble", "white")
        for objects in ([], ["plant"])
        for _ in range(40)
    }
    for template in TOY.prompts.templates:
        assert template.prompt.format(color="red") in written, template.prompt


def test_wall_colour_follows_the_named_colour():
    # Available scenes named "red ..." are redder above the product than those named "blue ...".
    red, blue = [], []
    for i in range(150):
        s = sample_scene(8, i, PREPARE, label=0)
        top = s.image[:8].astype(np.float32).reshape(-1, 3).mean(0)
        if s.params.wall == "red":
            red.append(top[0] - top[2])
        elif s.params.wall == "blue":
            blue.append(top[0] - top[2])
    assert red and blue and min(red) > max(blue)


def test_rf1m_set_is_readable(tmp_path):
    root = make_set("toy", str(tmp_path / "set"), n_per_class=2, image_size=PREPARE.resolution, seed=0)
    index = read_rf1m(root)
    assert not index.problems and len(index.samples) == 12
    assert set(index.class_counts().values()) == {2}
    assert all(s.product is not None and s.caption for s in index.samples)
