"""Pre- and post-processing around the inpainting model (pure functions, CPU).

Pre-processing follows the reference setting of Du et al. (2024):

1. crop the product cut-out to its alpha bounding box;
2. scale it so its longer side is ``image_scale`` x the canvas side (0.66-0.78 in the paper);
3. centre it on the canvas (horizontal and vertical centre at R/2);
4. inpaint mask = the inverted (binarised) alpha, dilated by a ``mask_dilation`` x ``mask_dilation``
   square kernel: the regenerated region reaches a few pixels *into* the product so the scene blends
   into its silhouette;
5. control image = Canny(``canny_low``, ``canny_high``) of the product with the background zeroed,
   replicated to 3 channels (edges of the product and its silhouette only).

Post-processing pastes the product back with the *undilated* alpha (:func:`paste_back`), so product
pixels are never altered: where alpha is 255 the output equals the prepared product byte for byte;
soft (anti-aliased) edges are alpha-composited over the generated scene.

Arrays are ``uint8``: RGBA ``(R, R, 4)``, masks ``(R, R)`` with 255 = true.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from pipelines.batch import Batch, num_rows, row_errors
from pipelines.catalog import InvalidInput, decode_product, fetch_product_bytes
from pipelines.config import GenerateConfig, PrepareConfig


@dataclass(frozen=True)
class Prepared:
    """The inputs of one generation attempt, all at the canvas resolution R."""

    product: np.ndarray  # (R, R, 4) uint8 RGBA: the scaled product on the canvas, alpha 0 elsewhere
    init_image: np.ndarray  # (R, R, 3) uint8: the product composited on white (the inpainting init image)
    mask_image: np.ndarray  # (R, R) uint8: 255 = regenerate (inverted alpha, dilated)
    product_mask: np.ndarray  # (R, R) uint8: 255 = product (alpha > threshold, undilated)
    control_image: np.ndarray  # (R, R, 3) uint8: Canny edges of the product only
    box: tuple[int, int, int, int]  # product bounding box on the canvas (x0, y0, x1, y1), x1/y1 exclusive


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of ``alpha > 0``; ``None`` if empty."""
    ys, xs = np.nonzero(alpha)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with premultiplied alpha so transparent pixels' colours do not bleed into the edge."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    premult = np.concatenate([rgba[..., :3].astype(np.float32) * alpha, alpha * 255.0], axis=-1)
    h, w = rgba.shape[:2]
    interp = cv2.INTER_AREA if (width < w or height < h) else cv2.INTER_LANCZOS4
    out = cv2.resize(premult, (width, height), interpolation=interp)
    a = np.clip(out[..., 3:4], 0.0, 255.0)
    rgb = np.where(a > 0, out[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0, 255), a], axis=-1).round().astype(np.uint8)


def place_product(
    rgba: np.ndarray, resolution: int, image_scale: float, keep_loc: bool = False
) -> np.ndarray:
    """Return the product on an empty ``(R, R, 4)`` canvas.

    ``keep_loc=False``: crop to the alpha box, scale the longer side to ``round(image_scale * R)`` and
    centre. ``keep_loc=True``: keep the product where it is: the whole input is scaled to fit the
    canvas (aspect kept, centred, transparent padding) and ``image_scale`` is ignored.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"rgba must be (H, W, 4) uint8, got {rgba.shape} {rgba.dtype}")
    box = alpha_bbox(rgba[..., 3])
    if box is None:
        raise ValueError("the product's alpha channel is empty (fully transparent)")
    canvas = np.zeros((resolution, resolution, 4), np.uint8)
    if keep_loc:
        h, w = rgba.shape[:2]
        s = resolution / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        scaled = _resize_rgba(rgba, nw, nh)
        x0, y0 = (resolution - nw) // 2, (resolution - nh) // 2
        canvas[y0 : y0 + nh, x0 : x0 + nw] = scaled
        return canvas
    if not (0.0 < image_scale <= 1.0):
        raise ValueError(f"image_scale must be in (0, 1], got {image_scale!r}")
    x0, y0, x1, y1 = box
    crop = rgba[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    target = max(1, round(image_scale * resolution))
    s = target / max(h, w)
    nw, nh = max(1, min(resolution, round(w * s))), max(1, min(resolution, round(h * s)))
    scaled = _resize_rgba(crop, nw, nh)
    cx0 = (resolution - nw) // 2
    cy0 = (resolution - nh) // 2
    canvas[cy0 : cy0 + nh, cx0 : cx0 + nw] = scaled
    return canvas


def binary_mask(alpha: np.ndarray, threshold: int) -> np.ndarray:
    """``(R, R)`` uint8, 255 where ``alpha > threshold``."""
    return np.where(alpha > threshold, 255, 0).astype(np.uint8)


def inpaint_mask(product_mask: np.ndarray, dilation: int) -> np.ndarray:
    """Inverted product mask dilated by a ``dilation`` x ``dilation`` square kernel (255 = regenerate).

    With OpenCV's centred anchor, an even kernel ``k`` grows the region by ``k // 2`` pixels on the
    top/left and ``k // 2 - 1`` on the bottom/right (20 -> 10 and 9 px).
    """
    inverted = 255 - product_mask
    if dilation <= 1:
        return inverted
    kernel = np.ones((dilation, dilation), np.uint8)
    return cv2.dilate(inverted, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def control_canny(product: np.ndarray, product_mask: np.ndarray, low: int, high: int) -> np.ndarray:
    """Canny edges of the product with the background zeroed, as ``(R, R, 3)`` uint8."""
    rgb = np.where(product_mask[..., None] > 0, product[..., :3], 0).astype(np.uint8)
    edges = cv2.Canny(rgb, low, high)
    return np.repeat(edges[..., None], 3, axis=-1)


def composite_on(product: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Alpha-composite an RGBA ``product`` over an RGB ``background`` (same size); exact where alpha is 0/255."""
    alpha = product[..., 3:4].astype(np.uint16)
    out = (
        product[..., :3].astype(np.uint16) * alpha + background.astype(np.uint16) * (255 - alpha) + 127
    ) // 255
    return out.astype(np.uint8)


def paste_back(generated: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Put the original product pixels back over a generated ``(R, R, 3)`` image (undilated alpha)."""
    if generated.shape[:2] != product.shape[:2]:
        raise ValueError(f"generated {generated.shape} and product {product.shape} sizes differ")
    return composite_on(product, generated)


def prepare_product(rgba: np.ndarray, cfg: PrepareConfig, image_scale: float) -> Prepared:
    """Canvas product, init image, inpaint mask, product mask and control image for one attempt."""
    product = place_product(rgba, cfg.resolution, image_scale, cfg.keep_loc)
    pmask = binary_mask(product[..., 3], cfg.alpha_threshold)
    if not pmask.any():
        raise ValueError(
            f"no product pixel has alpha > {cfg.alpha_threshold} after scaling to the canvas "
            "(the cut-out is almost fully transparent)"
        )
    white = np.full((*product.shape[:2], 3), 255, np.uint8)
    box = alpha_bbox(product[..., 3])
    assert box is not None
    return Prepared(
        product=product,
        init_image=composite_on(product, white),
        mask_image=inpaint_mask(pmask, cfg.mask_dilation),
        product_mask=pmask,
        control_image=control_canny(product, pmask, cfg.canny_low, cfg.canny_high),
        box=box,
    )


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)


# ----------------------------------------------------------------------------------------------------
# The prepare stage (CPU tasks).


def prepare_batch(batch: Batch, cfg: GenerateConfig) -> Batch:
    """Load and validate each product image and build its canvas product, mask and control image.

    Adds ``product`` (R, R, 4) uint8, ``mask_image``, ``control_image``, ``content_hash``,
    ``prepare_s`` and ``product_box`` (4,) float32: where the product is on the canvas, its alpha
    bounding box (x0, y0, x1, y1; x1/y1 exclusive) as fractions of the canvas side, NaN on rows with
    an error. The generated image keeps the product there (:func:`paste_back`), so the scorer takes
    this placement instead of searching for it."""
    n, r = num_rows(batch), cfg.prepare.resolution
    product = np.zeros((n, r, r, 4), np.uint8)
    box = np.full((n, 4), np.nan, np.float32)
    mask = np.zeros((n, r, r), np.uint8)
    control = np.zeros((n, r, r, 3), np.uint8)
    content_hash = np.array([""] * n, dtype=object)
    seconds = np.zeros(n, np.float32)
    errors = row_errors(batch)
    for i in range(n):
        if errors[i]:
            continue
        t0 = time.perf_counter()
        uri = str(batch["source_image"][i])
        try:
            rgba, digest = _load_with_hash(uri, cfg)
            prepared = prepare_product(rgba, cfg.prepare, float(batch["image_scale"][i]))
        except InvalidInput as exc:
            errors[i] = f"invalid input: {exc}"
        except ValueError as exc:
            errors[i] = f"invalid input: {exc}"
        else:
            product[i], mask[i], control[i] = prepared.product, prepared.mask_image, prepared.control_image
            box[i] = np.asarray(prepared.box, np.float32) / r
            content_hash[i] = digest
        seconds[i] = time.perf_counter() - t0
    batch.update(
        product=product,
        product_box=box,
        mask_image=mask,
        control_image=control,
        content_hash=content_hash,
        prepare_s=seconds,
        error=np.array(errors, dtype=object),
    )
    return batch


def _load_with_hash(uri: str, cfg: GenerateConfig) -> tuple[np.ndarray, str]:
    """Decoded RGBA and the sha256 (16 hex digits) of the image file's bytes."""
    data = fetch_product_bytes(uri, cfg.prepare, policy=cfg.storage.policy())
    return decode_product(data, cfg.prepare), hashlib.sha256(data).hexdigest()[:16]
