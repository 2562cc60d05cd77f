"""A placement the caller knows (the generation pipeline pasted the product there) replaces the
product search: the search does not run, and the scores are those of the searched placement where
the search finds the product exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rfnet.aux.search as search
from rfnet.scorer import RFNetScorer, ScoreStage

R = 128  # canvas side; positions and sizes in multiples of 8 px lie on the search's 48 px grid
LOCATE_PRODUCT = search.locate_product  # the real search, whatever a test has patched in
PLACES = [(48, 8, 16), (64, 40, 32), (72, 16, 48), (80, 24, 8), (56, 64, 56), (40, 80, 72)]  # side, x, y


def canvas_rows(seed: int = 0):
    """Scenes with a textured square product pasted unchanged, the product on the canvas (alpha 0
    elsewhere) as the pipeline passes it, and its alpha bounding box as fractions of the side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:R, 0:R] / R
    images, products, boxes = [], [], []
    for i, (side, x, y) in enumerate(PLACES):
        smooth = [
            0.5 + 0.3 * np.sin(6 * xx + i),
            0.5 + 0.3 * np.cos(5 * yy + 2 * i),
            0.5 + 0.2 * np.sin(4 * (xx + yy)),
        ]
        scene = np.clip(np.stack(smooth, -1) + 0.03 * rng.standard_normal((R, R, 3)), 0, 1)
        image = (scene * 255).astype(np.uint8)
        texture = (rng.random((side // 8, side // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
        product = np.zeros((R, R, 4), np.uint8)
        product[y : y + side, x : x + side, :3] = texture
        product[y : y + side, x : x + side, 3] = 255
        image[y : y + side, x : x + side] = texture
        images.append(image)
        products.append(product)
        boxes.append([x / R, y / R, (x + side) / R, (y + side) / R])
    return np.stack(images), products, np.array(boxes, np.float32)


class Spy:
    """Stands in for rfnet.aux.search.locate_product: records the boxes it found per call, or
    fails the test when ``forbid``."""

    def __init__(self, forbid: bool = False) -> None:
        self.forbid, self.calls = forbid, []

    def __call__(self, image, product, has_product, **kwargs):
        if self.forbid:
            raise AssertionError("the product search ran although every placement was known")
        box, error = LOCATE_PRODUCT(image, product, has_product, **kwargs)
        self.calls.append(box.clone())
        return box, error


@pytest.fixture(scope="module")
def scorer():
    scorer = RFNetScorer("tiny", device="cpu")
    assert scorer.config.use_placement and scorer.config.use_descriptor and scorer.config.local_view
    return scorer


def test_a_known_placement_is_not_searched_and_scores_as_the_search_that_finds_it(scorer, monkeypatch):
    images, products, boxes = canvas_rows()
    captions = ["a thing"] * len(images)
    searched = Spy()
    monkeypatch.setattr(search, "locate_product", searched)
    by_search = scorer.score_numpy(images, products, captions)
    assert len(searched.calls) == 1
    exact = (searched.calls[0] - torch.from_numpy(boxes)).abs().amax(dim=1) < 1e-5
    assert int(exact.sum()) >= len(PLACES) - 1, searched.calls[0]  # the search finds these products

    monkeypatch.setattr(search, "locate_product", Spy(forbid=True))
    known = scorer.score_numpy(images, products, captions, boxes)
    np.testing.assert_allclose(known[exact.numpy()], by_search[exact.numpy()], rtol=0, atol=1e-5)

    # A wrong placement is taken as given: the scores follow the box, not the image.
    moved = boxes.copy()
    moved[:, [0, 2]] = np.clip(moved[:, [0, 2]] + 0.25, 0.0, 1.0)
    moved[:, 0] = np.minimum(moved[:, 0], moved[:, 2] - 0.05)
    assert np.abs(scorer.score_numpy(images, products, captions, moved) - known).max() > 1e-3


def test_only_rows_whose_placement_is_unknown_are_searched(scorer, monkeypatch):
    images, products, boxes = canvas_rows(seed=1)
    partial = [None, *boxes[1:3], [np.nan] * 4, *boxes[4:]]  # rows 0 and 3 unknown
    spy = Spy()
    monkeypatch.setattr(search, "locate_product", spy)
    probs = scorer.score_numpy(images, products, ["a thing"] * len(images), partial)
    assert len(spy.calls) == 1 and spy.calls[0].shape == (2, 4)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The differentiable path takes the same boxes (RFFT's reward).
    image = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    product = torch.from_numpy(np.stack(products)).permute(0, 3, 1, 2).float() / 255
    monkeypatch.setattr(search, "locate_product", Spy(forbid=True))
    with torch.no_grad():
        proba = scorer.predict_proba(image, product, ["a thing"] * len(images), box=torch.from_numpy(boxes))
    np.testing.assert_allclose(
        proba.numpy(), scorer.score_numpy(images, products, ["a thing"] * len(images), boxes), atol=1e-5
    )


def test_score_stage_reads_the_pipelines_product_box_column(monkeypatch):
    images, products, boxes = canvas_rows(seed=2)
    n = len(images)
    batch = {
        "image": images,
        "product": np.stack(products),
        "caption": np.array(["a thing"] * n, dtype=object),
        "product_box": boxes,
        "error": np.array([""] * n, dtype=object),
    }
    stage = ScoreStage("tiny", device="cpu")
    monkeypatch.setattr(search, "locate_product", Spy(forbid=True))
    out = stage(dict(batch))
    np.testing.assert_array_equal(out["product_box"], boxes)  # kept, like every column
    assert np.isfinite(out["p_available"]).all()
    spy = Spy()
    monkeypatch.setattr(search, "locate_product", spy)
    stage({k: v for k, v in batch.items() if k != "product_box"})
    assert len(spy.calls) == 1 and spy.calls[0].shape == (n, 4)  # no column: every row searched


@pytest.mark.parametrize(
    ("box", "message"),
    [([0.1, 0.2, 0.3], "must be (x0, y0, x1, y1)"), ([0.5, 0.2, 0.3, 0.4], "not inside the image")],
)
def test_a_malformed_box_is_refused_with_what_is_required(scorer, box, message):
    images, products, boxes = canvas_rows()
    rows = [box, *boxes[1:]]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scorer.score_numpy(images, products, ["a thing"] * len(images), rows)
