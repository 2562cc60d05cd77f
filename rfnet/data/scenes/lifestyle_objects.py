"""The ``lifestyle`` family's objects: reference objects drawn at real-world sizes for their depth,
boards and ramps under the product, and contact and cast shadows on the ground."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.scenes.drawing import paste_rgba
from rfnet.data.scenes.lifestyle_products import (
    F32,
    Canvas,
    Rng,
    col,
    cyl_shade,
    draw_bottle,
    draw_can,
    draw_jar,
    draw_mug,
    draw_plant,
    ellipse_mask,
    jitter,
    lathe,
    poly_mask,
    shaded,
)
from rfnet.data.scenes.lifestyle_scene import Scene

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
    cv = Canvas(h2, w2)
    box = (0.5, 0.5, w2 - 0.5, float(h2))
    anyc = col(rng.uniform(0.15, 0.95, 3))
    if noun == "mug":
        draw_mug(cv, rng, anyc, col(1 - anyc), box)
    elif noun == "jar":
        draw_jar(cv, rng, anyc, col(rng.uniform(0, 1, 3)), box)
    elif noun == "bottle":
        draw_bottle(cv, rng, col(rng.choice([[0.2, 0.4, 0.15], [0.6, 0.5, 0.1], [0.3, 0.1, 0.1]])), anyc, box)
    elif noun == "plant":
        draw_plant(
            cv, rng, col(rng.choice([[0.75, 0.4, 0.25], [0.9, 0.9, 0.88], [0.2, 0.2, 0.22]])), anyc, box
        )
    elif noun == "candle":
        draw_can(cv, rng, col([0.95, 0.93, 0.88]), col([0.9, 0.85, 0.75]), box)
    elif noun == "glass":
        shade = cyl_shade(w2, 0, w2, -0.5, 0.6)
        m = lathe(cv, [(0.0, 1.0), (1.0, 0.8)], *box)
        cv.paint(m * 0.45, shaded(col([0.85, 0.9, 0.92]), shade))
    elif noun == "apple":
        fruit = col(rng.choice([[0.75, 0.1, 0.1], [0.95, 0.55, 0.1], [0.95, 0.85, 0.2], [0.5, 0.75, 0.2]]))
        shade = cyl_shade(w2, 0, w2, -0.4)
        cv.paint(ellipse_mask(h2, w2, (w2 / 2, h2 * 0.55), (w2 * 0.48, h2 * 0.44)), shaded(fruit, shade))
        cv.paint(ellipse_mask(h2, w2, (w2 * 0.55, h2 * 0.1), (w2 * 0.04, h2 * 0.1)), col([0.3, 0.2, 0.1]))
    elif noun == "books":
        y = float(h2)
        while y > 1:
            bh = rng.uniform(0.18, 0.35) * h2
            inset = rng.uniform(0, 0.1) * w2
            cv.paint(
                poly_mask(
                    h2, w2, np.array([(inset, y - bh), (w2 - inset, y - bh), (w2 - inset, y), (inset, y)])
                ),
                col(rng.uniform(0.1, 0.9, 3)),
            )
            cv.paint(
                poly_mask(
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
                col([0.95, 0.94, 0.9]),
            )
            y -= bh
    elif noun == "laptop":
        body = col(rng.choice([[0.75, 0.76, 0.78], [0.2, 0.2, 0.22]]))
        cv.paint(
            poly_mask(
                h2,
                w2,
                np.array([(w2 * 0.12, 0), (w2 * 0.88, 0), (w2 * 0.95, h2 * 0.85), (w2 * 0.05, h2 * 0.85)]),
            ),
            body,
        )
        cv.paint(
            poly_mask(
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
            col(rng.uniform(0.05, 0.5, 3)),
        )
        cv.paint(
            poly_mask(h2, w2, np.array([(0, h2 * 0.85), (w2, h2 * 0.85), (w2, h2), (0, h2)])), body * 0.85
        )
    elif noun == "towel":
        c = col(rng.uniform(0.3, 0.95, 3))
        for k in range(3):
            y0, y1 = h2 * k / 3, h2 * (k + 1) / 3
            cv.paint(
                poly_mask(h2, w2, np.array([(1, y0 + 1), (w2 - 1, y0 + 1), (w2, y1), (0, y1)])),
                c * (0.85 + 0.05 * k),
            )
    elif noun == "stone":
        c = col(np.ones(3) * rng.uniform(0.35, 0.7) + rng.normal(0, 0.03, 3))
        cv.paint(
            ellipse_mask(h2, w2, (w2 / 2, h2 * 0.55), (w2 * 0.48, h2 * 0.45)),
            shaded(c, cyl_shade(w2, 0, w2, -0.5, 0.6)),
        )
    elif noun == "ball":
        c = col(rng.uniform(0.2, 1.0, 3))
        cv.paint(
            ellipse_mask(h2, w2, (w2 / 2, h2 / 2), (w2 * 0.49, h2 * 0.49)),
            shaded(c, cyl_shade(w2, 0, w2, -0.4)),
        )
        cv.paint(
            ellipse_mask(h2, w2, (w2 / 2, h2 / 2), (w2 * 0.49, h2 * 0.12), thickness=max(1, w2 // 20)),
            col(1 - c),
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
            cv.paint(m.astype(F32) / 255, col([0.25, 0.5, 0.2]))
            cv.paint(ellipse_mask(h2, w2, (x, top), (w2 * 0.07, w2 * 0.07)), col(rng.uniform(0.4, 1.0, 3)))
    elif noun == "chair":
        c = col(rng.choice([[0.5, 0.35, 0.2], [0.9, 0.9, 0.88], [0.2, 0.25, 0.3]]))
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
        c = col(rng.choice([[0.2, 0.4, 0.15], [0.3, 0.45, 0.2]]))
        for _ in range(12):
            cx, cy = rng.uniform(0.2, 0.8) * w2, rng.uniform(0.35, 0.75) * h2
            r = rng.uniform(0.15, 0.3) * w2
            cv.paint(ellipse_mask(h2, w2, (cx, cy), (r, min(r, h2 - cy))), jitter(rng, c, 0.04))
    return cv.rgba(2)


def alpha_canvas(s: int, alpha: np.ndarray, x0: int, y0: int) -> np.ndarray:
    full = np.zeros((s, s), F32)
    h, w = alpha.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
    if ix0 < ix1 and iy0 < iy1:
        full[iy0:iy1, ix0:ix1] = alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    return full


@dataclass
class Light:
    kx: float  # cast-shadow shear per pixel of height
    ky: float  # cast-shadow squash (negative: shadow falls towards the camera)
    strength: float
    blur: float


def cast_shadow(
    sc: Scene,
    light: Light,
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
        ell = ellipse_mask(
            s, s, ((base_x0 + base_x1) / 2, base_y - 0.5), (w * 0.55, max(1.0, w * foreshort * 0.5))
        )
        cast = np.maximum(cast, cv2.GaussianBlur(ell, (0, 0), max(0.6, w * 0.06)))
    return np.clip(cast * light.strength, 0, 0.85)


def apply_shadow(img: np.ndarray, sh: np.ndarray) -> None:
    img *= (1.0 - sh)[..., None]


def silhouette_base(sil: np.ndarray) -> tuple[float, float, float]:
    ys, xs = np.nonzero(sil > 0.3)
    if len(ys) == 0:
        return 0.0, 0.0, 0.0
    bottom = ys.max()
    row = xs[ys >= bottom - 1]
    return float(bottom + 1), float(row.min()), float(row.max() + 1)


@dataclass
class Placement:
    x0: int
    y0: int
    w: int
    h: int

    @property
    def base(self) -> float:
        return float(self.y0 + self.h)


def place_refs(rng: Rng, sc: Scene, light: Light, prod: Placement, scale: float, mode: str, s: int) -> None:
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
        sil = alpha_canvas(s, rgba[..., 3], ix0, iy0)
        fs = float(np.clip((by - sc.horizon) / sc.focal, 0.08, 1.0))
        apply_shadow(sc.rgb, cast_shadow(sc, light, sil, by, ix0, ix0 + rgba.shape[1], fs))
        paste_rgba(sc.rgb, rgba, ix0, iy0)
        sc.depth = np.where(sil > 0.5, np.float32(sc.depth_at(by)), sc.depth)


def flat_board(
    rng: Rng, sc: Scene, xc: float, base: float, width_px: float, tilt_deg: float | None
) -> np.ndarray:
    """A cutting board / tray under the product: flat on the ground, or a steep ramp when tilted."""
    s = sc.size
    c = col(rng.choice([[0.72, 0.52, 0.3], [0.55, 0.38, 0.22], [0.9, 0.9, 0.88], [0.25, 0.25, 0.27]]))
    cv = Canvas(s * 2, s * 2)
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
        cv.paint(poly_mask(s * 2, s * 2, pts2), c)
        thick = max(1.0, sc.ppm(base) * 0.015) * 2
        front = np.array([pts2[3], pts2[2], pts2[2] + (0, thick), pts2[3] + (0, thick)], F32)
        cv.paint(poly_mask(s * 2, s * 2, front), c * 0.7)
    else:
        t = np.radians(tilt_deg)
        d = np.array([np.cos(t), -np.sin(t)], F32)  # up-slope direction in the image
        n = np.array([np.sin(t), np.cos(t)], F32)  # into the board (downwards)
        p = np.array([xc, base], F32)
        length = width_px * rng.uniform(1.8, 2.6)
        a, b = p - d * length * 0.6, p + d * length * 0.4
        thick = max(3.0, width_px * rng.uniform(0.18, 0.3))
        pts = np.array([a, b, b + n * thick, a + n * thick], F32) * 2
        cv.paint(poly_mask(s * 2, s * 2, pts), c)
        cv.paint(
            poly_mask(
                s * 2,
                s * 2,
                np.array([a + n * thick * 0.6, b + n * thick * 0.6, b + n * thick, a + n * thick], F32) * 2,
            ),
            c * 0.65,
        )
    return cv.rgba(2)
