"""Products: the drawn product cut-outs (:func:`draw_product`) and real ones read from a folder
(:func:`load_product_pool`).

``draw_product`` draws bottles, vases, jars, cans, cosmetic tubes, mugs, boxes and shoes with
cylinder or face shading, labels and an anti-aliased alpha; the ``synthetic`` scenes paste them, the
sample catalog (``rfnet.data.sample``) and RFFT's procedural products (``rfft.data``) use them too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines import storage
from rfnet.data.transforms import decode_rgba

logger = logging.getLogger(__name__)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "orange": (232, 120, 30),
    "yellow": (230, 200, 45),
    "green": (50, 150, 70),
    "teal": (30, 140, 145),
    "blue": (40, 85, 200),
    "navy": (28, 38, 92),
    "purple": (115, 55, 160),
    "pink": (232, 125, 170),
    "brown": (115, 72, 40),
    "beige": (218, 198, 160),
    "white": (238, 238, 232),
    "grey": (128, 128, 130),
    "black": (28, 28, 30),
    "gold": (200, 160, 60),
}
PALETTE_NAMES = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[n] for n in PALETTE_NAMES], np.float32)


def colour_name(rgb) -> str:
    """Nearest palette name for an RGB colour (for captions)."""
    d = ((PALETTE_RGB - np.asarray(rgb, np.float32)) ** 2).sum(1)
    return PALETTE_NAMES[int(d.argmin())]


def jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    """``rgb`` (0-255) plus Gaussian noise of ``amount`` per channel, clipped."""
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def random_colour(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A palette colour's name and the colour, jittered."""
    name = PALETTE_NAMES[rng.integers(len(PALETTE_NAMES))]
    return name, jitter(rng, PALETTE[name], 14)


@dataclass
class Product:
    """An RGBA cut-out ``(H, W, 4)`` uint8 (straight alpha), its dominant colour and its caption."""

    rgba: np.ndarray
    colour: np.ndarray
    caption: str
    kind: str


def _profile_polygon(half_widths: np.ndarray, width: int) -> np.ndarray:
    """Closed polygon of a body of revolution: ``half_widths[y]`` around the centre column."""
    height = len(half_widths)
    ys = np.arange(height, dtype=np.float32)
    cx = width / 2.0
    right = np.stack([cx + half_widths, ys], 1)
    left = np.stack([cx - half_widths[::-1], ys[::-1]], 1)
    return np.concatenate([right, left]).round().astype(np.int32)


def _cylinder_shading(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor ``(H, W, 1)``: a cylinder lit from one side, with a specular stripe."""
    x = np.linspace(-1, 1, width, dtype=np.float32)
    light = rng.uniform(-0.5, 0.5)
    shade = 0.62 + 0.38 * np.clip(1 - (x - light) ** 2, 0, 1) ** 0.6
    shade += 0.35 * np.exp(-(((x - light - 0.25) / 0.08) ** 2))
    return np.broadcast_to(shade[None, :, None], (height, width, 1)).astype(np.float32)


def _fill(mask: np.ndarray, colour, shading: np.ndarray | None = None) -> np.ndarray:
    rgb = np.broadcast_to(np.asarray(colour, np.float32), (*mask.shape, 3)).copy()
    if shading is not None:
        rgb *= shading
    return rgb


def _rgba(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.empty((*mask.shape, 4), np.uint8)
    out[..., :3] = np.clip(rgb + 0.5, 0, 255)
    out[..., 3] = mask
    return out


def _draw_revolved(
    rng, height: int, aspect: float, profile: Callable[[np.ndarray], np.ndarray], colour, parts
):
    """A rotationally symmetric product: ``profile(t)`` (t in [0, 1] top->bottom) gives half-widths in
    units of the half-width; ``parts`` are ``(t0, t1, colour)`` bands painted over the body."""
    width = max(4, round(height * aspect))
    t = np.linspace(0, 1, height, dtype=np.float32)
    half = np.clip(profile(t), 0.05, 1.0) * (width / 2.0 - 1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [_profile_polygon(half, width)], 255, cv2.LINE_AA)
    shading = _cylinder_shading(width, height, rng)
    rgb = _fill(mask, colour, shading)
    for t0, t1, band in parts:
        y0, y1 = round(t0 * height), round(t1 * height)
        rgb[y0:y1] = np.asarray(band, np.float32) * shading[y0:y1]
    return _rgba(rgb, mask)


def _smoothstep(t, a, b):
    x = np.clip((t - a) / max(b - a, 1e-6), 0, 1)
    return x * x * (3 - 2 * x)


def draw_product(rng: np.random.Generator, height: int) -> Product:
    """A procedurally drawn product about ``height`` pixels tall (before final resizing)."""
    kind = str(rng.choice(["bottle", "vase", "jar", "can", "tube", "mug", "box", "shoe"]))
    cname, colour = random_colour(rng)
    accent_name, accent = random_colour(rng)
    if kind == "bottle":
        neck = rng.uniform(0.22, 0.4)
        shoulder = rng.uniform(0.25, 0.42)

        def profile(t):
            return (
                neck
                + (1 - neck) * _smoothstep(t, shoulder - 0.1, shoulder + 0.06)
                - 0.15 * _smoothstep(t, 0.97, 1.0)
            )

        label = (rng.uniform(0.5, 0.6), rng.uniform(0.72, 0.88), accent)
        cap = (0.0, rng.uniform(0.06, 0.12), jitter(rng, accent, 30))
        rgba = _draw_revolved(rng, height, rng.uniform(0.28, 0.42), profile, colour, [cap, label])
        material, noun = rng.choice(["glass", "plastic"]), "bottle"
    elif kind == "vase":
        a, b, c = rng.uniform(0.3, 0.5), rng.uniform(1.2, 2.4), rng.uniform(0, 1)

        def profile(t):
            return 0.55 + a * np.sin(np.pi * (b * t + c)) * (0.4 + 0.6 * t) + 0.1 * _smoothstep(t, 0, 0.05)

        rgba = _draw_revolved(rng, height, rng.uniform(0.45, 0.7), profile, colour, [])
        material, noun = rng.choice(["ceramic", "glass"]), "vase"
    elif kind == "jar":
        lid = rng.uniform(0.1, 0.18)

        def profile(t):
            return np.where(t < lid, 0.82, 0.9 + 0.1 * np.sin(np.pi * t))

        rgba = _draw_revolved(rng, height, rng.uniform(0.6, 0.9), profile, colour, [(0, lid, accent)])
        material, noun = "glass", "jar"
    elif kind == "can":

        def profile(t):
            return 1.0 - 0.12 * (_smoothstep(t, 0.0, 0.04) < 1) - 0.12 * (t > 0.96)

        rgba = _draw_revolved(rng, height, rng.uniform(0.5, 0.65), profile, colour, [(0.3, 0.7, accent)])
        material, noun = "aluminium", "can"
    elif kind == "tube":
        cap_top = rng.random() < 0.5

        def profile(t):
            return np.where((t < 0.2) if cap_top else (t > 0.8), 0.75, 1.0)

        band = (0.0, 0.2, accent) if cap_top else (0.8, 1.0, accent)
        rgba = _draw_revolved(rng, height, rng.uniform(0.18, 0.28), profile, colour, [band])
        material, noun = "plastic", "cosmetic tube"
    elif kind == "mug":
        rgba = _draw_mug(rng, height, colour)
        material, noun = rng.choice(["ceramic", "enamel"]), "mug"
    elif kind == "box":
        rgba = _draw_box(rng, height, colour, accent)
        material, noun = "cardboard", "box"
    else:
        rgba = _draw_shoe(rng, height, colour, accent)
        material, noun = rng.choice(["leather", "canvas"]), "sneaker"
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1].copy()
    caption = f"a {cname} {material} {noun}"
    if kind in ("bottle", "can", "box") and accent_name != cname and rng.random() < 0.5:
        caption += f" with a {accent_name} label"
    return Product(rgba, colour, caption, kind)


def _draw_mug(rng, height, colour) -> np.ndarray:
    body_w = round(height * rng.uniform(0.75, 1.0))
    handle = round(body_w * rng.uniform(0.28, 0.4))
    width = body_w + handle
    mask = np.zeros((height, width), np.uint8)
    rim = max(2, round(body_w * 0.12))
    cv2.rectangle(mask, (0, rim // 2), (body_w - 1, height - rim), 255, -1)
    cv2.ellipse(mask, (body_w // 2, height - rim), (body_w // 2, rim), 0, 0, 180, 255, -1, cv2.LINE_AA)
    cv2.ellipse(
        mask, (body_w // 2, rim // 2 + 1), (body_w // 2, rim // 2 + 1), 0, 0, 360, 255, -1, cv2.LINE_AA
    )
    centre = (body_w - 2, height // 2)
    axes = (handle, round(height * 0.27))
    cv2.ellipse(mask, centre, axes, 0, -90, 90, 255, max(2, round(height * 0.08)), cv2.LINE_AA)
    shading = np.ones((height, width, 1), np.float32)
    shading[:, :body_w] = _cylinder_shading(body_w, height, rng)
    rgb = _fill(mask, colour, shading)
    inner = np.zeros_like(mask)
    cv2.ellipse(
        inner, (body_w // 2, rim // 2 + 1), (body_w // 2 - 2, max(1, rim // 2 - 1)), 0, 0, 360, 255, -1
    )
    rgb[inner > 0] *= 0.45
    return _rgba(rgb, mask)


def _draw_box(rng, height, colour, accent) -> np.ndarray:
    depth = round(height * rng.uniform(0.15, 0.3))
    front_w = round(height * rng.uniform(0.5, 1.1))
    front_h = height - depth // 2
    width = front_w + depth
    mask = np.zeros((height, width), np.uint8)
    rgb = np.zeros((height, width, 3), np.float32)
    top = depth // 2
    faces = [
        (np.array([[0, top], [depth, 0], [width - 1, 0], [front_w, top]]), 1.2),  # top face
        (
            np.array([[front_w, top], [width - 1, 0], [width - 1, front_h - top], [front_w, height - 1]]),
            0.7,
        ),  # side
        (np.array([[0, top], [front_w, top], [front_w, height - 1], [0, height - 1]]), 1.0),  # front
    ]
    for pts, light in faces:
        face = np.zeros_like(mask)
        cv2.fillPoly(face, [pts.astype(np.int32)], 255, cv2.LINE_AA)
        rgb[face > 0] = np.clip(np.asarray(colour) * light, 0, 255)
        mask = np.maximum(mask, face)
    cx, cy = front_w // 2, top + (height - top) // 2
    if rng.random() < 0.5:
        cv2.circle(rgb, (cx, cy), max(2, front_w // 5), tuple(float(v) for v in accent), -1, cv2.LINE_AA)
    else:
        cv2.rectangle(
            rgb,
            (front_w // 5, cy - height // 10),
            (front_w * 4 // 5, cy + height // 10),
            tuple(float(v) for v in accent),
            -1,
        )
    return _rgba(rgb, mask)


def _draw_shoe(rng, height, colour, accent) -> np.ndarray:
    width = round(height * rng.uniform(2.0, 2.6))
    mask = np.zeros((height, width), np.uint8)
    sole_h = max(2, round(height * rng.uniform(0.14, 0.22)))
    heel = height * rng.uniform(0.0, 0.15)
    upper = np.array(
        [
            [width * 0.02, height - sole_h],
            [width * 0.02, heel],
            [width * 0.3, heel + height * 0.05],
            [width * 0.45, height * 0.35],
            [width * 0.8, height * 0.45],
            [width * 0.98, height * 0.7],
            [width * 0.98, height - sole_h],
        ],
        np.int32,
    )
    cv2.fillPoly(mask, [upper], 255, cv2.LINE_AA)
    rgb = _fill(mask, colour, 0.85 + 0.3 * np.linspace(0, 1, height, dtype=np.float32)[:, None, None])
    sole = np.zeros_like(mask)
    cv2.rectangle(sole, (0, height - sole_h), (width - 1, height - 1), 255, -1)
    rgb[sole > 0] = jitter(rng, (235, 235, 230) if rng.random() < 0.6 else (40, 40, 40), 6)
    mask = np.maximum(mask, sole)
    for i in range(4):
        x = round(width * (0.42 + 0.07 * i))
        y = round(height * (0.38 + 0.03 * i))
        cv2.line(
            rgb,
            (x, y),
            (x + round(width * 0.04), y + round(height * 0.1)),
            tuple(float(v) for v in accent),
            max(1, height // 25),
        )
    return _rgba(rgb, mask)


def load_product_pool(products_dir: str, max_side: int) -> list[Product]:
    """Real RGBA cut-outs from ``products_dir`` (``*.png``), cropped to alpha and shrunk to ``max_side``;
    each one's ``kind`` is ``real:<file stem>``."""
    paths = [p for p in storage.list_files(products_dir) if p.lower().endswith((".png", ".webp"))]
    pool = []
    for path in paths:
        rgba = decode_rgba(storage.read_bytes(path))
        alpha = rgba[..., 3]
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        if rows.size == 0:
            logger.warning("product %s has an empty alpha channel; skipped", path)
            continue
        rgba = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        scale = max_side / max(rgba.shape[:2])
        if scale < 1:
            rgba = resize_rgba(
                rgba, max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale))
            )
        visible = rgba[..., 3] > 128
        colour = np.median(rgba[visible][:, :3], axis=0) if visible.any() else np.zeros(3)
        caption = f"a {colour_name(colour)} product"
        pool.append(Product(rgba, colour.astype(np.float32), caption, f"real:{Path(path).stem}"))
    if not pool:
        raise ValueError(f"products_dir {products_dir!r} holds no usable RGBA .png/.webp cut-outs")
    return pool


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize straight-alpha RGBA through premultiplied colour (no dark or garbage fringes)."""
    pre = rgba.astype(np.float32)
    pre[..., :3] *= pre[..., 3:] * (1.0 / 255.0)
    interp = cv2.INTER_AREA if width <= rgba.shape[1] else cv2.INTER_LINEAR
    pre = cv2.resize(pre, (width, height), interpolation=interp)
    alpha = np.clip(pre[..., 3:], 0, 255)
    out = np.empty((height, width, 4), np.uint8)
    out[..., :3] = np.clip(pre[..., :3] * (255.0 / np.maximum(alpha, 0.5)) + 0.5, 0, 255) * (alpha > 0.5)
    out[..., 3] = (alpha[..., 0] + 0.5).astype(np.uint8)
    return out
