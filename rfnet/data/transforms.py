"""Pixel transforms shared by training data and the scorer, so both see products the same way.

- :func:`canonical_product`: an RGBA product cut-out of any size (an RF1M cut-out, or the product
  placed on the generation canvas with alpha 0 elsewhere) -> a fixed-size square RGBA image of just
  the product. Where the product sits on the canvas and how big it is there is deliberately thrown
  away: RFNet judges placement from the generated image, and compares appearance with the product.
- :func:`resize_rgb`: a generated image -> the model's square input size.
- :func:`decode_rgb` / :func:`decode_rgba` / :func:`decode_product`: bytes of any common image file
  -> ``uint8`` arrays.
- An RGB product file (a product photographed on white) is keyed with
  :func:`pipelines.catalog.white_background`, the catalog's own rule, so it means the same product
  to the generation pipeline, to the scorer and to RFNet's training data.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipelines.catalog import white_background


def _as_rgba(product: np.ndarray) -> np.ndarray:
    if not isinstance(product, np.ndarray) or product.dtype != np.uint8:
        raise ValueError(
            f"product must be a uint8 numpy array of shape (H, W, 4) RGBA or (H, W, 3) RGB, got "
            f"{type(product).__name__} with dtype {getattr(product, 'dtype', None)}"
        )
    if product.ndim != 3 or product.shape[2] not in (3, 4) or 0 in product.shape[:2]:
        raise ValueError(
            f"product must have shape (H, W, 4) RGBA or (H, W, 3) RGB with H, W > 0, got {product.shape}"
        )
    if product.shape[2] == 4:
        return product
    # No alpha: a product on white has its background keyed out as the catalog does; any other
    # photo (no white at its border, or nothing but white) is taken whole.
    background = white_background(product)
    alpha = np.full(product.shape[:2], 255, np.uint8)
    if background.any() and not background.all():
        alpha[background] = 0
    return np.concatenate([product, alpha[..., None]], axis=2)


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), Lanczos when enlarging (sharp edges)."""
    shrinking = width <= array.shape[1] and height <= array.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return cv2.resize(array, (width, height), interpolation=interpolation)


def canonical_product(rgba: np.ndarray, size: int) -> np.ndarray:
    """Crop to the alpha bounding box, pad to a centred square, resize to ``(size, size, 4)`` uint8.

    ``rgba``: ``(H, W, 4)`` uint8 RGBA with straight (not premultiplied) alpha, any size. An
    ``(H, W, 3)`` RGB image (a product photo without a cut-out) on white has its
    :func:`white_background` made transparent, as the catalog does with such photos; one that is
    not on white is taken as fully opaque, so the whole photo is the product. Padding is
    transparent (all four channels 0). Resizing runs on premultiplied colour and is
    un-premultiplied afterwards, so the colour of fully transparent pixels (often garbage in
    cut-outs) never bleeds into the edges; RGB is 0 wherever alpha is 0. A product with no pixel of
    alpha > 0 gives all zeros (the caller treats it as absent).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (pixels), got {size!r}")
    rgba = _as_rgba(rgba)
    alpha = rgba[:, :, 3]
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return np.zeros((size, size, 4), np.uint8)
    cols = np.flatnonzero(alpha.any(axis=0))
    crop = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    height, width = crop.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, 4), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    a = crop[:, :, 3:] / 255.0
    square[top : top + height, left : left + width, :3] = crop[:, :, :3] * a
    square[top : top + height, left : left + width, 3] = crop[:, :, 3]
    if side != size:
        square = _resize(square, size, size)
    out_alpha = np.clip(square[:, :, 3:], 0.0, 255.0)
    safe = np.where(out_alpha > 0.5, out_alpha, 1.0) / 255.0
    rgb = np.where(out_alpha > 0.5, square[:, :, :3] / safe, 0.0)
    out = np.concatenate([rgb, out_alpha], axis=2)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[out[:, :, 3] == 0] = 0
    return out


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8.

    Non-square images are stretched, not cropped or padded: generated ad images are square, and a
    crop could cut the product off while padding would add borders the model might read as a defect.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (pixels), got {size!r}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return _resize(image, size, size)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    # Camera JPEGs store their rotation in EXIF; apply it so pixels match what viewers show.
    return ImageOps.exif_transpose(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float greyscale -> 8-bit ``L`` by their value range, not by clipping."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if image.mode == "F" and values.max(initial=0) <= 1.0:
        top = 1.0
    return Image.fromarray(np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8), "L")


def _via_rgba(image: Image.Image) -> Image.Image:
    # A palette with a transparent index must go through RGBA (PIL warns on a direct RGB conversion).
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    return image


def decode_rgb(data: bytes) -> np.ndarray:
    """Image file bytes (PNG, JPEG, WebP, ...; any mode) -> ``(H, W, 3)`` uint8 RGB.

    Alpha, if any, is dropped (not composited): generated images are opaque, and the pixels under
    alpha are what the generator produced. Palette, greyscale, CMYK and 16-bit images are converted.
    """
    image = _via_rgba(_to_8bit(_open(data)))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgba(data: bytes) -> np.ndarray:
    """Image file bytes -> ``(H, W, 4)`` uint8 RGBA; images without alpha come back fully opaque."""
    image = _via_rgba(_to_8bit(_open(data)))
    return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def decode_product(data: bytes) -> np.ndarray:
    """A product file's bytes -> ``(H, W, 4)`` uint8 RGBA if the file has alpha (RGBA, LA, PA, or a
    palette / RGB / greyscale image with a transparency key), else ``(H, W, 3)`` uint8 RGB, which
    :func:`canonical_product` keys out of a white background. The same split of modes as the
    catalog's (``pipelines.catalog.to_rgba``)."""
    image = _via_rgba(_to_8bit(_open(data)))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
