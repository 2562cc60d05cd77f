"""The ``synthetic`` family's scenes: a wall over a floor or a table top, textures, wall decor,
reference objects at real-world sizes, contact shadows, and where the product goes (:class:`Layout`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.scenes.products import PALETTE_RGB, Product, random_colour, resize_rgba


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def _scene_colour(rng: np.random.Generator) -> np.ndarray:
    """An interior-looking colour: hue anywhere, mostly moderate saturation, mid to high value."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.beta(1.6, 2.2) * 255, rng.uniform(0.3, 0.97) * 255]]], np.float32
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def far_colour(rng: np.random.Generator, avoid, min_distance: float) -> np.ndarray:
    """A scene colour at least ``min_distance`` (RGB Euclidean) from every colour in ``avoid``."""
    for _ in range(64):
        c = _scene_colour(rng)
        if all(_distance(c, a) >= min_distance for a in avoid):
            return c
    # Fall back to the palette colour farthest from the product.
    d = np.min([((PALETTE_RGB - np.asarray(a, np.float32)) ** 2).sum(1) for a in avoid], axis=0)
    return PALETTE_RGB[int(d.argmax())].copy()


@dataclass
class Scene:
    """A drawn background ``(S, S, 3)`` float32 in [0, 255] and its geometry (pixels)."""

    image: np.ndarray
    wall: np.ndarray  # wall colour
    floor: np.ndarray  # floor / table-top colour
    horizon: int  # y where the supporting surface begins (wall above)
    surface_bottom: int  # y where the supporting surface ends (front edge of a table, or S)
    table: tuple[int, int] | None  # x extent of the table top, or None for a floor scene


def _noise(rng, size: int, scale: float) -> np.ndarray:
    """Smooth value noise ``(size, size)`` in about [-1, 1] with feature size ``scale`` pixels."""
    cells = max(2, round(size / max(scale, 1.0)) + 1)
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def texture(rng, h: int, w: int, kind: str) -> np.ndarray:
    """Brightness modulation ``(h, w, 1)`` around 1 for a surface texture."""
    size = max(h, w)
    t = np.ones((h, w), np.float32)
    if kind == "noise":
        t += 0.06 * _noise(rng, size, rng.uniform(3, 12))[:h, :w]
    elif kind == "stripes":
        period = rng.uniform(4, 14)
        x = np.arange(w, dtype=np.float32)
        t += 0.07 * np.sign(np.sin(2 * np.pi * x / period))[None, :]
    elif kind == "tiles":
        period = round(rng.uniform(6, 18))
        grid = np.ones((h, w), np.float32)
        grid[::period, :] = 0.8
        grid[:, ::period] = 0.8
        t = grid
    elif kind == "wood":
        y = np.arange(h, dtype=np.float32)[:, None]
        grain = _noise(rng, size, rng.uniform(2, 5))[:h, :w]
        t += 0.08 * np.sin(y * rng.uniform(0.3, 0.9) + 3 * grain) + 0.04 * grain
    elif kind == "marble":
        n = _noise(rng, size, rng.uniform(6, 16))[:h, :w]
        t += 0.12 * (np.abs(np.sin(4 * n)) < 0.15)
    return t[..., None]


def _gradient(h: int, w: int, strength: float, rng) -> np.ndarray:
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    angle = rng.uniform(0, 2 * np.pi)
    return 1.0 + strength * (np.cos(angle) * x + np.sin(angle) * y)


def draw_scene(
    rng, size: int, wall, floor, *, table: bool, horizon: int, surface_bottom: int, table_x=None
) -> Scene:
    """Wall above ``horizon``; a floor below it, or a table top from ``horizon`` to ``surface_bottom``
    (front face and legs below it, spanning ``table_x``)."""
    img = np.empty((size, size, 3), np.float32)
    wall_tex = str(rng.choice(["noise", "stripes", "tiles", "marble", "plain"]))
    floor_tex = str(rng.choice(["noise", "wood", "tiles", "marble", "plain"]))
    img[:horizon] = (
        np.asarray(wall) * texture(rng, horizon, size, wall_tex) * _gradient(horizon, size, 0.12, rng)
    )
    lower = size - horizon
    if lower > 0:
        floor_img = np.asarray(floor) * texture(rng, lower, size, floor_tex)
        floor_img *= np.linspace(0.85, 1.1, lower, dtype=np.float32)[:, None, None]
        img[horizon:] = floor_img
    x0, x1 = table_x if table_x is not None else (0, size)
    if table:
        under = surface_bottom
        thick = max(2, round(size * rng.uniform(0.025, 0.05)))
        below_colour = np.asarray(wall) * 0.55
        # Below the table top: the front face, a dark space under the table, and legs.
        if under < size:
            img[under:] = below_colour * texture(rng, size - under, size, "noise")
            cv2.rectangle(
                img,
                (x0, under),
                (x1, min(size - 1, under + thick)),
                tuple(float(v) for v in np.asarray(floor) * 0.7),
                -1,
            )
            leg = max(2, round(size * 0.03))
            for lx in (x0 + leg, x1 - 2 * leg):
                if 0 <= lx < size:
                    cv2.rectangle(
                        img,
                        (lx, under + thick),
                        (lx + leg, size - 1),
                        tuple(float(v) for v in np.asarray(floor) * 0.6),
                        -1,
                    )
        if table_x is not None:
            # Wall continues beside a table that does not span the frame.
            if x0 > 0:
                img[horizon:, :x0] = np.asarray(wall) * 0.8 * texture(rng, size - horizon, x0, "noise")
            if x1 < size:
                img[horizon:, x1:] = np.asarray(wall) * 0.8 * texture(rng, size - horizon, size - x1, "noise")
    # The back edge of the surface (only as wide as the table when it ends inside the frame).
    edge_colour = tuple(float(v) for v in np.asarray(wall) * 0.75)
    cv2.line(img, (max(x0, 0), horizon), (min(x1, size), horizon), edge_colour, 1, cv2.LINE_AA)
    return Scene(
        img, np.asarray(wall, np.float32), np.asarray(floor, np.float32), horizon, surface_bottom, table_x
    )


def decor(rng, scene: Scene, count: int, avoid_box=None) -> None:
    """Wall decor (frames, windows, shelves, clocks) above the horizon; sizes do not matter for depth."""
    size = scene.image.shape[0]
    for _ in range(count):
        kind = rng.choice(["frame", "window", "clock", "shelf"])
        w = round(size * rng.uniform(0.12, 0.35))
        h = round(w * rng.uniform(0.6, 1.4))
        x = round(rng.uniform(-0.1, 0.9) * size)
        y = round(rng.uniform(0.02, 0.6) * max(scene.horizon - h, 1))
        if avoid_box is not None and overlaps((x, y, x + w, y + h), avoid_box):
            continue
        colour = tuple(float(v) for v in random_colour(rng)[1])
        if kind == "frame":
            cv2.rectangle(scene.image, (x, y), (x + w, y + h), colour, -1)
            inner = tuple(float(v) for v in random_colour(rng)[1])
            cv2.rectangle(scene.image, (x + 2, y + 2), (x + w - 2, y + h - 2), inner, -1)
        elif kind == "window":
            cv2.rectangle(scene.image, (x, y), (x + w, y + h), (210, 225, 240), -1)
            cv2.rectangle(scene.image, (x, y), (x + w, y + h), colour, 2)
            cv2.line(scene.image, (x + w // 2, y), (x + w // 2, y + h), colour, 1)
            cv2.line(scene.image, (x, y + h // 2), (x + w, y + h // 2), colour, 1)
        elif kind == "clock":
            r = max(3, w // 4)
            cv2.circle(scene.image, (x + r, y + r), r, (235, 235, 230), -1, cv2.LINE_AA)
            cv2.circle(scene.image, (x + r, y + r), r, colour, 1, cv2.LINE_AA)
            cv2.line(scene.image, (x + r, y + r), (x + r, y + r // 3), (30, 30, 30), 1)
        else:
            cv2.rectangle(scene.image, (x, y + h // 2), (x + w, y + h // 2 + 2), colour, -1)


def overlaps(a, b, margin: int = 0) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def draw_object(
    rng, image: np.ndarray, kind: str, cx: int, base: int, height: int
) -> tuple[int, int, int, int]:
    """A reference object standing at ``(cx, base)``, ``height`` pixels tall; returns its box."""
    h = max(3, height)
    colour = tuple(float(v) for v in random_colour(rng)[1])
    dark = tuple(float(v) * 0.6 for v in colour)
    if kind == "chair":
        w = round(h * 0.5)
        seat = base - round(h * 0.45)
        cv2.rectangle(image, (cx - w // 2, seat), (cx + w // 2, seat + max(1, h // 14)), colour, -1)
        cv2.rectangle(image, (cx + w // 2 - max(1, h // 14), base - h), (cx + w // 2, seat), colour, -1)
        for lx in (cx - w // 2, cx + w // 2 - max(1, h // 16)):
            cv2.rectangle(image, (lx, seat), (lx + max(1, h // 16), base), dark, -1)
        box = (cx - w // 2, base - h, cx + w // 2, base)
    elif kind == "lamp":
        w = round(h * 0.35)
        cv2.line(image, (cx, base), (cx, base - round(h * 0.75)), dark, max(1, h // 30))
        cv2.ellipse(image, (cx, base), (max(2, w // 3), max(1, h // 30)), 0, 0, 360, dark, -1)
        shade = np.array(
            [
                [cx - w // 2, base - round(h * 0.72)],
                [cx + w // 2, base - round(h * 0.72)],
                [cx + w // 4, base - h],
                [cx - w // 4, base - h],
            ],
            np.int32,
        )
        cv2.fillPoly(image, [shade], colour, cv2.LINE_AA)
        box = (cx - w // 2, base - h, cx + w // 2, base)
    elif kind == "plant":
        w = round(h * 0.5)
        pot_h = round(h * 0.35)
        pot = np.array(
            [
                [cx - w // 3, base - pot_h],
                [cx + w // 3, base - pot_h],
                [cx + w // 4, base],
                [cx - w // 4, base],
            ],
            np.int32,
        )
        cv2.fillPoly(image, [pot], colour, cv2.LINE_AA)
        leaf = (float(rng.uniform(30, 70)), float(rng.uniform(110, 170)), float(rng.uniform(30, 80)))
        for _ in range(6):
            lx = cx + round(rng.uniform(-0.4, 0.4) * w)
            ly = base - pot_h - round(rng.uniform(0.1, 0.6) * h)
            axes = (max(2, round(w * 0.18)), max(2, round(h * 0.12)))
            cv2.ellipse(image, (lx, ly), axes, float(rng.uniform(0, 180)), 0, 360, leaf, -1, cv2.LINE_AA)
        box = (cx - w // 2, base - h, cx + w // 2, base)
    elif kind == "door":
        w = round(h * 0.45)
        cv2.rectangle(image, (cx - w // 2, base - h), (cx + w // 2, base), colour, -1)
        cv2.rectangle(image, (cx - w // 2, base - h), (cx + w // 2, base), dark, max(1, h // 40))
        cv2.circle(image, (cx + w // 3, base - h // 2), max(1, h // 40), (200, 180, 80), -1)
        box = (cx - w // 2, base - h, cx + w // 2, base)
    elif kind == "cup":
        w = round(h * 0.8)
        cv2.rectangle(image, (cx - w // 2, base - h), (cx + w // 2, base), colour, -1)
        cv2.ellipse(image, (cx, base - h), (w // 2, max(1, h // 8)), 0, 0, 360, dark, -1, cv2.LINE_AA)
        cv2.ellipse(
            image,
            (cx + w // 2, base - h // 2),
            (max(2, w // 4), max(2, h // 4)),
            0,
            -90,
            90,
            colour,
            max(1, h // 10),
        )
        box = (cx - w // 2, base - h, cx + w // 2 + w // 4, base)
    else:  # books
        w = round(h * rng.uniform(1.2, 2.0))
        n = int(rng.integers(2, 5))
        y = base
        for _ in range(n):
            bh = max(1, h // n)
            c = tuple(float(v) for v in random_colour(rng)[1])
            off = round(rng.uniform(-0.1, 0.1) * w)
            cv2.rectangle(image, (cx - w // 2 + off, y - bh), (cx + w // 2 + off, y), c, -1)
            y -= bh
        box = (cx - w // 2, base - h, cx + w // 2, base)
    return box


# Object heights in units of the product's height, as in the world (an ad product is ~25 cm).
FLOOR_OBJECTS = {"chair": (3.2, 4.0), "lamp": (5.0, 6.5), "plant": (2.5, 4.5), "door": (7.0, 8.0)}
TABLE_OBJECTS = {"cup": (0.35, 0.7), "books": (0.25, 0.55), "plant": (0.8, 1.4)}
# Width / height of each drawn object (see draw_object), for placement.
OBJECT_ASPECT = {"chair": 0.5, "lamp": 0.35, "plant": 0.5, "door": 0.45, "cup": 1.05, "books": 2.0}


def shadow(image: np.ndarray, cx: float, base: float, width: float, strength: float, blur: float) -> None:
    """A soft elliptical contact shadow centred at ``(cx, base)``."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.float32)
    axes = (max(2, round(width * 0.55)), max(1, round(width * 0.09)))
    cv2.ellipse(mask, (round(cx), round(base)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    k = max(3, round(blur) * 2 + 1)
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    image *= 1 - strength * mask[..., None]


@dataclass
class Layout:
    """Where the product goes: its resized cut-out, top-left corner and contact point."""

    rgba: np.ndarray
    x: int
    y: int

    @property
    def w(self) -> int:
        return self.rgba.shape[1]

    @property
    def h(self) -> int:
        return self.rgba.shape[0]

    @property
    def base(self) -> int:
        return self.y + self.h

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def fit(product: Product, size: int, frac: float) -> np.ndarray:
    """Resize the cut-out so its longer side is ``frac * size`` pixels."""
    h, w = product.rgba.shape[:2]
    scale = frac * size / max(h, w)
    return resize_rgba(product.rgba, max(2, round(w * scale)), max(2, round(h * scale)))


def silhouette_ring(layout: Layout, size: int, width: int) -> np.ndarray:
    """Boolean ``(S, S)``: pixels within ``width`` px outside the product's outline."""
    mask = np.zeros((size, size), np.uint8)
    _paste_mask(mask, layout)
    k = 2 * width + 1
    grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return (grown > 0) & (mask == 0)


def _paste_mask(mask: np.ndarray, layout: Layout) -> None:
    size_y, size_x = mask.shape
    x0, y0 = max(layout.x, 0), max(layout.y, 0)
    x1, y1 = min(layout.x + layout.w, size_x), min(layout.y + layout.h, size_y)
    if x0 < x1 and y0 < y1:
        alpha = layout.rgba[y0 - layout.y : y1 - layout.y, x0 - layout.x : x1 - layout.x, 3]
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], (alpha > 127).astype(np.uint8) * 255)


def grow(box, pad: int) -> tuple[int, int, int, int]:
    """``box`` ``(x0, y0, x1, y1)`` grown by ``pad`` pixels on every side."""
    return (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
