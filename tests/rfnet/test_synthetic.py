"""The ``synthetic`` scene set: reproducible, in the RF1M layout, product unchanged, defects real."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.labels import LABELS
from rfnet.data import load_example, read_rf1m
from rfnet.data.scenes import make_set, render_sample

SIZE = 96


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_set_is_reproducible_balanced_and_readable(tmp_path):
    a = make_set("synthetic", str(tmp_path / "a"), n_per_class=4, image_size=SIZE, seed=3)
    make_set("synthetic", str(tmp_path / "b"), n_per_class=4, image_size=SIZE, seed=3)
    make_set("synthetic", str(tmp_path / "c"), n_per_class=4, image_size=SIZE, seed=4)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a")["label.txt"] != files(tmp_path / "c")["label.txt"]

    index = read_rf1m(a)
    assert not index.problems and len(index.samples) == 24
    assert set(index.class_counts().values()) == {4}
    assert all(s.product is not None and s.caption.startswith("a ") for s in index.samples)
    ex = load_example(index.samples[0], image_size=SIZE, product_size=32)
    assert ex["image"].shape == (SIZE, SIZE, 3) and ex["has_product"]


def test_growing_the_set_keeps_earlier_samples(tmp_path):
    make_set("synthetic", str(tmp_path / "small"), n_per_class=2, image_size=SIZE, seed=0, image_format="jpg")
    make_set("synthetic", str(tmp_path / "big"), n_per_class=5, image_size=SIZE, seed=0, image_format="jpg")
    small, big = files(tmp_path / "small"), files(tmp_path / "big")
    images = {k: v for k, v in small.items() if k.startswith(("images/", "products/"))}
    assert len(images) == 24 and all(big[k] == v for k, v in images.items())
    assert all(k.endswith(".jpg") for k in images if k.startswith("images/"))
    # image .jpg, product .png: matched by stem.
    assert all(s.product and s.product.endswith(".png") for s in read_rf1m(str(tmp_path / "big")).samples)


def product_region(r):
    """The image crop under the product's box and the product's alpha, clipped to the frame."""
    x0, y0, x1, y1 = r.scene["product_box"]
    size = r.image.shape[0]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    crop = r.image[cy0:cy1, cx0:cx1].astype(int)
    product = r.product[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return crop, product


def test_product_pixels_are_pasted_unchanged():
    for label in range(6):
        for index in range(5):
            r = render_sample("synthetic", label, index, image_size=SIZE, seed=1)
            crop, product = product_region(r)
            opaque = product[..., 3] == 255
            assert opaque.sum() > 50, (LABELS[label], index)
            np.testing.assert_array_equal(crop[opaque], product[opaque][:, :3].astype(int))


def ring_stats(r, width=3):
    """Median colour distance between the product and a ring just outside its outline, and the
    share of ring pixels with (nearly) the product's colour."""
    size = r.image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = r.scene["product_box"]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    mask[cy0:cy1, cx0:cx1] = (r.product[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, 3] > 127) * 255
    grown = cv2.dilate(mask, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    ring = (grown > 0) & (mask == 0)
    colour = np.median(r.product[r.product[..., 3] > 127][:, :3], axis=0)
    dist = np.linalg.norm(r.image[ring].astype(float) - colour, axis=1)
    return float(np.median(dist)), float((dist < 25).mean())


def test_defects_are_what_the_labels_say():
    n = 24
    stats = {
        label: [ring_stats(render_sample("synthetic", label, i, image_size=SIZE, seed=2)) for i in range(n)]
        for label in range(6)
    }
    available, indistinct, hallucination = (
        np.array(stats[LABELS.index(k)]) for k in ("available", "indistinctiveness", "shape_hallucination")
    )
    # Indistinctiveness: the surroundings have the product's colour; Available: they contrast.
    assert np.median(indistinct[:, 0]) < 0.5 * np.median(available[:, 0])
    assert (available[:, 0] > 40).mean() > 0.9
    # Shape Hallucination: product-coloured pixels attached to the outline, which Available lacks.
    assert np.median(hallucination[:, 1]) > 3 * max(np.median(available[:, 1]), 0.01)


def test_no_single_global_statistic_separates_the_classes():
    def statistics(image):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        return [
            image.mean(),
            grey.std(),
            hsv[..., 1].mean(),
            (cv2.Canny(image, 100, 200) > 0).mean(),
            np.abs(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F)).mean(),
        ]

    n = 40
    x = np.array(
        [
            [statistics(render_sample("synthetic", c, i, image_size=SIZE, seed=9).image) for i in range(n)]
            for c in range(6)
        ]
    )
    y = np.repeat(np.arange(6), n).reshape(6, n)
    train, test = (slice(0, n // 2), slice(n // 2, n))
    for j in range(x.shape[2]):
        # Best 6-way classifier on one statistic: majority class per decile bin, fitted on half.
        values = x[:, train, j].ravel()
        edges = np.quantile(values, np.linspace(0, 1, 11)[1:-1])
        bins_train = np.digitize(values, edges)
        labels_train = y[:, train].ravel()
        vote = {
            b: np.bincount(labels_train[bins_train == b], minlength=6).argmax() for b in np.unique(bins_train)
        }
        bins_test = np.digitize(x[:, test, j].ravel(), edges)
        accuracy = np.mean([vote.get(b, 0) == t for b, t in zip(bins_test, y[:, test].ravel(), strict=True)])
        assert accuracy < 0.42, (j, accuracy)  # chance is 0.17


def test_fast_enough():
    start = time.perf_counter()
    for i in range(20):
        for label in range(6):
            render_sample("synthetic", label, i, image_size=128, seed=0)
    per_image = (time.perf_counter() - start) / 120
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms per 128 px image"


def test_real_products(tmp_path, products_dir):
    root = make_set(
        "synthetic",
        str(tmp_path / "real"),
        n_per_class=2,
        image_size=SIZE,
        seed=0,
        products_dir=str(products_dir),
    )
    index = read_rf1m(root)
    assert len(index.samples) == 12 and all(s.caption.endswith(" product") for s in index.samples)
    ex = load_example(index.samples[0], image_size=SIZE, product_size=48)
    assert ex["has_product"] and ex["product"][..., 3].mean() > 40


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        make_set("synthetic", str(tmp_path), n_per_class=0, image_size=64, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        make_set("synthetic", str(tmp_path), n_per_class=1, image_size=16, seed=0)
    with pytest.raises(ValueError, match="image_format"):
        make_set("synthetic", str(tmp_path), n_per_class=1, image_size=64, seed=0, image_format="gif")
    with pytest.raises(ValueError, match="no usable"):
        make_set(
            "synthetic", str(tmp_path / "o"), n_per_class=1, image_size=64, seed=0, products_dir=str(tmp_path)
        )


def test_the_command_runs_cleanly_as_documented(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "set"
    args = ["--out", str(out), "--n-per-class", "1", "--image-size", "64", "--seed", "1"]
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::RuntimeWarning",
            "-m",
            "rfnet.data.scenes",
            "--set",
            "synthetic",
            *args,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert len(read_rf1m(str(out)).samples) == 6
