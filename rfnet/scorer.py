"""The RFNet scoring contract (images + product + caption in, class probabilities out).

:class:`RFNetScorer` is what everything downstream calls: the generation pipeline's inspection
stage (:class:`ScoreStage`, a Ray Data callable class) and RFFT's reward (gradients w.r.t. the
image through :meth:`RFNetScorer.predict_proba`). Both see the same preprocessing as training:

- the generated image is resized to the model's ``image_size`` (bilinear, antialiased; a no-op for
  images already at that size), values in [0, 1];
- the product RGBA cut-out (any size: an RF1M cut-out or the product on the generation canvas with
  alpha 0 elsewhere) goes through :func:`rfnet.data.transforms.canonical_product`, the function
  the training data uses (alpha-bbox crop, centred square pad, resize); an empty alpha (or no
  product) means the modality is absent for that row;
- depth, saliency and match maps are computed inside the model from the image;
- the product's placement (``box``: its alpha bounding box, x0 y0 x1 y1 as fractions of the image
  side) is taken from the caller where known (the generation pipeline's ``product_box`` column:
  it pasted the product there) and searched for (:func:`rfnet.aux.locate_product`) only where
  not (RF1M, labelled folders), see :func:`rfnet.aux.find_product`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.device import Placement
from pipelines.labels import AVAILABLE, LABELS
from rfnet.checkpoint import load_rfnet
from rfnet.data.transforms import canonical_product

logger = logging.getLogger(__name__)


class RFNetScorer:
    """A loaded, frozen RFNet with the scoring API.

    ``source``: checkpoint dir / ``s3://`` prefix / ``"tiny"``; ``threshold``: accept threshold on
    ``p_available`` (``None``: the checkpoint's, 0.5 if it has none).
    """

    def __init__(
        self,
        source: str = "tiny",
        *,
        device: str = "auto",
        dtype: str = "auto",
        threshold: float | None = None,
    ):
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(
                f"threshold must be in [0, 1] (accept if p_available >= threshold), got {threshold!r}"
            )
        loaded = load_rfnet(source, device=device, dtype=dtype)
        self.model = loaded.model
        self.config = loaded.config
        self.meta = loaded.meta
        self.placement: Placement = loaded.placement
        self.source = source
        self.threshold = float(threshold) if threshold is not None else loaded.threshold

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def warm_up(self, batch: int = 2) -> float:
        """Score one blank batch so a GPU's lazy start-up costs are paid now; returns its seconds.

        The first call on a CUDA device loads kernels and creates the cuDNN/cuBLAS handles (seconds
        on an H100/H200); a stage that warms up in its constructor pays that while the actor starts,
        not on its first real batch.
        """
        t0 = time.perf_counter()
        size, psize = self.config.image_size, self.config.product_size
        product = np.zeros((psize, psize, 4), np.uint8)
        product[psize // 4 : 3 * psize // 4, psize // 4 : 3 * psize // 4] = 255
        self.score_numpy(np.zeros((batch, size, size, 3), np.uint8), [product] * batch, ["a product"] * batch)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------------------------------
    def canonical_products(
        self, products: Sequence[np.ndarray | None] | np.ndarray | None, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 4, P, P)`` float in [0, 1] on the model's device, and ``has_product (B,)`` bool.

        ``products``: per row an RGBA (or RGB: keyed out of a white background, else fully opaque)
        uint8 array of any size, or None; rows that are None, empty or fully transparent have no
        product.
        """
        size = self.config.product_size
        out = np.zeros((batch, size, size, 4), np.uint8)
        if products is not None:
            if len(products) != batch:
                raise ValueError(
                    f"product has {len(products)} rows but image has {batch}; give one product per image"
                )
            for i, rgba in enumerate(products):
                if rgba is None or rgba.size == 0:
                    continue
                if rgba.ndim != 3 or rgba.shape[-1] not in (3, 4):
                    raise ValueError(
                        f"product row {i} must be (H, W, 4) RGBA or (H, W, 3) RGB, got {rgba.shape}"
                    )
                if rgba.shape[-1] == 3 or rgba[..., 3].any():
                    out[i] = canonical_product(np.ascontiguousarray(rgba), size)
        tensor = torch.from_numpy(out).to(self.device).permute(0, 3, 1, 2).to(self.placement.dtype) / 255.0
        return tensor, tensor[:, 3].flatten(1).amax(dim=1) > 0

    def _check(self, image: torch.Tensor, caption: Sequence[str]) -> None:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be a (B, 3, H, W) float tensor in [0, 1], got {shape}")
        if not image.is_floating_point():
            raise ValueError(f"image must be float in [0, 1], got dtype {image.dtype}; divide uint8 by 255")
        if isinstance(caption, str) or len(caption) != image.shape[0]:
            raise ValueError(
                f"caption must be a list of {image.shape[0]} strings (one per image), got {caption!r:.80}"
            )

    def predict_proba(
        self,
        image: torch.Tensor,
        product: torch.Tensor | None,
        caption: Sequence[str],
        *,
        aux_grad: bool = False,
        box: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class probabilities ``(B, 6)`` (float32, rows sum to 1; column 0 is ``p_available``).

        ``image (B, 3, H, W)`` float in [0, 1], any H and W, differentiable: gradients flow back to
        ``image`` when it requires grad (RFFT). ``product (B, 4, H', W')`` RGBA float in [0, 1], or
        ``None``. ``caption``: B strings. ``aux_grad``: let gradients flow through the depth,
        saliency and match maps too (otherwise they are constants of the image). ``box (B, 4)``:
        where the product is, where known (NaN rows: searched); see :func:`known_boxes`.
        """
        self._check(image, caption)
        b = image.shape[0]
        products = None
        if product is not None:
            if (
                not isinstance(product, torch.Tensor)
                or product.ndim != 4
                or product.shape[1] != 4
                or product.shape[0] != b
            ):
                shape = tuple(product.shape) if isinstance(product, torch.Tensor) else type(product).__name__
                raise ValueError(
                    f"product must be a (B={b}, 4, H, W) RGBA float tensor in [0, 1] or None, got {shape}"
                )
            rgba = (product.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
            products = list(rgba.permute(0, 2, 3, 1).cpu().numpy())
        prod, has_product = self.canonical_products(products, b)
        x = image.to(device=self.device, dtype=self.placement.dtype)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        captions = self.model.tokenize(list(caption))
        logits = self.model(
            x, prod, has_product, captions, aux_grad=aux_grad, box=known_boxes(box, b, self.device)
        )
        return torch.softmax(logits.float(), dim=-1)

    def score_numpy(
        self,
        images: np.ndarray,
        products: np.ndarray | Sequence[np.ndarray | None] | None,
        captions: Sequence[str],
        boxes: np.ndarray | Sequence | None = None,
    ) -> np.ndarray:
        """``images (B, H, W, 3)`` uint8, ``products (B, H', W', 4)`` uint8 or None -> ``(B, 6)`` float32.
        ``boxes``: the products' placements where known (see :func:`known_boxes`)."""
        if (
            not isinstance(images, np.ndarray)
            or images.ndim != 4
            or images.shape[-1] != 3
            or images.dtype != np.uint8
        ):
            desc = (
                f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            )
            raise ValueError(f"images must be a uint8 array of shape (B, H, W, 3), got {desc}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
            x = x.to(self.placement.dtype) / 255.0
            b = x.shape[0]
            if isinstance(captions, str) or len(captions) != b:
                raise ValueError(f"captions must be a list of {b} strings, got {captions!r:.80}")
            prod, has_product = self.canonical_products(products, b)
            size = self.config.image_size
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            tokens = self.model.tokenize([str(c) for c in captions])
            logits = self.model(x, prod, has_product, tokens, box=known_boxes(boxes, b, self.device))
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def known_boxes(boxes, batch: int, device: torch.device) -> torch.Tensor | None:
    """Per-row product placements as a ``(B, 4)`` float32 tensor, NaN where unknown, or None when
    none is known (the search then runs for every row).

    ``boxes``: None, or B rows (a ``(B, 4)`` tensor or array, or a list), each None, NaNs, or
    ``(x0, y0, x1, y1)``: the product's alpha
    bounding box in the image as fractions of its side (``x1``/``y1`` exclusive), as
    :func:`pipelines.prepare.alpha_bbox` divided by the canvas side gives it."""
    if boxes is None:
        return None
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().float().cpu().numpy()
    if len(boxes) != batch:
        raise ValueError(f"box has {len(boxes)} rows but image has {batch}; give one (or None) per image")
    out = np.full((batch, 4), np.nan, np.float32)
    for i, row in enumerate(boxes):
        if row is None:
            continue
        values = np.asarray(row, np.float32).reshape(-1)
        if values.shape != (4,):
            raise ValueError(
                f"box row {i} must be (x0, y0, x1, y1) as fractions of the image side, got {row!r}"
            )
        if np.isfinite(values).all() and not (
            0.0 <= values[0] < values[2] <= 1.0 and 0.0 <= values[1] < values[3] <= 1.0
        ):
            raise ValueError(
                f"box row {i} = {values.tolist()} is not inside the image: need 0 <= x0 < x1 <= 1 and "
                "0 <= y0 < y1 <= 1 (fractions of the image side)"
            )
        out[i] = values
    if np.isnan(out).all():
        return None
    return torch.from_numpy(out).to(device)


def _rows(column: np.ndarray) -> list[np.ndarray | None]:
    """A Ray Data numpy column as per-row arrays (uniform ndarray or object array of arrays/None)."""
    if column.dtype == object:
        return [None if r is None else np.asarray(r) for r in column]
    return list(column)


class ScoreStage:
    """Ray Data callable class (``batch_format="numpy"``) adding RFNet's verdict to every row.

    Reads ``image`` (B, H, W, 3) uint8, ``product`` (B, H', W', 4) uint8 (optional column; rows
    may be None in object columns), ``caption`` (B,) str, an optional ``product_box`` (B, 4) float
    column (where the product was pasted, fractions of the image side; NaN or None: unknown, the
    model searches for it), and an optional ``error`` (B,) str column: rows with a non-empty error are not scored (NaN probabilities, ``label`` "",
    ``accepted`` False). Adds ``prob_<label>`` float32 per class, ``label`` (argmax class name),
    ``p_available`` float32 and ``accepted`` bool (``p_available >= threshold``); every input
    column is kept. Resources and batch size are the caller's, at ``map_batches``. On a GPU the
    constructor scores one blank batch (:meth:`RFNetScorer.warm_up`), so the actor's first real batch
    runs at the steady rate; ``warm_up_s`` holds what that took (0 on CPU, which has no such cost).
    """

    def __init__(
        self, source: str, *, device: str = "auto", dtype: str = "auto", threshold: float | None = None
    ):
        self.scorer = RFNetScorer(source, device=device, dtype=dtype, threshold=threshold)
        self.warm_up_s = 0.0
        if self.scorer.device.type != "cpu":
            self.warm_up_s = self.scorer.warm_up()
            logger.info("RFNet %s warmed up on %s in %.2f s", source, self.scorer.device, self.warm_up_s)

    @property
    def threshold(self) -> float:
        """``p_available`` at or above which a row is ``accepted``."""
        return self.scorer.threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for column in ("image", "caption"):
            if column not in batch:
                raise ValueError(f"ScoreStage needs a {column!r} column; batch has {sorted(batch)}")
        n = len(batch["image"])
        errors = batch.get("error")
        ok = (
            np.ones(n, bool)
            if errors is None
            else np.array([not (isinstance(e, str) and e) for e in errors], bool)
        )
        probs = np.full((n, len(LABELS)), np.nan, np.float32)
        images = _rows(batch["image"])
        products = _rows(batch["product"]) if "product" in batch else [None] * n
        captions = ["" if c is None else str(c) for c in batch["caption"]]
        boxes = list(batch["product_box"]) if "product_box" in batch else None
        # Score rows in groups of equal image size (a Ray batch may mix sizes in an object column).
        groups: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(ok):
            img = images[i]
            if img is None or img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"row {i}: image must be (H, W, 3) uint8 unless the row has an error, got {getattr(img, 'shape', None)}"
                )
            groups.setdefault(img.shape, []).append(int(i))
        for rows in groups.values():
            probs[rows] = self.scorer.score_numpy(
                np.stack([images[i] for i in rows]),
                [products[i] for i in rows],
                [captions[i] for i in rows],
                None if boxes is None else [boxes[i] for i in rows],
            )
        out = dict(batch)
        for k, name in enumerate(LABELS):
            out[f"prob_{name}"] = probs[:, k]
        p_available = probs[:, AVAILABLE]
        out["p_available"] = p_available
        best = np.nan_to_num(probs, nan=-1.0).argmax(axis=1)
        out["label"] = np.array([LABELS[k] if ok[i] else "" for i, k in enumerate(best)], dtype=object)
        with np.errstate(invalid="ignore"):
            out["accepted"] = ok & (p_available >= self.threshold)
        return out
