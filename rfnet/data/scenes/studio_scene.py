"""The ``studio`` family's scenes: a wall (plaster, concrete, tiles, stripes or panels, window light,
bokeh, a framed picture) and a support drawn in perspective (table top, floor, shelf or podium)
with photographic textures, reference objects at real-world sizes, and contact and cast shadows.

Images are float32 ``(S, S, 3)`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.scenes.drawing import over
from rfnet.data.scenes.studio_sprites import blend, fill_ellipse, luminance, ref_sprite, shaded

WALL_TONES = np.array(
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
SURFACES: list[tuple[str, tuple[float, float, float]]] = [
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


def contrasts(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two colours contrast clearly (colour distance or luminance)."""
    return float(np.linalg.norm(a - b)) > 0.38 or abs(luminance(a) - luminance(b)) > 0.25


# ---------------------------------------------------------------------------------------------
# noise and textures


def fbm(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...] = (3, 6, 12)) -> np.ndarray:
    """Smooth multi-octave value noise, roughly zero mean and unit spread."""
    out = np.zeros((h, w), np.float32)
    for i, c in enumerate(cells):
        g = rng.random((c + 2, c + 2), dtype=np.float32)
        out += cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * (0.6**i)
    out -= out.mean()
    return out / (out.std() + 1e-6)


def texture(rng: np.random.Generator, kind: str, h: int, w: int, tone, amp: float = 1.0) -> np.ndarray:
    tone = np.asarray(tone, np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = h / 128.0
    extra = None
    if kind == "wood":
        if rng.random() < 0.5:
            x, y = y, x
        n = fbm(rng, h, w, (2, 4, 8))
        grain = np.sin(2 * np.pi * (y / (rng.uniform(4, 9) * s) + 0.9 * n))
        plank = rng.uniform(12, 28) * s
        pid = np.floor(y / plank).astype(np.int32)
        poff = rng.normal(0, 0.06, int(pid.max()) + 2).astype(np.float32)[pid]
        gap = (np.abs(y / plank - np.round(y / plank)) * plank < 0.7 * s).astype(np.float32)
        v = 1 + 0.08 * grain + 0.03 * fbm(rng, h, w, (24, 48)) + poff - 0.3 * gap
    elif kind == "marble":
        n = fbm(rng, h, w, (2, 4, 8, 16))
        a, b = rng.normal(0, 1, 2)
        p = rng.uniform(30, 70) * s
        vein = 1 - np.abs(np.sin(2 * np.pi * (x * a + y * b) / p / max(abs(a) + abs(b), 0.3) + 2.5 * n))
        vein = vein**10
        v = 1 + 0.04 * fbm(rng, h, w, (4, 8))
        vc = np.array((0.35, 0.33, 0.32) if luminance(tone) > 0.5 else (0.85, 0.82, 0.78), np.float32)
        if rng.random() < 0.3:
            vc = np.array((0.78, 0.62, 0.30), np.float32)
        extra = (vein * rng.uniform(0.5, 0.9) * amp, vc)
    elif kind == "fabric":
        p = rng.uniform(2.2, 3.5) * s
        weave = np.sin(2 * np.pi * x / p) * np.sin(2 * np.pi * y / p)
        twill = np.sin(2 * np.pi * (x + y) / (p * 2.1))
        v = 1 + 0.05 * weave + 0.03 * twill + 0.07 * fbm(rng, h, w, (2, 3))
    elif kind == "concrete":
        v = 1 + 0.07 * fbm(rng, h, w, (4, 8, 16, 40))
        v -= 0.12 * (rng.random((h, w), dtype=np.float32) > 0.985)
    elif kind == "terrazzo":
        v = 1 + 0.03 * fbm(rng, h, w, (4, 8))
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
        v = 1 + tv + 0.02 * fbm(rng, h, w, (8, 16)) - 0.25 * grout.astype(np.float32)
    else:  # plaster / paint
        v = 1 + 0.03 * fbm(rng, h, w, (3, 6, 12))
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


def base_span(alpha: np.ndarray) -> tuple[float, float]:
    """The x extent of a sprite's bottom rows (where it touches the surface)."""
    rows = alpha[max(0, alpha.shape[0] - 3) :].max(0)
    cols = np.nonzero(rows > 0.3)[0]
    if len(cols) == 0:
        return 0.0, float(alpha.shape[1])
    return float(cols[0]), float(cols[-1] + 1)


def cast_shadow(S, alpha, x0, y0, lx, rng, strength=1.0, cast=True) -> np.ndarray:
    """Contact + cast shadow of a sprite standing with its bottom row on the surface."""
    h = alpha.shape[0]
    by = y0 + h
    b0, b1 = base_span(alpha)
    bw = max(2.0, b1 - b0)
    cx = x0 + (b0 + b1) / 2
    sh = np.zeros((S, S), np.float32)
    fill_ellipse(sh, (cx, by - 0.5), (bw * 0.56, max(1.2, bw * 0.08)), 1.0)
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
class Scene:
    """A drawn background, where it can hold things (``support`` in [0, 1]), its horizon and back
    edge rows, and the light's side (-1 left to 1 right)."""

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
        img *= (1 + 0.02 * fbm(rng, S, S, (4, 8)))[..., None]
    elif kind == "panel":
        img = texture(rng, "plaster", S, S, tone)
        for _ in range(int(rng.integers(1, 4))):
            x0 = rng.uniform(-0.2, 0.8) * S
            y0 = rng.uniform(0.05, 0.3) * S
            cv2.rectangle(
                img,
                (int(x0), int(y0)),
                (int(x0 + rng.uniform(0.2, 0.5) * S), int(y0 + S * 0.6)),
                shaded(tone, 0.88),
                max(1, S // 100),
            )
    else:
        img = texture(rng, str(kind), S, S, tone, amp=0.6)
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S
    g = 1 + rng.uniform(-0.12, 0.12) * (y - 0.5)
    lx0 = 0.5 + light * rng.uniform(0.2, 0.6)
    spot = np.exp(-((x - lx0) ** 2 + (y - rng.uniform(0.0, 0.5)) ** 2) / rng.uniform(0.05, 0.3))
    img *= (g + rng.uniform(0.05, 0.22) * spot - 0.06)[..., None]
    if arch:
        ac = np.asarray(WALL_TONES[rng.integers(len(WALL_TONES))])
        aw, ax = rng.uniform(0.3, 0.55) * S, rng.uniform(0.3, 0.7) * S
        at = rng.uniform(0.05, 0.25) * S
        m = np.zeros((S, S), np.float32)
        cv2.rectangle(m, (int(ax - aw / 2), int(at + aw / 2)), (int(ax + aw / 2), S), 1.0, -1)
        cv2.circle(m, (int(ax), int(at + aw / 2)), int(aw / 2), 1.0, -1, cv2.LINE_AA)
        blend(img, ac * (0.9 + 0.1 * (1 - y))[..., None], m)
    if window and rng.random() < 0.35:
        ww, wh = rng.uniform(0.2, 0.4) * S, rng.uniform(0.3, 0.6) * S
        wx = (0.5 + light * rng.uniform(0.15, 0.45)) * S - ww / 2
        wy = rng.uniform(-0.15, 0.1) * S
        sky = np.float32([0.85, 0.92, 1.0]) * (0.85 + 0.15 * rng.random())
        m = np.zeros((S, S), np.float32)
        cv2.rectangle(m, (int(wx), int(wy)), (int(wx + ww), int(wy + wh)), 1.0, -1)
        frame = shaded(tone, 0.7) if rng.random() < 0.5 else (0.95, 0.95, 0.95)
        pane = np.ones((S, S, 3), np.float32) * sky
        pane *= (1 - 0.15 * y)[..., None]
        t = max(1, int(S * 0.02))
        cv2.line(pane, (int(wx + ww / 2), int(wy)), (int(wx + ww / 2), int(wy + wh)), frame, t)
        cv2.line(pane, (int(wx), int(wy + wh / 2)), (int(wx + ww), int(wy + wh / 2)), frame, t)
        m = cv2.GaussianBlur(m, (0, 0), 0.8)
        blend(img, pane, m)
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
    blend(img, surf, m)
    return m, quad


def _front_face(img, quad, thick, colour):
    (xa, ya), (xb, _) = quad[3], quad[2]
    pts = np.float32([(xa, ya), (xb, ya), (xb, ya + thick), (xa, ya + thick)])
    cv2.fillConvexPoly(img, np.round(pts * 4).astype(np.int32), colour, cv2.LINE_AA, 2)


def pick_tone(rng, avoid, pool) -> np.ndarray:
    for _ in range(30):
        c = np.asarray(pool[int(rng.integers(len(pool)))], np.float32) * rng.uniform(0.92, 1.06)
        if all(contrasts(c, a) for a in avoid):
            return c
    return (
        np.float32([0.5, 0.5, 0.5])
        if luminance(avoid[0]) > 0.6 or luminance(avoid[0]) < 0.3
        else np.float32([0.95, 0.95, 0.95])
    )


def surface_choice(rng, avoid):
    for _ in range(30):
        kind, tone = SURFACES[int(rng.integers(len(SURFACES)))]
        t = np.asarray(tone, np.float32) * rng.uniform(0.92, 1.06)
        if all(contrasts(t, a) for a in avoid):
            return kind, t
    return "plaster", pick_tone(rng, avoid, WALL_TONES)


def draw_scene(rng, S, kind, bx, by, pw, light, wall_tone, surf, opts) -> Scene:
    """Wall + support surface in perspective; the product's base point is (bx, by)."""
    img = _wall(rng, S, wall_tone, light, window=opts.get("window", True), arch=kind == "podium")
    support = np.zeros((S, S), np.float32)
    skind, stone = surf
    amp = opts.get("tex_amp", 1.0)
    tex = texture(rng, skind, S, 2 * S, stone, amp)
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
            cv2.rectangle(img, (0, int(y_back - 0.02 * S)), (S, int(y_back)), shaded(wall_tone, 1.05), -1)
        xl, xr = -2.0 * S, 3.0 * S
        if edge is not None:
            side, xe = edge
            # back-edge x whose line passes through (xe, by)
            xbk = vx + (xe - vx) * (y_back - y_hor) / (by - y_hor)
            # floor far below the table, then the table top on one side only
            fl_back = max(y_back + 0.15 * S, by + rng.uniform(0.06, 0.2) * S)
            ftex = texture(rng, "wood" if rng.random() < 0.5 else "concrete", S, 2 * S, floor_tone * 0.75)
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
            _front_face(img, quad, thick, shaded(stone, 0.72))
        if edge is not None:
            side, xe = edge

            def at(xb, y):
                return vx + (xb - vx) * (y - y_hor) / (y_back - y_hor)

            xa, xf = at(xr if side > 0 else xl, y_back), at(xr if side > 0 else xl, y_front)
            thick = rng.uniform(0.04, 0.07) * S
            pts = np.float32([(xa, y_back), (xf, y_front), (xf, y_front + thick), (xa, y_back + thick)])
            cv2.fillConvexPoly(img, np.round(pts * 4).astype(np.int32), shaded(stone, 0.6), cv2.LINE_AA, 2)
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
        _front_face(img, quad, thick, shaded(stone, 1.08))
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
            cv2.rectangle(img, (0, int(y_up - t)), (S, int(y_up)), shaded(stone, 1.05), -1)
            cv2.rectangle(img, (0, int(y_up)), (S, int(y_up + 0.012 * S) + 1), shaded(stone, 0.6), -1)
            sh = np.exp(-(np.arange(S, dtype=np.float32) - y_up) / (0.04 * S))
            sh[: int(y_up)] = 0
            img *= (1 - 0.3 * sh)[:, None, None]
        if opts.get("lower_shelf", edge is None and rng.random() < 0.3):
            y2 = by + rng.uniform(0.3, 0.5) * S
            if y2 < S:
                cv2.rectangle(img, (0, int(y2)), (S, int(y2 + thick)), shaded(stone, 1.08), -1)
    else:  # podium
        y_back = opts.get("y_back")
        if y_back is None:
            y_back = rng.uniform(0.35, 0.6) * S
        y_back = min(y_back, by - 0.05 * S)
        y_hor = y_back - rng.uniform(0.1, 0.4) * S
        floor_tone = pick_tone(rng, [wall_tone * 0.7], WALL_TONES) * 0.9
        ftex = texture(rng, "plaster" if rng.random() < 0.6 else "concrete", S, 2 * S, floor_tone)
        fm, _ = _plane(rng, S, img, y_back, 1.5 * S, -2 * S, 3 * S, y_hor, vx, ftex, light)
        support = np.maximum(support, fm)
        R = opts.get("podium_r") or max(pw * rng.uniform(0.6, 0.95), 0.18 * S)
        ry = R * float(np.clip((by - y_hor) / S * 0.35, 0.1, 0.3))
        y_bot = by + rng.uniform(0.2, 0.5) * S
        pc = np.asarray(stone, np.float32)
        side_c = shaded(pc, 0.85)
        if rng.random() < 0.6:
            body = np.zeros((S, S), np.float32)
            cv2.rectangle(body, (round(bx - R), round(by)), (round(bx + R), round(y_bot)), 1.0, -1)
            fill_ellipse(body, (bx, y_bot), (R, ry), 1.0)
            xs = np.clip((np.arange(S, dtype=np.float32) - bx) / R, -1, 1)
            shade = 0.5 + 0.5 * np.clip(0.7 * np.sqrt(1 - xs**2) + 0.4 * light * xs, 0, 1)
            sidei = np.float32(side_c)[None, None, :] * shade[None, :, None] * np.ones((S, 1, 1), np.float32)
            blend(img, sidei, body)
            top = np.zeros((S, S), np.float32)
            fill_ellipse(top, (bx, by), (R, ry), 1.0)
        else:
            body = np.zeros((S, S), np.float32)
            cv2.rectangle(body, (round(bx - R), round(by + ry)), (round(bx + R), round(y_bot)), 1.0, -1)
            blend(img, np.ones((S, S, 3), np.float32) * np.float32(side_c), body)
            top = np.zeros((S, S), np.float32)
            back = R * (1 - 2 * ry / max(by - y_hor + ry, 1))
            pts = np.float32(
                [(bx - back, by - ry), (bx + back, by - ry), (bx + R, by + ry), (bx - R, by + ry)]
            )
            cv2.fillConvexPoly(top, np.round(pts * 4).astype(np.int32), 1.0, cv2.LINE_AA, 2)
        toptex = texture(rng, skind, S, S, shaded(pc, 1.12), amp)
        blend(img, toptex, top)
        support = np.maximum(support * (1 - top), top)
        if rng.random() < 0.5:  # a decorative sphere on the floor
            r = rng.uniform(0.06, 0.12) * S
            sx = bx + (R + r + rng.uniform(0.02, 0.1) * S) * (1 if rng.random() < 0.5 else -1)
            sy = min(S - r, y_bot - rng.uniform(0.0, 0.1) * S)
            y, x = np.mgrid[0:S, 0:S].astype(np.float32)
            dd = ((x - sx) ** 2 + (y - sy) ** 2) / r**2
            m = np.clip((1 - dd) * r / 2, 0, 1)
            nz = np.sqrt(np.clip(1 - dd, 0, 1))
            sc = pick_tone(rng, [wall_tone], WALL_TONES)
            shade = 0.45 + 0.55 * np.clip(0.7 * nz + 0.4 * light * (x - sx) / r - 0.3 * (y - sy) / r, 0, 1)
            blend(img, sc * shade[..., None], m)
    return Scene(img, support, float(y_hor), float(y_back), light)


def add_refs(rng, sc, S, kinds, n, x0, x1, by, ph, prod_cm, scale=None, jitter_back=0.05, tries=1):
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
        rgb, a = ref_sprite(rng, kind, hpx, sc.light)
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
        shd = cast_shadow(S, a, rx0, ry0, sc.light, rng, 0.8)
        sc.img *= (1 - shd * sc.support)[..., None]
        over(sc.img, rgb, a, rx0, ry0)
        placed += 1
    return placed


def finish_background(rng, img: np.ndarray) -> np.ndarray:
    S = img.shape[0]
    img = img * (1 + rng.normal(0, 0.035, 3)).astype(np.float32)
    y, x = np.ogrid[0:S, 0:S]
    r2 = (((x - S / 2) ** 2 + (y - S / 2) ** 2) / (S / 2) ** 2).astype(np.float32)
    img *= (1 - rng.uniform(0.02, 0.14) * r2)[..., None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7) * S / 128)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.004, 0.02))
    return np.clip(img, 0, 1)
