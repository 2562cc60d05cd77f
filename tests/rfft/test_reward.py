"""The reward scores a product drawn on the image's canvas at its known placement: no search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rfnet.aux.search as search
from rfft.reward import AvailabilityReward


def test_a_product_on_the_canvas_gives_the_scorer_its_placement(monkeypatch):
    reward = AvailabilityReward.load("tiny", device="cpu")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 96, 96, generator=g)
    product = torch.zeros(2, 4, 96, 96)
    product[0, :, 16:64, 24:72] = torch.rand(4, 48, 48, generator=g).clamp(min=0.2)
    product[1, :, 40:88, 8:40] = torch.rand(4, 48, 32, generator=g).clamp(min=0.2)
    image = torch.where(product[:, 3:4] > 0, product[:, :3], image).requires_grad_(True)

    def searched(*args, **kwargs):
        raise AssertionError("searched for a product whose placement the reward knows")

    monkeypatch.setattr(search, "locate_product", searched)
    p = reward.p_available(image, product, ["a thing", "a thing"])
    p.sum().backward()
    assert p.shape == (2,) and torch.isfinite(p).all()
    assert image.grad is not None and image.grad.abs().sum() > 0
    # A cut-out of another size than the image has no known placement: the search runs.
    with pytest.raises(AssertionError, match="searched"):
        reward.p_available(image.detach(), product[:, :, :48, :48], ["a thing", "a thing"])
    assert np.isclose(float(search.alpha_box(product)[1, 2]), 40 / 96)
