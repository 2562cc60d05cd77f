"""Evaluation: eval.json on a tiny set with known predictions, split reproduction, threshold, PNGs,
per-image predictions."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipelines.config import ConfigError, load_config
from pipelines.labels import LABELS
from rfnet.checkpoint import load_model, load_rfnet, save_rfnet
from rfnet.config import EvaluateConfig, TrainRFNetConfig
from rfnet.data import holdout_split, read_rf1m, split_samples
from rfnet.evaluate import build_report, evaluate_rfnet, render_confusion, render_errors


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> str:
    from rfnet.data.scenes import make_set

    return make_set(
        "synthetic", str(tmp_path_factory.mktemp("eval-set")), n_per_class=2, image_size=64, seed=1
    )


def constant_model(directory, favourite: int, meta: dict | None = None) -> float:
    """A tiny RFNet whose head ignores its input and always prefers class ``favourite``."""
    model, config, _ = load_model("tiny")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.5 if k == favourite else 0.0 for k in range(6)]))
    save_rfnet(model, config, str(directory), meta=meta or {})
    return float(torch.softmax(model.head.bias.detach(), 0)[0])


def evaluate(tmp_path, rfnet_dir, data, **overrides) -> dict:
    cfg = load_config(
        EvaluateConfig,
        preset="tiny",
        overrides={"rfnet": str(rfnet_dir), "data": data, "out": str(tmp_path / "eval"), **overrides},
    )
    evaluate_rfnet(cfg)
    return json.loads((tmp_path / "eval" / "eval.json").read_text())


def test_eval_json_with_known_predictions(tmp_path, tiny_set):
    p_available = constant_model(tmp_path / "model", favourite=2)
    report = evaluate(tmp_path, tmp_path / "model", tiny_set, split="all")
    assert report["n"] == 12 and report["split"]["mode"] == "all"
    # Every image is called Space Mismatch: that class has precision 2/12 and recall 1, the rest 0.
    f1_space = 2 * (1 / 6) * 1 / (1 / 6 + 1)
    assert report["per_class"]["space_mismatch"] == pytest.approx(
        {"precision": 1 / 6, "recall": 1.0, "f1": f1_space, "support": 2}
    )
    for name in LABELS:
        assert report["per_class"][name]["support"] == 2
        if name != "space_mismatch":
            assert report["per_class"][name]["f1"] == 0.0
    assert report["macro_f1"] == pytest.approx(f1_space / 6)
    assert report["confusion"] == [[0, 0, 2, 0, 0, 0] for _ in range(6)]
    assert report["labels"] == list(LABELS)
    # p_available is the same for every image: AP is the prevalence of Available.
    assert report["available"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": 2 / 12})
    # No threshold reaches 90 % precision on Available (prevalence 1/6): nothing is chosen.
    assert report["threshold"] is None and not report["threshold_selection"]["reached"]
    png = Image.open(io.BytesIO((tmp_path / "eval" / "confusion.png").read_bytes()))
    assert png.format == "PNG" and png.size[0] > 300
    assert report["checkpoint_threshold"] == 0.5 and p_available < 0.5
    # One row per image: the annotation, the scorer's columns, accepted at the checkpoint's 0.5.
    rows = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    truth = {s.image.removeprefix(tiny_set + "/"): LABELS[s.label] for s in read_rf1m(tiny_set).samples}
    assert {r["image"]: r["true_label"] for r in rows} == truth and len(rows) == 12
    assert {r["label"] for r in rows} == {"space_mismatch"}
    assert [r["correct"] for r in rows].count(True) == 2
    for r in rows:
        assert sum(r[f"prob_{name}"] for name in LABELS) == pytest.approx(1.0, abs=1e-5)
        assert r["p_available"] == r["prob_available"] == pytest.approx(p_available, abs=1e-6)
        assert r["accepted"] is False
    assert report["predictions"] == {"file": "predictions.parquet", "accepted_threshold": 0.5}
    assert Image.open(tmp_path / "eval" / "errors.png").format == "PNG"


def test_write_threshold_stores_it_for_every_later_load(tmp_path, tiny_set):
    p_available = constant_model(tmp_path / "model", favourite=0)
    report = evaluate(
        tmp_path, tmp_path / "model", tiny_set, split="all", target_precision=0.1, write_threshold=True
    )
    # All images tie at one p_available; precision 1/6 >= 0.1, so that score is the threshold.
    assert report["threshold"] == pytest.approx(p_available, abs=1e-6)
    assert report["threshold_selection"]["written_to_checkpoint"]
    assert report["threshold_selection"]["accept_rate"] == 1.0
    loaded = load_rfnet(str(tmp_path / "model"), device="cpu")
    assert loaded.threshold == pytest.approx(p_available, abs=1e-6)
    assert loaded.meta["threshold_source"]["target_precision"] == 0.1
    # predictions.parquet accepts at the threshold just written, as every later scorer will.
    assert report["predictions"]["accepted_threshold"] == report["threshold"]
    rows = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    assert len(rows) == 12 and all(r["accepted"] for r in rows)


def test_predictions_follow_the_images_that_could_be_decoded(tmp_path, tiny_set, caplog):
    import shutil

    data = tmp_path / "set"
    shutil.copytree(tiny_set, data)
    samples = read_rf1m(str(data)).samples
    broken = samples[3].image.removeprefix(str(data) + "/")
    (data / broken).write_bytes(b"not an image")
    with open(data / "label.txt", "a") as fh:
        fh.write("images/missing.png\t2\n")
    constant_model(tmp_path / "model", favourite=2)
    with caplog.at_level("INFO", logger="rfnet"):
        report = evaluate(tmp_path, tmp_path / "model", str(data), split="all")
    assert report["n"] == 11 and report["skipped"] == 1
    # The reader's summary of the unusable line is logged once, by the reader.
    summaries = [r for r in caplog.records if "1 problems (image not found: 1)" in r.getMessage()]
    assert [r.name for r in summaries] == ["rfnet.data.rf1m"]
    rows = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    truth = {s.image.removeprefix(str(data) + "/"): LABELS[s.label] for s in samples}
    assert broken not in {r["image"] for r in rows}
    assert {r["image"]: r["true_label"] for r in rows} == {k: v for k, v in truth.items() if k != broken}


def test_eval_json_says_when_the_cut_outs_are_not_the_pasted_products(tmp_path, tiny_set, caplog):
    import shutil

    constant_model(tmp_path / "model", favourite=2)
    with caplog.at_level("WARNING", logger="rfnet.evaluate"):
        report = evaluate(tmp_path, tmp_path / "model", tiny_set, split="all")
    assert report["product_search"]["with_product"] == 12 and report["product_search"]["poor_share"] == 0.0
    assert report["product_search"]["median_error"] < 0.02 and not caplog.records
    # Every image gets the next image's cut-out (another product, drawn elsewhere).
    data = tmp_path / "swapped"
    shutil.copytree(tiny_set, data)
    products = sorted((data / "products").iterdir())
    contents = [p.read_bytes() for p in products]
    for path, content in zip(products, contents[1:] + contents[:1], strict=True):
        path.write_bytes(content)
    with caplog.at_level("WARNING", logger="rfnet.evaluate"):
        report = evaluate(tmp_path, tmp_path / "model", str(data), split="all")
    search = report["product_search"]
    assert search["with_product"] == 12 and search["poor_share"] > 0.5 and search["median_error"] > 0.05
    assert any("products/<name> is the cut-out pasted into image <name>" in r.message for r in caplog.records)
    # No cut-outs at all.
    shutil.rmtree(data / "products")
    caplog.clear()
    with caplog.at_level("WARNING", logger="rfnet.evaluate"):
        report = evaluate(tmp_path, tmp_path / "model", str(data), split="all")
    assert report["product_search"] == {"with_product": 0, "without_product": 12}
    assert any("none of the 12 images has a product cut-out" in r.message for r in caplog.records)


def test_errors_png_shows_the_most_confident_mistakes_of_the_most_frequent_confusions():
    # 8 images, each one flat colour; true/predicted: two Available -> Size Mismatch (image 1 more
    # confident than image 0), one Unsuitable -> Available, the rest right.
    images = np.stack([np.full((16, 16, 3), 30 * i, np.uint8) for i in range(8)])
    labels = np.array([0, 0, 1, 2, 3, 4, 5, 0])
    probs = np.full((8, 6), 0.01)
    probs[np.arange(8), labels] = 0.9
    probs[0] = [0.3, 0, 0, 0.6, 0, 0.1]
    probs[1] = [0.1, 0, 0, 0.8, 0, 0.1]
    probs[2] = [0.7, 0.2, 0, 0, 0, 0.1]
    png = Image.open(io.BytesIO(render_errors(images, labels, probs, per_pair=3))).convert("RGB")
    left, top, cell, row = 230, 40, 96, 96 + 16 + 8
    assert png.size == (left + 3 * (cell + 4) + 10, top + 2 * row + 10)  # two confusions, two rows
    centre = cell // 2
    assert png.getpixel((left + centre, top + centre)) == (30, 30, 30)  # image 1 first in row 1
    assert png.getpixel((left + cell + 4 + centre, top + centre)) == (0, 0, 0)  # then image 0
    assert png.getpixel((left + 2 * (cell + 4) + centre, top + centre)) == (255, 255, 255)  # no third
    assert png.getpixel((left + centre, top + row + centre)) == (60, 60, 60)  # row 2: image 2
    clean = Image.open(io.BytesIO(render_errors(images[3:7], labels[3:7], probs[3:7])))
    assert clean.format == "PNG" and clean.size[1] == top + row + 10


def test_auto_split_scores_exactly_the_test_share_training_held_out(tmp_path, tiny_set):
    split = {"data_root": tiny_set, "val_fraction": 0.3, "test_fraction": 0.3, "seed": 3, "max_samples": None}
    constant_model(tmp_path / "model", favourite=1, meta={"split": split})
    labelled = read_rf1m(tiny_set).samples
    _, val, test = holdout_split(labelled, 0.3, 0.3, 3)
    report = evaluate(tmp_path, tmp_path / "model", tiny_set)
    assert report["split"]["mode"] == "test" and report["n"] == len(test)
    assert "does not record which set" in report["split"]["reason"]  # trained before sets were recorded
    assert [sum(row) for row in report["confusion"]] == np.bincount(
        [s.label for s in test], minlength=6
    ).tolist()
    report = evaluate(tmp_path, tmp_path / "model", tiny_set, split="val")
    assert report["split"]["mode"] == "val" and report["n"] == len(val)


def test_a_checkpoint_without_a_test_share_is_scored_on_its_validation_split(tmp_path, tiny_set):
    # meta.json of a checkpoint trained before test shares existed (or with test_fraction=0)
    split = {"data_root": tiny_set, "val_fraction": 0.5, "seed": 3, "max_samples": None}
    constant_model(tmp_path / "model", favourite=1, meta={"split": split})
    report = evaluate(tmp_path, tmp_path / "model", tiny_set)
    _, val = split_samples(read_rf1m(tiny_set).samples, 0.5, 3)
    assert report["split"]["mode"] == "val" and report["n"] == len(val)
    with pytest.raises(ConfigError, match="no test split"):
        evaluate(tmp_path, tmp_path / "model", tiny_set, split="test")


def test_val_split_without_split_parameters_is_an_error(tmp_path, tiny_set):
    constant_model(tmp_path / "model", favourite=1)
    with pytest.raises(ConfigError, match="split=all"):
        evaluate(tmp_path, tmp_path / "model", tiny_set, split="val")


def test_build_report_from_probabilities():
    labels = np.array([0, 0, 1, 2])
    probs = np.array(
        [
            [0.9, 0.1, 0, 0, 0, 0],
            [0.4, 0.6, 0, 0, 0, 0],
            [0.2, 0.8, 0, 0, 0, 0],
            [0.3, 0.0, 0.7, 0, 0, 0],
        ]
    )
    report = build_report(labels, probs, target_precision=1.0)
    assert report["confusion"][0][:3] == [1, 1, 0] and report["confusion"][1][:3] == [0, 1, 0]
    assert report["available"]["precision"] == 1.0 and report["available"]["recall"] == 0.5
    # Ranking by p_available: 0.9 (+), 0.4 (+), 0.3 (-), 0.2 (-): AP 1; lowest t with precision 1 is 0.4.
    assert report["available"]["ap"] == pytest.approx(1.0)
    assert report["threshold"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="probs must be"):
        build_report(labels, probs[:, :5], 0.9)


def test_confusion_png_renders_any_matrix():
    data = render_confusion(np.arange(36).reshape(6, 6), title="title")
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB" and img.size == (150 + 6 * 64 + 20, 150 + 6 * 64 + 40)


def test_a_set_with_split_files_is_scored_on_its_test_file(tmp_path, tiny_set, split_copy):
    from pathlib import Path

    root, lines = split_copy(tiny_set, train=(0, 6), val=(6, 9), test=(9, None))
    constant_model(tmp_path / "model", favourite=3)
    report = evaluate(tmp_path, tmp_path / "model", str(root))
    assert report["split"]["mode"] == "test" and Path(report["split"]["file"]).name == "test.txt"
    assert report["n"] == len(lines) - 9
    report = evaluate(tmp_path, tmp_path / "model", str(root), split="val")
    assert report["split"]["mode"] == "val" and report["n"] == 3


def test_split_files_without_a_val_file_redo_the_validation_split_of_train_txt(
    tmp_path, tiny_set, split_copy
):
    root, lines = split_copy(tiny_set, train=(0, 8), test=(8, None))
    # what train-rfnet records for such a set: validation was a hash split of train.txt
    split = {"data_root": str(root), "val_fraction": 0.5, "seed": 3, "max_samples": None}
    constant_model(tmp_path / "model", favourite=1, meta={"split": split})
    index = read_rf1m(str(root))
    _, val = split_samples(index.subset("train.txt"), 0.5, 3)
    report = evaluate(tmp_path, tmp_path / "model", str(root), split="val")
    assert report["split"]["mode"] == "val" and 0 < report["n"] == len(val) < 8
    assert evaluate(tmp_path, tmp_path / "model", str(root), split="test")["n"] == len(lines) - 8
    (root / "test.txt").unlink()
    with pytest.raises(ConfigError, match="no labelled test file"):
        evaluate(tmp_path, tmp_path / "model", str(root), split="test")


def test_cli_reports_unusable_input_without_a_traceback(tmp_path, capsys):
    from jobs.cli import main

    data = tmp_path / "set"
    data.mkdir()
    (data / "label.txt").write_text("images/a.png\t9\nfoo\n")
    rc = main(["evaluate", "--rfnet", "tiny", "--data", str(data), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "reliable-ad evaluate: error: no usable samples" in err and "label.txt:2" in err
    assert "Traceback" not in err

    rc = main(
        ["evaluate", "--rfnet", str(tmp_path / "missing"), "--data", str(data), "--out", str(tmp_path / "ev")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "is not a directory" in err and "Traceback" not in err


def grown_copy(root, src: str, extra: str):
    """A copy of the RF1M set ``src`` at ``root`` with the samples of ``extra`` added to it."""
    shutil.copytree(src, root)
    for folder in ("images", "products"):
        for path in (Path(extra) / folder).iterdir():
            shutil.copy(path, root / folder / path.name)
    with open(root / "label.txt", "a") as f:
        f.write((Path(extra) / "label.txt").read_text())
    return str(root)


def test_auto_split_scores_the_held_out_share_of_the_training_set_and_all_of_any_other(tmp_path, tiny_set):
    from rfnet.data.scenes import make_set
    from rfnet.train import prepare_split

    train_cfg = load_config(
        TrainRFNetConfig, preset="tiny", overrides={"data": {"root": tiny_set}, "out": "x"}
    )
    _, _, meta = prepare_split(train_cfg)  # what train-rfnet stores in meta.json
    constant_model(tmp_path / "model", favourite=1, meta=meta)
    split = meta["split"]
    labelled = read_rf1m(tiny_set).samples

    def held_out(root):
        return holdout_split(
            read_rf1m(root).samples, split["val_fraction"], split["test_fraction"], split["seed"]
        )[2]

    # The training set, also moved elsewhere or relabelled: its test share, as before.
    moved = shutil.copytree(tiny_set, tmp_path / "moved")
    relabelled = shutil.copytree(tiny_set, tmp_path / "relabelled")
    lines = (relabelled / "label.txt").read_text().splitlines()
    (relabelled / "label.txt").write_text("\n".join([lines[0][:-1] + "6", *lines[1:]]) + "\n")
    for root in (tiny_set, str(moved), str(relabelled)):
        report = evaluate(tmp_path, tmp_path / "model", root)
        assert report["split"]["mode"] == "test" and report["n"] == len(held_out(root)) > 0, root
        assert report["split"]["fingerprint"] == report["split"]["trained_fingerprint"]
        assert report["split"]["reason"].startswith("the set the checkpoint was trained on")

    # A separate labelled set: all of it, and eval.json says why.
    other = make_set("synthetic", str(tmp_path / "other"), n_per_class=2, image_size=64, seed=2)
    report = evaluate(tmp_path, tmp_path / "model", other)
    assert report["split"]["mode"] == "all" and report["n"] == len(read_rf1m(other).samples) == 12
    assert report["split"]["shared_images"] == 0 and report["split"]["checked_images"] == 12
    assert "not the set the checkpoint was trained on" in report["split"]["reason"]
    assert report["split"]["fingerprint"] != report["split"]["trained_fingerprint"]

    # The training set grown by the other one shares images with it: only its held-out share.
    grown = grown_copy(tmp_path / "grown", tiny_set, other)
    report = evaluate(tmp_path, tmp_path / "model", grown)
    assert report["split"]["mode"] == "test" and report["n"] == len(held_out(grown)) < 24
    assert report["split"]["shared_images"] == len(labelled) and report["split"]["checked_images"] == 24
    # split=all still scores everything.
    assert evaluate(tmp_path, tmp_path / "model", tiny_set, split="all")["split"]["reason"] == "split=all"
