"""Lifestyle image set: procedural, labelled ad images for checking how RFNet generalises.

Dataset card
------------
Purpose. An evaluation-only set in the RF1M layout, drawn by code that shares nothing with the
generators used for training, so a trained RFNet can be scored on scenes, products and defect
renderings it has never seen. Every sample depends only on ``(seed, label, index)``.

Scenes ("lifestyle" photography). Five scene families, each a ground plane seen through a pinhole
camera whose horizon row varies from above the frame (near top-down tabletop shots) through eye
level to low camera angles:

- kitchen: stone, marble, wood or tiled counters with a visible front edge and cabinet doors, a
  subway-tile backsplash; mugs, fruit, jars, oil bottles and pot plants; cutting boards.
- bathroom: white or wooden shelves close to a tiled or painted wall with a mirror; soap
  dispensers, candles, folded towels, cups.
- desk: wood or laminate desks against a painted wall with a window or picture frame; laptops,
  book stacks, notebooks, mugs.
- outdoor: grass, sand or deck boards under a sky with clouds, distant tree lines and haze;
  stones, flowers, balls, bushes and garden chairs.
- cafe: wood, marble or gingham table tops before a dim interior with blurred lights; cups,
  glasses, sugar jars, plants.

The surface texture is mapped through the camera (farther = higher and smaller), reference
objects are drawn at real-world sizes at their depth, and every image gets soft contact and cast
shadows, depth-of-field blur away from the product's depth, warm or cool light, vignetting,
sensor noise and a JPEG round trip. All of that is applied to the scene *before* the product is
pasted, so the product pixels are exactly the resized cut-out.

Products. Twelve procedural kinds (bottle, jar, cosmetics tube, can, box, handbag, watch, mug,
pot plant, speaker, shoe, perfume) drawn with cylinder or face shading, labels and logos, and an
anti-aliased alpha. ``products/<name>.png`` is the RGBA cut-out at its own resolution; the image
holds the same pixels, only resized. ``captions.jsonl`` holds a short caption ("a red glass
bottle"). Product size (22-60 % of the frame height) and position are drawn from the same ranges in
every class, and in every class but Indistinctiveness the product colour is chosen to stand out from
the scene behind it.

Classes (RF1M label ids):

1. Available: the product stands on the surface with a contact shadow, at a size consistent with
   the reference objects and textures, whole and distinct; sometimes on a flat board or tray.
2. Unsuitable: the image is broken: shifted or channel-split slices, corrupted JPEG blocks, heavy
   compression, strong warps, a tilted or upside-down scene, collages of mismatched scene strips,
   blown-out exposure with banding.
3. Space Mismatch: the product floats above its shadow, is stuck on the wall or sky, hangs over
   the front edge of a counter, sits in front of the cabinet with nothing under it, or stands
   upright on a steep ramp touching it at one corner.
4. Size Mismatch: the scene's scale disagrees with the product: reference objects (and, in some
   samples, the textures too) are 2.5-5x too large or 0.18-0.4x too small for their depth.
5. Indistinctiveness: the wall, the surface or both take the product's own colours (plain, tiled
   or striped), at a colour distance from subtle to near-identical.
6. Shape Hallucination: scene pixels in the product's colours continue its outline: the top or a
   side extruded, a partial copy attached behind it, an extra handle/knob/strap, or a plinth that
   continues its base.

How each image was drawn. ``meta.jsonl`` has one record per image: its class, scene family,
camera ("eye", "low", "top"), product kind, real height and height in pixels, and for the two
classes with variants the variant (Space Mismatch: "float", "wall", "ramp", "overhang",
"nosupport"; Size Mismatch: "big" or "small", and whether the textures share the wrong scale or
only the reference objects have it) with the scene's scale against the product. Nothing reads it
for training or scoring; ``python -m bench.rfnet_errors`` joins it to ``reliable-ad evaluate``'s
``predictions.parquet`` to show which variants a model gets wrong.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.labels import DISPLAY_NAMES

Rng = np.random.Generator
F32 = np.float32

CLASS_NAMES: tuple[str, ...] = DISPLAY_NAMES  # label id k is CLASS_NAMES[k - 1]

# Named product colours (linear-ish sRGB in 0-1); the name goes into the caption.
PRODUCT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.10, 0.12),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.95, 0.82, 0.18),
    "lime green": (0.55, 0.80, 0.20),
    "green": (0.13, 0.52, 0.25),
    "teal": (0.05, 0.50, 0.55),
    "sky blue": (0.42, 0.66, 0.92),
    "blue": (0.12, 0.30, 0.78),
    "navy": (0.08, 0.12, 0.36),
    "purple": (0.45, 0.20, 0.62),
    "pink": (0.95, 0.55, 0.72),
    "coral": (0.98, 0.45, 0.38),
    "white": (0.94, 0.94, 0.93),
    "black": (0.09, 0.09, 0.10),
    "brown": (0.45, 0.28, 0.15),
    "beige": (0.86, 0.77, 0.62),
    "silver": (0.72, 0.74, 0.77),
    "gold": (0.83, 0.66, 0.25),
    "mint": (0.62, 0.88, 0.76),
    "burgundy": (0.45, 0.06, 0.16),
}

SCENES = ("kitchen", "bathroom", "desk", "outdoor", "cafe")


# ----------------------------------------------------------------------------------------------
# Small drawing helpers
# ----------------------------------------------------------------------------------------------


def _col(c: object) -> np.ndarray:
    return np.clip(np.asarray(c, dtype=F32), 0.0, 1.0)


def _jitter(rng: Rng, c: np.ndarray, amount: float) -> np.ndarray:
    return _col(np.asarray(c, F32) + rng.normal(0.0, amount, 3).astype(F32))


def _lab(c: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(c, F32).reshape(1, 1, 3), cv2.COLOR_RGB2Lab).reshape(3)


def _delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def _periodic_noise(rng: Rng, size: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Smooth value noise in [0, 1] that tiles seamlessly (``size`` x ``size``)."""
    cells_x = cells_y if cells_x is None else cells_x
    low = rng.random((cells_y, cells_x)).astype(F32)
    big = cv2.resize(np.tile(low, (3, 3)), (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
    out = big[size : 2 * size, size : 2 * size]
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _poly_mask(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(pts) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m.astype(F32) / 255.0


def _ellipse_mask(
    h: int,
    w: int,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float = 0.0,
    thickness: int = -1,
    arc: tuple[float, float] = (0.0, 360.0),
) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    c = (round(centre[0] * 16), round(centre[1] * 16))
    ax = (max(1, round(axes[0] * 16)), max(1, round(axes[1] * 16)))
    cv2.ellipse(m, c, ax, angle, arc[0], arc[1], 255, thickness, cv2.LINE_AA, shift=4)
    return m.astype(F32) / 255.0


class _Canvas:
    """Premultiplied RGBA painter; drawn at 2x and reduced for an anti-aliased alpha."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.pre = np.zeros((h, w, 3), F32)
        self.a = np.zeros((h, w), F32)

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> None:
        m = mask[..., None]
        self.pre = self.pre * (1.0 - m) + np.asarray(colour, F32) * m
        self.a = self.a * (1.0 - mask) + mask

    def rgba(self, factor: int = 2) -> np.ndarray:
        size = (max(1, self.w // factor), max(1, self.h // factor))
        pre = cv2.resize(self.pre, size, interpolation=cv2.INTER_AREA)
        a = cv2.resize(self.a, size, interpolation=cv2.INTER_AREA)
        rgb = pre / np.maximum(a, 1e-4)[..., None]
        solid = a > 0.05
        fill = rgb[solid].mean(axis=0) if solid.any() else np.full(3, 0.5, F32)
        rgb = np.where((a > 1e-3)[..., None], rgb, fill)
        return np.dstack([np.clip(rgb, 0, 1), np.clip(a, 0, 1)]).astype(F32)


def _cyl_shade(w: int, x0: float, x1: float, highlight: float, strength: float = 1.0) -> np.ndarray:
    """Per-column shading of a vertical cylinder spanning ``x0..x1`` (shape ``(1, w, 1)``)."""
    x = np.arange(w, dtype=F32) + 0.5
    t = np.clip((x - (x0 + x1) / 2) / max((x1 - x0) / 2, 1.0), -1, 1)
    base = 0.55 + 0.45 * np.sqrt(1.0 - t * t)
    spec = 0.45 * np.exp(-(((t - highlight) / 0.13) ** 2))
    shade = 1.0 + strength * (base - 1.0)
    return shade[None, :, None].astype(F32), spec[None, :, None].astype(F32) * strength


def _shaded(colour: np.ndarray, shade: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    s, spec = shade
    return np.clip(np.asarray(colour, F32) * s + spec * 0.8, 0, 1)


def _lathe(cv: _Canvas, profile: list[tuple[float, float]], x0: float, x1: float, y0: float, y1: float):
    """Polygon of a symmetric lathe profile ``(y fraction, half-width fraction)`` in a box."""
    xc, hw = (x0 + x1) / 2, (x1 - x0) / 2
    left = [(xc - r * hw, y0 + f * (y1 - y0)) for f, r in profile]
    right = [(xc + r * hw, y0 + f * (y1 - y0)) for f, r in reversed(profile)]
    return _poly_mask(cv.h, cv.w, np.array(left + right, F32))


def _logo(cv: _Canvas, rng: Rng, cx: float, cy: float, size: float, colour: np.ndarray, clip: np.ndarray):
    kind = rng.integers(0, 4)
    if kind == 0:
        m = _ellipse_mask(cv.h, cv.w, (cx, cy), (size, size))
    elif kind == 1:
        pts = np.array([(cx, cy - size), (cx + size, cy), (cx, cy + size), (cx - size, cy)], F32)
        m = _poly_mask(cv.h, cv.w, pts)
    elif kind == 2:
        m = np.zeros((cv.h, cv.w), F32)
        for k in range(3):
            yy = cy - size + k * size * 0.8
            ln = size * (2.0 - 0.5 * k)
            m = np.maximum(
                m,
                _poly_mask(
                    cv.h,
                    cv.w,
                    np.array(
                        [
                            (cx - ln, yy),
                            (cx + ln, yy),
                            (cx + ln, yy + size * 0.4),
                            (cx - ln, yy + size * 0.4),
                        ],
                        F32,
                    ),
                ),
            )
    else:
        m = _ellipse_mask(cv.h, cv.w, (cx, cy), (size, size), thickness=max(1, int(size * 0.5)))
    cv.paint(m * clip, colour)


# ----------------------------------------------------------------------------------------------
# Products
# ----------------------------------------------------------------------------------------------


@dataclass
class Product:
    """A procedural cut-out and what is known about it in the real world."""

    rgba: np.ndarray  # float32 H x W x 4, straight alpha
    height_m: float
    caption: str
    colour: np.ndarray  # dominant colour of the opaque pixels


@dataclass(frozen=True)
class _Kind:
    noun: str
    materials: tuple[str, ...]
    height_m: tuple[float, float]
    aspect: tuple[float, float]  # width / height of the drawing box


def _draw_bottle(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    neck = rng.uniform(0.22, 0.38)
    shoulder = rng.uniform(0.25, 0.45)
    prof = [
        (0.0, neck * 1.15),
        (0.09, neck * 1.15),
        (0.09, neck),
        (shoulder * 0.55, neck),
        (shoulder, 0.92),
        (shoulder + 0.06, 1.0),
        (0.97, 1.0),
        (1.0, 0.93),
    ]
    body = _lathe(cv, prof[2:], x0, x1, y0, y1)
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.2))
    cv.paint(body, _shaded(main, shade))
    cap = _lathe(cv, [(0.0, neck * 1.15), (0.1, neck * 1.15)], x0, x1, y0, y1)
    cv.paint(cap, _shaded(accent, shade))
    band = np.zeros_like(body)
    ly0, ly1 = y0 + (shoulder + 0.12) * (y1 - y0), y0 + rng.uniform(0.72, 0.9) * (y1 - y0)
    band[int(ly0) : int(ly1)] = 1.0
    label = _col(rng.choice([accent, np.ones(3), np.array([0.95, 0.92, 0.85])]))
    cv.paint(band * body, _shaded(label, shade))
    _logo(cv, rng, (x0 + x1) / 2, (ly0 + ly1) / 2, (x1 - x0) * 0.16, main * 0.8, band * body)


def _draw_jar(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    lid = rng.uniform(0.14, 0.24)
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.2))
    body = _lathe(cv, [(lid, 0.9), (lid + 0.05, 1.0), (0.95, 1.0), (1.0, 0.94)], x0, x1, y0, y1)
    cv.paint(body, _shaded(main, shade))
    cv.paint(_lathe(cv, [(0.0, 0.93), (lid + 0.01, 0.93)], x0, x1, y0, y1), _shaded(accent, shade))
    band = np.zeros_like(body)
    band[int(y0 + (lid + 0.2) * (y1 - y0)) : int(y0 + 0.82 * (y1 - y0))] = 1.0
    cv.paint(band * body, _shaded(_col(rng.choice([np.ones(3), accent])), shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + (lid + 0.51) * (y1 - y0), (x1 - x0) * 0.12, main * 0.7, band * body)


def _draw_tube(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.7)
    body = _lathe(cv, [(0.0, 1.0), (0.06, 1.0), (0.08, 0.96), (0.84, 0.62), (0.86, 0.6)], x0, x1, y0, y1)
    cv.paint(body, _shaded(main, shade))
    cv.paint(_lathe(cv, [(0.84, 0.66), (1.0, 0.66)], x0, x1, y0, y1), _shaded(accent, shade))
    crimp = _lathe(cv, [(0.0, 1.0), (0.06, 1.0)], x0, x1, y0, y1)
    cv.paint(crimp, _shaded(main * 0.85, shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + 0.42 * (y1 - y0), (x1 - x0) * 0.2, accent, body)


def _draw_can(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.1))
    body = _lathe(cv, [(0.0, 0.86), (0.05, 1.0), (0.95, 1.0), (1.0, 0.88)], x0, x1, y0, y1)
    cv.paint(body, _shaded(main, shade))
    metal = _col([0.78, 0.79, 0.8])
    for a, b in ((0.0, 0.05), (0.95, 1.0)):
        cv.paint(_lathe(cv, [(a, 0.88), (b, 0.98)], x0, x1, y0, y1), _shaded(metal, shade))
    stripe = np.zeros_like(body)
    s0 = rng.uniform(0.35, 0.6)
    stripe[int(y0 + s0 * (y1 - y0)) : int(y0 + (s0 + 0.18) * (y1 - y0))] = 1.0
    cv.paint(stripe * body, _shaded(accent, shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + 0.25 * (y1 - y0), (x1 - x0) * 0.18, accent, body)


def _draw_box(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    side = rng.uniform(0.18, 0.35) * (x1 - x0)
    top = rng.uniform(0.06, 0.14) * (y1 - y0)
    right = rng.random() < 0.5
    fx0, fx1 = (x0, x1 - side) if right else (x0 + side, x1)
    front = _poly_mask(cv.h, cv.w, np.array([(fx0, y0 + top), (fx1, y0 + top), (fx1, y1), (fx0, y1)], F32))
    if right:
        sp = [(fx1, y0 + top), (x1, y0), (x1, y1 - top), (fx1, y1)]
        tp = [(fx0, y0 + top), (x0 + side, y0), (x1, y0), (fx1, y0 + top)]
    else:
        sp = [(x0, y0), (fx0, y0 + top), (fx0, y1), (x0, y1 - top)]
        tp = [(x0, y0), (x1 - side, y0), (fx1, y0 + top), (fx0, y0 + top)]
    cv.paint(front, main * rng.uniform(0.9, 1.0))
    cv.paint(_poly_mask(cv.h, cv.w, np.array(sp, F32)), main * rng.uniform(0.55, 0.7))
    cv.paint(_poly_mask(cv.h, cv.w, np.array(tp, F32)), _col(main * 1.15 + 0.05))
    band = np.zeros_like(front)
    b0 = rng.uniform(0.45, 0.7)
    band[int(y0 + b0 * (y1 - y0)) : int(y0 + (b0 + 0.12) * (y1 - y0))] = 1.0
    cv.paint(band * front, accent)
    _logo(cv, rng, (fx0 + fx1) / 2, y0 + 0.32 * (y1 - y0), (fx1 - fx0) * 0.16, accent, front)


def _draw_handbag(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    body_top = y0 + rng.uniform(0.32, 0.45) * h
    inset = rng.uniform(0.05, 0.15) * w
    handle = _ellipse_mask(
        cv.h,
        cv.w,
        ((x0 + x1) / 2, body_top),
        (w * 0.28, body_top - y0 - 2),
        thickness=max(2, int(w * 0.05)),
        arc=(180, 360),
    )
    cv.paint(handle, main * 0.75)
    body = _poly_mask(
        cv.h, cv.w, np.array([(x0 + inset, body_top), (x1 - inset, body_top), (x1, y1), (x0, y1)], F32)
    )
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.45)
    cv.paint(body, _shaded(main, shade))
    flap_h = rng.uniform(0.25, 0.45) * (y1 - body_top)
    flap = _poly_mask(
        cv.h,
        cv.w,
        np.array(
            [
                (x0 + inset, body_top),
                (x1 - inset, body_top),
                (x1 - inset * 0.6, body_top + flap_h),
                (x0 + inset * 0.6, body_top + flap_h),
            ],
            F32,
        ),
    )
    cv.paint(flap, _shaded(main * 0.85, shade))
    cv.paint(
        _ellipse_mask(cv.h, cv.w, ((x0 + x1) / 2, body_top + flap_h), (w * 0.05, w * 0.04)),
        _col([0.85, 0.7, 0.3]),
    )


def _draw_watch(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    xc, yc = (x0 + x1) / 2, y0 + h / 2
    strap = _poly_mask(
        cv.h,
        cv.w,
        np.array([(xc - w * 0.3, y0), (xc + w * 0.3, y0), (xc + w * 0.3, y1), (xc - w * 0.3, y1)], F32),
    )
    cv.paint(strap, _shaded(main, _cyl_shade(cv.w, xc - w * 0.3, xc + w * 0.3, -0.3, 0.5)))
    case = _col(rng.choice([[0.78, 0.79, 0.8], [0.85, 0.7, 0.32], [0.15, 0.15, 0.16]]))
    r = w * 0.5
    cv.paint(_ellipse_mask(cv.h, cv.w, (xc, yc), (r, r)), case)
    dial = _col(rng.choice([np.ones(3) * 0.95, np.ones(3) * 0.08, accent]))
    cv.paint(_ellipse_mask(cv.h, cv.w, (xc, yc), (r * 0.8, r * 0.8)), dial)
    hand = _col(1.0 - dial)
    for ang, ln in ((rng.uniform(0, 6.28), 0.65), (rng.uniform(0, 6.28), 0.45)):
        m = np.zeros((cv.h, cv.w), np.uint8)
        p = (int((xc + np.cos(ang) * r * ln) * 16), int((yc + np.sin(ang) * r * ln) * 16))
        cv2.line(m, (int(xc * 16), int(yc * 16)), p, 255, max(1, int(r * 0.07)), cv2.LINE_AA, shift=4)
        cv.paint(m.astype(F32) / 255.0, hand)


def _draw_mug(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w = x1 - x0
    bx1 = x1 - w * 0.22
    handle = _ellipse_mask(
        cv.h, cv.w, (bx1, (y0 + y1) / 2), (w * 0.18, (y1 - y0) * 0.25), thickness=max(2, int(w * 0.07))
    )
    cv.paint(handle, main * 0.8)
    shade = _cyl_shade(cv.w, x0, bx1, rng.uniform(-0.6, -0.2))
    body = _lathe(cv, [(0.0, 1.0), (0.95, 1.0), (1.0, 0.95)], x0, bx1, y0, y1)
    cv.paint(body, _shaded(main, shade))
    cv.paint(_ellipse_mask(cv.h, cv.w, ((x0 + bx1) / 2, y0 + 2), ((bx1 - x0) / 2, 2.5)), main * 0.5)
    _logo(cv, rng, (x0 + bx1) / 2, (y0 + y1) / 2, w * 0.13, accent, body)


def _draw_plant(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    pot_top = y0 + rng.uniform(0.5, 0.65) * h
    xc = (x0 + x1) / 2
    leaf = _col(rng.choice([[0.2, 0.5, 0.2], [0.3, 0.6, 0.25], [0.15, 0.4, 0.25]]))
    for _ in range(int(rng.integers(5, 10))):
        ang = rng.uniform(-60, 60)
        ln = rng.uniform(0.25, 0.5) * h
        cx = xc + np.sin(np.radians(ang)) * ln * 0.5
        cy = pot_top - np.cos(np.radians(ang)) * ln * 0.5
        m = _ellipse_mask(cv.h, cv.w, (cx, cy), (ln * 0.5, w * rng.uniform(0.08, 0.14)), angle=ang + 90)
        cv.paint(m, _jitter(rng, leaf, 0.05) * rng.uniform(0.7, 1.1))
    shade = _cyl_shade(cv.w, x0 + w * 0.15, x1 - w * 0.15, -0.4)
    pot = _poly_mask(
        cv.h,
        cv.w,
        np.array(
            [(x0 + w * 0.15, pot_top), (x1 - w * 0.15, pot_top), (x1 - w * 0.25, y1), (x0 + w * 0.25, y1)],
            F32,
        ),
    )
    cv.paint(pot, _shaded(main, shade))
    rim = np.zeros_like(pot)
    rim[int(pot_top) : int(pot_top + h * 0.06)] = 1.0
    cv.paint(rim * pot, _shaded(accent, shade))


def _draw_speaker(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.8)
    body = _lathe(cv, [(0.0, 0.85), (0.04, 1.0), (0.96, 1.0), (1.0, 0.85)], x0, x1, y0, y1)
    cv.paint(body, _shaded(main, shade))
    yy, xx = np.mgrid[0 : cv.h, 0 : cv.w]
    step = max(4, int((x1 - x0) / 9))
    dots = (((yy % step) < step * 0.45) & ((xx % step) < step * 0.45)).astype(F32)
    grille = np.zeros_like(body)
    grille[int(y0 + 0.12 * (y1 - y0)) : int(y0 + 0.8 * (y1 - y0))] = 1.0
    cv.paint(dots * grille * body * 0.5, main * 0.4)
    cv.paint(_lathe(cv, [(0.86, 1.0), (0.96, 1.0)], x0, x1, y0, y1), _shaded(accent, shade))


def _draw_shoe(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    flip = rng.random() < 0.5

    def fx(f: float) -> float:
        return x1 - f * w if flip else x0 + f * w

    sole_h = rng.uniform(0.15, 0.25) * h
    upper = np.array(
        [
            (fx(0.02), y1 - sole_h),
            (fx(0.02), y0 + 0.1 * h),
            (fx(0.25), y0),
            (fx(0.4), y0 + 0.3 * h),
            (fx(0.75), y0 + 0.45 * h),
            (fx(0.97), y0 + 0.62 * h),
            (fx(1.0), y1 - sole_h),
        ],
        F32,
    )
    cv.paint(_poly_mask(cv.h, cv.w, upper), main)
    sole = np.array([(fx(0.0), y1 - sole_h), (fx(1.0), y1 - sole_h), (fx(0.98), y1), (fx(0.02), y1)], F32)
    cv.paint(_poly_mask(cv.h, cv.w, sole), _col(rng.choice([np.ones(3) * 0.93, np.ones(3) * 0.12, accent])))
    for k in range(4):
        f = 0.38 + k * 0.08
        m = np.zeros((cv.h, cv.w), np.uint8)
        a = (int(fx(f) * 16), int((y0 + (0.3 + k * 0.04) * h) * 16))
        b = (int(fx(f + 0.05) * 16), int((y0 + (0.4 + k * 0.04) * h) * 16))
        cv2.line(m, a, b, 255, max(1, int(h * 0.04)), cv2.LINE_AA, shift=4)
        cv.paint(m.astype(F32) / 255.0, accent)
    stripe = np.array(
        [(fx(0.3), y1 - sole_h), (fx(0.5), y0 + 0.45 * h), (fx(0.6), y0 + 0.5 * h), (fx(0.45), y1 - sole_h)],
        F32,
    )
    cv.paint(_poly_mask(cv.h, cv.w, stripe), accent)


def _draw_perfume(cv: _Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cap_h = rng.uniform(0.2, 0.32) * h
    cap = _poly_mask(
        cv.h,
        cv.w,
        np.array(
            [(x0 + w * 0.3, y0), (x1 - w * 0.3, y0), (x1 - w * 0.3, y0 + cap_h), (x0 + w * 0.3, y0 + cap_h)],
            F32,
        ),
    )
    cv.paint(cap, _shaded(accent, _cyl_shade(cv.w, x0 + w * 0.3, x1 - w * 0.3, -0.4)))
    glass = _poly_mask(
        cv.h, cv.w, np.array([(x0, y0 + cap_h + 2), (x1, y0 + cap_h + 2), (x1, y1), (x0, y1)], F32)
    )
    shade = _cyl_shade(cv.w, x0, x1, rng.uniform(-0.7, -0.3), 0.5)
    cv.paint(glass, _shaded(_col(main * 0.8 + 0.15), shade))
    inner = _poly_mask(
        cv.h,
        cv.w,
        np.array(
            [
                (x0 + w * 0.1, y0 + cap_h + h * 0.12),
                (x1 - w * 0.1, y0 + cap_h + h * 0.12),
                (x1 - w * 0.1, y1 - h * 0.08),
                (x0 + w * 0.1, y1 - h * 0.08),
            ],
            F32,
        ),
    )
    cv.paint(inner, _shaded(main, shade))
    _logo(cv, rng, (x0 + x1) / 2, (y0 + cap_h + y1) / 2, w * 0.12, _col(np.ones(3) * 0.95), inner)


_KINDS: dict[str, tuple[_Kind, Callable[..., None]]] = {
    "bottle": (_Kind("bottle", ("glass", "plastic"), (0.22, 0.32), (0.26, 0.36)), _draw_bottle),
    "jar": (_Kind("jar", ("glass", "ceramic"), (0.08, 0.14), (0.65, 0.9)), _draw_jar),
    "tube": (_Kind("cosmetics tube", ("plastic",), (0.13, 0.19), (0.25, 0.32)), _draw_tube),
    "can": (_Kind("drink can", ("aluminium",), (0.115, 0.16), (0.42, 0.58)), _draw_can),
    "box": (_Kind("gift box", ("cardboard", "paper"), (0.08, 0.3), (0.5, 1.15)), _draw_box),
    "handbag": (_Kind("handbag", ("leather", "canvas"), (0.22, 0.32), (0.85, 1.25)), _draw_handbag),
    "watch": (_Kind("wristwatch", ("leather", "steel"), (0.08, 0.1), (0.5, 0.6)), _draw_watch),
    "mug": (_Kind("mug", ("ceramic",), (0.09, 0.11), (1.0, 1.2)), _draw_mug),
    "plant": (_Kind("pot plant", ("ceramic", "terracotta"), (0.25, 0.45), (0.55, 0.8)), _draw_plant),
    "speaker": (_Kind("smart speaker", ("fabric",), (0.15, 0.25), (0.45, 0.65)), _draw_speaker),
    "shoe": (_Kind("sneaker", ("leather", "canvas"), (0.09, 0.13), (2.1, 2.6)), _draw_shoe),
    "perfume": (_Kind("perfume bottle", ("glass",), (0.1, 0.15), (0.6, 0.85)), _draw_perfume),
}


def _render_product(
    rng: Rng, kind: str, aspect: float, colour_name: str, accent: np.ndarray, height_m: float
) -> Product:
    """Draw one cut-out of ``kind`` at its own resolution (110-200 px high)."""
    spec, draw = _KINDS[kind]
    res_h = int(rng.integers(110, 201))
    h2 = res_h * 2
    w2 = round(h2 * aspect) + 8
    cv = _Canvas(h2 + 4, w2)
    main = _jitter(rng, np.array(PRODUCT_COLOURS[colour_name]), 0.03)
    draw(cv, rng, main, accent, (4.0, 4.0, float(w2 - 4), float(h2 + 2)))
    rgba = cv.rgba(2)
    # Trim to the opaque bounding box so the base is the bottom row and nothing floats in padding.
    ys, xs = np.nonzero(rgba[..., 3] > 0.02)
    rgba = rgba[ys.min() : ys.max() + 1, max(0, xs.min() - 1) : xs.max() + 2]
    solid = rgba[..., 3] > 0.5
    colour = rgba[..., :3][solid].mean(axis=0) if solid.any() else main
    caption = f"a {colour_name} {rng.choice(spec.materials)} {spec.noun}"
    return Product(rgba=rgba.astype(F32), height_m=height_m, caption=caption, colour=colour.astype(F32))


def _resize_rgba(rgba: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize with premultiplied alpha (no dark fringes); the only change a pasted product gets."""
    interp = cv2.INTER_AREA if h < rgba.shape[0] else cv2.INTER_LINEAR
    a = rgba[..., 3:4]
    pre = cv2.resize(rgba[..., :3] * a, (w, h), interpolation=interp)
    ar = cv2.resize(rgba[..., 3], (w, h), interpolation=interp)
    rgb = pre / np.maximum(ar, 1e-4)[..., None]
    return np.dstack([np.clip(rgb, 0, 1), np.clip(ar, 0, 1)]).astype(F32)


# ----------------------------------------------------------------------------------------------
# Scene geometry and backgrounds
# ----------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """Camera and layout: rows below ``horizon`` are the ground plane, ``cam_h`` metres below the eye.

    ``ppm(y) = (y - horizon) / cam_h`` pixels per metre at ground row ``y``. The wall stands at
    row ``wall_y``; the surface's front edge is at ``edge_y`` (beyond the frame when not visible).
    """

    kind: str
    size: int
    horizon: float
    wall_y: float
    edge_y: float
    focal: float
    cam_h: float
    rgb: np.ndarray
    depth: np.ndarray

    def ppm(self, y: float) -> float:
        return max(y - self.horizon, 1e-3) / self.cam_h

    def depth_at(self, y: float) -> float:
        return self.focal * self.cam_h / max(y - self.horizon, 1e-3)

    def project(self, x_m: float, z_m: float) -> tuple[float, float]:
        return self.size / 2 + x_m * self.focal / z_m, self.horizon + self.focal * self.cam_h / z_m

    def x_m(self, x: float, y: float) -> float:
        return (x - self.size / 2) * self.depth_at(y) / self.focal


def _wood_texture(rng: Rng, t: int, c1: np.ndarray, c2: np.ndarray, planks: int, gaps: bool) -> np.ndarray:
    grain = _periodic_noise(rng, t, 48, 3)
    fine = _periodic_noise(rng, t, 160, 6)
    v = np.arange(t)[:, None]
    plank = (v * planks // t) % planks
    tint = (1.0 + rng.normal(0, 0.08, planks)).astype(F32)[plank]
    g = (0.65 * grain + 0.35 * fine)[..., None]
    tex = (c1 * (1 - g) + c2 * g) * tint[..., None] * np.ones((1, t, 1), F32)
    if gaps:
        edge = ((v * planks) % t) < max(2, t // (planks * 12))
        tex = np.where(edge[..., None], tex * 0.35, tex)
    return tex.astype(F32)


def _surface_texture(
    rng: Rng, kind: str, pal: dict[str, np.ndarray], t: int = 256
) -> tuple[np.ndarray, float, bool]:
    """A seamless ground texture, the metres one tile spans, and whether to haze the distance."""
    c1, c2 = pal["surface"], pal["surface2"]
    style = pal["surface_style"]
    if style == "wood":
        planks = int(rng.integers(4, 9))
        tex = _wood_texture(rng, t, c1, c2, planks, gaps=False)
        return (
            (tex if rng.random() < 0.5 else tex.transpose(1, 0, 2).copy()),
            planks * rng.uniform(0.09, 0.16),
            False,
        )
    if style == "deck":
        planks = int(rng.integers(5, 9))
        return _wood_texture(rng, t, c1, c2, planks, gaps=True), planks * rng.uniform(0.1, 0.15), True
    if style == "marble":
        n = _periodic_noise(rng, t, 6)
        veins = np.abs(np.sin((np.arange(t)[None, :] / t * 4 * np.pi) + 9.0 * n))
        v = np.clip(1.0 - veins * 6, 0, 1)[..., None]
        base = c1 * (0.93 + 0.07 * _periodic_noise(rng, t, 32)[..., None])
        return (base * (1 - 0.6 * v) + c2 * 0.6 * v).astype(F32), rng.uniform(0.6, 1.2), False
    if style == "tiles":
        n = int(rng.integers(3, 7))
        yy, xx = np.mgrid[0:t, 0:t]
        grout = (((yy * n) % t) < t // (n * 14) + 1) | (((xx * n) % t) < t // (n * 14) + 1)
        tint = 1.0 + 0.05 * (_periodic_noise(rng, t, n * 2)[..., None] - 0.5)
        tex = np.where(grout[..., None], c2, c1 * tint)
        return tex.astype(F32), n * rng.uniform(0.1, 0.3), False
    if style == "grass":
        coarse = _periodic_noise(rng, t, 8)[..., None]
        fine = _periodic_noise(rng, t, 128)[..., None]
        blades = _periodic_noise(rng, t, 96, 24)[..., None]
        tex = c1 * (0.75 + 0.3 * coarse) * (0.8 + 0.35 * fine) * (0.85 + 0.3 * blades)
        tex = tex * (1 - 0.2 * coarse) + c2 * 0.2 * coarse
        return tex.astype(F32), rng.uniform(1.0, 2.5), True
    if style == "sand":
        fine = _periodic_noise(rng, t, 192)[..., None]
        rip = 0.5 + 0.5 * np.sin(
            np.arange(t)[:, None, None] / t * 2 * np.pi * 9 + 4 * _periodic_noise(rng, t, 5)[..., None]
        )
        tex = c1 * (0.88 + 0.14 * fine) * (0.94 + 0.08 * rip)
        return tex.astype(F32), rng.uniform(1.0, 3.0), True
    if style == "gingham":
        n = int(rng.integers(6, 14))
        yy, xx = np.mgrid[0:t, 0:t]
        a = ((yy * n // t) % 2).astype(F32)[..., None]
        b = ((xx * n // t) % 2).astype(F32)[..., None]
        tex = c2 * (1 - 0.5 * (a + b)) + c1 * 0.5 * (a + b)
        return tex.astype(F32), n * rng.uniform(0.02, 0.04), False
    # plain laminate / painted shelf
    tex = c1 * (0.96 + 0.05 * _periodic_noise(rng, t, 64)[..., None])
    return tex.astype(F32), rng.uniform(0.5, 1.0), False


def _palette(rng: Rng, kind: str) -> dict:
    """Scene colours and material styles for one scene family."""
    woods = [(0.55, 0.36, 0.2), (0.72, 0.55, 0.36), (0.38, 0.24, 0.14), (0.8, 0.68, 0.5), (0.6, 0.5, 0.42)]
    stones = [(0.85, 0.85, 0.83), (0.25, 0.25, 0.27), (0.6, 0.58, 0.55), (0.9, 0.88, 0.82), (0.45, 0.42, 0.4)]
    paints = [
        (0.93, 0.91, 0.86),
        (0.78, 0.84, 0.82),
        (0.88, 0.8, 0.7),
        (0.6, 0.68, 0.75),
        (0.35, 0.4, 0.38),
        (0.85, 0.72, 0.6),
        (0.96, 0.96, 0.96),
    ]
    tiles = [
        (0.95, 0.95, 0.94),
        (0.55, 0.72, 0.7),
        (0.3, 0.42, 0.55),
        (0.85, 0.82, 0.7),
        (0.2, 0.22, 0.24),
        (0.72, 0.8, 0.88),
    ]
    pick = lambda lst, j=0.04: _jitter(rng, np.array(lst[int(rng.integers(len(lst)))]), j)  # noqa: E731
    pal: dict = {}
    if kind == "kitchen":
        style = str(rng.choice(["marble", "wood", "plain", "tiles"]))
        s = pick(stones if style != "wood" else woods)
        pal.update(
            surface=s,
            surface2=_jitter(rng, s * 0.8, 0.03),
            surface_style=style,
            wall=pick(tiles),
            wall2=pick(paints),
            cabinet=pick(woods + paints),
        )
    elif kind == "bathroom":
        style = str(rng.choice(["plain", "wood", "marble"]))
        s = pick(paints if style == "plain" else (woods if style == "wood" else stones))
        pal.update(
            surface=s,
            surface2=_jitter(rng, s * 0.85, 0.03),
            surface_style=style,
            wall=pick(tiles),
            wall2=pick(paints),
            cabinet=pick(paints),
        )
    elif kind == "desk":
        style = str(rng.choice(["wood", "plain"]))
        s = pick(woods if style == "wood" else paints)
        pal.update(
            surface=s,
            surface2=_jitter(rng, s * 0.75, 0.03),
            surface_style=style,
            wall=pick(paints),
            wall2=pick(paints),
            cabinet=_col(np.ones(3) * rng.uniform(0.08, 0.25)),
        )
    elif kind == "outdoor":
        style = str(rng.choice(["grass", "sand", "deck"]))
        s = pick(
            {
                "grass": [(0.3, 0.52, 0.18), (0.4, 0.58, 0.22), (0.25, 0.42, 0.15)],
                "sand": [(0.88, 0.78, 0.58), (0.8, 0.7, 0.52)],
                "deck": woods,
            }[style]
        )
        pal.update(
            surface=s,
            surface2=_jitter(rng, s * 0.75, 0.04),
            surface_style=style,
            wall=pick([(0.45, 0.65, 0.92), (0.6, 0.75, 0.95), (0.8, 0.85, 0.92), (0.95, 0.75, 0.55)]),
            wall2=_col([0.96, 0.96, 0.98]),
            cabinet=pick([(0.15, 0.3, 0.15), (0.25, 0.35, 0.2)]),
        )
    else:
        style = str(rng.choice(["wood", "marble", "gingham"]))
        s = pick(woods if style == "wood" else (stones if style == "marble" else tiles + paints))
        s2 = _jitter(rng, s * 0.8, 0.03) if style != "gingham" else _col([0.97, 0.97, 0.95])
        pal.update(
            surface=s,
            surface2=s2,
            surface_style=style,
            wall=pick([(0.3, 0.2, 0.14), (0.2, 0.18, 0.16), (0.45, 0.35, 0.25), (0.55, 0.5, 0.45)]),
            wall2=pick([(1.0, 0.85, 0.55), (1.0, 0.95, 0.8)]),
            cabinet=pick(woods),
        )
    pal["wall_style"] = {
        "kitchen": str(rng.choice(["subway", "square"])),
        "bathroom": str(rng.choice(["square", "mirror"])),
        "desk": str(rng.choice(["window", "frame", "plain"])),
        "outdoor": "sky",
        "cafe": "bokeh",
    }[kind]
    return pal


def _matched_palette(rng: Rng, pal: dict, product: Product, where: str, closeness: float) -> dict:
    """Indistinctiveness: take the product's colours into the wall and/or the surface."""
    p = product.colour
    solid = product.rgba[..., 3] > 0.5
    pix = product.rgba[..., :3][solid]
    second = pix[rng.integers(len(pix))] if len(pix) else p
    pal = dict(pal)
    if where in ("wall", "both"):
        pal["wall"] = _jitter(rng, p, closeness)
        pal["wall2"] = _jitter(rng, second, closeness)
        if pal["wall_style"] in ("window", "bokeh", "mirror", "frame") and rng.random() < 0.6:
            pal["wall_style"] = "plain"
    if where in ("surface", "both"):
        pal["surface"] = _jitter(rng, p, closeness)
        pal["surface2"] = _jitter(rng, second * 0.5 + p * 0.5, closeness)
        if pal["surface_style"] in ("grass", "gingham"):
            pal["surface_style"] = str(rng.choice(["plain", "wood", "tiles"]))
    return pal


def _render_ground(rng: Rng, sc: Scene, pal: dict) -> None:
    s = sc.size
    tex, tile_m, haze = _surface_texture(rng, sc.kind, pal)
    t = tex.shape[0]
    ss = 2
    y = (np.arange(s * ss, dtype=F32) + 0.5) / ss
    x = (np.arange(s * ss, dtype=F32) + 0.5) / ss
    dy = np.maximum(y - sc.horizon, 1e-2)
    z = np.minimum(sc.focal * sc.cam_h / dy, 400.0)
    xm = (x[None, :] - s / 2) * z[:, None] / sc.focal
    off_u, off_v = rng.uniform(0, t, 2)
    mu = (xm / tile_m * t + off_u).astype(F32) % t
    mv = np.broadcast_to((z / tile_m * t + off_v)[:, None] % t, mu.shape).astype(F32)
    ground = cv2.remap(tex, mu, np.ascontiguousarray(mv), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    ground = cv2.resize(ground, (s, s), interpolation=cv2.INTER_AREA)
    zr = np.minimum(sc.focal * sc.cam_h / np.maximum(np.arange(s, dtype=F32) + 0.5 - sc.horizon, 1e-2), 400.0)
    zp = sc.depth_at(sc.edge_y if sc.edge_y < s else s) * 3.0
    far = (
        np.clip((zr - zp) / (zp * 6 + 1e-3), 0, 1)
        if not haze
        else 1 - np.exp(-zr / (zp * rng.uniform(4, 12)))
    )
    mean = tex.reshape(-1, 3).mean(axis=0)
    hz = pal["wall"] * 0.6 + 0.4 if haze else mean
    ground = ground * (1 - 0.85 * far[:, None, None]) + hz * 0.85 * far[:, None, None]
    # light falloff towards the back
    ground = ground * (1.0 - 0.12 * far[:, None, None])
    rows = np.arange(s)[:, None] + 0.5 > sc.horizon
    sc.rgb = np.where(rows[..., None], ground, sc.rgb).astype(F32)
    sc.depth = np.where(rows, zr[:, None], sc.depth).astype(F32)


def _render_wall(rng: Rng, sc: Scene, pal: dict) -> None:
    s = sc.size
    top = int(np.clip(np.ceil(sc.wall_y), 0, s))
    if top <= 0:
        return
    ys, xs = np.mgrid[0:top, 0:s].astype(F32)
    style = pal["wall_style"]
    c1, c2 = pal["wall"], pal["wall2"]
    if style == "sky":
        g = (ys / max(sc.horizon, 1.0))[..., None]
        wall = c1 * (1 - 0.5 * g) + c2 * 0.5 * g
        clouds = _periodic_noise(rng, 128, 5, 9)
        clouds = cv2.resize(clouds, (s, top), interpolation=cv2.INTER_LINEAR)
        cl = np.clip((clouds - rng.uniform(0.45, 0.75)) * 3.0, 0, 1)[..., None] * (1 - 0.7 * g)
        wall = wall * (1 - cl) + np.array([0.97, 0.97, 0.98], F32) * cl
        # distant tree line / hills sitting on the horizon
        hx = np.arange(s, dtype=F32)
        bumps = cv2.resize(rng.random((1, 12)).astype(F32), (s, 1), interpolation=cv2.INTER_CUBIC)[0]
        fine = cv2.resize(rng.random((1, 48)).astype(F32), (s, 1), interpolation=cv2.INTER_CUBIC)[0]
        height = s * rng.uniform(0.02, 0.09) * (0.6 + 0.5 * bumps + 0.2 * fine)
        line = sc.horizon - height[None, :]
        trees = (ys >= line) & (ys <= sc.horizon)
        tcol = _jitter(rng, pal["cabinet"], 0.03) * (0.8 + 0.3 * (hx / s))[None, :, None]
        tcol = tcol * 0.7 + np.array([0.6, 0.7, 0.8], F32) * 0.3
        wall = np.where(trees[..., None], tcol, wall)
        sc.rgb[:top] = wall
        sc.depth[:top] = np.float32(1e4)
        return
    ppm = sc.ppm(sc.wall_y)
    xm = (xs - s / 2) / ppm
    hm = (sc.wall_y - ys) / ppm
    wall = np.broadcast_to(c1, (top, s, 3)).copy()
    if style in ("subway", "square"):
        tw = rng.uniform(0.1, 0.2) if style == "square" else rng.uniform(0.14, 0.22)
        th = tw if style == "square" else tw / 2
        row = np.floor(hm / th)
        xo = xm + (row % 2) * tw / 2 if style == "subway" else xm
        gw = rng.uniform(0.004, 0.008)
        grout = ((hm % th) < gw) | ((xo % tw) < gw)
        shine = 1.0 + 0.04 * np.sin(row * 1.7 + np.floor(xo / tw) * 2.3)[..., None]
        wall = np.where(grout[..., None], c2 * 0.85, c1 * shine)
    elif style == "mirror":
        x0m, x1m = sorted(rng.uniform(-0.8, 0.8, 2))
        x1m = max(x1m, x0m + 0.4)
        inside = (xm > x0m) & (xm < x1m) & (hm > rng.uniform(0.15, 0.35))
        refl = np.array([0.78, 0.84, 0.88], F32) * (0.85 + 0.25 * (ys / max(top, 1)))[..., None]
        wall = np.where(inside[..., None], refl, wall)
    elif style == "window":
        x0m = rng.uniform(-0.9, 0.3)
        x1m = x0m + rng.uniform(0.5, 1.2)
        h0 = rng.uniform(0.25, 0.5)
        inside = (xm > x0m) & (xm < x1m) & (hm > h0)
        light = np.array([0.92, 0.95, 1.0], F32) * rng.uniform(0.95, 1.1)
        mull = (np.abs(xm - (x0m + x1m) / 2) < 0.025) | (np.abs(hm - h0 - 0.5) < 0.02)
        wall = np.where(inside[..., None], np.where(mull[..., None], c2, light), wall)
    elif style == "frame":
        x0m = rng.uniform(-0.6, 0.2)
        x1m, h0 = x0m + rng.uniform(0.25, 0.6), rng.uniform(0.15, 0.35)
        h1 = h0 + rng.uniform(0.25, 0.5)
        outer = (xm > x0m) & (xm < x1m) & (hm > h0) & (hm < h1)
        inner = (xm > x0m + 0.03) & (xm < x1m - 0.03) & (hm > h0 + 0.03) & (hm < h1 - 0.03)
        art = _jitter(rng, c2 * 0.6 + np.array([0.2, 0.3, 0.4], F32), 0.1)
        wall = np.where(outer[..., None], np.where(inner[..., None], art, c2 * 0.3), wall)
    elif style == "bokeh":
        g = (ys / max(top, 1))[..., None]
        wall = c1 * (0.7 + 0.5 * g)
        layer = np.zeros((top, s), F32)
        for _ in range(int(rng.integers(6, 16))):
            cx, cy = rng.uniform(0, s), rng.uniform(0, top * 0.8)
            r = rng.uniform(0.02, 0.06) * s
            layer = np.maximum(layer, rng.uniform(0.4, 1.0) * (((xs - cx) ** 2 + (ys - cy) ** 2) < r * r))
        layer = cv2.GaussianBlur(layer, (0, 0), 0.01 * s + 0.5)
        wall = wall * (1 - 0.7 * layer[..., None]) + c2 * 0.7 * layer[..., None]
    # soft shading: darker towards the top of the wall and into the corner with the surface
    shade = 1.0 - 0.15 * np.clip(hm / 2.0, 0, 1) - 0.12 * np.exp(-hm / 0.04)
    sc.rgb[:top] = (wall * shade[..., None]).astype(F32)
    sc.depth[:top] = np.float32(sc.depth_at(sc.wall_y))


def _render_side_end(sc: Scene, pal: dict, x_end: float, y_ref: float, sign: int) -> None:
    """The surface stops at ``x_end`` (at row ``y_ref``); beyond it (``sign`` +1: right) a drop."""
    s = sc.size
    x_m = (x_end - s / 2) * sc.cam_h / max(y_ref - sc.horizon, 1e-3)
    rows = np.arange(s, dtype=F32) + 0.5
    xb = s / 2 + x_m * np.maximum(rows - sc.horizon, 0) / sc.cam_h
    xs = np.arange(s, dtype=F32)[None, :] + 0.5
    beyond = (sign * (xs - xb[:, None]) > 0) & (rows[:, None] > max(sc.wall_y, sc.horizon))
    g = np.clip((rows - sc.wall_y) / max(s - sc.wall_y, 1.0), 0, 1)[:, None, None]
    void = pal["wall"] * (0.55 - 0.25 * g) + pal["cabinet"] * 0.1
    lip = beyond & ~np.roll(beyond, 2 * sign, axis=1)
    sc.rgb = np.where(beyond[..., None], void, sc.rgb).astype(F32)
    sc.rgb = np.where(lip[..., None], _col(pal["surface"] * 1.1), sc.rgb).astype(F32)
    sc.depth = np.where(beyond, np.float32(sc.depth_at(sc.wall_y) * 1.5), sc.depth).astype(F32)


def _render_edge(rng: Rng, sc: Scene, pal: dict) -> None:
    """Front edge of a counter, shelf or table, and what is seen below it."""
    s = sc.size
    if sc.kind == "outdoor" or sc.edge_y >= s - 1:
        return
    e = round(sc.edge_y)
    ppm = sc.ppm(sc.edge_y)
    lip = max(1, round(ppm * rng.uniform(0.015, 0.04)))
    sc.rgb[e : e + lip] = _col(pal["surface"] * rng.uniform(0.75, 1.1))
    below = sc.rgb[e + lip :]
    if below.shape[0] == 0:
        return
    if sc.kind in ("kitchen", "bathroom"):
        cab = pal["cabinet"] * rng.uniform(0.6, 0.9)
        below[:] = cab
        xs = np.arange(s)
        door = ((xs - s / 2) / ppm) % rng.uniform(0.35, 0.6) < 0.012
        below[:, door] = cab * 0.6
        hy = min(below.shape[0] - 1, int(ppm * 0.05))
        hx = (((xs - s / 2) / ppm) % 0.45 > 0.15) & (((xs - s / 2) / ppm) % 0.45 < 0.3)
        below[hy : hy + max(1, int(ppm * 0.012)), hx] = _col([0.75, 0.75, 0.76])
    else:
        floor = pal["cabinet"] * 0.5 + 0.05
        g = np.linspace(0.6, 1.0, below.shape[0], dtype=F32)[:, None, None]
        below[:] = floor * g
        below[:] = cv2.GaussianBlur(below, (0, 0), 1.5)
    sc.depth[e:] = np.float32(sc.depth_at(sc.edge_y))


# ----------------------------------------------------------------------------------------------
# Reference objects (real sizes) and shadows
# ----------------------------------------------------------------------------------------------

# noun -> (height m, width m, scenes)
_REFS: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "mug": (0.095, 0.11, ("kitchen", "desk", "cafe")),
    "apple": (0.08, 0.08, ("kitchen", "cafe", "outdoor")),
    "plant": (0.32, 0.2, ("kitchen", "bathroom", "desk", "cafe")),
    "bottle": (0.28, 0.08, ("kitchen", "cafe", "bathroom")),
    "jar": (0.12, 0.1, ("kitchen", "bathroom", "cafe")),
    "books": (0.1, 0.24, ("desk", "bathroom")),
    "laptop": (0.23, 0.33, ("desk", "cafe")),
    "candle": (0.1, 0.08, ("bathroom", "cafe")),
    "towel": (0.14, 0.3, ("bathroom",)),
    "glass": (0.13, 0.075, ("cafe", "kitchen")),
    "stone": (0.09, 0.16, ("outdoor",)),
    "flowers": (0.35, 0.25, ("outdoor",)),
    "ball": (0.22, 0.22, ("outdoor",)),
    "chair": (0.85, 0.48, ("outdoor", "cafe")),
    "bush": (0.7, 0.9, ("outdoor",)),
}
SMALL_REFS = ("mug", "apple", "jar", "candle", "glass", "stone", "bottle", "books")
LARGE_REFS = ("plant", "laptop", "chair", "bush", "flowers", "ball", "towel", "books", "bottle")


def _draw_ref(rng: Rng, noun: str, h_px: float, w_px: float) -> np.ndarray:
    """An RGBA drawing of a reference object, ``h_px`` x ``w_px`` pixels."""
    h2, w2 = max(4, round(h_px * 2)), max(4, round(w_px * 2))
    cv = _Canvas(h2, w2)
    box = (0.5, 0.5, w2 - 0.5, float(h2))
    anyc = _col(rng.uniform(0.15, 0.95, 3))
    if noun == "mug":
        _draw_mug(cv, rng, anyc, _col(1 - anyc), box)
    elif noun == "jar":
        _draw_jar(cv, rng, anyc, _col(rng.uniform(0, 1, 3)), box)
    elif noun == "bottle":
        _draw_bottle(
            cv, rng, _col(rng.choice([[0.2, 0.4, 0.15], [0.6, 0.5, 0.1], [0.3, 0.1, 0.1]])), anyc, box
        )
    elif noun == "plant":
        _draw_plant(
            cv, rng, _col(rng.choice([[0.75, 0.4, 0.25], [0.9, 0.9, 0.88], [0.2, 0.2, 0.22]])), anyc, box
        )
    elif noun == "candle":
        _draw_can(cv, rng, _col([0.95, 0.93, 0.88]), _col([0.9, 0.85, 0.75]), box)
    elif noun == "glass":
        shade = _cyl_shade(w2, 0, w2, -0.5, 0.6)
        m = _lathe(cv, [(0.0, 1.0), (1.0, 0.8)], *box)
        cv.paint(m * 0.45, _shaded(_col([0.85, 0.9, 0.92]), shade))
    elif noun == "apple":
        fruit = _col(rng.choice([[0.75, 0.1, 0.1], [0.95, 0.55, 0.1], [0.95, 0.85, 0.2], [0.5, 0.75, 0.2]]))
        shade = _cyl_shade(w2, 0, w2, -0.4)
        cv.paint(_ellipse_mask(h2, w2, (w2 / 2, h2 * 0.55), (w2 * 0.48, h2 * 0.44)), _shaded(fruit, shade))
        cv.paint(_ellipse_mask(h2, w2, (w2 * 0.55, h2 * 0.1), (w2 * 0.04, h2 * 0.1)), _col([0.3, 0.2, 0.1]))
    elif noun == "books":
        y = float(h2)
        while y > 1:
            bh = rng.uniform(0.18, 0.35) * h2
            inset = rng.uniform(0, 0.1) * w2
            cv.paint(
                _poly_mask(
                    h2, w2, np.array([(inset, y - bh), (w2 - inset, y - bh), (w2 - inset, y), (inset, y)])
                ),
                _col(rng.uniform(0.1, 0.9, 3)),
            )
            cv.paint(
                _poly_mask(
                    h2,
                    w2,
                    np.array(
                        [
                            (inset, y - bh * 0.75),
                            (w2 - inset, y - bh * 0.75),
                            (w2 - inset, y - bh * 0.25),
                            (inset, y - bh * 0.25),
                        ]
                    ),
                )
                * 0.5,
                _col([0.95, 0.94, 0.9]),
            )
            y -= bh
    elif noun == "laptop":
        body = _col(rng.choice([[0.75, 0.76, 0.78], [0.2, 0.2, 0.22]]))
        cv.paint(
            _poly_mask(
                h2,
                w2,
                np.array([(w2 * 0.12, 0), (w2 * 0.88, 0), (w2 * 0.95, h2 * 0.85), (w2 * 0.05, h2 * 0.85)]),
            ),
            body,
        )
        cv.paint(
            _poly_mask(
                h2,
                w2,
                np.array(
                    [
                        (w2 * 0.16, h2 * 0.05),
                        (w2 * 0.84, h2 * 0.05),
                        (w2 * 0.9, h2 * 0.8),
                        (w2 * 0.1, h2 * 0.8),
                    ]
                ),
            ),
            _col(rng.uniform(0.05, 0.5, 3)),
        )
        cv.paint(
            _poly_mask(h2, w2, np.array([(0, h2 * 0.85), (w2, h2 * 0.85), (w2, h2), (0, h2)])), body * 0.85
        )
    elif noun == "towel":
        c = _col(rng.uniform(0.3, 0.95, 3))
        for k in range(3):
            y0, y1 = h2 * k / 3, h2 * (k + 1) / 3
            cv.paint(
                _poly_mask(h2, w2, np.array([(1, y0 + 1), (w2 - 1, y0 + 1), (w2, y1), (0, y1)])),
                c * (0.85 + 0.05 * k),
            )
    elif noun == "stone":
        c = _col(np.ones(3) * rng.uniform(0.35, 0.7) + rng.normal(0, 0.03, 3))
        cv.paint(
            _ellipse_mask(h2, w2, (w2 / 2, h2 * 0.55), (w2 * 0.48, h2 * 0.45)),
            _shaded(c, _cyl_shade(w2, 0, w2, -0.5, 0.6)),
        )
    elif noun == "ball":
        c = _col(rng.uniform(0.2, 1.0, 3))
        cv.paint(
            _ellipse_mask(h2, w2, (w2 / 2, h2 / 2), (w2 * 0.49, h2 * 0.49)),
            _shaded(c, _cyl_shade(w2, 0, w2, -0.4)),
        )
        cv.paint(
            _ellipse_mask(h2, w2, (w2 / 2, h2 / 2), (w2 * 0.49, h2 * 0.12), thickness=max(1, w2 // 20)),
            _col(1 - c),
        )
    elif noun == "flowers":
        for _ in range(int(rng.integers(5, 10))):
            x = rng.uniform(0.2, 0.8) * w2
            top = rng.uniform(0.05, 0.4) * h2
            m = np.zeros((h2, w2), np.uint8)
            cv2.line(
                m,
                (int(w2 / 2 * 16), int(h2 * 16)),
                (int(x * 16), int(top * 16)),
                255,
                max(1, w2 // 40),
                cv2.LINE_AA,
                shift=4,
            )
            cv.paint(m.astype(F32) / 255, _col([0.25, 0.5, 0.2]))
            cv.paint(_ellipse_mask(h2, w2, (x, top), (w2 * 0.07, w2 * 0.07)), _col(rng.uniform(0.4, 1.0, 3)))
    elif noun == "chair":
        c = _col(rng.choice([[0.5, 0.35, 0.2], [0.9, 0.9, 0.88], [0.2, 0.25, 0.3]]))
        t = max(2, int(w2 * 0.07))
        for a, b in (
            ((0.1, 0.0), (0.1, 1.0)),
            ((0.9, 0.0), (0.9, 1.0)),
            ((0.1, 0.55), (0.9, 0.55)),
            ((0.1, 0.05), (0.9, 0.05)),
            ((0.1, 0.25), (0.9, 0.25)),
            ((0.3, 0.55), (0.25, 1.0)),
            ((0.7, 0.55), (0.75, 1.0)),
        ):
            m = np.zeros((h2, w2), np.uint8)
            cv2.line(
                m,
                (int(a[0] * w2 * 16), int(a[1] * h2 * 16)),
                (int(b[0] * w2 * 16), int(b[1] * h2 * 16)),
                255,
                t,
                cv2.LINE_AA,
                shift=4,
            )
            cv.paint(m.astype(F32) / 255, c)
    else:  # bush
        c = _col(rng.choice([[0.2, 0.4, 0.15], [0.3, 0.45, 0.2]]))
        for _ in range(12):
            cx, cy = rng.uniform(0.2, 0.8) * w2, rng.uniform(0.35, 0.75) * h2
            r = rng.uniform(0.15, 0.3) * w2
            cv.paint(_ellipse_mask(h2, w2, (cx, cy), (r, min(r, h2 - cy))), _jitter(rng, c, 0.04))
    return cv.rgba(2)


def _paste(img: np.ndarray, rgba: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-composite ``rgba`` with its top-left at (x0, y0), clipped to the image."""
    h, w = rgba.shape[:2]
    s_h, s_w = img.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, s_w), min(y0 + h, s_h)
    if ix0 >= ix1 or iy0 >= iy1:
        return
    part = rgba[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    a = part[..., 3:4]
    img[iy0:iy1, ix0:ix1] = img[iy0:iy1, ix0:ix1] * (1 - a) + part[..., :3] * a


def _alpha_canvas(s: int, alpha: np.ndarray, x0: int, y0: int) -> np.ndarray:
    full = np.zeros((s, s), F32)
    h, w = alpha.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
    if ix0 < ix1 and iy0 < iy1:
        full[iy0:iy1, ix0:ix1] = alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    return full


@dataclass
class _Light:
    kx: float  # cast-shadow shear per pixel of height
    ky: float  # cast-shadow squash (negative: shadow falls towards the camera)
    strength: float
    blur: float


def _shadow(
    sc: Scene,
    light: _Light,
    sil: np.ndarray,
    base_y: float,
    base_x0: float,
    base_x1: float,
    foreshort: float,
    contact: bool = True,
) -> np.ndarray:
    """Shadow alpha on the ground for a full-image silhouette standing at row ``base_y``."""
    s = sc.size
    m = np.float32([[1, -light.kx, light.kx * base_y], [0, light.ky, base_y * (1 - light.ky)]])
    cast = cv2.warpAffine(sil, m, (s, s), flags=cv2.INTER_LINEAR)
    cast = cv2.GaussianBlur(cast, (0, 0), light.blur) * 0.6
    if contact:
        w = max(base_x1 - base_x0, 1.0)
        ell = _ellipse_mask(
            s, s, ((base_x0 + base_x1) / 2, base_y - 0.5), (w * 0.55, max(1.0, w * foreshort * 0.5))
        )
        cast = np.maximum(cast, cv2.GaussianBlur(ell, (0, 0), max(0.6, w * 0.06)))
    return np.clip(cast * light.strength, 0, 0.85)


def _apply_shadow(img: np.ndarray, sh: np.ndarray) -> None:
    img *= (1.0 - sh)[..., None]


def _silhouette_base(sil: np.ndarray) -> tuple[float, float, float]:
    ys, xs = np.nonzero(sil > 0.3)
    if len(ys) == 0:
        return 0.0, 0.0, 0.0
    bottom = ys.max()
    row = xs[ys >= bottom - 1]
    return float(bottom + 1), float(row.min()), float(row.max() + 1)


# ----------------------------------------------------------------------------------------------
# One sample
# ----------------------------------------------------------------------------------------------


@dataclass
class _Placement:
    x0: int
    y0: int
    w: int
    h: int

    @property
    def base(self) -> float:
        return float(self.y0 + self.h)


def _place_refs(
    rng: Rng, sc: Scene, light: _Light, prod: _Placement, scale: float, mode: str, s: int
) -> None:
    """Draw 1-4 reference objects at real size times ``scale``, far to near, with shadows."""
    nouns = [n for n, (_, _, scenes) in _REFS.items() if sc.kind in scenes]
    if mode == "big":
        nouns = [n for n in nouns if n in SMALL_REFS] or nouns
    elif mode == "small":
        nouns = [n for n in nouns if n in LARGE_REFS] or nouns
    count = int(rng.integers(1, 5))
    floor_top = max(sc.wall_y, sc.horizon) + 2
    floor_bot = max(min(sc.edge_y, s + 0.3 * s), floor_top + 1)
    items = []
    for k in range(count):
        noun = str(rng.choice(nouns))
        hm, wm, _ = _REFS[noun]
        hm *= rng.uniform(0.85, 1.15)
        wm *= rng.uniform(0.85, 1.15)
        if k == 0:  # one reference near the product's depth, so scale can be judged
            by = prod.base + rng.uniform(-0.12, 0.08) * (prod.base - sc.horizon)
        else:
            by = rng.uniform(floor_top, floor_bot)
        by = float(np.clip(by, floor_top, floor_bot))
        ppm = sc.ppm(by) * scale
        hp, wp = hm * ppm, wm * ppm
        if hp < 2.5 or hp > 1.6 * s or wp > 1.6 * s:
            continue
        # keep clear of the product horizontally (objects in front must never cover it)
        gap = 2 + rng.uniform(0, 0.15) * s
        left_room = prod.x0 - gap
        right_room = s - (prod.x0 + prod.w + gap)
        side = rng.random() < left_room / max(left_room + right_room, 1e-3)
        if side:
            x1 = left_room - rng.uniform(0, max(left_room - wp * 0.4, 0))
            x0 = x1 - wp
        else:
            x0 = prod.x0 + prod.w + gap + rng.uniform(0, max(right_room - wp * 0.4, 0))
        overlap = x0 < prod.x0 + prod.w and x0 + wp > prod.x0
        if overlap and by >= prod.base - 1:
            continue
        items.append((by, noun, x0, hp, wp))
    for by, noun, x0, hp, wp in sorted(items):
        rgba = _draw_ref(rng, noun, hp, wp)
        ix0, iy0 = round(x0), round(by - rgba.shape[0])
        sil = _alpha_canvas(s, rgba[..., 3], ix0, iy0)
        fs = float(np.clip((by - sc.horizon) / sc.focal, 0.08, 1.0))
        _apply_shadow(sc.rgb, _shadow(sc, light, sil, by, ix0, ix0 + rgba.shape[1], fs))
        _paste(sc.rgb, rgba, ix0, iy0)
        sc.depth = np.where(sil > 0.5, np.float32(sc.depth_at(by)), sc.depth)


def _flat_board(
    rng: Rng, sc: Scene, xc: float, base: float, width_px: float, tilt_deg: float | None
) -> np.ndarray:
    """A cutting board / tray under the product: flat on the ground, or a steep ramp when tilted."""
    s = sc.size
    c = _col(rng.choice([[0.72, 0.52, 0.3], [0.55, 0.38, 0.22], [0.9, 0.9, 0.88], [0.25, 0.25, 0.27]]))
    cv = _Canvas(s * 2, s * 2)
    if tilt_deg is None:
        z = sc.depth_at(base)
        xm = sc.x_m(xc, base)
        wm = width_px / sc.ppm(base) * rng.uniform(1.4, 2.2)
        dm = wm * rng.uniform(0.5, 0.9)
        zf, zn = z + dm * rng.uniform(0.45, 0.7), max(z - dm * 0.35, z * 0.5)
        pts = [
            sc.project(xm - wm / 2, zf),
            sc.project(xm + wm / 2, zf),
            sc.project(xm + wm / 2, zn),
            sc.project(xm - wm / 2, zn),
        ]
        pts2 = np.array(pts, F32) * 2
        cv.paint(_poly_mask(s * 2, s * 2, pts2), c)
        thick = max(1.0, sc.ppm(base) * 0.015) * 2
        front = np.array([pts2[3], pts2[2], pts2[2] + (0, thick), pts2[3] + (0, thick)], F32)
        cv.paint(_poly_mask(s * 2, s * 2, front), c * 0.7)
    else:
        t = np.radians(tilt_deg)
        d = np.array([np.cos(t), -np.sin(t)], F32)  # up-slope direction in the image
        n = np.array([np.sin(t), np.cos(t)], F32)  # into the board (downwards)
        p = np.array([xc, base], F32)
        length = width_px * rng.uniform(1.8, 2.6)
        a, b = p - d * length * 0.6, p + d * length * 0.4
        thick = max(3.0, width_px * rng.uniform(0.18, 0.3))
        pts = np.array([a, b, b + n * thick, a + n * thick], F32) * 2
        cv.paint(_poly_mask(s * 2, s * 2, pts), c)
        cv.paint(
            _poly_mask(
                s * 2,
                s * 2,
                np.array([a + n * thick * 0.6, b + n * thick * 0.6, b + n * thick, a + n * thick], F32) * 2,
            ),
            c * 0.65,
        )
    return cv.rgba(2)


def _extension(rng: Rng, rgba: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Shape Hallucination: scene pixels in the product's colours that continue its outline.

    Returns an RGBA layer and its offset relative to the product's top-left corner; the product
    is pasted over it unchanged.
    """
    h, w = rgba.shape[:2]
    a = rgba[..., 3]
    mode = str(
        rng.choice(["extrude_up", "extrude_side", "copy", "part", "plinth"], p=[0.25, 0.22, 0.2, 0.2, 0.13])
    )
    pad = int(max(h, w) * 0.9) + 4
    layer = np.zeros((h + 2 * pad, w + 2 * pad, 4), F32)
    if mode == "extrude_up":
        d = int(max(3, h * rng.uniform(0.12, 0.45)))
        cols = np.nonzero(a.max(axis=0) > 0.5)[0]
        tops = np.array([np.argmax(a[:, c] > 0.5) for c in cols])
        keep = cols[tops <= tops.min() + max(2, h * 0.06)]
        for c in keep:
            t = int(np.argmax(a[:, c] > 0.5))
            colour = rgba[min(h - 1, t + 1), c, :3]
            layer[pad + t - d : pad + t + 1, pad + c, :3] = colour
            layer[pad + t - d : pad + t + 1, pad + c, 3] = 1.0
        if rng.random() < 0.5:  # a rounded end, like a second cap
            cx = pad + (keep.min() + keep.max() + 1) / 2
            top = pad + tops.min() - d
            r = (keep.max() - keep.min() + 1) / 2
            m = _ellipse_mask(layer.shape[0], layer.shape[1], (cx, top), (r, max(1.0, r * 0.5)))
            mean = rgba[..., :3][a > 0.5].mean(axis=0)
            layer[..., :3] = np.where(m[..., None] > layer[..., 3:4], mean, layer[..., :3])
            layer[..., 3] = np.maximum(layer[..., 3], m)
    elif mode == "extrude_side":
        d = int(max(3, w * rng.uniform(0.15, 0.5)))
        r0 = int(h * rng.uniform(0.2, 0.6))
        r1 = min(h, r0 + int(h * rng.uniform(0.2, 0.5)))
        right = rng.random() < 0.5
        for r in range(r0, r1):
            xs = np.nonzero(a[r] > 0.5)[0]
            if len(xs) == 0:
                continue
            e = xs.max() if right else xs.min()
            colour = rgba[r, int(np.clip(e + (-1 if right else 1), 0, w - 1)), :3]
            sl = slice(pad + e, pad + e + d) if right else slice(pad + e - d + 1, pad + e + 1)
            layer[pad + r, sl, :3] = colour
            layer[pad + r, sl, 3] = 1.0
    elif mode == "copy":
        sc = rng.uniform(0.55, 1.0)
        part = rgba.copy()
        cut = str(rng.choice(["top", "left", "right"]))
        if cut == "top":
            part = part[: max(2, int(h * rng.uniform(0.35, 0.65)))]
        elif cut == "left":
            part = part[:, : max(2, int(w * rng.uniform(0.4, 0.7)))]
        else:
            part = part[:, int(w * rng.uniform(0.3, 0.6)) :]
        ph, pw = max(2, int(part.shape[0] * sc)), max(2, int(part.shape[1] * sc))
        part = _resize_rgba(part, pw, ph)
        # attached at one side, mostly outside the product so the silhouette visibly grows
        inside = int(pw * rng.uniform(0.15, 0.45))
        ox = w - inside if rng.random() < 0.5 else inside - pw
        oy = int(h - ph - rng.uniform(0.0, 0.4) * h)
        layer[pad + oy : pad + oy + ph, pad + ox : pad + ox + pw] = part
    elif mode == "part":
        mean = rgba[..., :3][a > 0.5].mean(axis=0)
        shape = str(rng.choice(["handle", "knob", "strap", "spout"]))
        lh, lw = layer.shape[:2]
        side = 1 if rng.random() < 0.5 else -1
        ex = pad + (w if side > 0 else 0)
        cy = pad + h * rng.uniform(0.25, 0.65)
        if shape == "handle":
            m = _ellipse_mask(
                lh,
                lw,
                (ex, cy),
                (w * rng.uniform(0.2, 0.45), h * rng.uniform(0.12, 0.3)),
                thickness=max(2, int(w * 0.08)),
            )
        elif shape == "knob":
            r = max(w, h) * rng.uniform(0.1, 0.25)
            m = _ellipse_mask(lh, lw, (pad + w * rng.uniform(0.3, 0.7), pad + 1), (r, r * 0.8))
        elif shape == "strap":
            x0 = pad + w * rng.uniform(0.1, 0.4)
            m = _ellipse_mask(
                lh,
                lw,
                (x0 + w * 0.3, pad + 2),
                (w * 0.3, h * rng.uniform(0.25, 0.6)),
                thickness=max(2, int(w * 0.06)),
                arc=(180, 360),
            )
        else:
            pts = np.array(
                [
                    (ex, cy - h * 0.06),
                    (ex + side * w * rng.uniform(0.25, 0.6), cy - h * rng.uniform(0.1, 0.3)),
                    (ex + side * w * rng.uniform(0.25, 0.6), cy - h * 0.05),
                    (ex, cy + h * 0.06),
                ],
                F32,
            )
            m = _poly_mask(lh, lw, pts)
        colour = np.clip(mean * rng.uniform(0.85, 1.1), 0, 1)
        layer[..., :3] = colour
        layer[..., 3] = m
    else:  # plinth: the product's base continues into a block of its colour
        bottom = rgba[max(0, h - 3) : h]
        cols = np.nonzero(bottom[..., 3].max(axis=0) > 0.5)[0]
        mean = bottom[..., :3][bottom[..., 3] > 0.5].mean(axis=0)
        d = int(max(3, h * rng.uniform(0.12, 0.35)))
        spread = w * rng.uniform(0.0, 0.35)
        x0, x1 = pad + cols.min(), pad + cols.max() + 1
        pts = np.array(
            [(x0, pad + h - 2), (x1, pad + h - 2), (x1 + spread, pad + h + d), (x0 - spread, pad + h + d)],
            F32,
        )
        m = _poly_mask(layer.shape[0], layer.shape[1], pts)
        layer[..., :3] = mean * rng.uniform(0.8, 1.0)
        layer[..., 3] = m
    layer[..., 3] = np.clip(layer[..., 3], 0, 1)
    # soften the hard extrusion edges a little, as rendered scene pixels would be
    layer[..., 3] = cv2.GaussianBlur(layer[..., 3], (0, 0), 0.5)
    return layer, -pad, -pad


def _photo_finish(rng: Rng, img: np.ndarray, sc: Scene, z_focus: float) -> np.ndarray:
    """Depth-of-field, light colour, vignetting, noise and JPEG, applied to the scene only."""
    s = img.shape[0]
    sigma = rng.uniform(0.0, 2.4) * s / 128
    if sigma > 0.3:
        k = rng.uniform(0.7, 2.5)
        w = np.clip(np.abs(1.0 - z_focus / np.maximum(sc.depth, 1e-3)) * k, 0, 1)[..., None]
        img = img * (1 - w) + cv2.GaussianBlur(img, (0, 0), sigma) * w
    warm = rng.uniform(-1, 1)
    img = img * (np.array([1 + 0.08 * warm, 1.0 + 0.01 * warm, 1 - 0.1 * warm], F32) * rng.uniform(0.85, 1.1))
    yy, xx = np.mgrid[0:s, 0:s].astype(F32) / s - 0.5
    vig = 1.0 - rng.uniform(0.0, 0.45) * (xx**2 + yy**2) * 2
    img = img * vig[..., None]
    img = img + rng.normal(0, rng.uniform(0.003, 0.02), img.shape).astype(F32)
    return _jpeg(np.clip(img, 0, 1), int(rng.integers(60, 96)))


def _blend_in(rng: Rng, img: np.ndarray, colour: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Indistinctiveness: pull what surrounds the product towards its colour and lower the contrast.

    The scene was already painted in the product's colours; light, blur and vignetting move it away
    again, so the area around the product is shifted back to within a small colour distance.
    """
    s = img.shape[0]
    x, y, w, h = box
    mx, my = int(w * 0.4) + 2, int(h * 0.3) + 2
    region = img[max(0, y - my) : min(s, y + h + my), max(0, x - mx) : min(s, x + w + mx)]
    mean = region.reshape(-1, 3).mean(axis=0)
    target = _jitter(rng, colour, rng.uniform(0.01, 0.08))
    img = img + (target - mean) * rng.uniform(0.75, 1.0)
    contrast = rng.uniform(0.55, 1.0)
    img = target + (img - target) * contrast
    return np.clip(img, 0, 1).astype(F32)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else u8
    return cv2.cvtColor(back, cv2.COLOR_BGR2RGB).astype(F32) / 255.0


def _glitch(rng: Rng, img: np.ndarray) -> np.ndarray:
    """Unsuitable: one or two ways of breaking the image."""
    s = img.shape[0]
    out = img.copy()
    kinds = ["slices", "blocks", "jpeg", "warp", "tilt", "collage", "exposure", "channels"]
    for kind in rng.choice(kinds, size=int(rng.integers(1, 3)), replace=False):
        if kind == "slices":
            for _ in range(int(rng.integers(3, 9))):
                y0 = int(rng.integers(0, s - 4))
                y1 = min(s, y0 + int(rng.integers(2, max(3, s // 6))))
                out[y0:y1] = np.roll(out[y0:y1], int(rng.integers(-s // 2, s // 2)), axis=1)
                if rng.random() < 0.4:
                    out[y0:y1] = out[y0:y1, :, rng.permutation(3)]
        elif kind == "blocks":
            b = max(4, s // 16)
            y_start = int(rng.integers(s // 5, s * 4 // 5))
            yy = np.arange(y_start - y_start % b, s, b)
            grey = rng.random() < 0.35
            for y in yy:
                for x in range(0, s, b):
                    if grey or rng.random() < 0.55:
                        src = (
                            out[max(0, y - b) : y, x : x + b].mean(axis=(0, 1))
                            if y >= b
                            else np.full(3, 0.5, F32)
                        )
                        out[y : y + b, x : x + b] = np.full(3, 0.5, F32) if grey else _jitter(rng, src, 0.25)
        elif kind == "jpeg":
            f = int(rng.integers(3, 7))
            small = cv2.resize(out, (s // f, s // f), interpolation=cv2.INTER_AREA)
            small = _jpeg(small, int(rng.integers(1, 8)))
            out = cv2.resize(small, (s, s), interpolation=cv2.INTER_NEAREST)
            levels = int(rng.integers(3, 6))
            out = np.round(out * levels) / levels
        elif kind == "warp":
            yy, xx = np.mgrid[0:s, 0:s].astype(F32)
            amp = rng.uniform(0.04, 0.14) * s
            fr = rng.uniform(1.0, 4.0) * 2 * np.pi / s
            ph = rng.uniform(0, 6.3, 2)
            mx = xx + amp * np.sin(yy * fr + ph[0])
            my = yy + amp * np.sin(xx * fr * rng.uniform(0.5, 1.5) + ph[1])
            out = cv2.remap(
                out, mx.astype(F32), my.astype(F32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        elif kind == "tilt":
            if rng.random() < 0.3:
                out = out[::-1].copy()
            else:
                ang = rng.choice([-1, 1]) * rng.uniform(20, 55)
                m = cv2.getRotationMatrix2D((s / 2, s / 2), ang, rng.uniform(1.0, 1.3))
                border = cv2.BORDER_REFLECT if rng.random() < 0.6 else cv2.BORDER_CONSTANT
                out = cv2.warpAffine(out, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=border)
        elif kind == "collage":
            n = int(rng.integers(2, 5))
            cuts = np.sort(rng.integers(s // 8, s - s // 8, n - 1))
            edges = [0, *cuts.tolist(), s]
            for k in range(n):
                if k % 2 == 1:
                    a, b = edges[k], edges[k + 1]
                    strip = out[a:b]
                    out[a:b] = np.roll(
                        strip[:, ::-1] if rng.random() < 0.5 else strip[::-1], int(rng.integers(0, s)), axis=1
                    )
        elif kind == "exposure":
            gain = rng.uniform(1.8, 3.0) if rng.random() < 0.7 else rng.uniform(0.15, 0.3)
            out = np.clip(out * gain, 0, 1)
            out = np.round(out * 4) / 4
        else:
            shift = int(rng.integers(3, max(4, s // 10)))
            ch = int(rng.integers(0, 3))
            out[..., ch] = np.roll(out[..., ch], shift * rng.choice([-1, 1]), axis=int(rng.integers(0, 2)))
            out = np.clip(out + rng.normal(0, rng.uniform(0.03, 0.1), out.shape).astype(F32), 0, 1)
    return out


def _make_sample(label: int, rng: Rng, s: int) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """Render one labelled image: (RGB uint8 image, RGBA uint8 product cut-out, caption, how it was
    drawn: the ``meta.jsonl`` record)."""
    kind_name = str(rng.choice(SCENES))
    prod_kind = str(rng.choice(list(_KINDS)))
    spec = _KINDS[prod_kind][0]
    aspect = rng.uniform(*spec.aspect)
    height_m = rng.uniform(*spec.height_m)

    # product pixel size: same range in every class
    hp = rng.uniform(0.22, 0.6) * s
    wp = hp * aspect
    if wp > 0.8 * s:
        hp *= 0.8 * s / wp
    hp = max(8.0, hp)

    cam = str(rng.choice(["eye", "low", "top"], p=[0.5, 0.25, 0.25]))
    horizon = {"eye": rng.uniform(0.1, 0.5), "low": rng.uniform(0.45, 0.7), "top": rng.uniform(-2.0, 0.05)}[
        cam
    ] * s
    space_mode = ""
    if label == 3:
        modes = ["float", "wall", "ramp"]
        if kind_name != "outdoor":
            modes += ["overhang", "nosupport"]
        space_mode = str(rng.choice(modes))
        if space_mode == "wall":
            horizon = rng.uniform(0.35, 0.7) * s if kind_name == "outdoor" else horizon
            hp = min(hp, 0.42 * s)
    y_lo = max(horizon + 0.08 * s, hp + 3)
    y_hi = s - 3.0
    if y_lo > y_hi:
        hp = max(8.0, y_hi - max(horizon + 0.08 * s, 3.0) - 3)
        y_lo = max(horizon + 0.08 * s, hp + 3)
    y_b = rng.uniform(y_lo, max(y_lo, y_hi))
    wp = hp * aspect
    x_c = rng.uniform(wp / 2 + 2, s - wp / 2 - 2)

    if kind_name == "outdoor":
        wall_y, edge_r = horizon, None
    elif kind_name == "bathroom":
        wall_y = horizon + (y_b - horizon) * rng.uniform(0.6, 0.85)
        edge_r = rng.uniform(0.78, 0.95)
    else:
        lo = 0.05 if cam == "top" else 0.3
        wall_y = horizon + (y_b - horizon) * rng.uniform(lo, 0.85)
        edge_r = rng.uniform(0.55, 0.92)
    edge_y = np.inf if edge_r is None else horizon + (y_b - horizon) / edge_r
    if label == 3 and space_mode in ("overhang", "nosupport"):
        # bring the front edge into view just below / above the product base
        edge_y = min(edge_y, y_b + rng.uniform(0.05, 0.25) * hp)
        if space_mode == "nosupport":
            edge_y = max(y_b - hp * rng.uniform(0.6, 1.05), horizon + 0.1 * s, 0.12 * s)
            wall_y = min(wall_y, horizon + (edge_y - horizon) * 0.8)
    if label == 3 and space_mode == "wall":
        # the product hangs on the wall / sky: the base well above where the wall meets the surface
        wall_y = max(wall_y, y_b + rng.uniform(0.08, 0.3) * s)
        if kind_name == "outdoor":
            horizon = wall_y

    ppm_p = hp / height_m
    focal = s * rng.uniform(0.9, 1.6)
    ground_y = y_b
    if label == 3 and space_mode == "wall":
        ground_y = wall_y + (s - wall_y) * rng.uniform(0.3, 0.8)
    cam_h = max(ground_y - horizon, 1.0) / ppm_p

    # Size Mismatch: the scene (textures and / or references) on a different scale from the product
    ref_scale, size_mode = 1.0, ""
    if label == 4:
        size_mode = str(rng.choice(["big", "small"]))
        ref_scale = rng.uniform(2.5, 5.0) if size_mode == "big" else rng.uniform(0.18, 0.4)
    tex_follows = label == 4 and rng.random() < 0.5
    if tex_follows:
        cam_h /= ref_scale  # the textures and the references share the wrong scale

    sc = Scene(
        kind=kind_name,
        size=s,
        horizon=horizon,
        wall_y=wall_y,
        edge_y=float(edge_y),
        focal=focal,
        cam_h=cam_h,
        rgb=np.zeros((s, s, 3), F32),
        depth=np.full((s, s), 1e4, F32),
    )
    pal = _palette(rng, kind_name)

    accent_name = str(rng.choice(list(PRODUCT_COLOURS)))
    accent = _jitter(rng, np.array(PRODUCT_COLOURS[accent_name]), 0.05)
    product: Product | None = None
    if label == 5:
        colour_name = str(rng.choice(list(PRODUCT_COLOURS)))
        product = _render_product(rng, prod_kind, aspect, colour_name, accent, height_m)
        top_frac = float(np.clip((wall_y - (y_b - hp)) / hp, 0, 1))
        where = str(rng.choice(["both", "wall" if top_frac > 0.5 else "surface"], p=[0.55, 0.45]))
        pal = _matched_palette(rng, pal, product, where, rng.uniform(0.01, 0.07))

    _render_ground(rng, sc, pal)
    _render_wall(rng, sc, pal)
    _render_edge(rng, sc, pal)
    # the side end of a counter / shelf / table: under the product for "overhang", elsewhere
    # (clear of the product) in a quarter of the other indoor images
    if space_mode == "overhang":
        sign = 1 if rng.random() < 0.5 else -1
        _render_side_end(sc, pal, x_c + sign * wp * rng.uniform(-0.25, 0.2), y_b, sign)
    elif kind_name != "outdoor" and rng.random() < 0.25:
        sign = 1 if rng.random() < 0.5 else -1
        x_end = x_c + sign * (wp / 2 + rng.uniform(0.12, 0.4) * s)
        if 0 < x_end < s:
            _render_side_end(sc, pal, x_end, y_b, sign)
    light = _Light(
        kx=rng.uniform(-0.9, 0.9),
        ky=rng.uniform(-0.3, 0.45),
        strength=rng.uniform(0.25, 0.6),
        blur=rng.uniform(0.6, 2.5) * s / 128,
    )

    # references: for a texture-following Size Mismatch the scene itself is rescaled, so refs use 1.0
    prod_place = _Placement(round(x_c - wp / 2), round(y_b - hp), max(2, round(wp)), round(hp))
    r_scale = ref_scale if (label == 4 and not tex_follows) else 1.0
    ref_mode = size_mode if label == 4 else ""
    if label == 3 and space_mode == "wall":
        prod_ground = _Placement(prod_place.x0, round(ground_y - hp), prod_place.w, prod_place.h)
        _place_refs(rng, sc, light, prod_ground, r_scale, ref_mode, s)
    else:
        _place_refs(rng, sc, light, prod_place, r_scale, ref_mode, s)

    # product colour: stands out from what is behind it (every class but Indistinctiveness)
    if product is None:
        y0, y1 = max(0, prod_place.y0), min(s, prod_place.y0 + prod_place.h)
        x0, x1 = max(0, prod_place.x0), min(s, prod_place.x0 + prod_place.w)
        behind = sc.rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        names = list(PRODUCT_COLOURS)
        order = rng.permutation(len(names))
        threshold = rng.uniform(28, 45)
        chosen = names[int(order[0])]
        for j in order:
            if _delta_e(np.array(PRODUCT_COLOURS[names[int(j)]]), behind) >= threshold:
                chosen = names[int(j)]
                break
        product = _render_product(rng, prod_kind, aspect, chosen, accent, height_m)

    pw, ph = max(2, round(hp * product.rgba.shape[1] / product.rgba.shape[0])), round(hp)
    pasted = _resize_rgba(product.rgba, pw, ph)
    px0 = round(x_c - pw / 2)
    py0 = round(y_b - ph)
    fs = float(np.clip((y_b - horizon) / focal, 0.06, 1.0))
    z_focus = sc.depth_at(y_b)

    ext = None
    if label == 6:
        ext = _extension(rng, pasted)

    # support and shadows (scene side)
    shadow_y, contact = float(py0 + ph), True
    lift = 0
    if label == 3:
        if space_mode == "float":
            lift = round(ph * rng.uniform(0.12, 0.6))
            lift = min(lift, py0 - 1)
            lift = max(lift, 3)
            contact = rng.random() < 0.6
        elif space_mode == "wall":
            shadow_y = -1.0
        elif space_mode == "ramp":
            tilt = rng.uniform(22, 50) * rng.choice([-1, 1])
            # touch the ramp at the uphill corner of the base
            corner = px0 + pw if tilt > 0 else px0
            board = _flat_board(rng, sc, corner, py0 + ph, pw, float(tilt))
            _apply_shadow(sc.rgb, cv2.GaussianBlur(board[..., 3], (0, 0), 1.5) * 0.3)
            _paste(sc.rgb, board, 0, 0)
            shadow_y, contact = -1.0, False
        elif space_mode in ("overhang", "nosupport"):
            contact = False
    elif rng.random() < 0.2 and label != 2:
        board = _flat_board(rng, sc, x_c, py0 + ph, pw, None)
        _paste(sc.rgb, board, 0, 0)

    sil = _alpha_canvas(s, pasted[..., 3], px0, py0)
    if ext is not None:
        layer, ox, oy = ext
        sil = np.maximum(sil, _alpha_canvas(s, layer[..., 3], px0 + ox, py0 + oy))
    if shadow_y > 0:
        base_y, bx0, bx1 = _silhouette_base(sil)
        if lift:
            sil_l = sil
            strength = light.strength * (rng.uniform(0.3, 0.8) if contact else rng.uniform(0.5, 1.0))
            lt = _Light(light.kx, light.ky, strength, light.blur * rng.uniform(1.0, 2.0))
            _apply_shadow(sc.rgb, _shadow(sc, lt, sil_l, base_y, bx0, bx1, fs, contact))
        elif space_mode in ("overhang", "nosupport"):
            pass
        else:
            _apply_shadow(sc.rgb, _shadow(sc, light, sil, base_y, bx0, bx1, fs, contact))
    elif label == 3 and space_mode == "wall" and rng.random() < 0.5:
        drop = np.roll(sil, (int(rng.integers(1, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        _apply_shadow(sc.rgb, cv2.GaussianBlur(drop, (0, 0), 1.5) * 0.35)

    img = sc.rgb
    if label == 2 and rng.random() < 0.5:
        img = _glitch(rng, img)  # the scene is broken but the product is intact
        broken_after = False
    else:
        broken_after = label == 2
    img = _photo_finish(rng, img, sc, z_focus)
    if label == 5:
        img = _blend_in(rng, img, product.colour, (px0, py0, pw, ph))
    if ext is not None:
        layer, ox, oy = ext
        _paste(img, layer, px0 + ox, py0 + oy)
    _paste(img, pasted, px0, py0 - lift)
    if broken_after:
        img = _glitch(rng, img)

    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    cut = (np.clip(product.rgba, 0, 1) * 255 + 0.5).astype(np.uint8)
    meta = {
        "scene": kind_name,
        "camera": cam,
        "product": prod_kind,
        "product_height_m": round(float(height_m), 4),
        "product_px": round(float(hp), 1),
        "space_mode": space_mode or None,
        "size_mode": (
            f"{size_mode}, {'textures and references' if tex_follows else 'references'}"
            if label == 4
            else None
        ),
        "scene_scale": round(float(ref_scale), 3),
    }
    return image, cut, product.caption, meta


# ----------------------------------------------------------------------------------------------
# Writing the set
# ----------------------------------------------------------------------------------------------


def _name(seed: int, label: int, index: int, taken: set[str]) -> str:
    k = 0
    while True:
        key = [seed, label, index] if k == 0 else [seed, label, index, 7919, k]
        name = f"{int(np.random.default_rng(key).integers(0, 2**48)):012x}"
        if name not in taken:
            taken.add(name)
            return name
        k += 1


def make_lifestyle_set(out: str, *, n_per_class: int, image_size: int = 128, seed: int = 0) -> str:
    """Write n_per_class images per class under out; returns out.

    Each sample is rendered from ``np.random.default_rng([seed, label, index])`` alone, so a sample
    does not change when ``n_per_class`` grows. Files: ``images/<name>.png`` (RGB),
    ``products/<name>.png`` (RGBA cut-out), ``label.txt`` and ``captions.jsonl`` (both sorted), and
    ``meta.jsonl``: how each image was drawn (scene, camera, product kind and real height, the
    defect's variant and the scene's scale against the product), to break errors down by
    (``python -m bench.rfnet_errors``).
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "products").mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    labels: list[str] = []
    captions: list[tuple[str, str]] = []
    drawn: list[dict] = []
    for label in range(1, len(CLASS_NAMES) + 1):
        for index in range(n_per_class):
            name = _name(seed, label, index, taken)
            rng = np.random.default_rng([seed, label, index, 1])
            image, cut, caption, meta = _make_sample(label, rng, image_size)
            cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "products" / f"{name}.png"), cv2.cvtColor(cut, cv2.COLOR_RGBA2BGRA))
            labels.append(f"images/{name}.png\t{label}")
            captions.append((f"images/{name}.png", caption))
            drawn.append({"image": f"images/{name}.png", "label": CLASS_NAMES[label - 1], **meta})
    (root / "label.txt").write_text("".join(f"{line}\n" for line in sorted(labels)))
    with open(root / "captions.jsonl", "w") as fh:
        for image, caption in sorted(captions):
            fh.write(json.dumps({"image": image, "caption": caption}) + "\n")
    with open(root / "meta.jsonl", "w") as fh:
        for record in sorted(drawn, key=lambda r: r["image"]):
            fh.write(json.dumps(record) + "\n")
    return out


def contact_sheet(out: str, path: str, per_class: int = 8, cell: int = 128) -> str:
    """A grid of the first ``per_class`` images of each class (rows = classes) for a visual check."""
    root = Path(out)
    by_class: dict[int, list[str]] = {k: [] for k in range(1, len(CLASS_NAMES) + 1)}
    for line in (root / "label.txt").read_text().splitlines():
        image, label = line.split("\t")
        by_class[int(label)].append(image)
    margin = 150
    sheet = np.full((cell * len(by_class), margin + cell * per_class, 3), 255, np.uint8)
    for row, (label, images) in enumerate(sorted(by_class.items())):
        cv2.putText(
            sheet,
            CLASS_NAMES[label - 1],
            (4, row * cell + cell // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        for col, image in enumerate(images[:per_class]):
            tile = cv2.resize(cv2.imread(str(root / image)), (cell, cell), interpolation=cv2.INTER_NEAREST)
            sheet[row * cell : (row + 1) * cell, margin + col * cell : margin + (col + 1) * cell] = tile
    cv2.imwrite(path, sheet)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (RF1M layout)")
    parser.add_argument("--n-per-class", type=int, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", default=None, help="also write a contact sheet PNG here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_lifestyle_set(args.out, n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed)
    took = time.perf_counter() - start
    print(f"wrote {args.n_per_class * len(CLASS_NAMES)} images to {args.out} in {took:.1f} s")
    if args.sheet:
        contact_sheet(args.out, args.sheet, per_class=min(8, args.n_per_class), cell=max(96, args.image_size))
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
