"""The scene sets (``rfnet.data.scenes``): every family paints what it painted when its quality
figures were measured, in the RF1M layout, one sample at a time as in a whole set; a new family
plugs in through the registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.labels import DISPLAY_NAMES, NUM_CLASSES
from rfnet.data import load_example, read_rf1m
from rfnet.data.scenes import SETS, Painted, Painter, make_set, render_sample

# A digest of every file of each set at n_per_class=1, 64 px, seed 1 (decoded pixels of the PNGs,
# bytes of the index files), taken with the painters as they were before they moved into
# rfnet.data.scenes. The RFNet quality figures in docs/rfnet.md were measured on these painters: a
# change of a digest is a change of the data, to be made on purpose (and the figures measured again).
PAINTED = {
    "synthetic": "0cae2e6fbfdd2a20",
    "alt": "754f75380553a53f",
    "studio": "92190c4641b934d3",
    "lifestyle": "a6ec99e6a1fb33c9",
}
# The same around the five real cut-outs of the products_dir fixture.
PAINTED_REAL = {"synthetic": "e2cd7fe60ab862b6", "studio": "3ad01b1f8cf79af8"}


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        if path.suffix == ".png":
            pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            h.update(str(pixels.shape).encode())
            h.update(pixels.tobytes())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def records(root: Path, meta_file: str) -> list[dict]:
    return [json.loads(line) for line in (root / meta_file).read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(PAINTED))
def test_every_set_paints_what_it_painted_before(tmp_path, name):
    make_set(name, str(tmp_path), n_per_class=1, image_size=64, seed=1)
    assert digest(tmp_path) == PAINTED[name]


@pytest.mark.parametrize("name", sorted(PAINTED_REAL))
def test_sets_around_real_cut_outs_paint_what_they_painted_before(tmp_path, products_dir, name):
    assert sorted(p.name for p in products_dir.glob("*.png")) == [f"{i}.png" for i in range(5)], (
        "the digests belong to the five cut-outs 0-4.png"
    )
    make_set(name, str(tmp_path), n_per_class=1, image_size=64, seed=1, products_dir=str(products_dir))
    assert digest(tmp_path) == PAINTED_REAL[name]


@pytest.mark.parametrize("name", ["alt", "studio", "lifestyle"])
def test_sets_are_reproducible_balanced_rf1m_with_how_each_image_was_drawn(tmp_path, name):
    a = make_set(name, str(tmp_path / "a"), n_per_class=2, image_size=96, seed=3)
    make_set(name, str(tmp_path / "b"), n_per_class=2, image_size=96, seed=3)
    assert (tmp_path / "a" / "label.txt").read_text() == (tmp_path / "b" / "label.txt").read_text()
    index = read_rf1m(a)
    assert not index.problems and len(index.samples) == 12
    assert set(index.class_counts().values()) == {2}
    assert all(s.product is not None and s.caption for s in index.samples)
    ex = load_example(index.samples[0], image_size=96, product_size=32)
    assert ex["image"].shape == (96, 96, 3) and ex["has_product"]
    meta_file = SETS[name].meta_file
    if meta_file:  # how each image was drawn, for bench.rfnet_errors
        labels = [line.split("\t") for line in (tmp_path / "a" / "label.txt").read_text().splitlines()]
        assert [(r["image"], r["label"]) for r in records(tmp_path / "a", meta_file)] == [
            (image, DISPLAY_NAMES[int(label) - 1]) for image, label in labels
        ]


@pytest.mark.parametrize("name", sorted(SETS))
def test_one_sample_is_the_sample_the_set_writes(tmp_path, name):
    make_set(name, str(tmp_path), n_per_class=2, image_size=64, seed=4)
    meta = {r["image"]: r for r in records(tmp_path, SETS[name].meta_file)} if SETS[name].meta_file else {}
    for label, index in ((0, 1), (5, 0)):
        sample = render_sample(name, label, index, image_size=64, seed=4)
        assert isinstance(sample, Painted) and sample.label == label
        image = f"images/{sample.name}.png"
        assert f"{image}\t{label + 1}" in (tmp_path / "label.txt").read_text().splitlines()
        written = cv2.cvtColor(cv2.imread(str(tmp_path / image)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, sample.image)
        product = cv2.imread(str(tmp_path / "products" / f"{sample.name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(cv2.cvtColor(product, cv2.COLOR_BGRA2RGBA), sample.product)
        if meta:
            assert meta[image] == {"image": image, "label": meta[image]["label"], **sample.scene}


def test_studio_set_with_real_cut_outs_keeps_them_as_they_came(tmp_path, products_dir):
    root = make_set(
        "studio", str(tmp_path / "real"), n_per_class=2, image_size=96, seed=3, products_dir=str(products_dir)
    )
    index = read_rf1m(root)
    assert not index.problems and set(index.class_counts().values()) == {2}
    stems = {p.stem for p in products_dir.glob("*.png")}
    drawn = records(tmp_path / "real", "meta.jsonl")
    assert {r["product"].removeprefix("real:") for r in drawn} <= stems
    assert all(s.caption.endswith(" product") for s in index.samples)

    def premultiplied(rgba):
        ys, xs = np.nonzero(rgba[..., 3])
        rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
        return np.dstack([rgba[..., :3] * rgba[..., 3:] / 255, rgba[..., 3]])

    for record in drawn:  # each product file is the named cut-out at its own resolution
        rgba = cv2.imread(str(tmp_path / "real" / record["image"].replace("images/", "products/")), -1)
        source = cv2.imread(str(products_dir / f"{record['product'].removeprefix('real:')}.png"), -1)
        assert rgba.shape[2] == 4 and max(rgba.shape[:2]) > 96
        assert np.abs(premultiplied(rgba) - premultiplied(source)).max() < 1, record


class _Flat(Painter):
    """A family of one flat colour per class, with its scene described."""

    name = "flat"

    def paint(self, label: int, index: int) -> Painted:
        rng = np.random.default_rng([self.seed, label, index, 5])
        grey = int(rng.integers(0, 256))
        image = np.full((self.image_size, self.image_size, 3), grey, np.uint8)
        product = np.full((8, 4, 4), 255, np.uint8)
        name = f"flat-{self.seed}-{label}-{index}"
        return Painted(name, image, product, "a white block", label, {"surface": "flat", "grey": grey})


def test_a_new_family_plugs_in_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setitem(SETS, _Flat.name, _Flat)
    root = make_set("flat", str(tmp_path), n_per_class=2, image_size=32, seed=1)
    index = read_rf1m(root)
    assert not index.problems and len(index.samples) == 2 * NUM_CLASSES
    drawn = records(tmp_path, "meta.jsonl")
    assert len(drawn) == 2 * NUM_CLASSES and all(r["surface"] == "flat" for r in drawn)
    for r in drawn:  # the description is what was painted
        pixels = cv2.imread(str(tmp_path / r["image"]))
        assert (pixels == r["grey"]).all()
    record = next(r for r in drawn if r["image"] == "images/flat-1-3-1.png")
    assert render_sample("flat", 3, 1, image_size=32, seed=1).scene == {
        "surface": "flat",
        "grey": record["grey"],
    }


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown scene set 'nope'; choose from synthetic, alt"):
        make_set("nope", str(tmp_path), n_per_class=1, image_size=64, seed=0)
    with pytest.raises(
        ValueError, match="the lifestyle set draws its own products and takes no products_dir"
    ):
        make_set("lifestyle", str(tmp_path), n_per_class=1, image_size=64, seed=0, products_dir=str(tmp_path))
    with pytest.raises(ValueError, match="label must be a class index 0-5"):
        render_sample("alt", 6, 0, image_size=64, seed=0)
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        render_sample("studio", 0, 0, image_size=16, seed=0)


def test_the_command_writes_a_set_and_its_contact_sheet(tmp_path):
    out, sheet = tmp_path / "set", tmp_path / "sheet.png"
    args = [
        "--set",
        "alt",
        "--out",
        str(out),
        "--n-per-class",
        "2",
        "--image-size",
        "64",
        "--sheet",
        str(sheet),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "rfnet.data.scenes", *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_rf1m(str(out)).samples) == 12
    assert cv2.imread(str(sheet)).shape[:2] == (6 * 96, 150 + 2 * 96)  # a row per class
