"""The ``lifestyle`` family's products: twelve procedural kinds (bottle, jar, cosmetics tube, can,
box, handbag, watch, mug, pot plant, speaker, shoe, perfume) drawn with cylinder or face shading,
labels and logos on a premultiplied canvas at twice their resolution, for an anti-aliased alpha.

Colours are RGB float32 in [0, 1]; cut-outs are float32 ``(H, W, 4)`` with straight alpha.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator
F32 = np.float32

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


def col(c: object) -> np.ndarray:
    return np.clip(np.asarray(c, dtype=F32), 0.0, 1.0)


def jitter(rng: Rng, c: np.ndarray, amount: float) -> np.ndarray:
    return col(np.asarray(c, F32) + rng.normal(0.0, amount, 3).astype(F32))


def poly_mask(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(pts) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m.astype(F32) / 255.0


def ellipse_mask(
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


class Canvas:
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


def cyl_shade(w: int, x0: float, x1: float, highlight: float, strength: float = 1.0) -> np.ndarray:
    """Per-column shading of a vertical cylinder spanning ``x0..x1`` (shape ``(1, w, 1)``)."""
    x = np.arange(w, dtype=F32) + 0.5
    t = np.clip((x - (x0 + x1) / 2) / max((x1 - x0) / 2, 1.0), -1, 1)
    base = 0.55 + 0.45 * np.sqrt(1.0 - t * t)
    spec = 0.45 * np.exp(-(((t - highlight) / 0.13) ** 2))
    shade = 1.0 + strength * (base - 1.0)
    return shade[None, :, None].astype(F32), spec[None, :, None].astype(F32) * strength


def shaded(colour: np.ndarray, shade: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    s, spec = shade
    return np.clip(np.asarray(colour, F32) * s + spec * 0.8, 0, 1)


def lathe(cv: Canvas, profile: list[tuple[float, float]], x0: float, x1: float, y0: float, y1: float):
    """Polygon of a symmetric lathe profile ``(y fraction, half-width fraction)`` in a box."""
    xc, hw = (x0 + x1) / 2, (x1 - x0) / 2
    left = [(xc - r * hw, y0 + f * (y1 - y0)) for f, r in profile]
    right = [(xc + r * hw, y0 + f * (y1 - y0)) for f, r in reversed(profile)]
    return poly_mask(cv.h, cv.w, np.array(left + right, F32))


def _logo(cv: Canvas, rng: Rng, cx: float, cy: float, size: float, colour: np.ndarray, clip: np.ndarray):
    kind = rng.integers(0, 4)
    if kind == 0:
        m = ellipse_mask(cv.h, cv.w, (cx, cy), (size, size))
    elif kind == 1:
        pts = np.array([(cx, cy - size), (cx + size, cy), (cx, cy + size), (cx - size, cy)], F32)
        m = poly_mask(cv.h, cv.w, pts)
    elif kind == 2:
        m = np.zeros((cv.h, cv.w), F32)
        for k in range(3):
            yy = cy - size + k * size * 0.8
            ln = size * (2.0 - 0.5 * k)
            m = np.maximum(
                m,
                poly_mask(
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
        m = ellipse_mask(cv.h, cv.w, (cx, cy), (size, size), thickness=max(1, int(size * 0.5)))
    cv.paint(m * clip, colour)


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


def draw_bottle(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
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
    body = lathe(cv, prof[2:], x0, x1, y0, y1)
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.2))
    cv.paint(body, shaded(main, shade))
    cap = lathe(cv, [(0.0, neck * 1.15), (0.1, neck * 1.15)], x0, x1, y0, y1)
    cv.paint(cap, shaded(accent, shade))
    band = np.zeros_like(body)
    ly0, ly1 = y0 + (shoulder + 0.12) * (y1 - y0), y0 + rng.uniform(0.72, 0.9) * (y1 - y0)
    band[int(ly0) : int(ly1)] = 1.0
    label = col(rng.choice([accent, np.ones(3), np.array([0.95, 0.92, 0.85])]))
    cv.paint(band * body, shaded(label, shade))
    _logo(cv, rng, (x0 + x1) / 2, (ly0 + ly1) / 2, (x1 - x0) * 0.16, main * 0.8, band * body)


def draw_jar(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    lid = rng.uniform(0.14, 0.24)
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.2))
    body = lathe(cv, [(lid, 0.9), (lid + 0.05, 1.0), (0.95, 1.0), (1.0, 0.94)], x0, x1, y0, y1)
    cv.paint(body, shaded(main, shade))
    cv.paint(lathe(cv, [(0.0, 0.93), (lid + 0.01, 0.93)], x0, x1, y0, y1), shaded(accent, shade))
    band = np.zeros_like(body)
    band[int(y0 + (lid + 0.2) * (y1 - y0)) : int(y0 + 0.82 * (y1 - y0))] = 1.0
    cv.paint(band * body, shaded(col(rng.choice([np.ones(3), accent])), shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + (lid + 0.51) * (y1 - y0), (x1 - x0) * 0.12, main * 0.7, band * body)


def _draw_tube(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.7)
    body = lathe(cv, [(0.0, 1.0), (0.06, 1.0), (0.08, 0.96), (0.84, 0.62), (0.86, 0.6)], x0, x1, y0, y1)
    cv.paint(body, shaded(main, shade))
    cv.paint(lathe(cv, [(0.84, 0.66), (1.0, 0.66)], x0, x1, y0, y1), shaded(accent, shade))
    crimp = lathe(cv, [(0.0, 1.0), (0.06, 1.0)], x0, x1, y0, y1)
    cv.paint(crimp, shaded(main * 0.85, shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + 0.42 * (y1 - y0), (x1 - x0) * 0.2, accent, body)


def draw_can(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.6, -0.1))
    body = lathe(cv, [(0.0, 0.86), (0.05, 1.0), (0.95, 1.0), (1.0, 0.88)], x0, x1, y0, y1)
    cv.paint(body, shaded(main, shade))
    metal = col([0.78, 0.79, 0.8])
    for a, b in ((0.0, 0.05), (0.95, 1.0)):
        cv.paint(lathe(cv, [(a, 0.88), (b, 0.98)], x0, x1, y0, y1), shaded(metal, shade))
    stripe = np.zeros_like(body)
    s0 = rng.uniform(0.35, 0.6)
    stripe[int(y0 + s0 * (y1 - y0)) : int(y0 + (s0 + 0.18) * (y1 - y0))] = 1.0
    cv.paint(stripe * body, shaded(accent, shade))
    _logo(cv, rng, (x0 + x1) / 2, y0 + 0.25 * (y1 - y0), (x1 - x0) * 0.18, accent, body)


def _draw_box(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    side = rng.uniform(0.18, 0.35) * (x1 - x0)
    top = rng.uniform(0.06, 0.14) * (y1 - y0)
    right = rng.random() < 0.5
    fx0, fx1 = (x0, x1 - side) if right else (x0 + side, x1)
    front = poly_mask(cv.h, cv.w, np.array([(fx0, y0 + top), (fx1, y0 + top), (fx1, y1), (fx0, y1)], F32))
    if right:
        sp = [(fx1, y0 + top), (x1, y0), (x1, y1 - top), (fx1, y1)]
        tp = [(fx0, y0 + top), (x0 + side, y0), (x1, y0), (fx1, y0 + top)]
    else:
        sp = [(x0, y0), (fx0, y0 + top), (fx0, y1), (x0, y1 - top)]
        tp = [(x0, y0), (x1 - side, y0), (fx1, y0 + top), (fx0, y0 + top)]
    cv.paint(front, main * rng.uniform(0.9, 1.0))
    cv.paint(poly_mask(cv.h, cv.w, np.array(sp, F32)), main * rng.uniform(0.55, 0.7))
    cv.paint(poly_mask(cv.h, cv.w, np.array(tp, F32)), col(main * 1.15 + 0.05))
    band = np.zeros_like(front)
    b0 = rng.uniform(0.45, 0.7)
    band[int(y0 + b0 * (y1 - y0)) : int(y0 + (b0 + 0.12) * (y1 - y0))] = 1.0
    cv.paint(band * front, accent)
    _logo(cv, rng, (fx0 + fx1) / 2, y0 + 0.32 * (y1 - y0), (fx1 - fx0) * 0.16, accent, front)


def _draw_handbag(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    body_top = y0 + rng.uniform(0.32, 0.45) * h
    inset = rng.uniform(0.05, 0.15) * w
    handle = ellipse_mask(
        cv.h,
        cv.w,
        ((x0 + x1) / 2, body_top),
        (w * 0.28, body_top - y0 - 2),
        thickness=max(2, int(w * 0.05)),
        arc=(180, 360),
    )
    cv.paint(handle, main * 0.75)
    body = poly_mask(
        cv.h, cv.w, np.array([(x0 + inset, body_top), (x1 - inset, body_top), (x1, y1), (x0, y1)], F32)
    )
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.45)
    cv.paint(body, shaded(main, shade))
    flap_h = rng.uniform(0.25, 0.45) * (y1 - body_top)
    flap = poly_mask(
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
    cv.paint(flap, shaded(main * 0.85, shade))
    cv.paint(
        ellipse_mask(cv.h, cv.w, ((x0 + x1) / 2, body_top + flap_h), (w * 0.05, w * 0.04)),
        col([0.85, 0.7, 0.3]),
    )


def _draw_watch(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    xc, yc = (x0 + x1) / 2, y0 + h / 2
    strap = poly_mask(
        cv.h,
        cv.w,
        np.array([(xc - w * 0.3, y0), (xc + w * 0.3, y0), (xc + w * 0.3, y1), (xc - w * 0.3, y1)], F32),
    )
    cv.paint(strap, shaded(main, cyl_shade(cv.w, xc - w * 0.3, xc + w * 0.3, -0.3, 0.5)))
    case = col(rng.choice([[0.78, 0.79, 0.8], [0.85, 0.7, 0.32], [0.15, 0.15, 0.16]]))
    r = w * 0.5
    cv.paint(ellipse_mask(cv.h, cv.w, (xc, yc), (r, r)), case)
    dial = col(rng.choice([np.ones(3) * 0.95, np.ones(3) * 0.08, accent]))
    cv.paint(ellipse_mask(cv.h, cv.w, (xc, yc), (r * 0.8, r * 0.8)), dial)
    hand = col(1.0 - dial)
    for ang, ln in ((rng.uniform(0, 6.28), 0.65), (rng.uniform(0, 6.28), 0.45)):
        m = np.zeros((cv.h, cv.w), np.uint8)
        p = (int((xc + np.cos(ang) * r * ln) * 16), int((yc + np.sin(ang) * r * ln) * 16))
        cv2.line(m, (int(xc * 16), int(yc * 16)), p, 255, max(1, int(r * 0.07)), cv2.LINE_AA, shift=4)
        cv.paint(m.astype(F32) / 255.0, hand)


def draw_mug(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w = x1 - x0
    bx1 = x1 - w * 0.22
    handle = ellipse_mask(
        cv.h, cv.w, (bx1, (y0 + y1) / 2), (w * 0.18, (y1 - y0) * 0.25), thickness=max(2, int(w * 0.07))
    )
    cv.paint(handle, main * 0.8)
    shade = cyl_shade(cv.w, x0, bx1, rng.uniform(-0.6, -0.2))
    body = lathe(cv, [(0.0, 1.0), (0.95, 1.0), (1.0, 0.95)], x0, bx1, y0, y1)
    cv.paint(body, shaded(main, shade))
    cv.paint(ellipse_mask(cv.h, cv.w, ((x0 + bx1) / 2, y0 + 2), ((bx1 - x0) / 2, 2.5)), main * 0.5)
    _logo(cv, rng, (x0 + bx1) / 2, (y0 + y1) / 2, w * 0.13, accent, body)


def draw_plant(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    pot_top = y0 + rng.uniform(0.5, 0.65) * h
    xc = (x0 + x1) / 2
    leaf = col(rng.choice([[0.2, 0.5, 0.2], [0.3, 0.6, 0.25], [0.15, 0.4, 0.25]]))
    for _ in range(int(rng.integers(5, 10))):
        ang = rng.uniform(-60, 60)
        ln = rng.uniform(0.25, 0.5) * h
        cx = xc + np.sin(np.radians(ang)) * ln * 0.5
        cy = pot_top - np.cos(np.radians(ang)) * ln * 0.5
        m = ellipse_mask(cv.h, cv.w, (cx, cy), (ln * 0.5, w * rng.uniform(0.08, 0.14)), angle=ang + 90)
        cv.paint(m, jitter(rng, leaf, 0.05) * rng.uniform(0.7, 1.1))
    shade = cyl_shade(cv.w, x0 + w * 0.15, x1 - w * 0.15, -0.4)
    pot = poly_mask(
        cv.h,
        cv.w,
        np.array(
            [(x0 + w * 0.15, pot_top), (x1 - w * 0.15, pot_top), (x1 - w * 0.25, y1), (x0 + w * 0.25, y1)],
            F32,
        ),
    )
    cv.paint(pot, shaded(main, shade))
    rim = np.zeros_like(pot)
    rim[int(pot_top) : int(pot_top + h * 0.06)] = 1.0
    cv.paint(rim * pot, shaded(accent, shade))


def _draw_speaker(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.5, 0.0), 0.8)
    body = lathe(cv, [(0.0, 0.85), (0.04, 1.0), (0.96, 1.0), (1.0, 0.85)], x0, x1, y0, y1)
    cv.paint(body, shaded(main, shade))
    yy, xx = np.mgrid[0 : cv.h, 0 : cv.w]
    step = max(4, int((x1 - x0) / 9))
    dots = (((yy % step) < step * 0.45) & ((xx % step) < step * 0.45)).astype(F32)
    grille = np.zeros_like(body)
    grille[int(y0 + 0.12 * (y1 - y0)) : int(y0 + 0.8 * (y1 - y0))] = 1.0
    cv.paint(dots * grille * body * 0.5, main * 0.4)
    cv.paint(lathe(cv, [(0.86, 1.0), (0.96, 1.0)], x0, x1, y0, y1), shaded(accent, shade))


def _draw_shoe(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
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
    cv.paint(poly_mask(cv.h, cv.w, upper), main)
    sole = np.array([(fx(0.0), y1 - sole_h), (fx(1.0), y1 - sole_h), (fx(0.98), y1), (fx(0.02), y1)], F32)
    cv.paint(poly_mask(cv.h, cv.w, sole), col(rng.choice([np.ones(3) * 0.93, np.ones(3) * 0.12, accent])))
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
    cv.paint(poly_mask(cv.h, cv.w, stripe), accent)


def _draw_perfume(cv: Canvas, rng: Rng, main: np.ndarray, accent: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cap_h = rng.uniform(0.2, 0.32) * h
    cap = poly_mask(
        cv.h,
        cv.w,
        np.array(
            [(x0 + w * 0.3, y0), (x1 - w * 0.3, y0), (x1 - w * 0.3, y0 + cap_h), (x0 + w * 0.3, y0 + cap_h)],
            F32,
        ),
    )
    cv.paint(cap, shaded(accent, cyl_shade(cv.w, x0 + w * 0.3, x1 - w * 0.3, -0.4)))
    glass = poly_mask(
        cv.h, cv.w, np.array([(x0, y0 + cap_h + 2), (x1, y0 + cap_h + 2), (x1, y1), (x0, y1)], F32)
    )
    shade = cyl_shade(cv.w, x0, x1, rng.uniform(-0.7, -0.3), 0.5)
    cv.paint(glass, shaded(col(main * 0.8 + 0.15), shade))
    inner = poly_mask(
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
    cv.paint(inner, shaded(main, shade))
    _logo(cv, rng, (x0 + x1) / 2, (y0 + cap_h + y1) / 2, w * 0.12, col(np.ones(3) * 0.95), inner)


KINDS: dict[str, tuple[_Kind, Callable[..., None]]] = {
    "bottle": (_Kind("bottle", ("glass", "plastic"), (0.22, 0.32), (0.26, 0.36)), draw_bottle),
    "jar": (_Kind("jar", ("glass", "ceramic"), (0.08, 0.14), (0.65, 0.9)), draw_jar),
    "tube": (_Kind("cosmetics tube", ("plastic",), (0.13, 0.19), (0.25, 0.32)), _draw_tube),
    "can": (_Kind("drink can", ("aluminium",), (0.115, 0.16), (0.42, 0.58)), draw_can),
    "box": (_Kind("gift box", ("cardboard", "paper"), (0.08, 0.3), (0.5, 1.15)), _draw_box),
    "handbag": (_Kind("handbag", ("leather", "canvas"), (0.22, 0.32), (0.85, 1.25)), _draw_handbag),
    "watch": (_Kind("wristwatch", ("leather", "steel"), (0.08, 0.1), (0.5, 0.6)), _draw_watch),
    "mug": (_Kind("mug", ("ceramic",), (0.09, 0.11), (1.0, 1.2)), draw_mug),
    "plant": (_Kind("pot plant", ("ceramic", "terracotta"), (0.25, 0.45), (0.55, 0.8)), draw_plant),
    "speaker": (_Kind("smart speaker", ("fabric",), (0.15, 0.25), (0.45, 0.65)), _draw_speaker),
    "shoe": (_Kind("sneaker", ("leather", "canvas"), (0.09, 0.13), (2.1, 2.6)), _draw_shoe),
    "perfume": (_Kind("perfume bottle", ("glass",), (0.1, 0.15), (0.6, 0.85)), _draw_perfume),
}


def render_product(
    rng: Rng, kind: str, aspect: float, colour_name: str, accent: np.ndarray, height_m: float
) -> Product:
    """Draw one cut-out of ``kind`` at its own resolution (110-200 px high)."""
    spec, draw = KINDS[kind]
    res_h = int(rng.integers(110, 201))
    h2 = res_h * 2
    w2 = round(h2 * aspect) + 8
    cv = Canvas(h2 + 4, w2)
    main = jitter(rng, np.array(PRODUCT_COLOURS[colour_name]), 0.03)
    draw(cv, rng, main, accent, (4.0, 4.0, float(w2 - 4), float(h2 + 2)))
    rgba = cv.rgba(2)
    # Trim to the opaque bounding box so the base is the bottom row and nothing floats in padding.
    ys, xs = np.nonzero(rgba[..., 3] > 0.02)
    rgba = rgba[ys.min() : ys.max() + 1, max(0, xs.min() - 1) : xs.max() + 2]
    solid = rgba[..., 3] > 0.5
    colour = rgba[..., :3][solid].mean(axis=0) if solid.any() else main
    caption = f"a {colour_name} {rng.choice(spec.materials)} {spec.noun}"
    return Product(rgba=rgba.astype(F32), height_m=height_m, caption=caption, colour=colour.astype(F32))


def resize_rgba(rgba: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize with premultiplied alpha (no dark fringes); the only change a pasted product gets."""
    interp = cv2.INTER_AREA if h < rgba.shape[0] else cv2.INTER_LINEAR
    a = rgba[..., 3:4]
    pre = cv2.resize(rgba[..., :3] * a, (w, h), interpolation=interp)
    ar = cv2.resize(rgba[..., 3], (w, h), interpolation=interp)
    rgb = pre / np.maximum(ar, 1e-4)[..., None]
    return np.dstack([np.clip(rgb, 0, 1), np.clip(ar, 0, 1)]).astype(F32)
