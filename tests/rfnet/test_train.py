"""RFNet training: the pure pieces, then Ray Train runs (CLI end to end, DDP equivalence, resume)."""

from __future__ import annotations

import glob
import itertools
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines.config import load_config
from rfnet.config import AugmentConfig, TrainRFNetConfig
from rfnet.data import read_rf1m
from rfnet.train import (
    augment,
    class_weights,
    epoch_order,
    fit_descriptor_stats,
    load_optimizer,
    lr_factor,
    run_key,
    save_optimizer,
    weighted_loss,
)


def test_class_weights_balance_the_classes_with_mean_one():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(labels, num_classes=4)
    np.testing.assert_allclose(
        w[:3] * np.array([6, 3, 1]), [10 / 3] * 3
    )  # each class weighs the same in total
    assert w[3] == 0.0
    assert w[labels].mean() == pytest.approx(1.0)


def test_weighted_loss_is_additive_over_equal_halves():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 6), torch.randint(0, 6, (8,))
    weights = torch.rand(6) + 0.5
    whole = weighted_loss(logits, labels, weights, 0.1)
    halves = (
        weighted_loss(logits[:4], labels[:4], weights, 0.1)
        + weighted_loss(logits[4:], labels[4:], weights, 0.1)
    ) / 2
    torch.testing.assert_close(whole, halves)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(weighted_loss(logits, labels, None, 0.0), plain)


def test_lr_factor_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 10, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)


def test_epoch_order_is_seeded_and_the_sampler_balances():
    labels = np.array([0] * 90 + [1] * 10)
    a, b = epoch_order(100, labels, 3, 0, "weights"), epoch_order(100, labels, 3, 0, "weights")
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, epoch_order(100, labels, 4, 0, "weights"))
    drawn = np.concatenate([epoch_order(100, labels, e, 0, "sampler") for e in range(20)])
    assert 0.4 < (labels[drawn] == 1).mean() < 0.6


def test_augment_flips_image_product_and_maps_together_and_keeps_ranges():
    cfg = AugmentConfig(hflip=True, translate=0.0, color=0.0)
    image = torch.zeros(64, 3, 16, 16)
    image[..., :4] = 1.0  # a bar on the left
    product = torch.zeros(64, 4, 8, 8)
    product[..., :2] = 1.0
    maps = image[:, :1].clone()
    out_img, out_prod, out_maps, _ = augment(image, product, cfg, torch.Generator().manual_seed(0), maps)
    flipped = out_img[:, 0, 0, -1] == 1.0
    assert 10 < int(flipped.sum()) < 54  # about half, per sample
    assert torch.equal(flipped, out_prod[:, 0, 0, -1] == 1.0) and torch.equal(
        flipped, out_maps[:, 0, 0, -1] == 1.0
    )
    # Rows keep their content: nothing moves vertically (gravity matters for Space Mismatch).
    assert torch.equal(out_img.sum(dim=-1), image.sum(dim=-1))


def test_augment_shift_and_colour_are_seeded_and_bounded():
    cfg = AugmentConfig(hflip=False, translate=0.1, color=0.2)
    image, product = torch.rand(4, 3, 20, 20), torch.rand(4, 4, 10, 10)
    a = augment(image, product, cfg, torch.Generator().manual_seed(5))
    b = augment(image, product, cfg, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a[:2], b[:2], strict=True))
    assert float(a[0].min()) >= 0.0 and float(a[0].max()) <= 1.0
    assert torch.equal(a[1][:, 3], product[:, 3])  # alpha is never changed


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    save_optimizer(opt, str(tmp_path / "opt.safetensors"))
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    load_optimizer(fresh, str(tmp_path / "opt.safetensors"))
    for (k, a), (_, b) in zip(
        opt.state_dict()["state"].items(), fresh.state_dict()["state"].items(), strict=True
    ):
        for name in a:
            torch.testing.assert_close(torch.as_tensor(a[name]), torch.as_tensor(b[name]), msg=f"{k}.{name}")
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.01)


def test_run_key_ignores_how_long_and_where_but_not_what():
    base = load_config(TrainRFNetConfig, preset="tiny", overrides={"data.root": "/d", "out": "/o"})
    same = [
        {"optim.epochs": 9},
        {"workers.num_workers": 2},
        {"out": "/elsewhere"},
        {"optim.max_train_minutes": 3},
    ]
    for ov in same:
        other = load_config(TrainRFNetConfig, preset="tiny", overrides={"data.root": "/d", "out": "/o", **ov})
        assert run_key(other) == run_key(base), ov
    other = load_config(
        TrainRFNetConfig, preset="tiny", overrides={"data.root": "/d", "out": "/o", "optim.lr": 0.1}
    )
    assert run_key(other) != run_key(base)


# ----------------------------------------------------------------------------------------------------
# Ray Train runs on a small synthetic set.


def test_descriptor_stats_come_from_the_examples_with_a_product():
    from rfnet.aux import product_descriptor
    from rfnet.model import build_rfnet

    cfg = load_config(TrainRFNetConfig, preset="tiny", overrides={"model.descriptor_norm": "data"}).model
    model = build_rfnet(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        image = torch.rand(6, 3, cfg.image_size, cfg.image_size, generator=g)
        product = torch.rand(6, 4, cfg.product_size, cfg.product_size, generator=g)
        has = torch.tensor([True, True, True, True, True, False])
        with torch.no_grad():
            maps = model.aux_maps(image, product, has)
        batches.append({"image": image, "product": product, "has_product": has, "maps": maps})
    fit_descriptor_stats(model, batches)
    raw = torch.cat(
        [
            product_descriptor(
                b["image"], *(b["maps"][k] for k in ("placement", "match", "box", "box_error"))
            )[b["has_product"]]
            for b in batches
        ]
    )
    torch.testing.assert_close(model.descriptor_mean, raw.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        model.descriptor_std, raw.std(0, unbiased=False).clamp(min=1e-4), rtol=1e-3, atol=1e-5
    )


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> str:
    from rfnet.data.scenes import make_set

    return make_set(
        "synthetic", str(tmp_path_factory.mktemp("tiny-set")), n_per_class=5, image_size=64, seed=0
    )


def last_checkpoint(out: str) -> dict:
    dirs = sorted(
        d for d in glob.glob(os.path.join(out, "ray_train", "*", "checkpoint_*")) if os.path.isdir(d)
    )
    assert dirs, f"no Ray Train checkpoint under {out}"
    with open(os.path.join(dirs[-1], "trainer_state.json")) as f:
        state = json.load(f)
    return {"weights": load_file(os.path.join(dirs[-1], "model.safetensors")), "state": state}


@pytest.mark.ray
def test_train_rfnet_and_evaluate_cli_end_to_end(ray_cluster, tiny_set, tmp_path, capsys):
    from jobs.cli import main
    from rfnet.checkpoint import load_rfnet

    out, eval_out = str(tmp_path / "model"), str(tmp_path / "eval")
    # With descriptor trees: evaluation must reproduce the validation score of the mixture kept
    # (so the trees stay the ones validated: no refit on train + validation, tested below).
    args = ["--data", tiny_set, "--out", out, "--epochs", "2", "--set", "model.descriptor_trees=20"]
    args += ["--set", "optim.refit_trees=false"]
    assert main(["train-rfnet", "--preset", "tiny", *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["n_train"] + summary["n_val"] + summary["n_test"] == 30
    assert min(summary["n_val"], summary["n_test"]) > 0
    loaded = load_rfnet(out, device="cpu")
    assert loaded.meta["split"]["n_val"] == summary["n_val"] and loaded.threshold == 0.5
    assert os.listdir(os.path.join(out, "tensorboard"))
    assert loaded.model.tree_leaf.view(torch.float32).abs().sum() > 0  # fitted before the first epoch
    history = loaded.meta["train"]["history"]
    assert all(h["tree_weight"] in (0.0, 0.25, 0.5, 0.75, 1.0) for h in history)
    # The synthetic set pastes its cut-outs unchanged: the search finds every one of them.
    search = loaded.meta["train"]["product_search"]
    assert search["with_product"] == summary["n_train"] and search["poor_share"] == 0.0

    args = ["evaluate", "--preset", "tiny", "--rfnet", out, "--data", tiny_set, "--out", eval_out]
    assert main([*args, "--split", "val"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["split"]["mode"] == "val" and report["n"] == summary["n_val"]
    assert report["macro_f1"] == pytest.approx(loaded.meta["train"]["val_macro_f1"], abs=1e-6)
    # By default: the test share, which neither trained nor chose the epoch or the tree weight.
    assert main([*args, "--target-precision", "0.01", "--write-threshold"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["split"]["mode"] == "test" and report["n"] == summary["n_test"]
    assert {"macro_f1", "per_class", "available", "confusion", "threshold"} <= set(report)
    assert sum(map(sum, report["confusion"])) == report["n"]
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "eval" / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pq.read_table(tmp_path / "eval" / "predictions.parquet").num_rows == report["n"]
    # The threshold reached the (trivial) target and was written into the checkpoint.
    assert report["threshold_selection"]["written_to_checkpoint"]
    assert load_rfnet(out, device="cpu").threshold == pytest.approx(report["threshold"])


@pytest.mark.ray
@pytest.mark.slow
def test_ddp_two_workers_match_one_worker_with_the_same_global_batch(ray_cluster, tiny_set, tmp_path):
    from rfnet.train import train_rfnet

    results = {}
    for workers in (1, 2):
        cfg = load_config(
            TrainRFNetConfig,
            preset="tiny",
            overrides={
                "data.root": tiny_set,
                "out": str(tmp_path / f"w{workers}"),
                "workers.num_workers": workers,
                "model.dropout": 0.0,
                "model.descriptor_trees": 10,  # fitted on rank 0, broadcast to the other worker
                "optim.epochs": 2,
                "optim.batch_size": 8,
                "tensorboard": False,
            },
        )
        train_rfnet(cfg)
        results[workers] = last_checkpoint(cfg.out)
    one, two = results[1], results[2]
    assert one["state"]["step"] == two["state"]["step"] > 0
    # Compare what the models compute, not raw weights: some weights (attention key biases) have an
    # exactly zero gradient in exact arithmetic, and Adam turns float noise there into updates that
    # cannot change any output.
    from rfnet.model import build_rfnet
    from rfnet.train import load_examples

    model_cfg = cfg.model
    examples = load_examples(
        read_rf1m(tiny_set).samples,
        image_size=model_cfg.image_size,
        product_size=model_cfg.product_size,
        threads=2,
    )
    batch = examples.batch(np.arange(len(examples)), torch.device("cpu"))
    outputs = []
    for result in (one, two):
        model = build_rfnet(model_cfg, pretrained=False)
        model.load_state_dict(result["weights"])
        model.eval()
        with torch.no_grad():
            outputs.append(
                model(
                    batch["image"], batch["product"], batch["has_product"], model.tokenize(batch["caption"])
                )
            )
    # Training moved the weights by ~lr x steps = 1e-2; float noise stays ~1e-5 (outputs ~1e-6).
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    for name, value in one["weights"].items():
        if "in_proj_bias" not in name:
            torch.testing.assert_close(two["weights"][name], value, rtol=1e-3, atol=1e-4, msg=name)
    for h1, h2 in zip(one["state"]["history"], two["state"]["history"], strict=True):
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-4)
        assert h1["val_macro_f1"] == pytest.approx(h2["val_macro_f1"])


@pytest.mark.ray
@pytest.mark.slow
def test_rerun_resumes_from_the_last_checkpoint(ray_cluster, tiny_set, tmp_path):
    from rfnet.train import train_rfnet

    def cfg(epochs: int) -> TrainRFNetConfig:
        return load_config(
            TrainRFNetConfig,
            preset="tiny",
            overrides={
                "data.root": tiny_set,
                "out": str(tmp_path / "run"),
                "optim.epochs": epochs,
                "tensorboard": False,
            },
        )

    train_rfnet(cfg(1))
    first = last_checkpoint(str(tmp_path / "run"))
    train_rfnet(cfg(2))  # the same run, longer: continues from epoch 1
    second = last_checkpoint(str(tmp_path / "run"))
    assert second["state"]["epoch"] == 2 and second["state"]["resumed_at"] == [1]
    assert second["state"]["history"][0] == first["state"]["history"][0]
    assert second["state"]["step"] == 2 * first["state"]["step"]


@pytest.mark.ray
@pytest.mark.slow
def test_rerun_of_a_run_stopped_before_its_refit_does_the_refit(ray_cluster, tiny_set, tmp_path):
    """A run stopped after saving its last epoch but before the trees' refit (killed, preempted)
    leaves the best epoch's model without ``train.trees_refit``; the same command again resumes
    with no epoch left to train and refits, to the same trees the uninterrupted run got."""
    from rfnet.checkpoint import load_rfnet, read_meta
    from rfnet.train import train_rfnet

    out = str(tmp_path / "run")
    cfg = load_config(
        TrainRFNetConfig,
        preset="tiny",
        overrides={"data.root": tiny_set, "out": out, "optim.epochs": 1, "tensorboard": False}
        | {"model.descriptor_trees": 20, "optim.refit_trees": True},
    )
    done = train_rfnet(cfg)
    refitted = load_rfnet(out, device="cpu")
    assert refitted.meta["train"]["trees_refit"]["examples"] == done.n_train + done.n_val
    # What the run had saved just before the refit: its last epoch's weights (the same trees, fitted
    # on the training split alone), meta.json without trees_refit.
    assert cfg.optim.ema_decay is None  # so the checkpoint's weights are the saved model's
    save_file(last_checkpoint(out)["weights"], os.path.join(out, "model.safetensors"))
    meta = read_meta(out)
    del meta["train"]["trees_refit"]
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)
    stopped = load_rfnet(out, device="cpu").model.tree_leaf
    assert not torch.equal(stopped, refitted.model.tree_leaf)

    again = train_rfnet(cfg)
    assert again.best_epoch == done.best_epoch and again.val_macro_f1 == done.val_macro_f1
    rerun = load_rfnet(out, device="cpu")
    assert rerun.meta["train"]["trees_refit"]["examples"] == done.n_train + done.n_val
    assert torch.equal(rerun.model.tree_leaf, refitted.model.tree_leaf)
    assert rerun.meta["train"]["history"] == refitted.meta["train"]["history"]


def test_augment_moves_the_product_box_with_the_image():
    cfg = AugmentConfig(hflip=True, translate=0.1, color=0.0)
    image = torch.zeros(16, 3, 40, 40)
    image[:, :, 10:20, 4:12] = 1.0  # the "product"
    box = torch.tensor([[4 / 40, 10 / 40, 12 / 40, 20 / 40]]).repeat(16, 1)
    out, _, _, moved = augment(
        image, torch.zeros(16, 4, 8, 8), cfg, torch.Generator().manual_seed(3), None, box
    )
    for i in range(16):
        ys, xs = torch.nonzero(out[i, 0] > 0.5, as_tuple=True)
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 40
        torch.testing.assert_close(moved[i], found.float(), atol=1e-6, rtol=0)


@pytest.mark.ray
@pytest.mark.slow
def test_stream_loader_trains_from_ray_data_shards(ray_cluster, tiny_set, tmp_path):
    from rfnet.checkpoint import load_rfnet
    from rfnet.train import train_rfnet

    cfg = load_config(
        TrainRFNetConfig,
        preset="tiny",
        overrides={
            "data.root": tiny_set,
            "data.loader": "stream",
            "out": str(tmp_path / "run"),
            "workers.num_workers": 2,
            "optim.epochs": 2,
            "tensorboard": False,
        },
    )
    result = train_rfnet(cfg)
    assert result.epochs == 2
    state = last_checkpoint(cfg.out)["state"]
    # 2 workers x 4 per worker over the 25 train rows: 3 full global batches per epoch.
    assert state["step"] == 2 * ((result.n_train // 2) // 4)
    assert load_rfnet(cfg.out, device="cpu").meta["split"]["n_train"] == result.n_train


def test_prepare_split_uses_split_files_and_never_the_test_file(tmp_path, tiny_set, split_copy):
    from rfnet.train import prepare_split

    root, lines = split_copy(tiny_set, train=(0, 20), val=(20, 25), test=(25, None))
    cfg = load_config(
        TrainRFNetConfig, preset="tiny", overrides={"data.root": str(root), "out": str(tmp_path / "o")}
    )
    train, val, meta = prepare_split(cfg)
    assert (len(train), len(val)) == (20, 5)
    test_images = {line.split("\t")[0] for line in lines[25:]}
    assert not any(s.image.endswith(tuple(test_images)) for s in train + val)
    assert meta["split"]["files"]["test"].endswith("test.txt") and meta["split"]["val_fraction"] is None


def test_shipped_job_configs_load():
    from pathlib import Path

    from rfnet.config import EvaluateConfig

    configs = Path(__file__).resolve().parents[2] / "jobs" / "configs"
    train = load_config(TrainRFNetConfig, config_file=configs / "train_rfnet.yaml")
    assert train.model.backbone == "efficientnet_lite0" and train.optim.max_train_minutes
    assert load_config(EvaluateConfig, config_file=configs / "evaluate.yaml").target_precision == 0.9


def test_ema_follows_the_model_and_copies_buffers():
    from rfnet.train import ema_update

    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        ema.weight.fill_(0.0)
        model.running_mean.fill_(5.0)
    ema_update(ema, model, 0.9, step=0)  # warm-up: d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.8))
    torch.testing.assert_close(ema.running_mean, model.running_mean)
    ema_update(ema, model, 0.9, step=1000)  # d = 0.9: 0.9 * 1.8 + 0.1 * 2
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.82))


def test_cached_descriptor_follows_the_augmented_box(tiny_set):
    """With ``data.cache_descriptor`` the batch carries each example's descriptor computed once; its
    box entries move with the flip and shift, and without augmentation it is what the model computes."""
    from rfnet.model import build_rfnet
    from rfnet.train import MemoryData, prepare_split
    from rfnet.train.driver import _sample_dicts

    cfg = load_config(
        TrainRFNetConfig,
        preset="tiny",
        overrides={
            "data.root": tiny_set,
            "out": "unused",
            "data.cache_descriptor": True,
            "model.descriptor_scene": True,
            "augment.translate": 0.1,
        },
    )
    train, val, _ = prepare_split(cfg)

    class One:
        rank, world = 0, 1

    model = build_rfnet(cfg.model, seed=0).eval()
    data = MemoryData(cfg, {"train": _sample_dicts(train), "val": _sample_dicts(val)}, One(), model, "cpu")
    assert data.train.desc.shape == (len(data.train), cfg.model.descriptor_size)
    for b in data.train_batches(0):
        torch.testing.assert_close(b["maps"]["descriptor"][:, :4], b["maps"]["box"])
        break
    b = next(iter(data.stat_batches()))
    with torch.no_grad():
        maps = model.aux_maps(b["image"], b["product"], b["has_product"])
        direct = model.raw_descriptor(b["image"], maps)
    torch.testing.assert_close(b["maps"]["descriptor"], direct, atol=1e-4, rtol=1e-4)


def test_data_preparation_reports_progress_on_rank_zero_only(tiny_set, monkeypatch, caplog):
    """Decoding and the maps of a large set take minutes before the first epoch: rank 0 logs how far
    they got (at most every PROGRESS_INTERVAL_S; here every step), the other workers stay quiet."""
    import logging

    from rfnet import train
    from rfnet.model import build_rfnet
    from rfnet.train import examples as prep
    from rfnet.train.driver import _sample_dicts

    cfg = load_config(TrainRFNetConfig, preset="tiny", overrides={"data.root": tiny_set, "out": "unused"})
    train_split, val, _ = train.prepare_split(cfg)
    config = {"train": _sample_dicts(train_split), "val": _sample_dicts(val)}
    model = build_rfnet(cfg.model, seed=0).eval()
    monkeypatch.setattr(prep, "PROGRESS_INTERVAL_S", 0.0)
    n = len(train_split)

    def progress_lines(run) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rfnet.train"):
            run()
        return [r.getMessage() for r in caplog.records if "examples (" in r.getMessage()]

    class Worker:
        def __init__(self, rank: int) -> None:
            self.rank, self.world = rank, 2

    assert progress_lines(lambda: train.MemoryData(cfg, config, Worker(1), model, "cpu")) == []
    lines = progress_lines(lambda: train.MemoryData(cfg, config, Worker(0), model, "cpu"))
    assert lines and all(line.startswith("decoding: ") and f"/{n} examples" in line for line in lines)
    assert f"decoding: 1/{n} examples" in lines[0]  # the training set; the validation set stays quiet

    examples = train.load_examples(train_split, image_size=32, product_size=16, threads=1)
    lines = progress_lines(lambda: train.precompute_maps(model, examples, "cpu", batch_size=4, progress=True))
    steps = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert steps == list(range(4, n, 4))  # every batch but the last: the end needs no report


def test_refit_saved_trees_fits_on_train_and_validation_and_keeps_the_weight(tiny_set, tmp_path):
    """After the last epoch the best model's trees are refitted on training + validation examples;
    the tree weight validation chose, the network and the validation record stay as they were."""
    from rfnet.checkpoint import load_rfnet, save_rfnet
    from rfnet.model import build_rfnet
    from rfnet.train import MemoryData, fit_descriptor_trees, prepare_split, refit_saved_trees
    from rfnet.train.driver import _sample_dicts

    out = str(tmp_path / "model")
    overrides = {
        "data.root": tiny_set,
        "out": out,
        "data.cache_descriptor": True,
        "model.descriptor_trees": 20,
    }
    cfg = load_config(TrainRFNetConfig, preset="tiny", overrides=overrides)
    train, val, _ = prepare_split(cfg)

    class One:
        rank, world = 0, 1

    model = build_rfnet(cfg.model, seed=0).eval()
    data = MemoryData(cfg, {"train": _sample_dicts(train), "val": _sample_dicts(val)}, One(), model, "cpu")
    rows, _ = fit_descriptor_trees(model, data.stat_batches(), cfg.optim)
    assert rows == len(train)
    model.tree_weight.fill_(0.75)
    save_rfnet(model, cfg.model, out, meta={"train": {"val_macro_f1": 0.5}})
    before = {k: v.clone() for k, v in model.state_dict().items()}

    refit_saved_trees(cfg, data)
    loaded = load_rfnet(out, device="cpu", dtype="float32")
    after = loaded.model.state_dict()
    assert loaded.meta["train"]["trees_refit"]["examples"] == len(train) + len(val)
    assert loaded.meta["train"]["val_macro_f1"] == 0.5 and float(after["tree_weight"]) == 0.75
    assert not torch.equal(after["tree_leaf"], before["tree_leaf"])  # other examples, other trees
    network = [k for k in before if not k.startswith("tree_")]
    assert network and all(torch.equal(after[k], before[k]) for k in network)
