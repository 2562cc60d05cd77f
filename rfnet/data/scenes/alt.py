"""The ``alt`` family: a second generator written independently of ``synthetic``, in another style.

Other scene textures (dots, checks, radial light, waves), other product shapes (capsule, flask,
prism, lamp, bag) and other defect parameters; the product file is kept at its original resolution
(``size`` to ``2 * size`` pixels tall) rather than at the pasted size. It checks that RFNet was not
tuned to one generator. Classes:

- Available: the product stands on the floor with a contact shadow, next to one or two pieces of
  furniture (cabinet, tree, stool) 1.6-3 times its height, scaled by their depth.
- Unsuitable: streaks, blocks or a posterised, noisy scene.
- Space Mismatch: the product floats 12-30 % of the frame above its base, without a shadow.
- Size Mismatch: two pieces of furniture 0.15-0.35 or 6-9 times the product's height.
- Indistinctiveness: wall and floor in the product's colour.
- Shape Hallucination: product-coloured blobs attached to its sides, or a taller copy beside it.

No meta file; names are ``alt<seed>_<10 hex digits>``.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.labels import LABELS
from rfnet.data.scenes.drawing import paste_rgba
from rfnet.data.scenes.painter import Painted, Painter


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    px = np.uint8([[[int(h) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _alt_texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    kind = rng.choice(["dots", "checker", "radial", "waves", "flat"])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "dots":
        p = rng.uniform(6, 14)
        t = 1 - 0.12 * (np.hypot((x % p) - p / 2, (y % p) - p / 2) < p / 5)
    elif kind == "checker":
        p = int(rng.integers(5, 12))
        t = 1 - 0.08 * (((x // p) + (y // p)) % 2)
    elif kind == "radial":
        t = 1.1 - 0.25 * np.hypot(x - rng.uniform(0, w), y - rng.uniform(0, h)) / max(h, w)
    elif kind == "waves":
        t = 1 + 0.07 * np.sin(x / rng.uniform(3, 8) + 2 * np.sin(y / rng.uniform(5, 15)))
    else:
        t = np.ones((h, w), np.float32)
    return np.clip(colour[None, None] * t[..., None], 0, 255)


def _alt_product(rng: np.random.Generator, height: int) -> tuple[np.ndarray, np.ndarray, str]:
    """An RGBA product at ``height`` px (its original resolution), its main colour, a caption."""
    hue = rng.uniform(0, 180)
    colour = _hsv(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    kind = rng.choice(["capsule", "flask", "prism", "lamp", "bag"])
    w = int(height * rng.uniform(0.35, 0.8))
    mask = np.zeros((height, w), np.uint8)
    if kind == "capsule":
        cv2.rectangle(mask, (0, w // 2), (w - 1, height - 1 - w // 2), 255, -1)
        cv2.circle(mask, (w // 2, w // 2), w // 2, 255, -1, cv2.LINE_AA)
        cv2.circle(mask, (w // 2, height - 1 - w // 2), w // 2, 255, -1, cv2.LINE_AA)
    elif kind == "flask":
        cv2.circle(mask, (w // 2, height - w // 2 - 1), w // 2, 255, -1, cv2.LINE_AA)
        cv2.rectangle(mask, (w // 3, 0), (w - w // 3, height - w), 255, -1)
    elif kind == "prism":
        pts = np.array(
            [[w // 2, 0], [w - 1, height // 3], [w - 1, height - 1], [0, height - 1], [0, height // 3]],
            np.int32,
        )
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    elif kind == "lamp":
        cv2.fillPoly(
            mask,
            [np.array([[w // 4, 0], [3 * w // 4, 0], [w - 1, height // 3], [0, height // 3]], np.int32)],
            255,
            cv2.LINE_AA,
        )
        cv2.rectangle(
            mask, (w // 2 - max(1, w // 12), height // 3), (w // 2 + max(1, w // 12), height - 4), 255, -1
        )
        cv2.rectangle(mask, (w // 6, height - 5), (w - w // 6, height - 1), 255, -1)
    else:
        cv2.rectangle(mask, (0, height // 4), (w - 1, height - 1), 255, -1)
        cv2.ellipse(
            mask, (w // 2, height // 4), (w // 3, height // 5), 0, 180, 360, 255, max(2, w // 10), cv2.LINE_AA
        )
    shade = np.linspace(1.15, 0.75, w, dtype=np.float32)[None, :, None]
    rgb = np.clip(colour[None, None] * shade, 0, 255) * np.ones((height, 1, 1), np.float32)
    stripe = _hsv(hue + rng.uniform(40, 140), 0.6, 0.9)
    y0 = int(rng.uniform(0.45, 0.7) * height)
    rgb[y0 : y0 + max(2, height // 10)] = stripe
    rgba = np.dstack([rgb, mask.astype(np.float32)]).round().astype(np.uint8)
    rgba[mask == 0] = 0
    return (
        rgba,
        colour,
        f"a {kind} in {['red', 'orange', 'yellow', 'green', 'cyan', 'blue', 'purple', 'pink'][int(hue // 22.5) % 8]}",
    )


def _resize_rgba(rgba: np.ndarray, w: int, h: int) -> np.ndarray:
    f = rgba.astype(np.float32)
    a = f[..., 3:] / 255.0
    pre = cv2.resize(
        np.dstack([f[..., :3] * a, f[..., 3:]]), (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA
    )
    alpha = np.clip(pre[..., 3:], 0, 255)
    rgb = np.where(alpha > 0.5, pre[..., :3] / np.maximum(alpha, 1e-3) * 255.0, 0)
    return np.dstack([np.clip(rgb, 0, 255), alpha]).round().astype(np.uint8)


def _furniture(rng: np.random.Generator, img: np.ndarray, cx: int, base: int, height: int) -> None:
    colour = tuple(float(v) for v in _hsv(rng.uniform(0, 180), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.8)))
    kind = rng.choice(["cabinet", "tree", "stool"])
    w = max(2, int(height * rng.uniform(0.4, 0.8)))
    if kind == "cabinet":
        cv2.rectangle(img, (cx - w // 2, base - height), (cx + w // 2, base), colour, -1)
        cv2.line(img, (cx, base - height), (cx, base), tuple(c * 0.6 for c in colour), 1)
    elif kind == "tree":
        cv2.rectangle(
            img, (cx - max(1, w // 10), base - height // 2), (cx + max(1, w // 10), base), (90, 60, 30), -1
        )
        cv2.circle(img, (cx, base - height + w // 2), w // 2, (40, 130, 50), -1, cv2.LINE_AA)
    else:
        cv2.rectangle(
            img, (cx - w // 2, base - height), (cx + w // 2, base - height + max(2, height // 8)), colour, -1
        )
        cv2.rectangle(img, (cx - w // 2, base - height), (cx - w // 2 + max(1, w // 8), base), colour, -1)
        cv2.rectangle(img, (cx + w // 2 - max(1, w // 8), base - height), (cx + w // 2, base), colour, -1)


def _render(label: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """One "alt" image of class ``label``: ``(image (S, S, 3) uint8, product RGBA at its own scale, caption)``."""
    product, colour, caption = _alt_product(rng, int(rng.integers(size, 2 * size)))
    name = LABELS[label]
    ph = int(size * rng.uniform(0.3, 0.55))
    pasted = _resize_rgba(product, round(product.shape[1] * ph / product.shape[0]), ph)
    pw = pasted.shape[1]
    horizon = int(size * rng.uniform(0.45, 0.7))
    far = np.float32(rng.uniform(0, 180))
    wall_c, floor_c = (
        _hsv(far, rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95)),
        _hsv(far + 90, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8)),
    )
    if np.linalg.norm(wall_c - colour) < 80:
        wall_c = 255 - wall_c
    if name == "indistinctiveness":
        wall_c = np.clip(colour + rng.normal(0, 8, 3), 0, 255)
        floor_c = np.clip(colour * rng.uniform(0.85, 1.0) + rng.normal(0, 8, 3), 0, 255)
    img = np.zeros((size, size, 3), np.float32)
    img[:horizon] = _alt_texture(rng, horizon, size, wall_c)
    img[horizon:] = _alt_texture(rng, size - horizon, size, floor_c)
    cx = int(size / 2 + rng.uniform(-0.15, 0.15) * size)
    base = int(rng.uniform(horizon + 0.1 * (size - horizon), size - 3))
    # Reference furniture on the floor, scaled by depth (lower = nearer = bigger).
    for _ in range(int(rng.integers(1, 3)) if name != "size_mismatch" else 2):
        side = rng.choice([-1, 1])
        fx = int(np.clip(cx + side * rng.uniform(0.3, 0.45) * size, 4, size - 4))
        fbase = int(rng.uniform(horizon + 2, base))
        depth = (fbase - horizon) / max(1, base - horizon)
        rel = (
            rng.uniform(1.6, 3.0)
            if name != "size_mismatch"
            else (rng.uniform(0.15, 0.35) if rng.random() < 0.5 else rng.uniform(6, 9))
        )
        _furniture(rng, img, fx, fbase, max(3, int(ph * rel * max(0.3, depth))))
    if name == "unsuitable":
        variant = rng.choice(["streaks", "blocks", "posterize"])
        if variant == "streaks":
            for _ in range(int(rng.integers(15, 40))):
                c = tuple(float(v) for v in rng.uniform(0, 255, 3))
                p0 = tuple(int(v) for v in rng.integers(0, size, 2))
                p1 = tuple(int(v) for v in rng.integers(0, size, 2))
                cv2.line(img, p0, p1, c, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif variant == "blocks":
            for _ in range(int(rng.integers(8, 20))):
                x0, y0 = (int(v) for v in rng.integers(0, size, 2))
                cv2.rectangle(
                    img,
                    (x0, y0),
                    (x0 + int(rng.integers(5, 30)), y0 + int(rng.integers(5, 30))),
                    tuple(float(v) for v in rng.uniform(0, 255, 3)),
                    -1,
                )
        else:
            img = np.floor(img / 85) * 85 + rng.uniform(0, 60, img.shape).astype(np.float32)
    y_top = base - ph
    if name == "space_mismatch":
        y_top -= int(rng.uniform(0.12, 0.3) * size)  # floating: a gap between base and floor
    else:
        cv2.ellipse(
            img,
            (cx, base),
            (int(pw * 0.55), max(2, ph // 12)),
            0,
            0,
            360,
            tuple(float(v) * 0.55 for v in floor_c),
            -1,
            cv2.LINE_AA,
        )
    x_left = cx - pw // 2
    if name == "shape_hallucination":
        variant = rng.choice(["blob", "echo"])
        tint = np.clip(colour * rng.uniform(0.9, 1.1), 0, 255)
        if variant == "blob":
            for _ in range(int(rng.integers(1, 3))):
                bx = x_left + (0 if rng.random() < 0.5 else pw)
                by = y_top + int(rng.uniform(0.1, 0.8) * ph)
                cv2.ellipse(
                    img,
                    (bx, by),
                    (int(pw * rng.uniform(0.25, 0.5)), int(ph * rng.uniform(0.08, 0.2))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    tuple(float(v) for v in tint),
                    -1,
                    cv2.LINE_AA,
                )
        else:
            echo = _resize_rgba(pasted, pw, int(ph * rng.uniform(1.2, 1.5)))
            paste_rgba(
                img,
                echo,
                x_left + int(rng.choice([-1, 1]) * pw * rng.uniform(0.2, 0.4)),
                base - echo.shape[0],
            )
    img += rng.normal(0, rng.uniform(0, 4), img.shape).astype(np.float32)
    paste_rgba(img, pasted, x_left, y_top)
    return np.clip(img, 0, 255).round().astype(np.uint8), product, caption


class AltPainter(Painter):
    """The ``alt`` family (see the module docstring)."""

    name = "alt"
    meta_file = None

    def paint(self, label: int, index: int) -> Painted:
        rng = np.random.default_rng([self.seed, label, index, 99])
        image, product, caption = _render(label, rng, self.image_size)
        name = f"alt{self.seed}_{rng.integers(1 << 40):010x}"
        return Painted(name, image, product, caption, label, {})
