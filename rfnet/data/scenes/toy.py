"""The toy world's scenes: painted rooms around a product placed exactly as generation places it.

The ``toy`` generation preset (docs/toy.md) is trained on these images, and its reward and judge
RFNets (``builtin:toy_reward``, ``builtin:toy_judge``) on the same painter's labelled images. Each sample is one product (drawn by
:func:`rfnet.data.scenes.draw_product`) laid out on the canvas by
:func:`pipelines.prepare.prepare_product` (alpha-box crop, longer side ``image_scale`` x R,
centred), a background painted around it, and the product composited back unchanged
(:func:`pipelines.prepare.paste_back`), so training images and generated images share the layout.

A scene is a wall above a surface (a table top with a front edge, or a floor), optional wall decor
(a framed picture, a window) and 0-2 objects standing on the surface beside the product (a plant, a
cup, books, a lamp), with a soft contact shadow. Backgrounds are smooth (gradients, wood grain,
marble veins, a light blur, no pixel noise), like a photo's out-of-focus room.

The scene's parameters become its prompt (:func:`scene_prompt`): "a product on a wooden table
against a red wall, with a plant". The words are those of the ``toy`` preset's prompt pool
(``pipelines.config``), so at generation a prompt's colour really names the wall, a "table" or
"floor" phrase really asks for a surface, and "with a plant" for a plant.

Defects, drawn in the shares of :data:`LABEL_SHARES` (about half the images are Available, as in a
first attempt of SD inpainting):

- **Available**: the product stands on the surface (back edge above its base) with a contact shadow;
  objects have plausible sizes (0.3-0.9 product heights); wall and surface colours are at least
  :data:`MIN_CONTRAST` RGB units from the product's colour.
- **Unsuitable**: the background is garbled: tiles shuffled and rotated, a clutter of shapes, tilted,
  or melted.
- **Space Mismatch**: the product floats above its detached shadow (``floating``), hangs in front of
  the wall with the surface starting below it (``no_surface``), or overhangs a table's end
  (``over_edge``). Their prompts omit the surface phrase more often (60% vs 20%), as in SD, where
  prompts that ask for a surface float the product less often.
- **Size Mismatch**: furniture (chairs, doors) at 0.12-0.3 product heights on the same
  surface (``giant_product``), or tabletop items 1.5-2.5 times the product's height (``tiny_product``).
- **Indistinctiveness**: wall and surface within a few RGB units of the product's colour, and the
  prompt names that colour (``whole_scene``), or a panel of its colour right behind it
  (``backdrop``).
- **Shape Hallucination**: the background continues the product's outline: a shaded twin behind it
  (``twin``), a stretched copy (``stretched``), or product-coloured limbs (``protrusion``).

Every sample is a pure function of ``(seed, index)`` (:func:`sample_scene`, classes in the
training shares) or ``(seed, label, index)`` (the labelled ``toy`` set, :class:`ToyPainter`):

    python -m rfnet.data.scenes --set toy --out out/toy-rfnet --n-per-class 500 --seed 1
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from pipelines.config import GenerateConfig, PrepareConfig, load_config
from pipelines.labels import LABELS, NUM_CLASSES
from pipelines.prepare import Prepared, alpha_bbox, paste_back, prepare_product
from rfnet.data.scenes.painter import Painted, Painter
from rfnet.data.scenes.products import draw_product
from rfnet.data.scenes.synthetic_scene import draw_object

VERSION = 1

# The vocabulary of wall and surface colours (name -> RGB). The toy preset's prompt pool draws its
# colours from these names.
COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 234, 228),
    "beige": (214, 194, 158),
    "light grey": (186, 188, 190),
    "grey": (122, 124, 128),
    "black": (36, 36, 40),
    "red": (192, 44, 42),
    "orange": (228, 126, 44),
    "yellow": (228, 198, 60),
    "green": (56, 136, 72),
    "sage green": (150, 172, 136),
    "teal": (36, 128, 132),
    "pale blue": (168, 196, 224),
    "blue": (46, 84, 190),
    "navy": (32, 42, 92),
    "purple": (112, 60, 150),
    "pink": (230, 140, 176),
    "brown": (116, 76, 46),
}
# Surface materials named by a word instead of a colour, with the colours they are painted in.
MATERIALS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "wooden": ((150, 104, 62), (182, 134, 86), (116, 78, 48)),
    "marble": ((226, 224, 220), (204, 204, 208)),
}
OBJECTS = ("plant", "cup", "books", "lamp")  # tabletop objects beside the product
FURNITURE = ("chair", "door")  # room-sized objects (dolls'-house sized in giant_product)
DECOR = {"frame": "a framed picture", "window": "a window"}
OBJECT_WORDS = {
    "plant": "a plant",
    "cup": "a cup",
    "books": "books",
    "lamp": "a lamp",
    "chair": "a chair",
    "door": "a door",
}

# Share of each class among training scenes (LABELS order).
LABEL_SHARES = (0.48, 0.08, 0.14, 0.10, 0.08, 0.12)
MIN_CONTRAST = 90.0  # RGB distance of the wall from the product's colour outside Indistinctiveness
VARIANTS = {
    "available": ("plain",),
    "unsuitable": ("shuffled", "clutter", "tilted", "melted"),
    "space_mismatch": ("floating", "no_surface", "over_edge"),
    "size_mismatch": ("giant_product", "tiny_product"),
    "indistinctiveness": ("whole_scene", "backdrop"),
    "shape_hallucination": ("twin", "stretched", "protrusion"),
}


@dataclass
class SceneParams:
    """What a scene shows (its prompt is written from these)."""

    wall: str  # colour name (COLOURS)
    surface: str  # "table" or "floor"
    surface_desc: str  # a colour name or a material (MATERIALS)
    objects: list[str] = field(default_factory=list)  # objects standing beside the product
    decor: str | None = None  # key of DECOR


@dataclass
class ToyScene:
    """One painted sample at the canvas resolution R."""

    image: np.ndarray  # (R, R, 3) uint8: the scene with the product pasted back
    prepared: Prepared  # the generation pipeline's inputs for this product and scale
    label: int  # class index (LABELS)
    variant: str
    params: SceneParams
    prompt: str
    caption: str  # the product's title
    image_scale: float

    @property
    def product(self) -> np.ndarray:
        """(R, R, 4) uint8: the product on the canvas (prepare_product's layout)."""
        return self.prepared.product


# ----------------------------------------------------------------------------------------------------
# Colours.


def product_colour(product: np.ndarray) -> np.ndarray:
    """Median RGB of the product's opaque pixels (``product``: RGBA)."""
    visible = product[..., 3] > 127
    if not visible.any():
        raise ValueError("the product has no opaque pixel (alpha > 127)")
    return np.median(product[visible][:, :3].astype(np.float32), axis=0)


def _dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def nearest_colour(rgb) -> str:
    """The vocabulary's name for an RGB colour."""
    return min(COLOURS, key=lambda n: _dist(COLOURS[n], rgb))


def _far_name(rng, avoid, min_distance: float) -> str:
    """A colour name at least ``min_distance`` from every colour in ``avoid`` (else the farthest)."""
    names = [n for n in COLOURS if all(_dist(COLOURS[n], a) >= min_distance for a in avoid)]
    if names:
        return str(rng.choice(names))
    return max(COLOURS, key=lambda n: min(_dist(COLOURS[n], a) for a in avoid))


def _tone(rng, rgb, jitter: float = 7.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)


def _surface_rgb(rng, desc: str) -> np.ndarray:
    if desc in MATERIALS:
        options = MATERIALS[desc]
        return _tone(rng, options[int(rng.integers(len(options)))], 6)
    return _tone(rng, COLOURS[desc])


# ----------------------------------------------------------------------------------------------------
# Painting (float32 (R, R, 3) images in [0, 255]).


def _smooth_noise(rng, h: int, w: int, cell: float) -> np.ndarray:
    coarse = rng.standard_normal((max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)))
    return cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _paint_wall(rng, img: np.ndarray, rgb, rows: slice) -> None:
    h, w = img[rows].shape[:2]
    if h == 0:
        return
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    light = 1.06 - rng.uniform(0.04, 0.14) * y + 0.03 * _smooth_noise(rng, h, w, w / 3)[..., None]
    img[rows] = np.asarray(rgb, np.float32) * light


def _paint_surface(rng, img: np.ndarray, rgb, desc: str, top: int, bottom: int, x0: int, x1: int) -> None:
    """Fill rows ``[top, bottom)``, columns ``[x0, x1)`` with a surface (texture from ``desc``)."""
    x0, x1 = max(0, x0), min(img.shape[1], x1)
    h, w = bottom - top, x1 - x0
    if h <= 0 or w <= 0:
        return
    tex = np.ones((h, w), np.float32)
    if desc == "wooden":
        y = np.arange(h, dtype=np.float32)[:, None] + 2.0 * _smooth_noise(rng, h, w, 6)
        tex += 0.06 * np.sin(y * rng.uniform(0.5, 0.9))
    elif desc == "marble":
        veins = np.abs(np.sin(3.0 * _smooth_noise(rng, h, w, 10)))
        tex -= 0.08 * np.clip(1.0 - veins / 0.25, 0, 1)
    ramp = np.linspace(0.92, 1.06, h, dtype=np.float32)[:, None]
    img[top:bottom, x0:x1] = np.asarray(rgb, np.float32) * (tex * ramp)[..., None]


def _shadow(img: np.ndarray, cx: float, y: float, width: float, strength: float) -> None:
    r = img.shape[0]
    mask = np.zeros(img.shape[:2], np.float32)
    axes = (max(2, round(width * 0.55)), max(1, round(width * 0.08)))
    cv2.ellipse(mask, (round(cx), round(y)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    k = max(3, (r // 40) * 2 + 1)
    img *= 1 - strength * cv2.GaussianBlur(mask, (k, k), 0)[..., None]


def _decor(rng, img: np.ndarray, horizon: int, box) -> str | None:
    """A framed picture or a window on the wall beside or above the product (or nothing)."""
    if rng.random() < 0.5 or horizon < 12:
        return None
    r = img.shape[0]
    kind = str(rng.choice(list(DECOR)))
    w = round(r * rng.uniform(0.14, 0.26))
    h = round(w * rng.uniform(0.7, 1.3))
    side_space = [(0, box[0] - 2), (box[2] + 2, r)]
    x_lo, x_hi = side_space[int(rng.integers(2))]
    x = round(rng.uniform(x_lo - w * 0.4, max(x_lo - w * 0.4, x_hi - w * 0.6)))
    y = round(rng.uniform(0.05, 0.35) * r)
    if y + h > horizon - 2:
        return None
    colour = tuple(float(v) for v in _tone(rng, COLOURS[str(rng.choice(list(COLOURS)))], 10))
    if kind == "frame":
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
        inner = tuple(float(v) for v in _tone(rng, COLOURS[str(rng.choice(list(COLOURS)))], 20))
        cv2.rectangle(img, (x + 2, y + 2), (x + w - 2, y + h - 2), inner, -1)
    else:
        cv2.rectangle(img, (x, y), (x + w, y + h), (214, 228, 242), -1)
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, 2)
        cv2.line(img, (x + w // 2, y), (x + w // 2, y + h), colour, 1)
    return kind


def _objects(rng, img: np.ndarray, box, base: int, kinds, units, count: int, low: int) -> list[str]:
    """Objects standing at about ``base`` left and right of the product box, ``units`` product heights
    tall; at least 60% of each inside the frame. Returns the kinds drawn."""
    r = img.shape[0]
    ph = box[3] - box[1]
    drawn: list[str] = []
    sides = [0, 1] if rng.random() < 0.5 else [1, 0]
    for side in sides[:count]:
        kind = str(rng.choice(kinds))
        height = max(5, round(ph * rng.uniform(*units)))
        width = (
            height * {"chair": 0.5, "lamp": 0.35, "plant": 0.5, "door": 0.45, "cup": 1.05, "books": 1.6}[kind]
        )
        gap = rng.uniform(0.02, 0.08) * r
        if side == 0:
            lo, hi = -0.1 * width, box[0] - gap - width / 2
        else:
            lo, hi = box[2] + gap + width / 2, r + 0.1 * width
        if hi <= lo:
            continue
        y = int(np.clip(base + rng.integers(-2, 3), low, r - 1))
        draw_object(rng, img, kind, round(rng.uniform(lo, hi)), y, height)
        drawn.append(kind)
    return drawn


# ----------------------------------------------------------------------------------------------------
# Scenes.


class _Painter:
    """Paints one scene around the product's box; each class is one method."""

    def __init__(self, rng, product: np.ndarray):
        self.rng = rng
        self.product = product
        self.r = product.shape[0]
        box = alpha_bbox(product[..., 3])
        assert box is not None
        self.box = box
        self.base = box[3]
        self.cx = (box[0] + box[2]) / 2
        self.w, self.h = box[2] - box[0], box[3] - box[1]
        self.colour = product_colour(product)
        self.img = np.zeros((self.r, self.r, 3), np.float32)

    def params(self, *, near: bool = False) -> SceneParams:
        rng = self.rng
        wall = nearest_colour(self.colour) if near else _far_name(rng, [self.colour], MIN_CONTRAST)
        surface = "table" if rng.random() < 0.55 else "floor"
        if near:
            desc = wall
        elif rng.random() < 0.5:
            desc = str(rng.choice(list(MATERIALS)))
        else:
            desc = _far_name(rng, [self.colour, COLOURS[wall]], 60)
        return SceneParams(wall, surface, desc)

    def room(self, p: SceneParams, horizon: int, *, table_x=None, near_rgb=None) -> None:
        """Wall down to ``horizon``; the surface below it (a table top with its front edge, or a floor)."""
        rng, r, img = self.rng, self.r, self.img
        wall_rgb = _tone(rng, COLOURS[p.wall]) if near_rgb is None else _tone(rng, near_rgb, 4)
        surf_rgb = _surface_rgb(rng, p.surface_desc) if near_rgb is None else _tone(rng, near_rgb * 0.92, 4)
        horizon = int(np.clip(horizon, 2, r))
        _paint_wall(rng, img, wall_rgb, slice(0, r))
        x0, x1 = table_x if table_x is not None else (0, r)
        if p.surface == "table":
            front = min(r, self.base + round(rng.uniform(0.03, 0.1) * r))
            _paint_surface(rng, img, surf_rgb, p.surface_desc, horizon, front, x0, x1)
            if front < r:
                lo, hi = max(0, x0), min(r, x1)
                edge = min(r, front + max(2, r // 40))
                img[front:edge, lo:hi] = surf_rgb * 0.7
                img[edge:, lo:hi] = wall_rgb * 0.45
        else:
            _paint_surface(rng, img, surf_rgb, p.surface_desc, horizon, r, x0, x1)
        if horizon < r:
            lo, hi = max(0, x0), min(r, x1)
            img[horizon, lo:hi] = img[horizon, lo:hi] * 0.8

    def grounded_horizon(self) -> int:
        return self.base - round(self.rng.uniform(0.05, 0.3) * self.r)

    # -- classes --------------------------------------------------------------------------------------

    def available(self, p: SceneParams) -> str:
        horizon = self.grounded_horizon()
        self.room(p, horizon)
        p.decor = _decor(self.rng, self.img, horizon, self.box)
        n = int(self.rng.choice([0, 1, 1, 2]))
        p.objects = _objects(self.rng, self.img, self.box, self.base, OBJECTS, (0.3, 0.9), n, horizon + 2)
        _shadow(self.img, self.cx, self.base, self.w, self.rng.uniform(0.3, 0.55))
        return "plain"

    def unsuitable(self, p: SceneParams) -> str:
        rng, r, img = self.rng, self.r, self.img
        self.available(p)
        variant = str(rng.choice(VARIANTS["unsuitable"]))
        if variant == "shuffled":
            n = int(rng.integers(3, 6))
            t = r // n
            tiles = [img[i * t : (i + 1) * t, j * t : (j + 1) * t].copy() for i in range(n) for j in range(n)]
            for k, src in enumerate(rng.permutation(len(tiles))):
                i, j = divmod(k, n)
                img[i * t : (i + 1) * t, j * t : (j + 1) * t] = np.rot90(tiles[src], int(rng.integers(4)))
        elif variant == "clutter":
            for _ in range(int(rng.integers(20, 45))):
                colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
                x, y = (int(v) for v in rng.integers(0, r, 2))
                s = int(rng.integers(3, max(4, r // 7)))
                if rng.random() < 0.5:
                    cv2.circle(img, (x, y), s, colour, -1, cv2.LINE_AA)
                else:
                    pts = (rng.integers(-s, s, (4, 2)) + np.array([x, y])).astype(np.int32)
                    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        elif variant == "tilted":
            angle = float(rng.choice([-1, 1]) * rng.uniform(25, 70))
            m = cv2.getRotationMatrix2D((r / 2, r / 2), angle, 1.45)
            img[:] = cv2.warpAffine(img, m, (r, r), borderMode=cv2.BORDER_REFLECT)
        else:
            yy, xx = np.mgrid[0:r, 0:r].astype(np.float32)
            amp, freq = rng.uniform(0.05, 0.1) * r, rng.uniform(1.5, 4) * 2 * np.pi / r
            map_x = xx + amp * np.sin(yy * freq + rng.uniform(0, 6))
            map_y = yy + amp * np.sin(xx * freq * rng.uniform(0.7, 1.3) + rng.uniform(0, 6))
            img[:] = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return variant

    def space_mismatch(self, p: SceneParams) -> str:
        rng, r = self.rng, self.r
        variant = str(rng.choice(VARIANTS["space_mismatch"]))
        if variant == "floating":
            contact = min(r - 3, self.base + round(rng.uniform(0.06, 0.12) * r))
            horizon = contact - round(rng.uniform(0.02, 0.2) * r)
            self.room(p, horizon)
            p.objects = _objects(rng, self.img, self.box, contact, OBJECTS, (0.3, 0.8), 1, horizon + 2)
            _shadow(self.img, self.cx, contact, self.w, rng.uniform(0.3, 0.5))
        elif variant == "no_surface":
            horizon = self.base + round(rng.uniform(0.04, 0.14) * r)
            self.room(p, horizon)
        else:
            p.surface = "table"
            horizon = self.grounded_horizon()
            off = rng.uniform(0.1, 0.4) * self.w
            table_x = (-10, round(self.cx - off)) if rng.random() < 0.5 else (round(self.cx + off), r + 10)
            self.room(p, horizon, table_x=table_x)
            _shadow(self.img, self.cx, self.base, self.w, rng.uniform(0.15, 0.3))
        p.decor = _decor(rng, self.img, min(horizon, r), self.box)
        return variant

    def size_mismatch(self, p: SceneParams) -> str:
        rng = self.rng
        variant = str(rng.choice(VARIANTS["size_mismatch"]))
        horizon = self.grounded_horizon()
        self.room(p, horizon)
        p.decor = _decor(rng, self.img, horizon, self.box)
        if variant == "giant_product":
            kinds, units = FURNITURE, (0.12, 0.3)
        else:
            kinds, units = ("cup", "books", "plant"), (1.5, 2.5)
        count = int(rng.integers(1, 3))
        for _ in range(4):  # a reference must be in view, or nothing shows the mismatch
            p.objects = _objects(rng, self.img, self.box, self.base, kinds, units, count, horizon + 2)
            if p.objects:
                break
            count = 2
        _shadow(self.img, self.cx, self.base, self.w, rng.uniform(0.3, 0.55))
        return variant

    def indistinctiveness(self, p: SceneParams) -> str:
        rng, r = self.rng, self.r
        variant = str(rng.choice(VARIANTS["indistinctiveness"]))
        horizon = self.grounded_horizon()
        if variant == "whole_scene":
            self.room(p, horizon, near_rgb=self.colour)
        else:
            self.room(p, horizon)
            pad = round(rng.uniform(0.05, 0.12) * r)
            x0, y0, x1 = self.box[0] - pad, self.box[1] - pad, self.box[2] + pad
            y1 = min(r, self.base + round(0.04 * r))
            self.img[max(y0, 0) : y1, max(x0, 0) : x1] = _tone(rng, self.colour, 5)
        p.objects = _objects(rng, self.img, self.box, self.base, OBJECTS, (0.3, 0.9), 1, horizon + 2)
        _shadow(self.img, self.cx, self.base, self.w, rng.uniform(0.05, 0.2))
        return variant

    def shape_hallucination(self, p: SceneParams) -> str:
        rng, img = self.rng, self.img
        self.available(p)
        variant = str(rng.choice(VARIANTS["shape_hallucination"]))
        x0, y0, x1, y1 = self.box
        crop = self.product[y0:y1, x0:x1].astype(np.float32)
        tint = rng.uniform(0.8, 1.0)
        if variant in ("twin", "stretched"):
            if variant == "twin":
                s = rng.uniform(0.75, 1.0)
                w, h = round(self.w * s), round(self.h * s)
                left = round(self.cx - w / 2 + rng.choice([-1, 1]) * self.w * rng.uniform(0.35, 0.6))
            else:
                sx, sy = (1.0, rng.uniform(1.2, 1.45)) if rng.random() < 0.6 else (rng.uniform(1.3, 1.6), 1.0)
                w, h = round(self.w * sx), round(self.h * sy)
                left = round(self.cx - w / 2)
            copy = cv2.resize(crop, (max(2, w), max(2, h)), interpolation=cv2.INTER_LINEAR)
            _blend(img, copy, left, self.base - copy.shape[0], tint)
        else:
            ring = cv2.dilate((self.product[..., 3] > 127).astype(np.uint8), np.ones((3, 3), np.uint8))
            ys, xs = np.nonzero(ring - (self.product[..., 3] > 127))
            colour = tuple(float(v) for v in self.colour * tint)
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(len(xs)))
                ax, ay = int(xs[k]), int(ys[k])
                out = np.array([ax - self.cx, ay - (y0 + y1) / 2], np.float32)
                out /= np.linalg.norm(out) + 1e-6
                length = rng.uniform(0.2, 0.4) * max(self.w, self.h)
                thick = max(3, round(rng.uniform(0.1, 0.2) * self.w))
                tip = (round(ax + out[0] * length), round(ay + out[1] * length))
                cv2.line(img, (ax, ay), tip, colour, thick, cv2.LINE_AA)
        return variant


def _blend(img: np.ndarray, rgba: np.ndarray, x: int, y: int, tint: float) -> None:
    """Composite float RGBA ``rgba`` (alpha 0-255) with its top-left at ``(x, y)``, clipped."""
    h, w = rgba.shape[:2]
    r = img.shape[0]
    ax0, ay0, ax1, ay1 = max(x, 0), max(y, 0), min(x + w, r), min(y + h, r)
    if ax0 >= ax1 or ay0 >= ay1:
        return
    src = rgba[ay0 - y : ay1 - y, ax0 - x : ax1 - x]
    a = src[..., 3:] / 255.0
    img[ay0:ay1, ax0:ax1] = img[ay0:ay1, ax0:ax1] * (1 - a) + src[..., :3] * tint * a


def paint_scene(
    rng: np.random.Generator, product: np.ndarray, label: int
) -> tuple[np.ndarray, str, SceneParams]:
    """Paint a background of class ``label`` around ``product`` ((R, R, 4) canvas RGBA) and paste the
    product back. Returns ``(image (R, R, 3) uint8, variant, params)``."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be a class index 0-{NUM_CLASSES - 1}, got {label!r}")
    painter = _Painter(rng, product)
    near = LABELS[label] == "indistinctiveness"
    params = painter.params(near=near)
    variant = getattr(painter, LABELS[label])(params)
    if variant == "backdrop":  # the wall named in the prompt is the real one, not the panel
        params.wall = _far_name(rng, [painter.colour], MIN_CONTRAST)
    background = cv2.GaussianBlur(painter.img, (0, 0), rng.uniform(0.5, 0.9))
    background = np.clip(background, 0, 255).round().astype(np.uint8)
    return paste_back(background, product), variant, params


def scene_prompt(rng: np.random.Generator, params: SceneParams, label: int) -> str:
    """The prompt that asks for this scene, in the toy preset's words.

    ``"a product" [on a <desc> table | on the <desc> floor] [against a <wall> wall | in a <wall> room |
    in front of a <wall> wall] [with a <object>] [and a <decor>]``; each part may be left out, as
    prompts rarely describe everything. Space Mismatch scenes leave out the surface more often.
    """
    parts = ["a product"]
    omit_surface = 0.6 if LABELS[label] == "space_mismatch" else 0.2
    if rng.random() >= omit_surface:
        if params.surface == "table":
            parts.append(f"on a {params.surface_desc} table")
        else:
            parts.append(f"on the {params.surface_desc} floor")
    if rng.random() >= 0.1:
        form = ("against a {} wall", "in a {} room", "in front of a {} wall")[int(rng.integers(3))]
        parts.append(form.format(params.wall))
    extras = [OBJECT_WORDS[o] for o in dict.fromkeys(params.objects) if rng.random() < 0.7]
    if params.decor and rng.random() < 0.5:
        extras.append(DECOR[params.decor])
    if extras:
        parts.append("with " + " and ".join(extras))
    return " ".join(parts)


def sample_scene(
    seed: int, index: int, prepare: PrepareConfig, label: int | None = None, shares=LABEL_SHARES
) -> ToyScene:
    """Sample ``index`` of the toy world for ``seed``: product, ``image_scale``, class (drawn from
    ``shares`` unless ``label`` is given), scene and prompt. A pure function of its arguments."""
    rng = np.random.default_rng([seed, index, VERSION, NUM_CLASSES if label is None else label])
    if label is None:
        label = int(rng.choice(NUM_CLASSES, p=np.asarray(shares) / np.sum(shares)))
    drawn = draw_product(rng, height=prepare.resolution)
    lo, hi = prepare.image_scale_range
    scale = float(rng.uniform(lo, hi))
    prepared = prepare_product(drawn.rgba, prepare, scale)
    image, variant, params = paint_scene(rng, prepared.product, label)
    prompt = scene_prompt(rng, params, label)
    return ToyScene(image, prepared, label, variant, params, prompt, drawn.caption, scale)


# ----------------------------------------------------------------------------------------------------
# The set (rfnet.data.scenes.SETS["toy"]).


class ToyPainter(Painter):
    """The ``toy`` set: :func:`sample_scene` of a given class, the product file cropped to its box.

    ``image_size`` is the canvas side; the rest of the layout is the ``toy`` generation preset's.
    """

    name = "toy"
    meta_file = "toy.jsonl"
    meta_labels = LABELS

    def __init__(self, *, image_size: int, seed: int, products_dir: str | None = None):
        super().__init__(image_size=image_size, seed=seed, products_dir=products_dir)
        toy = load_config(GenerateConfig, preset="toy").prepare
        self.prepare = toy.model_copy(update={"resolution": image_size})

    def paint(self, label: int, index: int) -> Painted:
        s = sample_scene(self.seed, index, self.prepare, label=label)
        x0, y0, x1, y1 = s.prepared.box
        scene = {"variant": s.variant, "prompt": s.prompt, "image_scale": s.image_scale, **asdict(s.params)}
        return Painted(
            name=hashlib.sha1(f"toy:{self.seed}:{label}:{index}".encode()).hexdigest()[:16],
            image=s.image,
            product=np.ascontiguousarray(s.product[y0:y1, x0:x1]),
            caption=s.caption,
            label=label,
            scene=scene,
        )
