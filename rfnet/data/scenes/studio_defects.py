"""The ``studio`` family's defects painted on the background: Unsuitable (glitch, melt, collage,
fragments, artefacts, stretch) and Shape Hallucination (taller, wider, duplicate, growths)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from rfnet.data.scenes.drawing import over
from rfnet.data.scenes.studio_scene import fbm, texture
from rfnet.data.scenes.studio_sprites import blend, fill_ellipse


def unsuitable(rng, img, variant, S):
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
        dx = fbm(rng, S, S, (3, 6)) * amp
        dy = fbm(rng, S, S, (3, 6)) * amp * 0.6 - np.abs(fbm(rng, S, S, (8, 16))) * amp
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
            tex = texture(rng, kind, S, S, rng.uniform(0.15, 0.95, 3))
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
                blend(out, np.roll(img, tuple(int(s) for s in shift), axis=(0, 1))[:, ::-1], m)
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
        m = (fbm(rng, S, S, (3, 5)) > rng.uniform(-0.5, 0.3)).astype(np.float32)
        blend(out, blocky, m)
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


def hallucinate(rng, img, variant, prgb, pa, x0, y0, S):
    """Scene pixels that continue, widen, repeat or grow the product's silhouette."""
    h, w = pa.shape
    by = y0 + h
    if variant == "taller":
        # the product's upper part repeated above it: the outline continues upwards
        d = round(h * rng.uniform(0.18, 0.4))
        if rng.random() < 0.5:
            over(img, prgb * rng.uniform(0.85, 1.0), pa, x0, y0 - d)
        else:
            nh = h + d
            rgb = cv2.resize(prgb, (w, nh), interpolation=cv2.INTER_LINEAR)
            a = cv2.resize(pa, (w, nh), interpolation=cv2.INTER_LINEAR)
            over(img, rgb * rng.uniform(0.85, 1.0), a, x0, by - nh)
        return
    if variant == "wider":
        f = rng.uniform(1.3, 1.7)
        nw = round(w * f)
        rgb = cv2.resize(prgb, (nw, h), interpolation=cv2.INTER_LINEAR)
        a = cv2.resize(pa, (nw, h), interpolation=cv2.INTER_LINEAR)
        shift = rng.uniform(-0.5, 0.5) * (nw - w)
        over(img, rgb * rng.uniform(0.8, 0.95), a, round(x0 + w / 2 - nw / 2 + shift), y0)
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
        over(img, rgb, a, round(cx - nw / 2), round(base - nh))
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
        fill_ellipse(blob, (ex, ey), (ln * 0.7, ln * rng.uniform(0.22, 0.4)), 1.0, angle=ang)
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
        shade = 0.75 + 0.35 * np.clip(1 - ((xx - ex) ** 2 + (yy - ey) ** 2) / (ln * 0.7) ** 2, 0, 1)
        blend(img, np.clip(col[None, None, :] * shade[..., None], 0, 1), blob)
