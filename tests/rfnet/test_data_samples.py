"""Product canonicalisation, example decoding and the deterministic train/val split."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from rfnet.data import ExampleError, Sample, canonical_product, holdout_split, load_example, split_samples


def png_bytes(array: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format=fmt)
    return buf.getvalue()


def product_on_canvas(h=200, w=300, box=(40, 90, 100, 130), colour=(10, 200, 30)) -> np.ndarray:
    """A canvas with alpha 0 everywhere except an opaque (top, left, height, width) box; the
    transparent pixels hold garbage colour, as real cut-outs often do."""
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = (255, 0, 255)
    top, left, bh, bw = box
    rgba[top : top + bh, left : left + bw] = (*colour, 255)
    return rgba


def test_canonical_product_crops_to_alpha_pads_square_and_resizes():
    out = canonical_product(product_on_canvas(), 64)
    assert out.shape == (64, 64, 4) and out.dtype == np.uint8
    alpha = out[..., 3] > 0
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    # 100 x 130 box -> the long side fills the square, the short side is centred with padding.
    assert (cols[0], cols[-1]) == (0, 63)
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1
    assert 47 <= rows.size <= 51
    # Transparent padding is all zeros; garbage colour under alpha 0 never bleeds into the product.
    assert not out[~alpha].any()
    interior = out[alpha & (out[..., 3] == 255)][:, :3]
    assert np.abs(interior.astype(int) - (10, 200, 30)).max() <= 1


def test_canonical_product_is_independent_of_placement_on_the_canvas():
    a = canonical_product(product_on_canvas(box=(10, 10, 100, 130)), 48)
    b = canonical_product(product_on_canvas(h=500, w=400, box=(300, 200, 100, 130)), 48)
    np.testing.assert_array_equal(a, b)


def test_canonical_product_edges_keep_colour_under_partial_alpha():
    rgba = product_on_canvas(h=101, w=101, box=(0, 0, 101, 101), colour=(200, 40, 40))
    rgba[:, :, 3] = np.tile(np.linspace(255, 0, 101).astype(np.uint8), (101, 1))
    out = canonical_product(rgba, 20)
    visible = out[..., 3] >= 16
    assert np.abs(out[visible][:, :3].astype(int) - (200, 40, 40)).max() <= 8


def test_canonical_product_empty_alpha_and_rgb_inputs():
    empty = np.zeros((30, 40, 4), np.uint8)
    empty[..., :3] = 255
    assert not canonical_product(empty, 16).any()
    rgb = np.full((30, 60, 3), 90, np.uint8)
    out = canonical_product(rgb, 16)  # no alpha: the whole photo is the product
    assert (out[4:12, :, 3] == 255).all() and not out[:3].any() and not out[13:].any()
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        canonical_product(np.zeros((4, 4), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        canonical_product(np.zeros((4, 4, 4), np.float32), 8)


def test_load_example_decodes_any_mode_and_canonicalises_the_product(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    (tmp_path / "img.png").write_bytes(png_bytes(grey, "L"))
    palette = Image.fromarray(product_on_canvas(h=50, w=50, box=(5, 5, 40, 20))[..., :3]).convert("P")
    palette.info["transparency"] = 0
    product = product_on_canvas(h=50, w=50, box=(5, 5, 40, 20))
    (tmp_path / "prod.png").write_bytes(png_bytes(product, "RGBA"))
    sample = Sample(str(tmp_path / "img.png"), 3, str(tmp_path / "prod.png"), "a green box", "label.txt:2")
    ex = load_example(sample, image_size=32, product_size=24)
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert (ex["image"][..., 0] == ex["image"][..., 1]).all()  # greyscale replicated to RGB
    assert ex["image"][0, 0, 0] < 20 and ex["image"][0, -1, 0] > 230  # left-to-right ramp kept
    np.testing.assert_array_equal(ex["product"], canonical_product(product, 24))
    assert ex["has_product"] is True and ex["label"] == 3 and ex["caption"] == "a green box"

    buf = io.BytesIO()
    palette.save(buf, format="PNG")  # palette with a transparent index: decoded without a warning
    (tmp_path / "palette.png").write_bytes(buf.getvalue())
    assert load_example(Sample(str(tmp_path / "palette.png"), 0), image_size=8, product_size=8)["image"].any()

    bare = load_example(Sample(str(tmp_path / "img.png"), -1), image_size=16, product_size=8)
    assert bare["has_product"] is False and not bare["product"].any() and bare["label"] == -1


def bottle_on_white(h=60, w=50) -> tuple[np.ndarray, np.ndarray]:
    """A product (a dark bottle with a white label enclosed in it) as an RGBA cut-out with garbage
    colour under alpha 0, and the same product photographed on white (RGB)."""
    cutout = product_on_canvas(h=h, w=w, box=(8, 12, 44, 20), colour=(20, 60, 140))
    cutout[24:32, 16:28, :3] = 250  # a white label inside the bottle: stays product
    on_white = np.where(cutout[..., 3:] > 0, cutout[..., :3], np.uint8(255))
    return cutout, on_white


def test_canonical_product_keys_a_product_photographed_on_white_as_the_catalog_does():
    from pipelines.catalog import to_rgba

    cutout, on_white = bottle_on_white()
    np.testing.assert_array_equal(canonical_product(on_white, 24), canonical_product(cutout, 24))
    keyed = to_rgba(Image.fromarray(on_white), white_threshold=240)  # the generation pipeline's reading
    np.testing.assert_array_equal(keyed[..., 3], np.where(cutout[..., 3] > 0, 255, 0))
    # Not on white (no near-white pixel at the border), or nothing but white: the photo is taken whole.
    dark = np.where(cutout[..., 3:] > 0, cutout[..., :3], np.uint8(120))
    whole = canonical_product(dark, 60)[..., 3]  # 60 x 50: centred with 5 transparent columns each side
    assert (whole[:, 5:55] == 255).all() and not whole[:, :5].any() and not whole[:, 55:].any()
    assert (canonical_product(np.full((8, 8, 3), 255, np.uint8), 8)[..., 3] == 255).all()


def test_load_example_keys_a_product_file_without_alpha_out_of_its_white_background(tmp_path):
    cutout, on_white = bottle_on_white()
    (tmp_path / "img.png").write_bytes(png_bytes(np.zeros((16, 16, 3), np.uint8), "RGB"))
    (tmp_path / "prod.png").write_bytes(png_bytes(on_white, "RGB"))
    (tmp_path / "prod.jpg").write_bytes(png_bytes(on_white, "RGB", fmt="JPEG"))
    want = canonical_product(cutout, 32)
    ex = load_example(
        Sample(str(tmp_path / "img.png"), 1, str(tmp_path / "prod.png")), image_size=16, product_size=32
    )
    assert ex["has_product"] is True
    np.testing.assert_array_equal(ex["product"], want)
    # JPEG rings a little around edges: the keyed product is the bottle to within a pixel.
    jpeg = load_example(
        Sample(str(tmp_path / "img.png"), 1, str(tmp_path / "prod.jpg")), image_size=16, product_size=32
    )
    opaque = jpeg["product"][..., 3] > 127
    assert np.abs(opaque.astype(int) - (want[..., 3] > 127)).sum() <= 2 * 32
    assert not jpeg["product"][:, :4].any() and not jpeg["product"][:, -4:].any()  # side padding stays clear


def test_load_example_names_the_unreadable_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    sample = Sample(str(tmp_path / "broken.png"), 0, source="label.txt:9")
    with pytest.raises(ExampleError, match=r"broken\.png.*label\.txt:9"):
        load_example(sample, image_size=8, product_size=8)
    (tmp_path / "ok.png").write_bytes(png_bytes(np.zeros((4, 4, 3), np.uint8), "RGB"))
    missing_product = Sample(str(tmp_path / "ok.png"), 0, str(tmp_path / "gone.png"), source="x:1")
    with pytest.raises(ExampleError, match=r"product .*gone\.png"):
        load_example(missing_product, image_size=8, product_size=8)


def make_samples(n: int, root: str = "/data/rf1m", classes: int = 6) -> list[Sample]:
    return [Sample(f"{root}/images/{i:05d}.png", i % classes) for i in range(n)]


def test_split_is_deterministic_and_independent_of_order():
    samples = make_samples(600)
    train, val = split_samples(samples, 0.2, seed=7)
    assert len(train) + len(val) == 600 and not {s.image for s in train} & {s.image for s in val}
    assert 90 <= len(val) <= 150
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    _, val2 = split_samples(shuffled, 0.2, seed=7)
    assert {s.image for s in val2} == {s.image for s in val}
    _, val_other_seed = split_samples(samples, 0.2, seed=8)
    assert {s.image for s in val_other_seed} != {s.image for s in val}


def test_split_is_stable_under_appends_and_dataset_moves():
    samples = make_samples(300)
    _, val = split_samples(samples, 0.25, seed=1)
    grown = samples + [Sample(f"/data/rf1m/images/new{i}.png", i % 6) for i in range(200)]
    _, val_grown = split_samples(grown, 0.25, seed=1)
    assert {s.image for s in val} <= {s.image for s in val_grown}
    assert not {s.image for s in samples} & ({s.image for s in val_grown} - {s.image for s in val})
    moved = make_samples(300, root="s3://bucket/copies/rf1m")
    _, val_moved = split_samples(moved, 0.25, seed=1)
    assert {s.image.rsplit("/", 1)[1] for s in val_moved} == {s.image.rsplit("/", 1)[1] for s in val}


def test_split_puts_every_class_with_two_samples_in_val_and_train():
    rare = [
        Sample("/d/images/rare_a.png", 5),
        Sample("/d/images/rare_b.png", 5),
        Sample("/d/images/one.png", 4),
    ]
    samples = make_samples(40, root="/d", classes=4) + rare
    for seed in range(20):
        train, val = split_samples(samples, 0.05, seed=seed)
        for label in range(4):
            assert any(s.label == label for s in val) and any(s.label == label for s in train)
        assert sum(s.label == 5 for s in val) == 1 and sum(s.label == 5 for s in train) == 1
    train, val = split_samples(samples, 0.0, seed=0)
    assert val == [] and train == samples
    with pytest.raises(ValueError, match="val_fraction"):
        split_samples(samples, 1.0, seed=0)


def test_holdout_split_holds_out_a_test_share_apart_from_validation():
    samples = make_samples(1200)
    train, val, test = holdout_split(samples, 0.15, 0.15, seed=0)
    names = [{s.image for s in part} for part in (train, val, test)]
    assert sum(map(len, names)) == 1200 and not (
        names[0] & names[1] or names[0] & names[2] or names[1] & names[2]
    )
    assert 130 <= len(test) <= 230 and 110 <= len(val) <= 200  # 15 % of all, then 15 % of the rest
    for part in (val, test):
        assert {s.label for s in part} == set(range(6))
    # the test share is its own hash draw: not the complement of the validation share's
    _, val_alone = split_samples(samples, 0.15, seed=0)
    assert {s.image for s in val_alone} & names[2] and {s.image for s in val_alone} & names[1]
    # deterministic, independent of order, stable when the set is moved
    shuffled = samples[::-1]
    assert {s.image for s in holdout_split(shuffled, 0.15, 0.15, seed=0)[2]} == names[2]
    moved = make_samples(1200, root="s3://bucket/rf1m")
    assert {s.image.rsplit("/", 1)[1] for s in holdout_split(moved, 0.15, 0.15, seed=0)[2]} == {
        n.rsplit("/", 1)[1] for n in names[2]
    }
    # no test share: split_samples' train / val split
    train0, val0, test0 = holdout_split(samples, 0.15, 0.0, seed=0)
    assert test0 == [] and (train0, val0) == split_samples(samples, 0.15, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_split(samples, 0.15, 1.0, seed=0)


def test_set_identity_recognises_a_moved_set_and_estimates_what_another_shares():
    from rfnet.data import set_identity, shared_images

    def samples(root: str, names) -> list[Sample]:
        return [Sample(f"{root}/images/{n}.png", i % 6) for i, n in enumerate(names)]

    trained = samples("/data/set", range(5000))
    identity = set_identity(trained)
    assert identity["n"] == 5000 and len(identity["sketch"]) == 256
    # Moved, reordered, relabelled: the same set.
    moved = [Sample(s.image.replace("/data/set", "s3://bucket/copy"), 0) for s in reversed(trained)]
    assert set_identity(moved)["fingerprint"] == identity["fingerprint"]
    assert set_identity(trained[:-1])["fingerprint"] != identity["fingerprint"]
    # Another set: nothing shared; half of it old images: about half of the checked ones shared.
    shared, checked = shared_images(identity, samples("/other", range(5000, 10000)))
    assert shared == 0 and checked > 150
    shared, checked = shared_images(identity, samples("/other", range(2500, 7500)))
    assert 0.35 < shared / checked < 0.65 and checked > 150
    # A set smaller than the sketch is checked image by image.
    small = set_identity(trained[:100])
    assert shared_images(small, samples("/x", [*range(90, 100), *range(9000, 9010)])) == (10, 20)
