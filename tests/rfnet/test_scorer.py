"""The scoring contract (RFNetScorer) and the Ray Data stage (ScoreStage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.labels import LABELS
from rfnet.checkpoint import load_model, save_rfnet
from rfnet.scorer import RFNetScorer, ScoreStage


@pytest.fixture(scope="module")
def scorer() -> RFNetScorer:
    return RFNetScorer("tiny", device="cpu")


def product_on_canvas(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a product placed on a size x size canvas with alpha 0 elsewhere, the same product cropped)."""
    rng = np.random.default_rng(seed)
    crop = np.zeros((40, 24, 4), np.uint8)
    crop[..., :3] = rng.integers(0, 255, (40, 24, 3))
    crop[..., 3] = 255
    canvas = np.zeros((size, size, 4), np.uint8)
    canvas[size // 4 : size // 4 + 40, size // 3 : size // 3 + 24] = crop
    return canvas, crop


def test_predict_proba_is_a_distribution_and_differentiable_wrt_image(scorer):
    image = torch.rand(3, 3, 80, 80, requires_grad=True)  # any size: resized inside
    product = torch.rand(3, 4, 50, 30)
    probs = scorer.predict_proba(image, product, ["a red mug", "", "ein blauer Krug"])
    assert probs.shape == (3, 6) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    (-probs[:, 0].log().mean()).backward()  # RFFT's feedback loss on p_available
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_aux_grad_lets_gradients_through_the_maps(scorer):
    image = torch.rand(2, 3, 64, 64)
    grads = []
    for aux_grad in (False, True):
        x = image.clone().requires_grad_(True)
        scorer.predict_proba(x, None, ["a", "b"], aux_grad=aux_grad)[:, 0].sum().backward()
        grads.append(x.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_score_numpy_matches_predict_proba(scorer):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    products = np.stack([product_on_canvas(64, s)[0] for s in (1, 2)])
    captions = ["a green vase", "a black box"]
    from_numpy = scorer.score_numpy(images, products, captions)
    with torch.no_grad():
        from_torch = scorer.predict_proba(
            torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
            torch.from_numpy(products).permute(0, 3, 1, 2).float() / 255,
            captions,
        ).numpy()
    np.testing.assert_allclose(from_numpy, from_torch, atol=1e-6)


def test_warm_up_scores_a_blank_batch_and_changes_nothing():
    scorer = RFNetScorer("builtin:small", device="cpu")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)
    products = [product_on_canvas(96, s)[0] for s in (4, 5, 6)]
    captions = ["a mug", "a lamp", "a shoe"]
    before = scorer.score_numpy(images, products, captions)
    assert scorer.warm_up() > 0
    np.testing.assert_array_equal(scorer.score_numpy(images, products, captions), before)
    assert ScoreStage("tiny", device="cpu").warm_up_s == 0.0  # CPU stages skip it


def test_product_on_canvas_and_tight_cut_out_score_the_same(scorer):
    canvas, crop = product_on_canvas()
    images = np.random.default_rng(3).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    a = scorer.score_numpy(images, [canvas], ["x"])
    b = scorer.score_numpy(images, [crop], ["x"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # An empty alpha is "no product".
    empty = np.zeros_like(canvas)
    np.testing.assert_allclose(
        scorer.score_numpy(images, [empty], ["x"]), scorer.score_numpy(images, None, ["x"]), atol=1e-6
    )


def test_bad_inputs_are_named(scorer):
    with pytest.raises(ValueError, match="image must be"):
        scorer.predict_proba(torch.rand(2, 4, 8, 8), None, ["a", "b"])
    with pytest.raises(ValueError, match="caption must be a list of 2"):
        scorer.predict_proba(torch.rand(2, 3, 8, 8), None, ["a"])
    with pytest.raises(ValueError, match="product must be"):
        scorer.predict_proba(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        scorer.score_numpy(np.zeros((1, 8, 8, 3), np.float32), None, ["a"])
    with pytest.raises(ValueError, match="threshold"):
        RFNetScorer("tiny", device="cpu", threshold=1.5)


def test_threshold_comes_from_the_checkpoint_unless_given(tmp_path):
    model, config, _ = load_model("tiny")
    save_rfnet(model, config, str(tmp_path), meta={"threshold": 0.61})
    assert RFNetScorer(str(tmp_path), device="cpu").threshold == pytest.approx(0.61)
    assert RFNetScorer(str(tmp_path), device="cpu", threshold=0.2).threshold == pytest.approx(0.2)


def test_score_stage_keeps_columns_and_skips_error_rows():
    rng = np.random.default_rng(0)
    n = 5
    batch = {
        "sku_id": np.array([f"sku{i}" for i in range(n)], dtype=object),
        "image": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
        "product": np.stack([product_on_canvas(64, i)[0] for i in range(n)]),
        "caption": np.array(["a mug"] * n, dtype=object),
        "error": np.array(["", "decode failed", "", "", ""], dtype=object),
    }
    stage = ScoreStage("tiny", device="cpu", threshold=0.1)
    out = stage(batch)
    assert set(batch) <= set(out)
    assert out["sku_id"].tolist() == batch["sku_id"].tolist()
    assert np.isnan(out["prob_available"][1]) and out["label"][1] == "" and not out["accepted"][1]
    ok = [0, 2, 3, 4]
    probs = np.stack([out[f"prob_{name}"] for name in LABELS], axis=1)
    np.testing.assert_allclose(probs[ok].sum(1), 1.0, atol=1e-5)
    assert out["p_available"].dtype == np.float32
    assert all(out["label"][i] == LABELS[int(np.argmax(probs[i]))] for i in ok)
    np.testing.assert_array_equal(out["accepted"][ok], out["p_available"][ok] >= 0.1)
    # The same rows scored directly give the same numbers.
    direct = stage.scorer.score_numpy(batch["image"][ok], batch["product"][ok], ["a mug"] * 4)
    np.testing.assert_allclose(probs[ok], direct, atol=1e-6)


@pytest.mark.ray
def test_score_stage_inside_a_ray_data_pipeline(ray_cluster):
    import ray

    rng = np.random.default_rng(1)
    n = 12
    rows = [
        {
            "sku_id": f"item-{i}",
            "image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "product": product_on_canvas(64, i)[0],
            "caption": f"product number {i}",
            "error": "unreadable file" if i % 5 == 0 else "",
        }
        for i in range(n)
    ]
    ds = ray.data.from_items(rows).map_batches(
        ScoreStage,
        fn_constructor_kwargs={"source": "tiny", "device": "cpu", "threshold": 1 / 6},
        batch_size=4,
        batch_format="numpy",
        concurrency=1,
        num_cpus=0.5,
    )
    out = {r["sku_id"]: r for r in ds.take_all()}
    assert set(out) == {r["sku_id"] for r in rows}  # nothing dropped, whatever the order
    scorer = RFNetScorer("tiny", device="cpu")
    for r in rows:
        got = out[r["sku_id"]]
        if r["error"]:
            assert got["label"] == "" and not got["accepted"] and np.isnan(got["p_available"])
            continue
        expected = scorer.score_numpy(r["image"][None], [r["product"]], [r["caption"]])[0]
        np.testing.assert_allclose([got[f"prob_{k}"] for k in LABELS], expected, atol=1e-5)
        assert got["accepted"] == (got["p_available"] >= 1 / 6)
