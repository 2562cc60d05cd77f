"""An independent, labelled "studio photography" image set for checking RFNet's generalisation.

Every image is a procedurally drawn product cut-out (bottles, jars, cans, vases, perfume, tubes,
lamps, boxes, bags, sneakers, headphones; shaded, labelled, anti-aliased alpha) pasted unchanged
onto a procedurally drawn studio scene: a tabletop, podium, shelf or floor plane drawn in
perspective against a wall, with photographic-looking textures (wood grain, marble veins, fabric
weave, concrete, terrazzo, tiles), soft light gradients, window light, bokeh and reference objects
(mugs, books, plants, candles, lamps, boxes, doors, chairs) at real-world sizes. Mild noise, blur,
colour cast and vignetting touch the background only. Images are labelled with the six RFNet
classes by construction: 1 Available (product standing on a surface with a contact shadow,
sensible scale, contrasting background), 2 Unsuitable (glitched, melted, collaged, fragmented,
stretched or artefact-ridden scene), 3 Space Mismatch (floating above the surface, stuck on the
wall, hanging off a table end, or standing on a surface seen at an impossible angle), 4 Size
Mismatch (product as tall as a door or chair, dwarfed by giant mugs and books, far too big for its
podium or shelf), 5 Indistinctiveness (background in the product's own colours) and 6 Shape
Hallucination (the scene continues, widens, duplicates or grows the product's silhouette). The set
is written with the layout of the project's RFNet data (``images/``, ``products/``, ``label.txt``,
``captions.jsonl``) and is meant only for evaluating a trained classifier on data that none of the
project's training generators produced.

    python -m bench.rfnet_studio --out /tmp/studio --n-per-class 100 --sheet /tmp/studio.png
    python -m bench.rfnet_studio --out /tmp/studio-real --products-dir ../shared/data/products
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.synthetic import Product, load_product_pool

CLASS_NAMES = {
    1: "Available",
    2: "Unsuitable",
    3: "Space Mismatch",
    4: "Size Mismatch",
    5: "Indistinctiveness",
    6: "Shape Hallucination",
}
VARIANTS = {
    1: ("plain",),
    2: ("glitch", "melt", "collage", "fragments", "artefacts", "stretch"),
    3: ("float", "wall", "edge", "tilt"),
    4: ("room", "dwarf", "podium", "shelf"),
    5: ("tone", "camo"),
    6: ("taller", "wider", "duplicate", "growths"),
}
_SALT = 0x57D10

_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.12),
    "blue": (0.15, 0.35, 0.82),
    "navy": (0.10, 0.15, 0.40),
    "green": (0.15, 0.58, 0.25),
    "olive": (0.45, 0.48, 0.18),
    "yellow": (0.96, 0.80, 0.15),
    "orange": (0.96, 0.50, 0.10),
    "pink": (0.96, 0.55, 0.72),
    "purple": (0.50, 0.25, 0.66),
    "white": (0.94, 0.94, 0.92),
    "black": (0.10, 0.10, 0.11),
    "grey": (0.55, 0.56, 0.58),
    "teal": (0.05, 0.56, 0.56),
    "brown": (0.46, 0.28, 0.15),
    "beige": (0.86, 0.76, 0.60),
    "gold": (0.86, 0.66, 0.22),
    "mint": (0.60, 0.88, 0.75),
    "coral": (0.97, 0.45, 0.38),
    "burgundy": (0.50, 0.08, 0.18),
    "lavender": (0.72, 0.65, 0.92),
    "sky blue": (0.45, 0.72, 0.94),
}
# kind -> (caption nouns, real height in cm)
_KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    "bottle": (("glass bottle", "shampoo bottle", "water bottle", "wine bottle"), 28.0),
    "jar": (("glass jar", "cream jar", "honey jar", "candle jar"), 11.0),
    "can": (("soda can", "aluminium can", "energy drink can"), 12.0),
    "vase": (("ceramic vase", "porcelain vase", "glazed vase"), 25.0),
    "perfume": (("perfume bottle", "fragrance bottle", "eau de parfum"), 11.0),
    "tube": (("cosmetic tube", "lotion tube", "hand cream tube"), 16.0),
    "lamp": (("desk lamp", "table lamp", "bedside lamp"), 42.0),
    "box": (("gift box", "product box", "cardboard box"), 18.0),
    "bag": (("shopping bag", "paper bag", "tote bag"), 38.0),
    "sneaker": (("sneaker", "running shoe", "canvas sneaker"), 11.0),
    "headphones": (("wireless headphones", "over-ear headphones"), 19.0),
}
# the real height given to a real cut-out (``products_dir``), whose kind the set does not know:
# reference objects are drawn at their real sizes next to a product of this height
_REAL_CM = 20.0
_REAL_MAX_SIDE = 1024  # real cut-outs larger than this are shrunk when loaded
_WALL_TONES = np.array(
    [
        (0.93, 0.91, 0.87),
        (0.86, 0.86, 0.84),
        (0.80, 0.84, 0.78),
        (0.90, 0.78, 0.76),
        (0.78, 0.50, 0.38),
        (0.20, 0.26, 0.38),
        (0.25, 0.26, 0.28),
        (0.86, 0.78, 0.64),
        (0.70, 0.80, 0.90),
        (0.55, 0.58, 0.40),
        (0.95, 0.88, 0.70),
        (0.60, 0.55, 0.65),
        (0.35, 0.45, 0.40),
        (0.64, 0.70, 0.74),
    ],
    np.float32,
)
_SURFACES: list[tuple[str, tuple[float, float, float]]] = [
    ("wood", (0.70, 0.52, 0.32)),
    ("wood", (0.42, 0.27, 0.16)),
    ("wood", (0.86, 0.76, 0.60)),
    ("marble", (0.92, 0.92, 0.90)),
    ("marble", (0.24, 0.24, 0.26)),
    ("marble", (0.90, 0.80, 0.78)),
    ("concrete", (0.62, 0.62, 0.60)),
    ("concrete", (0.38, 0.38, 0.38)),
    ("fabric", (0.85, 0.80, 0.72)),
    ("fabric", (0.30, 0.36, 0.52)),
    ("terrazzo", (0.88, 0.86, 0.82)),
    ("tiles", (0.90, 0.90, 0.88)),
    ("tiles", (0.36, 0.52, 0.56)),
    ("plaster", (0.80, 0.74, 0.66)),
]


def _lum(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _far(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two colours contrast clearly (colour distance or luminance)."""
    return float(np.linalg.norm(a - b)) > 0.38 or abs(_lum(a) - _lum(b)) > 0.25


# ---------------------------------------------------------------------------------------------
# noise and textures


def _fbm(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...] = (3, 6, 12)) -> np.ndarray:
    """Smooth multi-octave value noise, roughly zero mean and unit spread."""
    out = np.zeros((h, w), np.float32)
    for i, c in enumerate(cells):
        g = rng.random((c + 2, c + 2), dtype=np.float32)
        out += cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * (0.6**i)
    out -= out.mean()
    return out / (out.std() + 1e-6)


def _texture(rng: np.random.Generator, kind: str, h: int, w: int, tone, amp: float = 1.0) -> np.ndarray:
    tone = np.asarray(tone, np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = h / 128.0
    extra = None
    if kind == "wood":
        if rng.random() < 0.5:
            x, y = y, x
        n = _fbm(rng, h, w, (2, 4, 8))
        grain = np.sin(2 * np.pi * (y / (rng.uniform(4, 9) * s) + 0.9 * n))
        plank = rng.uniform(12, 28) * s
        pid = np.floor(y / plank).astype(np.int32)
        poff = rng.normal(0, 0.06, int(pid.max()) + 2).astype(np.float32)[pid]
        gap = (np.abs(y / plank - np.round(y / plank)) * plank < 0.7 * s).astype(np.float32)
        v = 1 + 0.08 * grain + 0.03 * _fbm(rng, h, w, (24, 48)) + poff - 0.3 * gap
    elif kind == "marble":
        n = _fbm(rng, h, w, (2, 4, 8, 16))
        a, b = rng.normal(0, 1, 2)
        p = rng.uniform(30, 70) * s
        vein = 1 - np.abs(np.sin(2 * np.pi * (x * a + y * b) / p / max(abs(a) + abs(b), 0.3) + 2.5 * n))
        vein = vein**10
        v = 1 + 0.04 * _fbm(rng, h, w, (4, 8))
        vc = np.array((0.35, 0.33, 0.32) if _lum(tone) > 0.5 else (0.85, 0.82, 0.78), np.float32)
        if rng.random() < 0.3:
            vc = np.array((0.78, 0.62, 0.30), np.float32)
        extra = (vein * rng.uniform(0.5, 0.9) * amp, vc)
    elif kind == "fabric":
        p = rng.uniform(2.2, 3.5) * s
        weave = np.sin(2 * np.pi * x / p) * np.sin(2 * np.pi * y / p)
        twill = np.sin(2 * np.pi * (x + y) / (p * 2.1))
        v = 1 + 0.05 * weave + 0.03 * twill + 0.07 * _fbm(rng, h, w, (2, 3))
    elif kind == "concrete":
        v = 1 + 0.07 * _fbm(rng, h, w, (4, 8, 16, 40))
        v -= 0.12 * (rng.random((h, w), dtype=np.float32) > 0.985)
    elif kind == "terrazzo":
        v = 1 + 0.03 * _fbm(rng, h, w, (4, 8))
        out = tone * v[..., None]
        chip_cols = [np.clip(tone * rng.uniform(0.45, 1.1) + rng.normal(0, 0.08, 3), 0, 1) for _ in range(3)]
        for _ in range(int(h * w / 120)):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            ax = (max(1, int(rng.uniform(0.5, 1.6) * s)), max(1, int(rng.uniform(0.4, 1.0) * s)))
            col = tuple(float(t) for t in chip_cols[int(rng.integers(3))])
            cv2.ellipse(out, c, ax, float(rng.uniform(0, 180)), 0, 360, col, -1)
        return out
    elif kind == "tiles":
        t = rng.uniform(14, 26) * s
        tid = (np.floor(x / t) * 31 + np.floor(y / t)).astype(np.int32) % 97
        tv = rng.normal(0, 0.04, 97).astype(np.float32)[tid]
        grout = np.minimum(np.abs(x / t - np.round(x / t)), np.abs(y / t - np.round(y / t))) * t < 0.6 * s
        v = 1 + tv + 0.02 * _fbm(rng, h, w, (8, 16)) - 0.25 * grout.astype(np.float32)
    else:  # plaster / paint
        v = 1 + 0.03 * _fbm(rng, h, w, (3, 6, 12))
    v = 1 + (v - 1) * amp
    out = tone * v[..., None]
    if extra is not None:
        m, c = extra
        out = out * (1 - m[..., None]) + c * m[..., None]
    return out


def _warp_quad(tex: np.ndarray, quad, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Project a flat texture onto an image quadrilateral (perspective); returns image and coverage."""
    th, tw = tex.shape[:2]
    src = np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])
    H = cv2.getPerspectiveTransform(src, np.float32(quad))
    img = cv2.warpPerspective(tex, H, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m = cv2.warpPerspective(np.ones((th, tw), np.float32), H, (S, S), flags=cv2.INTER_LINEAR)
    return img, m


def _fill_ellipse(canvas: np.ndarray, centre, axes, colour, angle: float = 0.0) -> None:
    """A filled anti-aliased ellipse at sub-pixel precision (cv2 fixed point, 2 fractional bits)."""
    cv2.ellipse(
        canvas,
        (round(centre[0] * 4), round(centre[1] * 4)),
        (round(axes[0] * 4), round(axes[1] * 4)),
        angle,
        0,
        360,
        colour,
        -1,
        cv2.LINE_AA,
        2,
    )


def _blend(dst: np.ndarray, src: np.ndarray, m: np.ndarray) -> None:
    dst *= 1 - m[..., None]
    dst += src * m[..., None]


# ---------------------------------------------------------------------------------------------
# sprites (products and reference objects)


def _revolved(h, w, ts, rs, bands, light, gloss, label=None, rng=None, ellipse=0.1):
    """A body of revolution seen from the side: half-width profile ``rs`` at heights ``ts``."""
    H = max(4, round(h))
    R = w / 2
    W = math.ceil(w) + 2
    yy = (np.arange(H, dtype=np.float32) + 0.5) / H
    r = np.interp(yy, ts, rs).astype(np.float32) * R
    x = np.arange(W, dtype=np.float32) + 0.5 - W / 2
    alpha = np.clip(r[:, None] - np.abs(x)[None, :] + 0.5, 0, 1)
    nx = np.clip(x[None, :] / np.maximum(r[:, None], 0.5), -1, 1)
    nz = np.sqrt(1 - nx * nx)
    yi = np.arange(H, dtype=np.float32)[:, None] + 0.5
    alpha *= np.clip(H - ellipse * r[-1] * (1 - nz) - yi + 0.5, 0, 1)
    base = np.zeros((H, 3), np.float32)
    for t0, t1, c in bands:
        base[(yy >= t0) & (yy < t1)] = c
    col = np.repeat(base[:, None, :], W, axis=1)
    if label is not None:
        t0, t1, lc = label
        rows = (yy >= t0) & (yy < t1)
        m = rows[:, None] & (np.abs(nx) < 0.8)
        col[m] = lc
        ink = np.array((0.1, 0.1, 0.1) if _lum(np.asarray(lc)) > 0.5 else (0.95, 0.95, 0.95), np.float32)
        n_lines = 3
        for i in range(n_lines):
            ty = t0 + (t1 - t0) * (0.25 + 0.55 * i / (n_lines - 1))
            ln = 0.55 if i == 0 else float(rng.uniform(0.2, 0.45)) if rng is not None else 0.3
            row = min(H - 1, int(ty * H))
            th = 2 if i == 0 and H > 60 else 1
            col[row : row + th][np.abs(nx[row : row + th]) < ln] = ink
    up = np.clip(np.gradient(r) * 2.0, -1, 1)[:, None]
    diff = 0.32 + 0.68 * np.clip(0.72 * nz + 0.4 * light * nx + 0.25 * up, 0, 1)
    spec = gloss * np.exp(-(((nx - 0.5 * light) / 0.11) ** 2)) + 0.3 * gloss * np.exp(
        -(((nx + 0.75 * light) / 0.06) ** 2)
    )
    rgb = col * diff[..., None] + spec[..., None] * 0.75
    return np.clip(rgb, 0, 1), alpha


class _Sketch:
    """Supersampled 2-D drawing of flat-shaded parts; ``finish`` returns an anti-aliased sprite."""

    def __init__(self, h: float, w: float, k: int = 3):
        self.k = k
        self.h, self.w = math.ceil(h) + 1, math.ceil(w) + 1
        self.rgb = np.zeros((self.h * k, self.w * k, 3), np.float32)
        self.a = np.zeros((self.h * k, self.w * k), np.float32)

    def _paint(self, m: np.ndarray, colour, cyl=None) -> None:
        x, y, bw, bh = cv2.boundingRect(m)
        if bw == 0 or bh == 0:
            return
        mm = m[y : y + bh, x : x + bw].astype(np.float32)[..., None] / 255.0
        col = np.asarray(colour, np.float32)
        if cyl is not None:
            x0, x1, light = cyl
            xs = (np.arange(x, x + bw, dtype=np.float32) + 0.5) / self.k
            nx = np.clip((xs - x0) / max(x1 - x0, 1e-3) * 2 - 1, -1, 1)
            sh = 0.45 + 0.55 * np.clip(0.75 * np.sqrt(1 - nx * nx) + 0.35 * light * nx, 0, 1)
            sh = sh + 0.35 * np.exp(-(((nx - 0.5 * light) / 0.12) ** 2))
            col = col[None, None, :] * sh[None, :, None]
        sl = (slice(y, y + bh), slice(x, x + bw))
        self.rgb[sl] = self.rgb[sl] * (1 - mm) + col * mm
        self.a[sl] = np.maximum(self.a[sl], mm[..., 0])

    def poly(self, pts, colour, cyl=None) -> None:
        m = np.zeros(self.a.shape, np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(pts, np.float32) * self.k).astype(np.int32)], 255)
        self._paint(m, colour, cyl)

    def ellipse(self, c, axes, colour, angle=0.0, a0=0, a1=360, thickness=-1, cyl=None) -> None:
        m = np.zeros(self.a.shape, np.uint8)
        k = self.k
        cv2.ellipse(
            m,
            (round(c[0] * k), round(c[1] * k)),
            (max(1, round(axes[0] * k)), max(1, round(axes[1] * k))),
            angle,
            a0,
            a1,
            255,
            -1 if thickness < 0 else max(1, round(thickness * k)),
        )
        self._paint(m, colour, cyl)

    def line(self, pts, colour, thickness) -> None:
        m = np.zeros(self.a.shape, np.uint8)
        p = np.round(np.asarray(pts, np.float32) * self.k).astype(np.int32)
        cv2.polylines(m, [p], False, 255, max(1, round(thickness * self.k)))
        self._paint(m, colour)

    def finish(self, light: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        if light:
            ramp = 1 + 0.12 * light * np.linspace(-1, 1, self.rgb.shape[1], dtype=np.float32)
            self.rgb *= ramp[None, :, None]
        pm = cv2.resize(self.rgb * self.a[..., None], (self.w, self.h), interpolation=cv2.INTER_AREA)
        a = cv2.resize(self.a, (self.w, self.h), interpolation=cv2.INTER_AREA)
        return np.clip(pm / np.maximum(a, 1e-4)[..., None], 0, 1), np.clip(a, 0, 1)


def _shade(c, f) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(np.asarray(c, np.float32) * f, 0, 1))


def _box_sprite(rng, fw, fh, colour, accent, light, side=None, gift=None, label=True):
    d = fw * rng.uniform(0.18, 0.35)
    tv = fh * rng.uniform(0.12, 0.22)
    sk = _Sketch(fh + tv, fw + d)
    right = (light < 0) if side is None else side > 0
    ox = 0.0 if right else d
    sx = 1 if right else -1
    front = [(ox, tv), (ox + fw, tv), (ox + fw, tv + fh), (ox, tv + fh)]
    e = ox + fw if right else ox
    top = [
        (ox, tv),
        (ox + sx * d * 0 + (d if right else -d), 0),
        (ox + fw + (d if right else -d), 0),
        (ox + fw, tv),
    ]
    sidep = [(e, tv), (e + sx * d, 0), (e + sx * d, fh), (e, tv + fh)]
    sk.poly(front, _shade(colour, 1.0))
    sk.poly(top, _shade(colour, 1.22))
    sk.poly(sidep, _shade(colour, 0.68))
    gift = rng.random() < 0.4 if gift is None else gift
    if gift:
        bw = fw * 0.1
        sk.poly(
            [
                (ox + fw / 2 - bw / 2, tv),
                (ox + fw / 2 + bw / 2, tv),
                (ox + fw / 2 + bw / 2, tv + fh),
                (ox + fw / 2 - bw / 2, tv + fh),
            ],
            accent,
        )
        sk.poly(
            [
                (ox, tv + fh / 2 - bw / 2),
                (ox + fw, tv + fh / 2 - bw / 2),
                (ox + fw, tv + fh / 2 + bw / 2),
                (ox, tv + fh / 2 + bw / 2),
            ],
            accent,
        )
        cx = ox + fw / 2 + (d / 2 if right else -d / 2)
        sk.ellipse((cx - fw * 0.1, tv * 0.45), (fw * 0.12, tv * 0.45 + 1), _shade(accent, 1.1), angle=-20)
        sk.ellipse((cx + fw * 0.1, tv * 0.45), (fw * 0.12, tv * 0.45 + 1), _shade(accent, 0.9), angle=20)
    elif label:
        lc = (0.95, 0.95, 0.93) if _lum(np.asarray(colour)) < 0.6 else (0.12, 0.12, 0.14)
        lx0, ly0 = ox + fw * 0.15, tv + fh * rng.uniform(0.2, 0.4)
        sk.poly(
            [(lx0, ly0), (lx0 + fw * 0.7, ly0), (lx0 + fw * 0.7, ly0 + fh * 0.1), (lx0, ly0 + fh * 0.1)], lc
        )
        for i in range(3):
            yl = ly0 + fh * (0.2 + 0.08 * i)
            sk.line([(lx0, yl), (lx0 + fw * rng.uniform(0.3, 0.7), yl)], accent, max(0.7, fh * 0.025))
        sk.ellipse((ox + fw * 0.75, tv + fh * 0.78), (fw * 0.09, fw * 0.09), accent)
    return sk.finish(light)


def _product_sprite(rng, kind, L, colour, accent, lab_col, light):
    """Draw one product; ``L`` is its longer side in pixels."""
    gloss = float(rng.uniform(0.25, 0.6))
    if kind in ("bottle", "jar", "can", "vase", "perfume", "tube", "lamp"):
        a = {
            "bottle": (0.30, 0.42),
            "jar": (0.75, 0.98),
            "can": (0.5, 0.62),
            "vase": (0.45, 0.7),
            "perfume": (0.55, 0.8),
            "tube": (0.28, 0.38),
            "lamp": (0.5, 0.7),
        }[kind]
        asp = rng.uniform(*a)
        h, w = L, L * asp
        metal = (0.78, 0.78, 0.8) if rng.random() < 0.6 else (0.82, 0.66, 0.3)
        label = None
        if kind == "bottle":
            ts = [0, 0.09, 0.09, 0.27, 0.33, 0.40, 0.44, 0.96, 1.0]
            rs = [0.34, 0.34, 0.27, 0.27, 0.55, 0.88, 1.0, 1.0, 0.94]
            bands = [(0, 0.09, accent), (0.09, 1.01, colour)]
            label = (rng.uniform(0.48, 0.56), rng.uniform(0.8, 0.9), lab_col)
        elif kind == "jar":
            ts = [0, 0.2, 0.2, 0.25, 0.3, 0.95, 1]
            rs = [1.0, 1.0, 0.9, 0.9, 1.0, 1.0, 0.94]
            bands = [(0, 0.2, accent), (0.2, 1.01, colour)]
            label = (rng.uniform(0.38, 0.45), rng.uniform(0.8, 0.88), lab_col)
        elif kind == "can":
            ts = [0, 0.03, 0.07, 0.93, 0.97, 1]
            rs = [0.86, 0.9, 1, 1, 0.95, 0.86]
            t0 = rng.uniform(0.3, 0.6)
            bands = [
                (0, 0.07, metal),
                (0.07, 0.93, colour),
                (t0, t0 + rng.uniform(0.06, 0.2), accent),
                (0.93, 1.01, metal),
            ]
            label = (0.15, 0.3, lab_col) if rng.random() < 0.5 else None
            gloss += 0.2
        elif kind == "vase":
            ts = [0, 0.04, 0.25, 0.6, 0.88, 1]
            rs = [0.52, 0.46, rng.uniform(0.3, 0.5), 1.0, rng.uniform(0.7, 0.9), 0.55]
            bands = [(0, 1.01, colour)]
            if rng.random() < 0.5:
                t0 = rng.uniform(0.5, 0.75)
                bands.append((t0, t0 + 0.05, accent))
            gloss += 0.2
        elif kind == "perfume":
            ts = [0, 0.2, 0.2, 0.28, 0.28, 0.32, 0.36, 0.97, 1]
            rs = [0.3, 0.3, 0.18, 0.18, 0.9, 0.98, 1, 1, 0.97]
            bands = [(0, 0.2, accent), (0.2, 0.28, metal), (0.28, 1.01, colour)]
            label = (0.58, 0.74, lab_col) if rng.random() < 0.6 else None
            gloss += 0.3
        elif kind == "tube":
            ts = [0, 0.05, 0.05, 0.7, 0.8, 0.82, 1]
            rs = [1, 1, 0.98, 0.9, 0.5, 0.55, 0.55]
            bands = [(0, 0.05, _shade(colour, 1.15)), (0.05, 0.8, colour), (0.8, 1.01, accent)]
            label = (0.2, 0.55, lab_col)
        else:  # lamp
            ts = [0, 0.42, 0.42, 0.9, 0.9, 0.97, 1]
            rs = [0.62, 1.0, 0.07, 0.07, 0.6, 0.62, 0.62]
            bands = [(0, 0.42, colour), (0.42, 1.01, metal)]
            gloss = 0.3
        return _revolved(h, w, ts, rs, bands, light, gloss, label, rng)
    if kind == "box":
        asp = rng.uniform(0.6, 1.4)
        if asp > 1:
            fw = L / (1.25 * 1.0)
            fh = fw / asp
        else:
            fh = L / 1.18
            fw = fh * asp
        return _box_sprite(rng, fw, fh, colour, accent, light)
    if kind == "bag":
        h = L
        bw = h * rng.uniform(0.6, 0.85)
        hh = h * rng.uniform(0.22, 0.3)
        g = bw * 0.14
        sk = _Sketch(h, bw + g)
        sk.poly([(bw, hh), (bw + g, hh + 2), (bw + g, h), (bw, h)], _shade(colour, 0.7))
        sk.poly([(0, hh), (bw, hh), (bw, h), (0, h)], colour)
        sk.poly([(0, hh), (bw, hh), (bw, hh + h * 0.05), (0, hh + h * 0.05)], _shade(colour, 1.15))
        for cx in (bw * 0.32, bw * 0.68):
            sk.ellipse(
                (cx, hh + 1),
                (bw * 0.13, hh * 0.95),
                _shade(accent, 0.9),
                a0=180,
                a1=360,
                thickness=max(1.0, bw * 0.03),
            )
        if rng.random() < 0.5:
            sk.ellipse((bw / 2, hh + (h - hh) * 0.5), (bw * 0.18, bw * 0.18), lab_col)
        else:
            y0 = hh + (h - hh) * 0.4
            sk.poly(
                [(bw * 0.2, y0), (bw * 0.8, y0), (bw * 0.8, y0 + h * 0.12), (bw * 0.2, y0 + h * 0.12)],
                lab_col,
            )
        return sk.finish(light)
    if kind == "sneaker":
        w = L
        h = L / rng.uniform(2.3, 2.8)
        sk = _Sketch(h, w)
        flip = rng.random() < 0.5

        def P(pts):
            return [((1 - px if flip else px) * w, py * h) for px, py in pts]

        upper = [
            (0.02, 0.78),
            (0.0, 0.45),
            (0.06, 0.18),
            (0.2, 0.0),
            (0.34, 0.05),
            (0.42, 0.3),
            (0.62, 0.42),
            (0.85, 0.5),
            (0.98, 0.62),
            (0.99, 0.78),
        ]
        sk.poly(P(upper), colour)
        sk.poly(P([(0.7, 0.46), (0.85, 0.5), (0.98, 0.62), (0.99, 0.78), (0.72, 0.78)]), _shade(colour, 0.85))
        sole_c = (0.95, 0.95, 0.93) if rng.random() < 0.7 else accent
        sk.poly(P([(0.0, 0.76), (0.97, 0.76), (1.0, 0.86), (0.97, 1.0), (0.04, 1.0), (0.0, 0.9)]), sole_c)
        sk.line(P([(0.01, 0.88), (0.98, 0.88)]), _shade(sole_c, 0.75), max(0.8, h * 0.03))
        sk.line(P([(0.18, 0.62), (0.45, 0.5), (0.75, 0.64)]), accent, max(1.0, h * 0.08))
        for i in range(4):
            t = 0.35 + 0.07 * i
            sk.line(
                P([(t, 0.28 + 0.05 * i), (t + 0.05, 0.37 + 0.05 * i)]),
                (0.95, 0.95, 0.95),
                max(0.7, h * 0.035),
            )
        sk.poly(P([(0.0, 0.45), (0.06, 0.18), (0.1, 0.2), (0.05, 0.5)]), _shade(accent, 0.9))
        return sk.finish(light)
    # headphones
    h = L
    w = L * rng.uniform(0.85, 1.0)
    sk = _Sketch(h, w)
    band_c = colour
    sk.ellipse((w / 2, h * 0.55), (w * 0.4, h * 0.5), band_c, a0=180, a1=360, thickness=w * 0.07)
    sk.ellipse(
        (w / 2, h * 0.55), (w * 0.36, h * 0.46), _shade(accent, 0.8), a0=200, a1=340, thickness=w * 0.03
    )
    for cx in (w * 0.12, w * 0.88):
        sk.poly(
            [
                (cx - w * 0.03, h * 0.5),
                (cx + w * 0.03, h * 0.5),
                (cx + w * 0.03, h * 0.65),
                (cx - w * 0.03, h * 0.65),
            ],
            (0.7, 0.7, 0.72),
        )
        sk.ellipse((cx, h * 0.8), (w * 0.115, h * 0.2), colour, cyl=(cx - w * 0.115, cx + w * 0.115, light))
        sk.ellipse((cx, h * 0.8), (w * 0.05, h * 0.12), _shade(accent, 0.9))
    return sk.finish(light)


def _ref_sprite(rng, kind, hpx, light):
    """Reference objects of known real size; ``hpx`` is the height in pixels."""
    if kind == "mug":
        w = hpx * 0.8
        c = tuple(float(v) for v in rng.uniform(0.15, 0.95, 3))
        sk = _Sketch(hpx, w * 1.35)
        sk.ellipse((w * 1.02, hpx * 0.45), (w * 0.24, hpx * 0.26), c, thickness=w * 0.09)
        sk.poly([(0, hpx * 0.06), (w, hpx * 0.06), (w * 0.97, hpx), (w * 0.03, hpx)], c, cyl=(0, w, light))
        sk.ellipse((w / 2, hpx * 0.07), (w / 2, hpx * 0.07), _shade(c, 0.5))
        return sk.finish()
    if kind == "candle":
        w = hpx * 0.7
        c = (0.94, 0.9, 0.82) if rng.random() < 0.7 else tuple(float(v) for v in rng.uniform(0.3, 0.9, 3))
        sk = _Sketch(hpx, w)
        sk.poly([(0, hpx * 0.22), (w, hpx * 0.22), (w, hpx), (0, hpx)], c, cyl=(0, w, light))
        sk.ellipse((w / 2, hpx * 0.22), (w / 2, hpx * 0.05), _shade(c, 0.85))
        sk.line([(w / 2, hpx * 0.22), (w / 2, hpx * 0.15)], (0.1, 0.1, 0.1), max(0.6, w * 0.03))
        sk.ellipse((w / 2, hpx * 0.09), (w * 0.05, hpx * 0.07), (1.0, 0.8, 0.3))
        return sk.finish()
    if kind == "books":
        n = int(rng.integers(2, 5))
        bw = hpx / n * rng.uniform(3.5, 5.5)
        sk = _Sketch(hpx, bw * 1.1)
        y = hpx
        for _ in range(n):
            th = hpx / n
            off = rng.uniform(0, bw * 0.1)
            c = tuple(float(v) for v in rng.uniform(0.1, 0.85, 3))
            sk.poly([(off, y - th), (off + bw, y - th), (off + bw, y), (off, y)], c)
            sk.poly(
                [
                    (off + bw * 0.9, y - th * 0.85),
                    (off + bw, y - th * 0.85),
                    (off + bw, y - th * 0.15),
                    (off + bw * 0.9, y - th * 0.15),
                ],
                (0.95, 0.93, 0.86),
            )
            sk.line(
                [(off + bw * 0.1, y - th / 2), (off + bw * 0.5, y - th / 2)],
                _shade(c, 1.6),
                max(0.6, th * 0.08),
            )
            y -= th
        return sk.finish(light)
    if kind == "upright_books":
        n = int(rng.integers(3, 7))
        sk = _Sketch(hpx, hpx * 0.16 * n + 1)
        x = 0.0
        for _ in range(n):
            bh = hpx * rng.uniform(0.8, 1.0)
            bwid = hpx * rng.uniform(0.11, 0.17)
            c = tuple(float(v) for v in rng.uniform(0.1, 0.85, 3))
            sk.poly(
                [(x, hpx - bh), (x + bwid, hpx - bh), (x + bwid, hpx), (x, hpx)], c, cyl=(x, x + bwid, light)
            )
            sk.line(
                [(x + bwid * 0.2, hpx - bh * 0.8), (x + bwid * 0.8, hpx - bh * 0.8)],
                (0.9, 0.85, 0.6),
                max(0.5, bwid * 0.1),
            )
            x += bwid
        return sk.finish()
    if kind in ("plant", "floor_plant"):
        w = hpx * rng.uniform(0.55, 0.8)
        sk = _Sketch(hpx, w)
        ph = hpx * (0.3 if kind == "plant" else 0.28)
        pc = tuple(float(v) for v in rng.uniform(0.3, 0.95, 3))
        pw = w * 0.5
        sk.poly(
            [
                (w / 2 - pw / 2, hpx - ph),
                (w / 2 + pw / 2, hpx - ph),
                (w / 2 + pw * 0.38, hpx),
                (w / 2 - pw * 0.38, hpx),
            ],
            pc,
            cyl=(w / 2 - pw / 2, w / 2 + pw / 2, light),
        )
        for _ in range(int(rng.integers(7, 13))):
            ang = rng.uniform(-80, 80)
            ln = hpx * rng.uniform(0.25, 0.45)
            rad = math.radians(ang)
            cx = w / 2 + math.sin(rad) * ln * 0.55
            cy = hpx - ph - math.cos(rad) * ln * 0.55
            g = (rng.uniform(0.08, 0.25), rng.uniform(0.35, 0.6), rng.uniform(0.12, 0.3))
            sk.ellipse((cx, cy), (ln * 0.16, ln * 0.5), tuple(float(v) for v in g), angle=ang)
        return sk.finish(light)
    if kind == "lamp":
        c = tuple(float(v) for v in rng.uniform(0.5, 0.98, 3))
        return _product_sprite(rng, "lamp", hpx, c, c, c, light)
    if kind == "box":
        c = tuple(float(v) for v in rng.uniform(0.3, 0.8, 3) * np.array([1.0, 0.85, 0.65]))
        return _box_sprite(
            rng, hpx * 0.9 * rng.uniform(0.8, 1.4), hpx * 0.85, c, c, light, label=False, gift=False
        )
    if kind == "chair":
        w = hpx * 0.5
        c = tuple(float(v) for v in rng.uniform(0.2, 0.8, 3))
        sk = _Sketch(hpx, w)
        t = w * 0.08
        sk.poly([(w * 0.05, 0), (w * 0.05 + t, 0), (w * 0.05 + t, hpx), (w * 0.05, hpx)], _shade(c, 0.8))
        sk.poly([(w * 0.05, hpx * 0.5), (w, hpx * 0.5), (w, hpx * 0.56), (w * 0.05, hpx * 0.56)], c)
        sk.poly([(w - t, hpx * 0.5), (w, hpx * 0.5), (w, hpx), (w - t, hpx)], _shade(c, 0.8))
        sk.poly(
            [(w * 0.05, hpx * 0.05), (w * 0.3, hpx * 0.05), (w * 0.3, hpx * 0.3), (w * 0.05, hpx * 0.3)], c
        )
        return sk.finish(light)
    raise ValueError(kind)


def _over(bg: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    h, w = alpha.shape
    H, W = bg.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if xa >= xb or ya >= yb:
        return
    a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
    bg[ya:yb, xa:xb] = bg[ya:yb, xa:xb] * (1 - a) + rgb[ya - y0 : yb - y0, xa - x0 : xb - x0] * a


def _base_span(alpha: np.ndarray) -> tuple[float, float]:
    rows = alpha[max(0, alpha.shape[0] - 3) :].max(0)
    cols = np.nonzero(rows > 0.3)[0]
    if len(cols) == 0:
        return 0.0, float(alpha.shape[1])
    return float(cols[0]), float(cols[-1] + 1)


def _shadow(S, alpha, x0, y0, lx, rng, strength=1.0, cast=True) -> np.ndarray:
    """Contact + cast shadow of a sprite standing with its bottom row on the surface."""
    h = alpha.shape[0]
    by = y0 + h
    b0, b1 = _base_span(alpha)
    bw = max(2.0, b1 - b0)
    cx = x0 + (b0 + b1) / 2
    sh = np.zeros((S, S), np.float32)
    _fill_ellipse(sh, (cx, by - 0.5), (bw * 0.56, max(1.2, bw * 0.08)), 1.0)
    sig = max(0.8, bw * 0.05)
    sh = cv2.GaussianBlur(sh, (0, 0), sig) * rng.uniform(0.5, 0.75)
    if cast:
        q = rng.uniform(0.12, 0.4)
        s = -lx * rng.uniform(0.2, 0.9)
        M = np.float32([[1, -s, x0 + s * (by - y0)], [0, q, by - q * (by - y0)]])
        c = cv2.warpAffine(alpha, M, (S, S), flags=cv2.INTER_LINEAR)
        c = cv2.GaussianBlur(c, (0, 0), rng.uniform(1.0, 2.5) * S / 128) * rng.uniform(0.15, 0.35)
        sh = 1 - (1 - sh) * (1 - c)
    return np.clip(sh * strength, 0, 0.9)


# ---------------------------------------------------------------------------------------------
# scenes


@dataclass
class _Scene:
    img: np.ndarray
    support: np.ndarray
    y_hor: float
    y_back: float
    light: float


def _wall(rng, S, tone, light, window=True, arch=False) -> np.ndarray:
    kind = rng.choice(["plaster", "plaster", "plaster", "concrete", "tiles", "stripes", "panel"])
    if kind == "stripes":
        x = np.arange(S, dtype=np.float32)
        p = rng.uniform(6, 14) * S / 128
        v = 1 + 0.05 * np.sign(np.sin(2 * np.pi * x / p))
        img = tone * v[None, :, None] * np.ones((S, 1, 1), np.float32)
        img *= (1 + 0.02 * _fbm(rng, S, S, (4, 8)))[..., None]
    elif kind == "panel":
        img = _texture(rng, "plaster", S, S, tone)
        for _ in range(int(rng.integers(1, 4))):
            x0 = rng.uniform(-0.2, 0.8) * S
            y0 = rng.uniform(0.05, 0.3) * S
            cv2.rectangle(
                img,
                (int(x0), int(y0)),
                (int(x0 + rng.uniform(0.2, 0.5) * S), int(y0 + S * 0.6)),
                _shade(tone, 0.88),
                max(1, S // 100),
            )
    else:
        img = _texture(rng, str(kind), S, S, tone, amp=0.6)
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S
    g = 1 + rng.uniform(-0.12, 0.12) * (y - 0.5)
    lx0 = 0.5 + light * rng.uniform(0.2, 0.6)
    spot = np.exp(-((x - lx0) ** 2 + (y - rng.uniform(0.0, 0.5)) ** 2) / rng.uniform(0.05, 0.3))
    img *= (g + rng.uniform(0.05, 0.22) * spot - 0.06)[..., None]
    if arch:
        ac = np.asarray(_WALL_TONES[rng.integers(len(_WALL_TONES))])
        aw, ax = rng.uniform(0.3, 0.55) * S, rng.uniform(0.3, 0.7) * S
        at = rng.uniform(0.05, 0.25) * S
        m = np.zeros((S, S), np.float32)
        cv2.rectangle(m, (int(ax - aw / 2), int(at + aw / 2)), (int(ax + aw / 2), S), 1.0, -1)
        cv2.circle(m, (int(ax), int(at + aw / 2)), int(aw / 2), 1.0, -1, cv2.LINE_AA)
        _blend(img, ac * (0.9 + 0.1 * (1 - y))[..., None], m)
    if window and rng.random() < 0.35:
        ww, wh = rng.uniform(0.2, 0.4) * S, rng.uniform(0.3, 0.6) * S
        wx = (0.5 + light * rng.uniform(0.15, 0.45)) * S - ww / 2
        wy = rng.uniform(-0.15, 0.1) * S
        sky = np.float32([0.85, 0.92, 1.0]) * (0.85 + 0.15 * rng.random())
        m = np.zeros((S, S), np.float32)
        cv2.rectangle(m, (int(wx), int(wy)), (int(wx + ww), int(wy + wh)), 1.0, -1)
        frame = _shade(tone, 0.7) if rng.random() < 0.5 else (0.95, 0.95, 0.95)
        pane = np.ones((S, S, 3), np.float32) * sky
        pane *= (1 - 0.15 * y)[..., None]
        t = max(1, int(S * 0.02))
        cv2.line(pane, (int(wx + ww / 2), int(wy)), (int(wx + ww / 2), int(wy + wh)), frame, t)
        cv2.line(pane, (int(wx), int(wy + wh / 2)), (int(wx + ww), int(wy + wh / 2)), frame, t)
        m = cv2.GaussianBlur(m, (0, 0), 0.8)
        _blend(img, pane, m)
        cv2.rectangle(img, (int(wx), int(wy)), (int(wx + ww), int(wy + wh)), frame, t)
    if rng.random() < 0.2:  # shallow depth of field with bokeh
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 3.0) * S / 128)
        for _ in range(int(rng.integers(5, 14))):
            c = (int(rng.uniform(0, S)), int(rng.uniform(0, 0.6 * S)))
            b = np.zeros((S, S), np.float32)
            cv2.circle(b, c, int(rng.uniform(0.02, 0.07) * S), 1.0, -1, cv2.LINE_AA)
            b = cv2.GaussianBlur(b, (0, 0), 1.0)
            img += b[..., None] * np.float32([1.0, 0.85, 0.6]) * rng.uniform(0.1, 0.3)
    elif rng.random() < 0.2:  # a framed picture
        fw, fh = rng.uniform(0.12, 0.25) * S, rng.uniform(0.15, 0.3) * S
        fx, fy = rng.uniform(0.05, 0.8) * S, rng.uniform(0.05, 0.2) * S
        art = tuple(float(v) for v in rng.uniform(0.2, 0.9, 3))
        cv2.rectangle(img, (int(fx), int(fy)), (int(fx + fw), int(fy + fh)), art, -1)
        cv2.circle(
            img,
            (int(fx + fw / 2), int(fy + fh / 2)),
            int(fw / 4),
            tuple(float(v) for v in rng.uniform(0.2, 0.9, 3)),
            -1,
            cv2.LINE_AA,
        )
        cv2.rectangle(
            img, (int(fx), int(fy)), (int(fx + fw), int(fy + fh)), (0.12, 0.1, 0.08), max(1, S // 64)
        )
    return img


def _plane(rng, S, img, y_back, y_front, xl, xr, y_hor, vx, tex, light, haze=True):
    """Draw a horizontal plane from ``y_back`` to ``y_front`` (x extents given at the back edge)."""

    def at(xb, y):
        return vx + (xb - vx) * (y - y_hor) / (y_back - y_hor)

    quad = [(xl, y_back), (xr, y_back), (at(xr, y_front), y_front), (at(xl, y_front), y_front)]
    surf, m = _warp_quad(tex, quad, S)
    y = np.arange(S, dtype=np.float32)[:, None]
    depth = np.clip((y - y_back) / max(1.0, y_front - y_back), 0, 1)
    lit = (
        1
        + rng.uniform(-0.12, 0.12) * (1 - depth)
        + 0.06 * light * (np.arange(S, dtype=np.float32)[None, :] / S - 0.5)
    )
    surf = surf * lit[..., None]
    if haze:
        k = np.exp(-(y - y_back) / (0.06 * S))[..., None] * 0.45
        surf = surf * (1 - k) + tex.reshape(-1, 3).mean(0) * k
    _blend(img, surf, m)
    return m, quad


def _front_face(img, quad, thick, colour):
    (xa, ya), (xb, _) = quad[3], quad[2]
    pts = np.float32([(xa, ya), (xb, ya), (xb, ya + thick), (xa, ya + thick)])
    cv2.fillConvexPoly(img, np.round(pts * 4).astype(np.int32), colour, cv2.LINE_AA, 2)


def _pick_tone(rng, avoid, pool) -> np.ndarray:
    for _ in range(30):
        c = np.asarray(pool[int(rng.integers(len(pool)))], np.float32) * rng.uniform(0.92, 1.06)
        if all(_far(c, a) for a in avoid):
            return c
    return (
        np.float32([0.5, 0.5, 0.5])
        if _lum(avoid[0]) > 0.6 or _lum(avoid[0]) < 0.3
        else np.float32([0.95, 0.95, 0.95])
    )


def _surface_choice(rng, avoid):
    for _ in range(30):
        kind, tone = _SURFACES[int(rng.integers(len(_SURFACES)))]
        t = np.asarray(tone, np.float32) * rng.uniform(0.92, 1.06)
        if all(_far(t, a) for a in avoid):
            return kind, t
    return "plaster", _pick_tone(rng, avoid, _WALL_TONES)


def _scene(rng, S, kind, bx, by, pw, light, wall_tone, surf, opts) -> _Scene:
    """Wall + support surface in perspective; the product's base point is (bx, by)."""
    img = _wall(rng, S, wall_tone, light, window=opts.get("window", True), arch=kind == "podium")
    support = np.zeros((S, S), np.float32)
    skind, stone = surf
    amp = opts.get("tex_amp", 1.0)
    tex = _texture(rng, skind, S, 2 * S, stone, amp)
    vx = S / 2 + rng.normal(0, 0.15) * S
    y_back = opts.get("y_back")
    if kind in ("table", "floor"):
        if y_back is None:
            lo, hi = 0.22 * S, min(0.62 * S, by - 0.1 * S)
            y_back = rng.uniform(lo, max(lo, hi))
        y_hor = y_back - rng.uniform(0.08, 0.5) * S
        floor_tone = np.clip(wall_tone * rng.uniform(0.45, 0.7), 0, 1)
        y_front = S * 1.5
        edge = opts.get("edge")  # (side, x at the product's base row)
        table_front = kind == "table" and (rng.random() < 0.5 or edge is not None) and by < 0.9 * S
        if table_front:
            y_front = rng.uniform(by + 0.04 * S, max(by + 0.045 * S, min(S - 0.04 * S, by + 0.2 * S)))
        if edge is not None:  # look at the table's end from its open side
            vx = edge[1] + edge[0] * rng.uniform(0.3, 0.7) * S
        if kind == "floor":
            cv2.rectangle(img, (0, int(y_back - 0.02 * S)), (S, int(y_back)), _shade(wall_tone, 1.05), -1)
        xl, xr = -2.0 * S, 3.0 * S
        if edge is not None:
            side, xe = edge
            # back-edge x whose line passes through (xe, by)
            xbk = vx + (xe - vx) * (y_back - y_hor) / (by - y_hor)
            # floor far below the table, then the table top on one side only
            fl_back = max(y_back + 0.15 * S, by + rng.uniform(0.06, 0.2) * S)
            ftex = _texture(rng, "wood" if rng.random() < 0.5 else "concrete", S, 2 * S, floor_tone * 0.75)
            _plane(rng, S, img, fl_back, S * 1.6, -2 * S, 3 * S, y_back - 0.05 * S, vx, ftex, light)
            if side > 0:
                xr = xbk
            else:
                xl = xbk
        m, quad = _plane(rng, S, img, y_back, y_front, xl, xr, y_hor, vx, tex, light)
        support = np.maximum(support, m)
        if table_front:
            thick = rng.uniform(0.03, 0.06) * S
            below = np.clip(floor_tone * 0.8, 0, 1)
            img[int(y_front) :] = img[int(y_front) :] * 0.3 + below * 0.7
            _front_face(img, quad, thick, _shade(stone, 0.72))
        if edge is not None:
            side, xe = edge

            def at(xb, y):
                return vx + (xb - vx) * (y - y_hor) / (y_back - y_hor)

            xa, xf = at(xr if side > 0 else xl, y_back), at(xr if side > 0 else xl, y_front)
            thick = rng.uniform(0.04, 0.07) * S
            pts = np.float32([(xa, y_back), (xf, y_front), (xf, y_front + thick), (xa, y_back + thick)])
            cv2.fillConvexPoly(img, np.round(pts * 4).astype(np.int32), _shade(stone, 0.6), cv2.LINE_AA, 2)
    elif kind == "shelf":
        y_hor = by - rng.uniform(0.1, 0.4) * S
        d1 = rng.uniform(0.03, 0.07) * S
        y_back = by - d1
        y_front = by + rng.uniform(0.015, 0.04) * S
        xl, xr = -2.0 * S, 3.0 * S
        edge = opts.get("edge")
        if edge is not None:  # a floating shelf that ends under the product
            side, xe = edge
            xe = vx + (xe - vx) * (y_back - y_hor) / (by - y_hor)
            if side > 0:
                xr = xe
            else:
                xl = xe
        m, quad = _plane(rng, S, img, y_back, y_front, xl, xr, y_hor, vx, tex, light, haze=False)
        support = np.maximum(support, m)
        thick = rng.uniform(0.03, 0.05) * S
        yb = int(y_front + thick)
        shadow = np.exp(-(np.arange(S, dtype=np.float32) - yb) / (0.05 * S))
        shadow[:yb] = 0
        xs = np.arange(S, dtype=np.float32)
        cols = np.clip(np.minimum(xs - xl + 0.02 * S, xr - xs + 0.02 * S) / (0.04 * S), 0, 1)
        img *= (1 - 0.45 * shadow[:, None] * cols[None, :])[..., None]
        _front_face(img, quad, thick, _shade(stone, 1.08))
        for f in (rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95)):
            bxk = f * S
            if edge is not None:
                bxk = (max(xl, 0) + 0.04 * S) if (f < 0.5) else (min(xr, S) - 0.06 * S)
                if not xl + 0.02 * S < bxk < xr - 0.04 * S:
                    continue
            cv2.rectangle(
                img, (int(bxk), yb), (int(bxk + 0.02 * S), int(yb + 0.08 * S)), (0.15, 0.15, 0.15), -1
            )
        y_up = opts.get("upper_shelf")
        if y_up is None and edge is None and rng.random() < 0.5:
            y_up = by - opts["ph"] - rng.uniform(0.06, 0.2) * S
        if y_up is not None and y_up > 0.03 * S:
            t = thick
            img[: int(y_up)] *= 0.93
            cv2.rectangle(img, (0, int(y_up - t)), (S, int(y_up)), _shade(stone, 1.05), -1)
            cv2.rectangle(img, (0, int(y_up)), (S, int(y_up + 0.012 * S) + 1), _shade(stone, 0.6), -1)
            sh = np.exp(-(np.arange(S, dtype=np.float32) - y_up) / (0.04 * S))
            sh[: int(y_up)] = 0
            img *= (1 - 0.3 * sh)[:, None, None]
        if opts.get("lower_shelf", edge is None and rng.random() < 0.3):
            y2 = by + rng.uniform(0.3, 0.5) * S
            if y2 < S:
                cv2.rectangle(img, (0, int(y2)), (S, int(y2 + thick)), _shade(stone, 1.08), -1)
    else:  # podium
        y_back = opts.get("y_back")
        if y_back is None:
            y_back = rng.uniform(0.35, 0.6) * S
        y_back = min(y_back, by - 0.05 * S)
        y_hor = y_back - rng.uniform(0.1, 0.4) * S
        floor_tone = _pick_tone(rng, [wall_tone * 0.7], _WALL_TONES) * 0.9
        ftex = _texture(rng, "plaster" if rng.random() < 0.6 else "concrete", S, 2 * S, floor_tone)
        fm, _ = _plane(rng, S, img, y_back, 1.5 * S, -2 * S, 3 * S, y_hor, vx, ftex, light)
        support = np.maximum(support, fm)
        R = opts.get("podium_r") or max(pw * rng.uniform(0.6, 0.95), 0.18 * S)
        ry = R * float(np.clip((by - y_hor) / S * 0.35, 0.1, 0.3))
        y_bot = by + rng.uniform(0.2, 0.5) * S
        pc = np.asarray(stone, np.float32)
        side_c = _shade(pc, 0.85)
        if rng.random() < 0.6:
            body = np.zeros((S, S), np.float32)
            cv2.rectangle(body, (round(bx - R), round(by)), (round(bx + R), round(y_bot)), 1.0, -1)
            _fill_ellipse(body, (bx, y_bot), (R, ry), 1.0)
            xs = np.clip((np.arange(S, dtype=np.float32) - bx) / R, -1, 1)
            shade = 0.5 + 0.5 * np.clip(0.7 * np.sqrt(1 - xs**2) + 0.4 * light * xs, 0, 1)
            sidei = np.float32(side_c)[None, None, :] * shade[None, :, None] * np.ones((S, 1, 1), np.float32)
            _blend(img, sidei, body)
            top = np.zeros((S, S), np.float32)
            _fill_ellipse(top, (bx, by), (R, ry), 1.0)
        else:
            body = np.zeros((S, S), np.float32)
            cv2.rectangle(body, (round(bx - R), round(by + ry)), (round(bx + R), round(y_bot)), 1.0, -1)
            _blend(img, np.ones((S, S, 3), np.float32) * np.float32(side_c), body)
            top = np.zeros((S, S), np.float32)
            back = R * (1 - 2 * ry / max(by - y_hor + ry, 1))
            pts = np.float32(
                [(bx - back, by - ry), (bx + back, by - ry), (bx + R, by + ry), (bx - R, by + ry)]
            )
            cv2.fillConvexPoly(top, np.round(pts * 4).astype(np.int32), 1.0, cv2.LINE_AA, 2)
        toptex = _texture(rng, skind, S, S, _shade(pc, 1.12), amp)
        _blend(img, toptex, top)
        support = np.maximum(support * (1 - top), top)
        if rng.random() < 0.5:  # a decorative sphere on the floor
            r = rng.uniform(0.06, 0.12) * S
            sx = bx + (R + r + rng.uniform(0.02, 0.1) * S) * (1 if rng.random() < 0.5 else -1)
            sy = min(S - r, y_bot - rng.uniform(0.0, 0.1) * S)
            y, x = np.mgrid[0:S, 0:S].astype(np.float32)
            dd = ((x - sx) ** 2 + (y - sy) ** 2) / r**2
            m = np.clip((1 - dd) * r / 2, 0, 1)
            nz = np.sqrt(np.clip(1 - dd, 0, 1))
            sc = _pick_tone(rng, [wall_tone], _WALL_TONES)
            shade = 0.45 + 0.55 * np.clip(0.7 * nz + 0.4 * light * (x - sx) / r - 0.3 * (y - sy) / r, 0, 1)
            _blend(img, sc * shade[..., None], m)
    return _Scene(img, support, float(y_hor), float(y_back), light)


def _add_refs(rng, sc, S, kinds, n, x0, x1, by, ph, prod_cm, scale=None, jitter_back=0.05, tries=1):
    """Reference objects on the product's support, beside the product, at real-world size.

    ``scale`` (a multiple of the product height) overrides the real-world size; ``tries`` attempts
    per object (positions out of frame or off the support are skipped).
    """
    sides = [-1, 1] if rng.random() < 0.5 else [1, -1]
    placed = 0
    for i in range(n * tries):
        if placed >= n:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        real = {
            "mug": 10,
            "candle": 11,
            "books": 12,
            "upright_books": 23,
            "plant": 40,
            "lamp": 45,
            "box": 16,
            "chair": 90,
            "floor_plant": 110,
        }[kind]
        yb = by - rng.uniform(0.0, jitter_back) * S
        if scale is None:
            f = (yb - sc.y_hor) / max(by - sc.y_hor, 1)
            hpx = ph / prod_cm * real * f * rng.uniform(0.85, 1.15)
        else:
            hpx = ph * scale * rng.uniform(0.9, 1.1)
        if hpx < 0.06 * S or hpx > 1.2 * S:
            continue
        rgb, a = _ref_sprite(rng, kind, hpx, sc.light)
        side = sides[i % 2]
        gap = rng.uniform(0.01, 0.08) * S
        rx0 = round(x0 - gap - a.shape[1]) if side < 0 else round(x1 + gap)
        visible = min(S, rx0 + a.shape[1]) - max(0, rx0)
        if visible < 0.45 * a.shape[1] and not (tries > 1 and visible > 0.12 * S):
            continue
        ry0 = round(yb - a.shape[0])
        if (
            0 <= round(yb) - 1 < S
            and sc.support[round(yb) - 1, int(np.clip(rx0 + a.shape[1] / 2, 0, S - 1))] < 0.5
        ):
            continue
        shd = _shadow(S, a, rx0, ry0, sc.light, rng, 0.8)
        sc.img *= (1 - shd * sc.support)[..., None]
        _over(sc.img, rgb, a, rx0, ry0)
        placed += 1
    return placed


def _finish_bg(rng, img: np.ndarray) -> np.ndarray:
    S = img.shape[0]
    img = img * (1 + rng.normal(0, 0.035, 3)).astype(np.float32)
    y, x = np.ogrid[0:S, 0:S]
    r2 = (((x - S / 2) ** 2 + (y - S / 2) ** 2) / (S / 2) ** 2).astype(np.float32)
    img *= (1 - rng.uniform(0.02, 0.14) * r2)[..., None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7) * S / 128)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.004, 0.02))
    return np.clip(img, 0, 1)


# ---------------------------------------------------------------------------------------------
# class defects on the background


def _unsuitable(rng, img, variant, S):
    if variant == "glitch":
        out = img.copy()
        y = 0
        while y < S:
            hgt = int(rng.integers(2, max(3, S // 10)))
            if rng.random() < 0.6:
                out[y : y + hgt] = np.roll(out[y : y + hgt], int(rng.integers(-S // 3, S // 3)), axis=1)
            y += hgt
        for c in (0, 2):
            out[..., c] = np.roll(out[..., c], int(rng.integers(2, 6)) * (1 if c == 0 else -1), axis=1)
        for _ in range(int(rng.integers(8, 16))):
            bw, bh = int(rng.integers(S // 10, S // 3)), int(rng.integers(S // 20, S // 6))
            x0, y0 = int(rng.integers(0, S - bw)), int(rng.integers(0, S - bh))
            if rng.random() < 0.5:
                out[y0 : y0 + bh, x0 : x0 + bw] = rng.random((1, 1, 3))
                out[y0 : y0 + bh, x0 : x0 + bw] *= rng.uniform(0.4, 1.0, (bh, 1, 1))
            else:
                tile = out[y0 : y0 + 4, x0 : x0 + 4][..., ::-1].copy()
                out[y0 : y0 + bh, x0 : x0 + bw] = np.tile(tile, (bh // 4 + 1, bw // 4 + 1, 1))[:bh, :bw]
        return out
    if variant == "melt":
        amp = rng.uniform(0.08, 0.18) * S
        dx = _fbm(rng, S, S, (3, 6)) * amp
        dy = _fbm(rng, S, S, (3, 6)) * amp * 0.6 - np.abs(_fbm(rng, S, S, (8, 16))) * amp
        y, x = np.mgrid[0:S, 0:S].astype(np.float32)
        out = cv2.remap(img, x + dx, y + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for _ in range(int(rng.integers(6, 16))):  # drips
            cx, cy = int(rng.integers(0, S)), int(rng.integers(0, S // 2))
            ln = int(rng.integers(S // 6, S // 2))
            wd = int(rng.integers(2, max(3, S // 20)))
            out[cy : cy + ln, cx : cx + wd] = out[cy : cy + 1, cx : cx + wd]
        return cv2.GaussianBlur(out, (0, 0), 0.8)
    if variant == "collage":
        pieces = [img, img[::-1], np.rot90(img).copy(), np.rot90(img, 3).copy()]
        for _ in range(2):
            kind = str(rng.choice(["wood", "marble", "tiles", "fabric", "concrete"]))
            tex = _texture(rng, kind, S, S, rng.uniform(0.15, 0.95, 3))
            if rng.random() < 0.5:
                sky = np.linspace(1.0, 0.6, S, dtype=np.float32)[:, None, None] * rng.uniform(
                    0.3, 1.0, 3
                ).astype(np.float32)
                tex[: S // 2] = sky[: S // 2]
            pieces.append(tex)
        out = pieces[int(rng.integers(1, len(pieces)))].copy()
        for _ in range(int(rng.integers(5, 9))):
            p = pieces[int(rng.integers(1, len(pieces)))]
            sc = rng.uniform(0.6, 1.8)
            p = cv2.resize(p, (max(8, int(S * sc)), max(8, int(S * sc))))
            bw, bh = int(rng.uniform(0.25, 0.6) * S), int(rng.uniform(0.25, 0.6) * S)
            x0, y0 = int(rng.integers(0, S - bw // 2)), int(rng.integers(0, S - bh // 2))
            sx, sy = (
                int(rng.integers(0, p.shape[1] - min(bw, p.shape[1] - 1))),
                int(rng.integers(0, p.shape[0] - min(bh, p.shape[0] - 1))),
            )
            patch = p[sy : sy + bh, sx : sx + bw]
            hh, ww = min(patch.shape[0], S - y0), min(patch.shape[1], S - x0)
            out[y0 : y0 + hh, x0 : x0 + ww] = patch[:hh, :ww]
            if rng.random() < 0.5:
                cv2.rectangle(out, (x0, y0), (x0 + ww, y0 + hh), (0.97, 0.97, 0.97), max(1, S // 90))
        return out
    if variant == "fragments":
        out = img.copy()
        for _ in range(int(rng.integers(20, 45))):
            c = rng.uniform(0, S, 2)
            rr = rng.uniform(0.03, 0.18) * S
            k = int(rng.integers(3, 6))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = np.stack(
                [
                    c[0] + rr * np.cos(ang) * rng.uniform(0.3, 1, k),
                    c[1] + rr * np.sin(ang) * rng.uniform(0.3, 1, k),
                ],
                1,
            )
            if rng.random() < 0.5:
                col = tuple(float(v) for v in rng.random(3))
                cv2.fillPoly(out, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
            else:
                m = np.zeros((S, S), np.float32)
                cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1.0)
                shift = rng.integers(-S // 2, S // 2, 2)
                _blend(out, np.roll(img, tuple(int(s) for s in shift), axis=(0, 1))[:, ::-1], m)
        for _ in range(int(rng.integers(3, 8))):
            p = rng.uniform(0, S, (2, 2)).astype(np.int32)
            cv2.line(
                out,
                tuple(int(v) for v in p[0]),
                tuple(int(v) for v in p[1]),
                tuple(float(v) for v in rng.random(3)),
                int(rng.integers(1, 3)),
            )
        return out
    if variant == "artefacts":
        u8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        q = int(rng.integers(1, 6))
        u8 = cv2.imdecode(cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)
        out = u8.astype(np.float32) / 255
        b = int(rng.choice([8, 12, 16])) * S // 128
        small = cv2.resize(out, (S // b, S // b), interpolation=cv2.INTER_AREA)
        blocky = cv2.resize(small, (S, S), interpolation=cv2.INTER_NEAREST)
        m = (_fbm(rng, S, S, (3, 5)) > rng.uniform(-0.5, 0.3)).astype(np.float32)
        _blend(out, blocky, m)
        levels = int(rng.integers(2, 4))
        out = np.round(out * levels) / levels
        out += (
            rng.random((S // 4, S // 4, 3), dtype=np.float32).repeat(4, 0).repeat(4, 1)[:S, :S] - 0.5
        ) * rng.uniform(0.2, 0.5)
        if rng.random() < 0.5:
            out = out[..., rng.permutation(3)]
        return np.clip(out, 0, 1)
    # stretch: the most detailed rows / columns smeared across large bands (pixel stretching)
    out = img.copy()
    gx = np.abs(np.diff(img, axis=1)).sum((1, 2))
    gy = np.abs(np.diff(img, axis=0)).sum((0, 2))
    rows, cols = np.argsort(gx)[-S // 4 :], np.argsort(gy)[-S // 4 :]
    for _ in range(int(rng.integers(3, 6))):
        if rng.random() < 0.6:
            src = int(rng.choice(rows))
            hgt = int(rng.uniform(0.12, 0.35) * S)
            y0 = int(np.clip(src - rng.uniform(0, 1) * hgt, 0, S - 1))
            out[y0 : y0 + hgt] = img[src : src + 1]
        else:
            src = int(rng.choice(cols))
            wd = int(rng.uniform(0.12, 0.35) * S)
            x0 = int(np.clip(src - rng.uniform(0, 1) * wd, 0, S - 1))
            out[:, x0 : x0 + wd] = img[:, src : src + 1]
    # torn scan lines and a band with broken colours
    for _ in range(int(rng.integers(2, 4))):
        y0 = int(rng.integers(0, S - S // 8))
        hgt = int(rng.uniform(0.08, 0.25) * S)
        out[y0 : y0 + hgt] = np.roll(
            out[y0 : y0 + hgt], int(rng.uniform(0.2, 0.5) * S) * int(rng.choice([-1, 1])), axis=1
        )
    y0 = int(rng.integers(0, S - S // 6))
    hgt = int(rng.uniform(0.08, 0.2) * S)
    band = out[y0 : y0 + hgt]
    out[y0 : y0 + hgt] = 1 - band if rng.random() < 0.5 else band[..., ::-1] * 1.4
    return np.clip(out, 0, 1)


def _hallucinate(rng, img, variant, prgb, pa, x0, y0, S):
    """Scene pixels that continue, widen, repeat or grow the product's silhouette."""
    h, w = pa.shape
    by = y0 + h
    if variant == "taller":
        # the product's upper part repeated above it: the outline continues upwards
        d = round(h * rng.uniform(0.18, 0.4))
        if rng.random() < 0.5:
            _over(img, prgb * rng.uniform(0.85, 1.0), pa, x0, y0 - d)
        else:
            nh = h + d
            rgb = cv2.resize(prgb, (w, nh), interpolation=cv2.INTER_LINEAR)
            a = cv2.resize(pa, (w, nh), interpolation=cv2.INTER_LINEAR)
            _over(img, rgb * rng.uniform(0.85, 1.0), a, x0, by - nh)
        return
    if variant == "wider":
        f = rng.uniform(1.3, 1.7)
        nw = round(w * f)
        rgb = cv2.resize(prgb, (nw, h), interpolation=cv2.INTER_LINEAR)
        a = cv2.resize(pa, (nw, h), interpolation=cv2.INTER_LINEAR)
        shift = rng.uniform(-0.5, 0.5) * (nw - w)
        _over(img, rgb * rng.uniform(0.8, 0.95), a, round(x0 + w / 2 - nw / 2 + shift), y0)
        return
    if variant == "duplicate":
        f = rng.uniform(0.55, 1.0)
        nh, nw = max(4, round(h * f)), max(4, round(w * f))
        rgb = cv2.resize(prgb, (nw, nh), interpolation=cv2.INTER_AREA)
        a = cv2.resize(pa, (nw, nh), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            rgb = rgb[:, ::-1]
            a = a[:, ::-1]
        side = 1 if rng.random() < 0.5 else -1
        dx = side * rng.uniform(0.35, 0.9) * w
        cx = x0 + w / 2 + dx
        if cx - nw / 2 < -0.3 * nw or cx + nw / 2 > S + 0.3 * nw:
            cx = x0 + w / 2 - dx
        base = by - rng.uniform(0.0, 0.06) * S
        if rng.random() < 0.35:  # partial copy emerging from behind
            cut = round(nh * rng.uniform(0.4, 0.7))
            a = a.copy()
            a[cut:] *= np.clip(1 - (np.arange(nh - cut, dtype=np.float32)[:, None] / 3), 0, 1)
        rgb = rgb * rng.uniform(0.85, 1.0)
        _over(img, rgb, a, round(cx - nw / 2), round(base - nh))
        return
    # growths: product-coloured blobs attached to the outline
    m = (pa > 0.5).astype(np.uint8)
    cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not cnts:
        return
    cnt = max(cnts, key=len)[:, 0, :]
    cy, cx = h / 2, w / 2
    n = int(rng.integers(2, 6))
    for _ in range(n):
        # avoid the base row: growths come out of the sides or the top
        for _try in range(10):
            px, py = cnt[int(rng.integers(len(cnt)))]
            if py < h - 0.1 * h:
                break
        col = prgb[max(0, py - 1) : py + 2, max(0, px - 1) : px + 2].reshape(-1, 3).mean(0)
        vx, vy = px - cx, py - cy
        nrm = math.hypot(vx, vy) + 1e-6
        ln = rng.uniform(0.06, 0.16) * S
        ex = x0 + px + vx / nrm * ln * 0.6
        ey = y0 + py + vy / nrm * ln * 0.6
        ang = math.degrees(math.atan2(vy, vx))
        blob = np.zeros((S, S), np.float32)
        _fill_ellipse(blob, (ex, ey), (ln * 0.7, ln * rng.uniform(0.22, 0.4)), 1.0, angle=ang)
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
        shade = 0.75 + 0.35 * np.clip(1 - ((xx - ex) ** 2 + (yy - ey) ** 2) / (ln * 0.7) ** 2, 0, 1)
        _blend(img, np.clip(col[None, None, :] * shade[..., None], 0, 1), blob)


# ---------------------------------------------------------------------------------------------
# one image


def _real_sprite(product: Product, height: float, max_width: float) -> tuple[np.ndarray, np.ndarray]:
    """A real cut-out resized (premultiplied, so no fringes) to ``height`` px, or narrower to fit
    ``max_width``: ``(RGB, alpha)`` in [0, 1], as :func:`_product_sprite` returns them."""
    h, w = product.rgba.shape[:2]
    scale = min(height / h, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    a = product.rgba[..., 3:].astype(np.float32) / 255
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    pre = cv2.resize(product.rgba[..., :3].astype(np.float32) / 255 * a, size, interpolation=interp)
    alpha = np.clip(cv2.resize(a[..., 0], size, interpolation=interp), 0, 1)
    rgb = np.where(alpha[..., None] > 1e-3, pre / np.maximum(alpha[..., None], 1e-3), 0)
    return np.clip(rgb, 0, 1).astype(np.float32), alpha.astype(np.float32)


@dataclass
class _Sample:
    image: np.ndarray  # uint8 SxSx3 RGB
    product: np.ndarray  # uint8 hxwx4 RGBA
    caption: str
    variant: str
    scene: str = ""  # what the product stands on: table, podium, shelf, floor
    kind: str = ""  # the product's kind


def _make_sample(rng: np.random.Generator, label: int, S: int, pool: list[Product] | None = None) -> _Sample:
    """One image of class ``label``; with a ``pool`` of real cut-outs, the product is one of them."""
    variant = str(rng.choice(VARIANTS[label]))
    light = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0))

    # ---- product
    real = pool[int(rng.integers(len(pool)))] if pool else None
    if real is not None:
        kind, caption, prod_cm = real.kind, real.caption, _REAL_CM
        colour = real.colour / 255.0
    else:
        kinds = list(_KINDS)
        if label == 4 and variant == "room":
            kinds = ["bottle", "perfume", "can", "jar", "tube", "headphones", "sneaker", "box"]
        if label == 4 and variant == "shelf":
            kinds = ["bottle", "vase", "perfume", "tube", "lamp", "bag", "can", "headphones"]
        kind = kinds[int(rng.integers(len(kinds)))]
        names = list(_COLOURS)
        cname = names[int(rng.integers(len(names)))]
        colour = np.asarray(_COLOURS[cname], np.float32) * rng.uniform(0.9, 1.06)
        colour = np.clip(colour, 0, 1)
        accent = np.asarray(_COLOURS[names[int(rng.integers(len(names)))]], np.float32)
        lab_col = np.float32([0.96, 0.95, 0.92]) if rng.random() < 0.6 else accent
        nouns, prod_cm = _KINDS[kind]
        caption = f"{cname} {nouns[int(rng.integers(len(nouns)))]}"

    L = rng.uniform(0.45, 0.78) if rng.random() < 0.8 else rng.uniform(0.3, 0.45)
    if label == 4 and variant == "dwarf":
        L = rng.uniform(0.22, 0.36)
    elif label == 3 and variant == "wall":
        L = rng.uniform(0.28, 0.5)
    elif label == 3 and variant == "edge":
        L = rng.uniform(0.3, 0.6)
    elif label == 4 and variant == "room":
        L = rng.uniform(0.45, 0.7)
    elif label == 4 and variant == "shelf":
        L = rng.uniform(0.5, 0.75)
    elif label == 6 and variant == "taller":
        L = rng.uniform(0.35, 0.6)
    if real is not None:
        prgb, pa = _real_sprite(real, L * S, 0.9 * S)
    else:
        prgb, pa = _product_sprite(rng, kind, L * S, tuple(colour), tuple(accent), tuple(lab_col), light)
    # quantise and crop: these exact pixels are saved and pasted
    pa8 = np.round(pa * 255).astype(np.uint8)
    ys, xs = np.nonzero(pa8)
    pa8 = pa8[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    prgb8 = np.round(prgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] * 255).astype(np.uint8)
    ph, pw = pa8.shape
    scale = min(1.0, (S - 2) / max(ph, pw))
    if scale < 1.0:  # never happens with the size ranges above, but keep the cut-out inside
        pa8 = cv2.resize(pa8, (int(pw * scale), int(ph * scale)), interpolation=cv2.INTER_AREA)
        prgb8 = cv2.resize(prgb8, (int(pw * scale), int(ph * scale)), interpolation=cv2.INTER_AREA)
        ph, pw = pa8.shape
    pa_f = pa8.astype(np.float32) / 255
    prgb_f = prgb8.astype(np.float32) / 255
    body = colour * 0.85
    pmean = (prgb_f * pa_f[..., None]).reshape(-1, 3).sum(0) / max(float(pa_f.sum()), 1.0)
    avoid = [body, pmean]

    # ---- layout
    scene_kind = str(rng.choice(["table", "table", "table", "podium", "shelf", "floor"]))
    if label == 3 and variant == "wall":
        scene_kind = "table" if rng.random() < 0.6 else "floor"
    if label == 3 and variant == "edge":
        scene_kind = "table" if rng.random() < 0.5 else "shelf"
    if label == 4:
        scene_kind = {"room": "floor", "dwarf": "table", "podium": "podium", "shelf": "shelf"}[variant]
    off = rng.normal(0, 0.05) * S
    if rng.random() < 0.25:
        off = rng.choice([-1, 1]) * rng.uniform(0.1, 0.22) * S
    bx = float(np.clip(S / 2 + off, pw / 2 + 1, S - pw / 2 - 1))
    if scene_kind in ("table", "floor"):
        lo = max(ph * (1.4 if label == 6 and variant == "taller" else 1.0) + 0.03 * S, 0.62 * S)
        by = rng.uniform(min(lo, 0.97 * S), 0.97 * S)
    else:
        lo = max(ph * (1.4 if label == 6 and variant == "taller" else 1.0) + 0.03 * S, 0.55 * S)
        by = rng.uniform(min(lo, 0.88 * S), 0.88 * S)
    by = float(min(by, S - 1))
    opts: dict = {"ph": ph}
    gap = 0.0
    if label == 3 and variant == "float":
        gap = rng.uniform(0.1, 0.22) * S
        by = max(by, min(S - 1.0, ph + gap + 0.02 * S))
        gap = min(gap, by - ph - 1)
    if label == 3 and variant == "wall":
        y_back = rng.uniform(0.72, 0.92) * S
        opts["y_back"] = y_back
        by_prod = y_back - rng.uniform(0.1, 0.3) * S
        by_prod = max(by_prod, ph + 0.02 * S)
        by_surf = min(S - 2.0, y_back + 0.08 * S)
    if label == 3 and variant == "edge":
        b0, b1 = _base_span(pa_f)
        side = 1 if rng.random() < 0.5 else -1
        frac = rng.uniform(0.4, 0.75)  # share of the base beyond the edge
        xbl = bx - pw / 2 + b0
        bwid = b1 - b0
        xe = xbl + (1 - frac) * bwid if side > 0 else xbl + frac * bwid
        opts["edge"] = (side, xe)
        if scene_kind == "table":
            by = float(max(ph + 0.03 * S, min(by, rng.uniform(0.7, 0.86) * S)))
            opts["y_back"] = rng.uniform(0.25, max(0.26, (by - 0.12 * S) / S)) * S
    if label == 4 and variant == "room":
        y_back = rng.uniform(max(0.5 * S, ph + 0.02 * S), 0.9 * S)
        opts["y_back"] = y_back
        by = min(S - 1.0, y_back + rng.uniform(0.01, 0.05) * S)
        opts["window"] = False
    if label == 4 and variant == "podium":
        opts["podium_r"] = pw / 2 * rng.uniform(0.25, 0.45)
    if label == 4 and variant == "shelf":
        opts["upper_shelf"] = by - ph * rng.uniform(0.35, 0.7)
        opts["lower_shelf"] = False

    # ---- tones
    if label == 5:
        tone_c = body if rng.random() < 0.7 else pmean
        wall_tone = np.clip(tone_c * rng.uniform(0.9, 1.1) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
        st = np.clip(tone_c * rng.uniform(0.88, 1.08) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
        surf = (str(rng.choice(["plaster", "fabric", "concrete", "marble", "wood"])), st)
        opts["tex_amp"] = rng.uniform(0.3, 0.8)
        opts["window"] = False
    else:
        wall_tone = _pick_tone(rng, avoid, _WALL_TONES)
        surf = _surface_choice(rng, avoid)
    sc = _scene(
        rng,
        S,
        scene_kind,
        bx,
        by if not (label == 3 and variant == "wall") else by_surf,
        pw,
        light,
        wall_tone,
        surf,
        opts,
    )
    img = sc.img

    x0 = round(bx - pw / 2)
    y0 = round(by - ph)
    if label == 3 and variant == "wall":
        y0 = round(by_prod - ph)
    if gap:
        y0 = round(by - gap - ph)

    # ---- reference objects
    if label == 4 and variant == "dwarf":
        _add_refs(
            rng,
            sc,
            S,
            ["mug", "books", "candle", "mug"],
            int(rng.integers(1, 3)),
            x0,
            x0 + pw,
            by,
            ph,
            prod_cm,
            scale=rng.uniform(1.6, 2.6),
            jitter_back=0.02,
            tries=8,
        )
    elif label == 4 and variant == "room":
        # a door in the wall and a chair / plant at the product's depth, no taller than the product
        dh = ph * rng.uniform(0.75, 1.05)
        dw = dh * 0.43
        left_space, right_space = x0, S - (x0 + pw)
        side = -1 if left_space > right_space else 1
        dxa = x0 - rng.uniform(0.02, 0.06) * S - dw if side < 0 else x0 + pw + rng.uniform(0.02, 0.06) * S
        dyb = sc.y_back
        dc = (
            _shade(wall_tone, 0.75)
            if rng.random() < 0.5
            else tuple(float(v) for v in rng.uniform(0.4, 0.9, 3))
        )
        cv2.rectangle(
            img,
            (round(dxa - 0.02 * S), round(dyb - dh - 0.02 * S)),
            (round(dxa + dw + 0.02 * S), round(dyb)),
            (0.95, 0.95, 0.93),
            -1,
        )
        cv2.rectangle(img, (round(dxa), round(dyb - dh)), (round(dxa + dw), round(dyb)), dc, -1)
        for k in range(2):
            py0 = dyb - dh + dh * (0.08 + 0.47 * k)
            cv2.rectangle(
                img,
                (round(dxa + dw * 0.15), round(py0)),
                (round(dxa + dw * 0.85), round(py0 + dh * 0.38)),
                _shade(dc, 0.85),
                max(1, S // 128),
            )
        cv2.circle(
            img,
            (round(dxa + dw * (0.85 if side > 0 else 0.15)), round(dyb - dh * 0.47)),
            max(1, round(dw * 0.06)),
            (0.85, 0.7, 0.3),
            -1,
            cv2.LINE_AA,
        )
        _add_refs(
            rng,
            sc,
            S,
            ["chair", "floor_plant", "chair"],
            1,
            x0,
            x0 + pw,
            by,
            ph,
            prod_cm,
            scale=rng.uniform(0.5, 0.9),
            jitter_back=0.0,
            tries=4,
        )
    elif label == 4 and variant == "shelf":
        _add_refs(
            rng,
            sc,
            S,
            ["upright_books"],
            2,
            x0,
            x0 + pw,
            by,
            (by - opts["upper_shelf"]),
            23,
            scale=rng.uniform(0.6, 0.85),
            jitter_back=0.0,
            tries=4,
        )
    elif rng.random() < 0.55 and not (label == 3 and variant == "edge"):
        refk = {
            "table": ["mug", "books", "plant", "candle", "lamp", "box"],
            "shelf": ["upright_books", "plant", "candle", "mug"],
            "floor": ["floor_plant", "chair", "box"],
            "podium": [],
        }[scene_kind]
        if refk:
            _add_refs(rng, sc, S, refk, int(rng.integers(1, 3)), x0, x0 + pw, by, ph, prod_cm)

    # ---- defects that change the scene around the product
    shadow_kind = "normal"
    if label == 3:
        if variant == "float":
            shadow_kind = "none" if rng.random() < 0.15 and scene_kind in ("podium", "shelf") else "ground"
        elif variant == "wall":
            shadow_kind = "none" if rng.random() < 0.5 else "wall"
    if label == 5:
        shadow_kind = "weak"
        if variant == "camo":
            # a pattern made of the product's own colours and shading (stripes, checks or patches)
            cols = np.stack([body * 0.75, body, np.clip(body * 1.15 + 0.03, 0, 1), pmean]).astype(np.float32)
            y, x = np.mgrid[0:S, 0:S].astype(np.float32)
            pat = str(rng.choice(["patches", "stripes", "checks"]))
            if pat == "patches":
                f = _fbm(rng, S, S, (3, 6))
            elif pat == "stripes":
                a = rng.uniform(0, np.pi)
                f = np.sin((x * np.cos(a) + y * np.sin(a)) * 2 * np.pi / (rng.uniform(0.06, 0.15) * S)) * 1.4
            else:
                p = rng.uniform(0.08, 0.16) * S
                f = (
                    np.sign(np.sin(x * 2 * np.pi / p)) * np.sign(np.sin(y * 2 * np.pi / p))
                ) * 0.9 + 0.3 * _fbm(rng, S, S, (6,))
            idx = np.clip(((f + 1.5) / 3 * len(cols)).astype(np.int32), 0, len(cols) - 1)
            camo = cv2.GaussianBlur(cols[idx], (0, 0), rng.uniform(0.8, 2.0) * S / 128)
            mix = rng.uniform(0.55, 0.85)
            img[:] = img * (1 - mix) + camo * mix
    if shadow_kind == "normal":
        img *= (1 - _shadow(S, pa_f, x0, y0, light, rng) * np.maximum(sc.support, 0.25))[..., None]
    elif shadow_kind == "weak":
        img *= (1 - _shadow(S, pa_f, x0, y0, light, rng, strength=rng.uniform(0.2, 0.5)) * sc.support)[
            ..., None
        ]
    elif shadow_kind == "ground":
        gy = round(by - ph)
        img *= (
            1 - _shadow(S, pa_f, x0, gy, light, rng, strength=rng.uniform(0.4, 0.8), cast=False) * sc.support
        )[..., None]
    elif shadow_kind == "wall":
        dx = round(rng.uniform(0.015, 0.04) * S * (-light / max(abs(light), 1e-3)))
        dy = round(rng.uniform(0.01, 0.03) * S)
        msk = np.zeros((S, S, 1), np.float32)
        _over(msk, np.ones((ph, pw, 1), np.float32), pa_f, x0 + dx, y0 + dy)
        sh = cv2.GaussianBlur(msk[..., 0], (0, 0), 1.2) * rng.uniform(0.3, 0.5)
        img *= (1 - sh)[..., None]
    if label == 6:
        _hallucinate(rng, img, variant, prgb_f, pa_f, x0, y0, S)
    if label == 2:
        img = _unsuitable(rng, np.clip(img, 0, 1), variant, S)
    img = _finish_bg(rng, img)
    if label == 3 and variant == "tilt":
        ang = float(rng.choice([-1, 1]) * rng.uniform(18, 38))
        M = cv2.getRotationMatrix2D((bx, by), ang, 1.0 + 1.1 * abs(math.sin(math.radians(ang))))
        img = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # ---- paste the product unchanged
    out = img.copy()
    _over(out, prgb_f, pa_f, x0, y0)
    image = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
    # a real cut-out is saved as it came (cropped to its alpha), not at the pasted size, as a
    # catalogue's product file would be
    product = real.rgba if real is not None else np.dstack([prgb8, pa8])
    return _Sample(image, product, caption, variant, scene_kind, kind)


# ---------------------------------------------------------------------------------------------
# the set


def _rng(seed: int, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, label, index, _SALT])


def make_studio_set(
    out: str, *, n_per_class: int, image_size: int = 128, seed: int = 0, products_dir: str | None = None
) -> str:
    """Write ``n_per_class`` images per RFNet class under ``out``; returns ``out``. Besides the RF1M
    files, ``meta.jsonl`` records how each image was drawn (class, :data:`VARIANTS` variant, what
    the product stands on, product kind) for ``python -m bench.rfnet_errors``. ``products_dir``: a
    directory of real RGBA cut-outs to use instead of the drawn products (each image takes one at
    random and is saved at its own resolution, cropped to its alpha; captions name its colour, and
    its real height is taken as :data:`_REAL_CM`)."""
    pool = load_product_pool(products_dir, _REAL_MAX_SIDE) if products_dir else None
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "products"), exist_ok=True)
    labels, captions, drawn = [], [], []
    used: set[str] = set()
    for label in range(1, 7):
        for i in range(n_per_class):
            rng = _rng(seed, label, i)
            name = f"{int(rng.integers(0, 2**62)):016x}"[:12]
            while name in used:
                name = f"{int(rng.integers(0, 2**62)):016x}"[:12]
            used.add(name)
            s = _make_sample(rng, label, image_size, pool)
            rel = f"images/{name}.png"
            cv2.imwrite(os.path.join(out, rel), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(
                os.path.join(out, "products", f"{name}.png"), cv2.cvtColor(s.product, cv2.COLOR_RGBA2BGRA)
            )
            labels.append(f"{rel}\t{label}")
            captions.append((rel, s.caption))
            drawn.append(
                {
                    "image": rel,
                    "label": CLASS_NAMES[label],
                    "variant": s.variant,
                    "scene": s.scene,
                    "product": s.kind,
                }
            )
    labels.sort()
    captions.sort()
    with open(os.path.join(out, "label.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        for rel, cap in captions:
            f.write(json.dumps({"image": rel, "caption": cap}) + "\n")
    with open(os.path.join(out, "meta.jsonl"), "w") as f:
        for record in sorted(drawn, key=lambda r: r["image"]):
            f.write(json.dumps(record) + "\n")
    return out


def contact_sheet(out: str, path: str, columns: int = 10, zoom: int = 2) -> str:
    """A PNG with one row per class (the first ``columns`` images of each, by file name)."""
    rows: dict[int, list[str]] = {k: [] for k in CLASS_NAMES}
    with open(os.path.join(out, "label.txt")) as f:
        for line in f:
            rel, lab = line.rstrip("\n").split("\t")
            rows[int(lab)].append(rel)
    tiles = []
    for lab in sorted(rows):
        imgs = [cv2.imread(os.path.join(out, r)) for r in rows[lab][:columns]]
        if not imgs:
            continue
        S = imgs[0].shape[0] * zoom
        imgs = [cv2.resize(im, (S, S), interpolation=cv2.INTER_NEAREST) for im in imgs]
        imgs += [np.zeros_like(imgs[0])] * (columns - len(imgs))
        head = np.full((S, 150, 3), 255, np.uint8)
        cv2.putText(
            head, str(lab), (10, S // 2 - 10), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA
        )
        for j, word in enumerate(CLASS_NAMES[lab].split()):
            cv2.putText(
                head,
                word,
                (10, S // 2 + 20 + 22 * j),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.55,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
        row = [head]
        for im in imgs:
            row += [im, np.full((S, 4, 3), 255, np.uint8)]
        tiles.append(np.hstack(row))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    cv2.imwrite(path, np.vstack(tiles))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--products-dir", default=None, help="real RGBA cut-outs to use instead of drawn products"
    )
    ap.add_argument("--sheet", default=None, help="also write a contact sheet PNG (classes x 10 columns)")
    args = ap.parse_args(argv)
    make_studio_set(
        args.out,
        n_per_class=args.n_per_class,
        image_size=args.image_size,
        seed=args.seed,
        products_dir=args.products_dir,
    )
    if args.sheet:
        contact_sheet(args.out, args.sheet)
    print(f"wrote {6 * args.n_per_class} images to {args.out}")


if __name__ == "__main__":
    main()
