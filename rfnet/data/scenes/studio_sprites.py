"""The ``studio`` family's sprites: products (bodies of revolution with labels, boxes, bags,
sneakers, headphones), reference objects of known real size, and real cut-outs resized as sprites.

Sprites are ``(RGB, alpha)`` float32 pairs in [0, 1], drawn supersampled for an anti-aliased alpha.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from rfnet.data.scenes.products import Product


def luminance(c: np.ndarray) -> float:
    """Luma of an RGB colour in [0, 1]."""
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def fill_ellipse(canvas: np.ndarray, centre, axes, colour, angle: float = 0.0) -> None:
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


def blend(dst: np.ndarray, src: np.ndarray, m: np.ndarray) -> None:
    dst *= 1 - m[..., None]
    dst += src * m[..., None]


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
        ink = np.array((0.1, 0.1, 0.1) if luminance(np.asarray(lc)) > 0.5 else (0.95, 0.95, 0.95), np.float32)
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


def shaded(c, f) -> tuple[float, float, float]:
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
    sk.poly(front, shaded(colour, 1.0))
    sk.poly(top, shaded(colour, 1.22))
    sk.poly(sidep, shaded(colour, 0.68))
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
        sk.ellipse((cx - fw * 0.1, tv * 0.45), (fw * 0.12, tv * 0.45 + 1), shaded(accent, 1.1), angle=-20)
        sk.ellipse((cx + fw * 0.1, tv * 0.45), (fw * 0.12, tv * 0.45 + 1), shaded(accent, 0.9), angle=20)
    elif label:
        lc = (0.95, 0.95, 0.93) if luminance(np.asarray(colour)) < 0.6 else (0.12, 0.12, 0.14)
        lx0, ly0 = ox + fw * 0.15, tv + fh * rng.uniform(0.2, 0.4)
        sk.poly(
            [(lx0, ly0), (lx0 + fw * 0.7, ly0), (lx0 + fw * 0.7, ly0 + fh * 0.1), (lx0, ly0 + fh * 0.1)], lc
        )
        for i in range(3):
            yl = ly0 + fh * (0.2 + 0.08 * i)
            sk.line([(lx0, yl), (lx0 + fw * rng.uniform(0.3, 0.7), yl)], accent, max(0.7, fh * 0.025))
        sk.ellipse((ox + fw * 0.75, tv + fh * 0.78), (fw * 0.09, fw * 0.09), accent)
    return sk.finish(light)


def product_sprite(rng, kind, L, colour, accent, lab_col, light):
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
            bands = [(0, 0.05, shaded(colour, 1.15)), (0.05, 0.8, colour), (0.8, 1.01, accent)]
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
        sk.poly([(bw, hh), (bw + g, hh + 2), (bw + g, h), (bw, h)], shaded(colour, 0.7))
        sk.poly([(0, hh), (bw, hh), (bw, h), (0, h)], colour)
        sk.poly([(0, hh), (bw, hh), (bw, hh + h * 0.05), (0, hh + h * 0.05)], shaded(colour, 1.15))
        for cx in (bw * 0.32, bw * 0.68):
            sk.ellipse(
                (cx, hh + 1),
                (bw * 0.13, hh * 0.95),
                shaded(accent, 0.9),
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
        sk.poly(P([(0.7, 0.46), (0.85, 0.5), (0.98, 0.62), (0.99, 0.78), (0.72, 0.78)]), shaded(colour, 0.85))
        sole_c = (0.95, 0.95, 0.93) if rng.random() < 0.7 else accent
        sk.poly(P([(0.0, 0.76), (0.97, 0.76), (1.0, 0.86), (0.97, 1.0), (0.04, 1.0), (0.0, 0.9)]), sole_c)
        sk.line(P([(0.01, 0.88), (0.98, 0.88)]), shaded(sole_c, 0.75), max(0.8, h * 0.03))
        sk.line(P([(0.18, 0.62), (0.45, 0.5), (0.75, 0.64)]), accent, max(1.0, h * 0.08))
        for i in range(4):
            t = 0.35 + 0.07 * i
            sk.line(
                P([(t, 0.28 + 0.05 * i), (t + 0.05, 0.37 + 0.05 * i)]),
                (0.95, 0.95, 0.95),
                max(0.7, h * 0.035),
            )
        sk.poly(P([(0.0, 0.45), (0.06, 0.18), (0.1, 0.2), (0.05, 0.5)]), shaded(accent, 0.9))
        return sk.finish(light)
    # headphones
    h = L
    w = L * rng.uniform(0.85, 1.0)
    sk = _Sketch(h, w)
    band_c = colour
    sk.ellipse((w / 2, h * 0.55), (w * 0.4, h * 0.5), band_c, a0=180, a1=360, thickness=w * 0.07)
    sk.ellipse(
        (w / 2, h * 0.55), (w * 0.36, h * 0.46), shaded(accent, 0.8), a0=200, a1=340, thickness=w * 0.03
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
        sk.ellipse((cx, h * 0.8), (w * 0.05, h * 0.12), shaded(accent, 0.9))
    return sk.finish(light)


def ref_sprite(rng, kind, hpx, light):
    """Reference objects of known real size; ``hpx`` is the height in pixels."""
    if kind == "mug":
        w = hpx * 0.8
        c = tuple(float(v) for v in rng.uniform(0.15, 0.95, 3))
        sk = _Sketch(hpx, w * 1.35)
        sk.ellipse((w * 1.02, hpx * 0.45), (w * 0.24, hpx * 0.26), c, thickness=w * 0.09)
        sk.poly([(0, hpx * 0.06), (w, hpx * 0.06), (w * 0.97, hpx), (w * 0.03, hpx)], c, cyl=(0, w, light))
        sk.ellipse((w / 2, hpx * 0.07), (w / 2, hpx * 0.07), shaded(c, 0.5))
        return sk.finish()
    if kind == "candle":
        w = hpx * 0.7
        c = (0.94, 0.9, 0.82) if rng.random() < 0.7 else tuple(float(v) for v in rng.uniform(0.3, 0.9, 3))
        sk = _Sketch(hpx, w)
        sk.poly([(0, hpx * 0.22), (w, hpx * 0.22), (w, hpx), (0, hpx)], c, cyl=(0, w, light))
        sk.ellipse((w / 2, hpx * 0.22), (w / 2, hpx * 0.05), shaded(c, 0.85))
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
                shaded(c, 1.6),
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
        return product_sprite(rng, "lamp", hpx, c, c, c, light)
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
        sk.poly([(w * 0.05, 0), (w * 0.05 + t, 0), (w * 0.05 + t, hpx), (w * 0.05, hpx)], shaded(c, 0.8))
        sk.poly([(w * 0.05, hpx * 0.5), (w, hpx * 0.5), (w, hpx * 0.56), (w * 0.05, hpx * 0.56)], c)
        sk.poly([(w - t, hpx * 0.5), (w, hpx * 0.5), (w, hpx), (w - t, hpx)], shaded(c, 0.8))
        sk.poly(
            [(w * 0.05, hpx * 0.05), (w * 0.3, hpx * 0.05), (w * 0.3, hpx * 0.3), (w * 0.05, hpx * 0.3)], c
        )
        return sk.finish(light)
    raise ValueError(kind)


def real_sprite(product: Product, height: float, max_width: float) -> tuple[np.ndarray, np.ndarray]:
    """A real cut-out resized (premultiplied, so no fringes) to ``height`` px, or narrower to fit
    ``max_width``: ``(RGB, alpha)`` in [0, 1], as :func:`product_sprite` returns them."""
    h, w = product.rgba.shape[:2]
    scale = min(height / h, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    a = product.rgba[..., 3:].astype(np.float32) / 255
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    pre = cv2.resize(product.rgba[..., :3].astype(np.float32) / 255 * a, size, interpolation=interp)
    alpha = np.clip(cv2.resize(a[..., 0], size, interpolation=interp), 0, 1)
    rgb = np.where(alpha[..., None] > 1e-3, pre / np.maximum(alpha[..., None], 1e-3), 0)
    return np.clip(rgb, 0, 1).astype(np.float32), alpha.astype(np.float32)
