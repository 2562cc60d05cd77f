"""Drawing helpers that every family shares."""

from __future__ import annotations

import numpy as np


def over(dst: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-composite ``rgb`` ``(h, w, C)`` with ``alpha`` ``(h, w)`` in [0, 1] onto ``dst``
    ``(H, W, C)`` with its top-left corner at ``(x, y)``, in place; whatever falls outside ``dst``
    is clipped."""
    h, w = alpha.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    dst[y0:y1, x0:x1] = dst[y0:y1, x0:x1] * (1 - a) + rgb[y0 - y : y1 - y, x0 - x : x1 - x] * a


def paste_rgba(dst: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    """:func:`over` for a straight-alpha RGBA cut-out ``(h, w, 4)``: uint8 (alpha 0-255) or float
    (alpha in [0, 1])."""
    if rgba.dtype == np.uint8:
        src = rgba.astype(np.float32)
        over(dst, src[..., :3], src[..., 3] / 255.0, x, y)
    else:
        over(dst, rgba[..., :3], rgba[..., 3], x, y)
