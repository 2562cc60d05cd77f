"""The ``lifestyle`` family's finishing and defects: photographic finish (depth of field, light
colour, vignetting, noise, JPEG), and the Unsuitable, Indistinctiveness and Shape Hallucination
paintings."""

from __future__ import annotations

import cv2
import numpy as np

from rfnet.data.scenes.lifestyle_products import F32, Rng, ellipse_mask, jitter, poly_mask, resize_rgba
from rfnet.data.scenes.lifestyle_scene import Scene


def extension(rng: Rng, rgba: np.ndarray) -> tuple[np.ndarray, int, int]:
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
            m = ellipse_mask(layer.shape[0], layer.shape[1], (cx, top), (r, max(1.0, r * 0.5)))
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
        part = resize_rgba(part, pw, ph)
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
            m = ellipse_mask(
                lh,
                lw,
                (ex, cy),
                (w * rng.uniform(0.2, 0.45), h * rng.uniform(0.12, 0.3)),
                thickness=max(2, int(w * 0.08)),
            )
        elif shape == "knob":
            r = max(w, h) * rng.uniform(0.1, 0.25)
            m = ellipse_mask(lh, lw, (pad + w * rng.uniform(0.3, 0.7), pad + 1), (r, r * 0.8))
        elif shape == "strap":
            x0 = pad + w * rng.uniform(0.1, 0.4)
            m = ellipse_mask(
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
            m = poly_mask(lh, lw, pts)
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
        m = poly_mask(layer.shape[0], layer.shape[1], pts)
        layer[..., :3] = mean * rng.uniform(0.8, 1.0)
        layer[..., 3] = m
    layer[..., 3] = np.clip(layer[..., 3], 0, 1)
    # soften the hard extrusion edges a little, as rendered scene pixels would be
    layer[..., 3] = cv2.GaussianBlur(layer[..., 3], (0, 0), 0.5)
    return layer, -pad, -pad


def photo_finish(rng: Rng, img: np.ndarray, sc: Scene, z_focus: float) -> np.ndarray:
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


def blend_in(rng: Rng, img: np.ndarray, colour: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Indistinctiveness: pull what surrounds the product towards its colour and lower the contrast.

    The scene was already painted in the product's colours; light, blur and vignetting move it away
    again, so the area around the product is shifted back to within a small colour distance.
    """
    s = img.shape[0]
    x, y, w, h = box
    mx, my = int(w * 0.4) + 2, int(h * 0.3) + 2
    region = img[max(0, y - my) : min(s, y + h + my), max(0, x - mx) : min(s, x + w + mx)]
    mean = region.reshape(-1, 3).mean(axis=0)
    target = jitter(rng, colour, rng.uniform(0.01, 0.08))
    img = img + (target - mean) * rng.uniform(0.75, 1.0)
    contrast = rng.uniform(0.55, 1.0)
    img = target + (img - target) * contrast
    return np.clip(img, 0, 1).astype(F32)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else u8
    return cv2.cvtColor(back, cv2.COLOR_BGR2RGB).astype(F32) / 255.0


def glitch(rng: Rng, img: np.ndarray) -> np.ndarray:
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
                        out[y : y + b, x : x + b] = np.full(3, 0.5, F32) if grey else jitter(rng, src, 0.25)
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
