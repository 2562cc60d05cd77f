"""Shipped weights (``builtin:small``), fine-tuning from a checkpoint, and the export of built-in weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.config import load_config
from rfnet.checkpoint import WEIGHTS, builtin_names, init_from, load_model, save_rfnet
from rfnet.config import EvaluateConfig, RFNetConfig, TrainRFNetConfig


def test_small_preset_fine_tunes_the_shipped_weights_of_exactly_its_architecture():
    cfg = load_config(TrainRFNetConfig, preset="small")
    assert cfg.init_from == "builtin:small" and "small" in builtin_names()
    from rfnet.model import build_rfnet

    _, config, meta = load_model("builtin:small")
    # The shipped weights are the current small architecture, with or without descriptor trees
    # (fine-tuning fits its own on its training split): it starts from all the rest of them.
    assert cfg.model == load_config(RFNetConfig, preset="small")
    assert config in (cfg.model, cfg.model.model_copy(update={"descriptor_trees": 0}))
    model = build_rfnet(cfg.model, pretrained=False)
    copied, kept = init_from(model, "builtin:small")
    assert set(kept) <= {"tree_feature", "tree_threshold", "tree_leaf", "tree_base", "tree_weight"}
    assert len(copied) + len(kept) == len(model.state_dict())
    # the synthetic scene set (named by its module when the weights were exported)
    assert meta["pretrain"]["data"]["generator"] in ("synthetic", "rfnet.data.synthetic")
    # The tiny preset (tests) and random sources are not affected.
    assert load_config(TrainRFNetConfig, preset="tiny").init_from is None


def test_unknown_builtin_name_says_what_is_shipped():
    with pytest.raises(FileNotFoundError, match=r"no built-in RFNet checkpoint 'nope'.*small"):
        load_model("builtin:nope")


@pytest.mark.slow
def test_builtin_small_judges_synthetic_defects_it_has_not_seen(tmp_path):
    """The shipped inspector is a working one: on a freshly drawn synthetic set (a data seed it was
    not trained on) it is far above chance (1/6) on every class."""
    from rfnet.data.scenes import make_set
    from rfnet.evaluate import evaluate_rfnet

    data = make_set("synthetic", str(tmp_path / "set"), n_per_class=25, image_size=128, seed=424242)
    cfg = load_config(
        EvaluateConfig,
        overrides={"rfnet": "builtin:small", "data": data, "out": str(tmp_path / "eval"), "split": "all"},
    )
    evaluate_rfnet(cfg)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["n"] == 150
    assert report["macro_f1"] > 0.6, report["per_class"]
    assert report["available"]["ap"] > 0.5


def test_init_from_copies_every_weight_that_matches_and_keeps_the_rest(tmp_path):
    donor, config, _ = load_model("tiny")
    save_rfnet(donor, config, str(tmp_path / "donor"))
    # Depth off: the first convolution of the image encoder takes one input channel less.
    other = config.model_copy(update={"use_depth": False})
    from rfnet.model import build_rfnet

    model = build_rfnet(other, pretrained=False, seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied, kept = init_from(model, str(tmp_path / "donor"))
    assert copied and kept and set(copied).isdisjoint(kept)
    theirs, ours = donor.state_dict(), model.state_dict()
    for name in copied:
        torch.testing.assert_close(ours[name], theirs[name])
    for name in kept:
        assert theirs.get(name) is None or theirs[name].shape != ours[name].shape
        torch.testing.assert_close(ours[name], before[name])
    with pytest.raises(ValueError, match="no weight"):
        init_from(torch.nn.Linear(3, 3), str(tmp_path / "donor"))  # type: ignore[arg-type]


def test_export_halves_the_parameters_and_keeps_what_the_model_computes(tmp_path):
    from rfnet.pretrain import export_checkpoint

    model, config, _ = load_model("random:small")
    save_rfnet(model, config, str(tmp_path / "trained"), meta={"train": {"best_epoch": 3, "history": []}})
    meta = export_checkpoint(str(tmp_path / "trained"), str(tmp_path / "shipped"), {"command": "x"})
    assert meta["pretrain"]["best_epoch"] == 3 and meta["pretrain"]["command"] == "x"
    tensors = load_file(str(tmp_path / "shipped" / WEIGHTS))
    params = dict(model.named_parameters())
    assert all(tensors[k].dtype == torch.float16 for k in params if params[k].is_floating_point())
    assert tensors["descriptor_mean"].dtype == torch.float32  # buffers keep full precision
    shipped, _, _ = load_model(str(tmp_path / "shipped"))
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((2, 3, 128, 128), dtype=np.float32))
    product = torch.from_numpy(rng.random((2, 4, 64, 64), dtype=np.float32))
    with torch.no_grad():
        outs = [
            m.eval()(image, product, torch.ones(2, dtype=torch.bool), m.tokenize(["a", "b"]))
            for m in (model, shipped)
        ]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=2e-2)


@pytest.mark.ray
@pytest.mark.slow
def test_pretrain_command_writes_a_loadable_checkpoint_with_its_provenance(ray_cluster, tmp_path):
    from rfnet.pretrain import main

    out = tmp_path / "weights"
    main(
        [
            *("--preset", "tiny", "--n-per-class", "3", "--image-size", "64", "--seed", "5"),
            *("--work", str(tmp_path / "work"), "--out", str(out), "--set", "optim.epochs=1"),
        ]
    )
    model, config, meta = load_model(str(out))
    assert config == load_config(RFNetConfig, preset="tiny")
    assert meta["pretrain"]["data"] | {"seed": 5, "n_per_class": 3} == meta["pretrain"]["data"]
    assert meta["pretrain"]["epochs"] == 1 and len(meta["pretrain"]["history"]) == 1
    tensors = load_file(str(out / WEIGHTS))
    assert all(tensors[name].dtype == torch.float16 for name, _ in model.named_parameters())


def test_pretraining_set_mixes_generators_without_losing_a_sample_or_caption(tmp_path):
    from rfnet.data.rf1m import read_rf1m
    from rfnet.pretrain import SYNTHETIC, build_data

    generators = [SYNTHETIC, "alt"]
    data = build_data(generators, str(tmp_path), n_per_class=3, image_size=64, seed=2)
    index = read_rf1m(data)
    assert not index.problems
    assert set(index.class_counts().values()) == {3}  # 2 from the first generator, 1 from the second
    names = [s.image.rsplit("/", 1)[1] for s in index.samples]
    assert sum(n.startswith("g0-") for n in names) == 12 and sum(n.startswith("g1-") for n in names) == 6
    assert all(s.product is not None and s.caption for s in index.samples)
    # Rebuilding reuses the parts and gives the same set.
    again = read_rf1m(build_data(generators, str(tmp_path), n_per_class=3, image_size=64, seed=2))
    assert [(s.image, s.label) for s in again.samples] == [(s.image, s.label) for s in index.samples]
    with pytest.raises(SystemExit, match="'no_such_set': not a scene set; choose from synthetic, alt"):
        build_data(["no_such_set"], str(tmp_path), n_per_class=3, image_size=64, seed=2)
