"""Boosted trees over the descriptor: the fit learns threshold rules, the tensor form evaluates
them exactly as grown, and the model mixes them in eval mode only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.config import ConfigError, load_config
from rfnet.config import RFNetConfig, TrainRFNetConfig
from rfnet.trees import TreeParams, fit_trees


def rule_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes by threshold rules with an interaction (no linear boundary gets them), plus
    noise features and one feature with a heavy tail."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 3] = np.exp(3 * x[:, 3])
    y = np.where((x[:, 0] > 0.3) & (x[:, 1] < 0), 1, 0)
    y = np.where((x[:, 0] <= 0.3) & (x[:, 3] > 2.0), 2, y)
    return x, y


def walk(x: np.ndarray, feature, threshold, leaf, base) -> np.ndarray:
    """Reference: every row down every tree one node at a time."""
    feature, threshold, leaf, base = (np.asarray(a) for a in (feature, threshold, leaf, base))
    trees, inner = feature.shape
    k = len(base)
    out = np.tile(base.astype(np.float64), (len(x), 1))
    for i, row in enumerate(x):
        for t in range(trees):
            node = 0
            while node < inner:
                node = 2 * node + (2 if row[feature[t, node]] > threshold[t, node] else 1)
            out[i, t % k] += leaf[t, node - inner]
    return out


def test_trees_learn_threshold_rules_a_linear_model_cannot():
    x, y = rule_data(1200, 0)
    xt, yt = rule_data(600, 1)
    trees = fit_trees(x, y, 3, TreeParams(rounds=60, depth=3, seed=0))
    accuracy = (trees.logits(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    # A linear softmax on the same features, trained to convergence.
    lin = torch.nn.Linear(8, 3)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)
    xs = torch.from_numpy((x - x.mean(0)) / x.std(0))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xs), torch.from_numpy(y))
        loss.backward()
        return loss

    opt.step(closure)
    linear = (lin(torch.from_numpy((xt - x.mean(0)) / x.std(0))).argmax(1).numpy() == yt).mean()
    assert accuracy > 0.95 and accuracy > linear + 0.05, (accuracy, linear)


def test_tensor_trees_evaluate_exactly_as_a_walk_down_each_tree():
    x, y = rule_data(300, 2)
    trees = fit_trees(x, y, 3, TreeParams(rounds=4, depth=3, min_leaf=5, seed=1))
    assert trees.feature.shape == (12, 7) and trees.leaf.shape == (12, 8)
    # Some nodes split, and rows exactly on a threshold go left in both.
    assert torch.isfinite(trees.threshold).any() and torch.isinf(trees.threshold).any()
    root = int(np.flatnonzero(np.isfinite(trees.threshold.numpy()[:, 0]))[0])  # a tree whose root splits
    probe = np.concatenate([x[:50], x[:10]])
    probe[50:, int(trees.feature[root, 0])] = float(trees.threshold[root, 0])
    got = trees.logits(torch.from_numpy(probe)).double().numpy()
    expected = walk(probe, trees.feature, trees.threshold, trees.leaf, trees.base)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_fit_is_seeded_and_rejects_bad_labels():
    x, y = rule_data(200, 3)
    a = fit_trees(x, y, 3, TreeParams(rounds=3, depth=2, seed=5))
    b = fit_trees(x, y, 3, TreeParams(rounds=3, depth=2, seed=5))
    assert torch.equal(a.threshold, b.threshold) and torch.equal(a.leaf, b.leaf)
    with pytest.raises(ValueError, match="labels must be in"):
        fit_trees(x, y + 1, 3)
    with pytest.raises(ValueError, match="one label each"):
        fit_trees(x, y[:-1], 3)


def test_model_mixes_trees_in_eval_mode_only_and_half_precision_keeps_them(tmp_path):
    from rfnet.checkpoint import load_rfnet, save_rfnet
    from rfnet.model import build_rfnet

    cfg = RFNetConfig(
        **{**RFNetConfig.preset_overrides("tiny"), "descriptor_trees": 4, "descriptor_tree_depth": 2}
    )
    model = build_rfnet(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(12, 3, cfg.image_size, cfg.image_size, generator=g)
    product = torch.rand(12, 4, cfg.product_size, cfg.product_size, generator=g)
    captions = model.tokenize(["a mug"] * 12)
    with torch.no_grad():
        maps = model.aux_maps(image, product, torch.ones(12, dtype=torch.bool))
        raw = model.raw_descriptor(image, maps)
    labels = np.arange(12) % 6
    model.set_trees(fit_trees(raw.numpy(), labels, 6, TreeParams(rounds=4, depth=2, min_leaf=1)))

    model.eval()
    with torch.no_grad():
        net, trees, has = model.logit_parts(image, product, None, captions)
        assert torch.equal(model(image, product, None, captions).argmax(1), net.argmax(1))  # weight 0
        model.tree_weight.fill_(1.0)
        mixed = model(image, product, None, captions)
        assert torch.equal(mixed.argmax(1), trees.argmax(1))
        half = model.tree_weight.new_tensor(0.5)
        expected = 0.5 * torch.log_softmax(net, 1) + 0.5 * torch.log_softmax(trees, 1)
        torch.testing.assert_close(model.mix_trees(net, trees, has, half), expected)
        model.train()  # training: the network's logits alone (same dropout draws)
        torch.manual_seed(1)
        trained = model(image, product, None, captions)
        torch.manual_seed(1)
        torch.testing.assert_close(
            trained, model.logit_parts(image, product, None, captions)[0], rtol=0, atol=0
        )
    model.eval()
    save_rfnet(model, cfg, str(tmp_path / "ckpt"))
    loaded = load_rfnet(str(tmp_path / "ckpt"), device="cpu", dtype="float32").model
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, product, None, captions), mixed)
    thresholds = model.tree_threshold.clone()
    model.half()
    assert torch.equal(model.tree_threshold, thresholds)  # int32 bit patterns: not rounded to fp16


def test_trees_need_the_descriptor_and_the_memory_loader():
    with pytest.raises(ValueError, match="descriptor_trees"):
        RFNetConfig(
            **{**RFNetConfig.preset_overrides("tiny"), "use_descriptor": False, "descriptor_trees": 3}
        )
    cfg = load_config(
        TrainRFNetConfig,
        preset="small",
        overrides={"data.root": "x", "out": "y", "data.loader": "stream"},
    )
    with pytest.raises(ConfigError, match=r"data\.loader=.memory."):
        cfg.check_ready()


def test_offset_mode_trains_on_out_of_fold_tree_scores():
    from rfnet.config import OptimConfig
    from rfnet.model import build_rfnet
    from rfnet.train import fit_descriptor_trees

    cfg = RFNetConfig(
        **{
            **RFNetConfig.preset_overrides("tiny"),
            "descriptor_trees": 3,
            "descriptor_tree_depth": 2,
            "descriptor_tree_mix": "offset",
        }
    )
    model = build_rfnet(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(3):
        image = torch.rand(24, 3, cfg.image_size, cfg.image_size, generator=g)
        product = torch.rand(24, 4, cfg.product_size, cfg.product_size, generator=g)
        has = torch.ones(24, dtype=torch.bool)
        has[0] = i > 0  # one example without a product
        with torch.no_grad():
            maps = model.aux_maps(image, product, has)
        label = torch.arange(24) % 6
        batches.append({"image": image, "product": product, "has_product": has, "maps": maps, "label": label})
    rows, oof = fit_descriptor_trees(model, batches, OptimConfig(seed=0), folds=5)
    assert rows == 71 and oof.shape == (72, 6)
    assert torch.equal(oof[0], torch.zeros(6)) and (oof[1:].abs().sum(1) > 0).all()
    # Out-of-fold: not the installed trees' scores of the rows they were fitted on.
    with torch.no_grad():
        raw = torch.cat([model.raw_descriptor(b["image"], b["maps"]) for b in batches])
    assert not torch.allclose(oof[1:], model.tree_logits(raw[1:]))
    # Training adds the given scores to the network's logits; eval adds the weighted trees.
    b = batches[1]
    captions = model.tokenize(["a mug"] * 24)
    model.train()
    torch.manual_seed(0)
    trained = model(
        b["image"], b["product"], b["has_product"], captions, maps={**b["maps"], "tree_logits": oof[24:48]}
    )
    torch.manual_seed(0)
    net = model.logit_parts(b["image"], b["product"], b["has_product"], captions, maps=b["maps"])[0]
    torch.testing.assert_close(trained, net + oof[24:48])
    model.eval()
    model.tree_weight.fill_(0.5)
    with torch.no_grad():
        net, trees, has = model.logit_parts(
            b["image"], b["product"], b["has_product"], captions, maps=b["maps"]
        )
        torch.testing.assert_close(
            model(b["image"], b["product"], b["has_product"], captions, maps=b["maps"]),
            torch.log_softmax(net + 0.5 * trees, 1),
        )
