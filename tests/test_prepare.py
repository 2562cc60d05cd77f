"""Preparation geometry, pinned numerically, and paste-back exactness."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.config import PrepareConfig
from pipelines.prepare import (
    alpha_bbox,
    binary_mask,
    control_canny,
    inpaint_mask,
    paste_back,
    place_product,
    prepare_product,
)


def rect_product(h: int, w: int, pad: int = 10, color=(200, 40, 40)) -> np.ndarray:
    """A solid opaque rectangle of h x w pixels on a transparent canvas with ``pad`` px margin."""
    rgba = np.zeros((h + 2 * pad, w + 2 * pad, 4), np.uint8)
    rgba[pad : pad + h, pad : pad + w] = (*color, 255)
    return rgba


def test_bbox_crop_scale_and_centre():
    # 100 x 50 product (h x w): the longer side (100) becomes 0.5 * 512 = 256, the other 128.
    canvas = place_product(rect_product(100, 50), resolution=512, image_scale=0.5)
    x0, y0, x1, y1 = alpha_bbox(canvas[..., 3])
    assert (x1 - x0, y1 - y0) == (128, 256)
    assert (x0 + x1) / 2 == 256 and (y0 + y1) / 2 == 256  # centred, vertical centre at H/2


def test_wide_product_scales_by_longer_side():
    canvas = place_product(rect_product(30, 120), resolution=256, image_scale=0.75)
    x0, y0, x1, y1 = alpha_bbox(canvas[..., 3])
    assert x1 - x0 == 192  # round(0.75 * 256)
    assert y1 - y0 == 48  # aspect kept: 30/120 * 192
    assert (y0 + y1) / 2 == 128


def test_keep_loc_keeps_position():
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[20:60, 120:180] = (10, 200, 10, 255)  # top-right corner
    canvas = place_product(rgba, resolution=100, image_scale=0.7, keep_loc=True)
    assert alpha_bbox(canvas[..., 3]) == (60, 10, 90, 30)


def test_empty_alpha_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        place_product(np.zeros((32, 32, 4), np.uint8), 64, 0.7)


@pytest.mark.parametrize("scale", [0.0, -0.1, 1.5])
def test_bad_scale_is_rejected(scale):
    with pytest.raises(ValueError, match="image_scale"):
        place_product(rect_product(10, 10), 64, scale)


def test_mask_is_inverted_alpha_dilated_by_kernel():
    pmask = np.zeros((100, 100), np.uint8)
    pmask[30:70, 20:80] = 255  # product: rows 30..69, cols 20..79
    mask = inpaint_mask(pmask, 20)
    # Background is always regenerated; the regenerated region reaches into the product by
    # 10 px from the top/left edges and 9 px from the bottom/right ones (a 20x20 kernel, centred anchor).
    assert mask[0, 0] == 255
    keep = np.argwhere(mask == 0)
    (ky0, kx0), (ky1, kx1) = keep.min(0), keep.max(0)
    assert (ky0, kx0) == (30 + 10, 20 + 10)
    assert (ky1, kx1) == (69 - 9, 79 - 9)
    assert len(keep) == (ky1 - ky0 + 1) * (kx1 - kx0 + 1)  # a solid rectangle
    # Undilated it is exactly the inverted product.
    assert np.array_equal(inpaint_mask(pmask, 0), 255 - pmask)


def test_canny_only_on_product():
    rgba = np.zeros((128, 128, 4), np.uint8)
    rgba[32:96, 40:88] = (255, 255, 255, 255)
    rgba[60:64, 40:88] = (0, 0, 0, 255)  # a stripe: an internal edge
    pmask = binary_mask(rgba[..., 3], 127)
    edges = control_canny(rgba, pmask, 100, 200)
    assert edges.shape == (128, 128, 3) and np.array_equal(edges[..., 0], edges[..., 2])
    ys, xs = np.nonzero(edges[..., 0])
    assert len(ys) > 0
    # Every edge lies on the product or on its silhouette (within 1 px).
    assert ys.min() >= 31 and ys.max() <= 96 and xs.min() >= 39 and xs.max() <= 88
    assert edges[61, 60, 0] or edges[60, 60, 0] or edges[59, 60, 0] or edges[64, 60, 0]  # stripe edge found


def test_background_content_never_reaches_control_image():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 255, (64, 64, 3))  # noisy but transparent
    rgba[20:40, 20:40, 3] = 255
    rgba[20:40, 20:40, :3] = 128  # flat product
    pmask = binary_mask(rgba[..., 3], 127)
    edges = control_canny(rgba, pmask, 100, 200)[..., 0]
    far = np.ones_like(edges, bool)
    far[18:42, 18:42] = False
    assert not edges[far].any()


def test_prepare_product_and_paste_back_exact():
    cfg = PrepareConfig(resolution=128, mask_dilation=5)
    rgba = rect_product(60, 40, color=(12, 34, 56))
    rgba[5:8, 5:8] = (255, 0, 0, 90)  # a soft, semi-transparent speck
    prepared = prepare_product(rgba, cfg, image_scale=0.7)
    assert prepared.product.shape == (128, 128, 4)
    assert prepared.init_image[0, 0].tolist() == [255, 255, 255]  # white outside the product
    noise = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = paste_back(noise, prepared.product)
    opaque = prepared.product[..., 3] == 255
    assert opaque.sum() > 1000
    assert np.array_equal(out[opaque], prepared.product[..., :3][opaque])
    clear = prepared.product[..., 3] == 0
    assert np.array_equal(out[clear], noise[clear])


def test_real_cutouts_prepare(products_dir):
    cfg = PrepareConfig(resolution=512)
    for path in sorted(products_dir.glob("*.png")):
        rgba = np.asarray(Image.open(path).convert("RGBA"))
        prepared = prepare_product(rgba, cfg, image_scale=0.72)
        x0, y0, x1, y1 = prepared.box
        assert max(x1 - x0, y1 - y0) == round(0.72 * 512), path.name
        assert abs((y0 + y1) / 2 - 256) <= 1 and abs((x0 + x1) / 2 - 256) <= 1
        # control edges only on the product or its silhouette (product mask grown by 2 px)
        edges = prepared.control_image[..., 0] > 0
        assert edges.any()
        near_product = cv2.dilate(prepared.product_mask, np.ones((5, 5), np.uint8)) > 0
        assert not (edges & ~near_product).any()
