"""The ``lifestyle`` family's scenes: a ground plane seen through a pinhole camera (kitchen counters,
bathroom shelves, desks, outdoor ground, cafe tables) with a wall or sky behind it, the surface's
front edge and side ends, and each family's palette of colours and materials."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.scenes.lifestyle_products import F32, Product, Rng, col, jitter


def _lab(c: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(c, F32).reshape(1, 1, 3), cv2.COLOR_RGB2Lab).reshape(3)


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def periodic_noise(rng: Rng, size: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Smooth value noise in [0, 1] that tiles seamlessly (``size`` x ``size``)."""
    cells_x = cells_y if cells_x is None else cells_x
    low = rng.random((cells_y, cells_x)).astype(F32)
    big = cv2.resize(np.tile(low, (3, 3)), (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
    out = big[size : 2 * size, size : 2 * size]
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


@dataclass
class Scene:
    """Camera and layout: rows below ``horizon`` are the ground plane, ``cam_h`` metres below the eye.

    ``ppm(y) = (y - horizon) / cam_h`` pixels per metre at ground row ``y``. The wall stands at
    row ``wall_y``; the surface's front edge is at ``edge_y`` (beyond the frame when not visible).
    """

    kind: str
    size: int
    horizon: float
    wall_y: float
    edge_y: float
    focal: float
    cam_h: float
    rgb: np.ndarray
    depth: np.ndarray

    def ppm(self, y: float) -> float:
        return max(y - self.horizon, 1e-3) / self.cam_h

    def depth_at(self, y: float) -> float:
        return self.focal * self.cam_h / max(y - self.horizon, 1e-3)

    def project(self, x_m: float, z_m: float) -> tuple[float, float]:
        return self.size / 2 + x_m * self.focal / z_m, self.horizon + self.focal * self.cam_h / z_m

    def x_m(self, x: float, y: float) -> float:
        return (x - self.size / 2) * self.depth_at(y) / self.focal


def _wood_texture(rng: Rng, t: int, c1: np.ndarray, c2: np.ndarray, planks: int, gaps: bool) -> np.ndarray:
    grain = periodic_noise(rng, t, 48, 3)
    fine = periodic_noise(rng, t, 160, 6)
    v = np.arange(t)[:, None]
    plank = (v * planks // t) % planks
    tint = (1.0 + rng.normal(0, 0.08, planks)).astype(F32)[plank]
    g = (0.65 * grain + 0.35 * fine)[..., None]
    tex = (c1 * (1 - g) + c2 * g) * tint[..., None] * np.ones((1, t, 1), F32)
    if gaps:
        edge = ((v * planks) % t) < max(2, t // (planks * 12))
        tex = np.where(edge[..., None], tex * 0.35, tex)
    return tex.astype(F32)


def _surface_texture(
    rng: Rng, kind: str, pal: dict[str, np.ndarray], t: int = 256
) -> tuple[np.ndarray, float, bool]:
    """A seamless ground texture, the metres one tile spans, and whether to haze the distance."""
    c1, c2 = pal["surface"], pal["surface2"]
    style = pal["surface_style"]
    if style == "wood":
        planks = int(rng.integers(4, 9))
        tex = _wood_texture(rng, t, c1, c2, planks, gaps=False)
        return (
            (tex if rng.random() < 0.5 else tex.transpose(1, 0, 2).copy()),
            planks * rng.uniform(0.09, 0.16),
            False,
        )
    if style == "deck":
        planks = int(rng.integers(5, 9))
        return _wood_texture(rng, t, c1, c2, planks, gaps=True), planks * rng.uniform(0.1, 0.15), True
    if style == "marble":
        n = periodic_noise(rng, t, 6)
        veins = np.abs(np.sin((np.arange(t)[None, :] / t * 4 * np.pi) + 9.0 * n))
        v = np.clip(1.0 - veins * 6, 0, 1)[..., None]
        base = c1 * (0.93 + 0.07 * periodic_noise(rng, t, 32)[..., None])
        return (base * (1 - 0.6 * v) + c2 * 0.6 * v).astype(F32), rng.uniform(0.6, 1.2), False
    if style == "tiles":
        n = int(rng.integers(3, 7))
        yy, xx = np.mgrid[0:t, 0:t]
        grout = (((yy * n) % t) < t // (n * 14) + 1) | (((xx * n) % t) < t // (n * 14) + 1)
        tint = 1.0 + 0.05 * (periodic_noise(rng, t, n * 2)[..., None] - 0.5)
        tex = np.where(grout[..., None], c2, c1 * tint)
        return tex.astype(F32), n * rng.uniform(0.1, 0.3), False
    if style == "grass":
        coarse = periodic_noise(rng, t, 8)[..., None]
        fine = periodic_noise(rng, t, 128)[..., None]
        blades = periodic_noise(rng, t, 96, 24)[..., None]
        tex = c1 * (0.75 + 0.3 * coarse) * (0.8 + 0.35 * fine) * (0.85 + 0.3 * blades)
        tex = tex * (1 - 0.2 * coarse) + c2 * 0.2 * coarse
        return tex.astype(F32), rng.uniform(1.0, 2.5), True
    if style == "sand":
        fine = periodic_noise(rng, t, 192)[..., None]
        rip = 0.5 + 0.5 * np.sin(
            np.arange(t)[:, None, None] / t * 2 * np.pi * 9 + 4 * periodic_noise(rng, t, 5)[..., None]
        )
        tex = c1 * (0.88 + 0.14 * fine) * (0.94 + 0.08 * rip)
        return tex.astype(F32), rng.uniform(1.0, 3.0), True
    if style == "gingham":
        n = int(rng.integers(6, 14))
        yy, xx = np.mgrid[0:t, 0:t]
        a = ((yy * n // t) % 2).astype(F32)[..., None]
        b = ((xx * n // t) % 2).astype(F32)[..., None]
        tex = c2 * (1 - 0.5 * (a + b)) + c1 * 0.5 * (a + b)
        return tex.astype(F32), n * rng.uniform(0.02, 0.04), False
    # plain laminate / painted shelf
    tex = c1 * (0.96 + 0.05 * periodic_noise(rng, t, 64)[..., None])
    return tex.astype(F32), rng.uniform(0.5, 1.0), False


def palette(rng: Rng, kind: str) -> dict:
    """Scene colours and material styles for one scene family."""
    woods = [(0.55, 0.36, 0.2), (0.72, 0.55, 0.36), (0.38, 0.24, 0.14), (0.8, 0.68, 0.5), (0.6, 0.5, 0.42)]
    stones = [(0.85, 0.85, 0.83), (0.25, 0.25, 0.27), (0.6, 0.58, 0.55), (0.9, 0.88, 0.82), (0.45, 0.42, 0.4)]
    paints = [
        (0.93, 0.91, 0.86),
        (0.78, 0.84, 0.82),
        (0.88, 0.8, 0.7),
        (0.6, 0.68, 0.75),
        (0.35, 0.4, 0.38),
        (0.85, 0.72, 0.6),
        (0.96, 0.96, 0.96),
    ]
    tiles = [
        (0.95, 0.95, 0.94),
        (0.55, 0.72, 0.7),
        (0.3, 0.42, 0.55),
        (0.85, 0.82, 0.7),
        (0.2, 0.22, 0.24),
        (0.72, 0.8, 0.88),
    ]
    pick = lambda lst, j=0.04: jitter(rng, np.array(lst[int(rng.integers(len(lst)))]), j)  # noqa: E731
    pal: dict = {}
    if kind == "kitchen":
        style = str(rng.choice(["marble", "wood", "plain", "tiles"]))
        s = pick(stones if style != "wood" else woods)
        pal.update(
            surface=s,
            surface2=jitter(rng, s * 0.8, 0.03),
            surface_style=style,
            wall=pick(tiles),
            wall2=pick(paints),
            cabinet=pick(woods + paints),
        )
    elif kind == "bathroom":
        style = str(rng.choice(["plain", "wood", "marble"]))
        s = pick(paints if style == "plain" else (woods if style == "wood" else stones))
        pal.update(
            surface=s,
            surface2=jitter(rng, s * 0.85, 0.03),
            surface_style=style,
            wall=pick(tiles),
            wall2=pick(paints),
            cabinet=pick(paints),
        )
    elif kind == "desk":
        style = str(rng.choice(["wood", "plain"]))
        s = pick(woods if style == "wood" else paints)
        pal.update(
            surface=s,
            surface2=jitter(rng, s * 0.75, 0.03),
            surface_style=style,
            wall=pick(paints),
            wall2=pick(paints),
            cabinet=col(np.ones(3) * rng.uniform(0.08, 0.25)),
        )
    elif kind == "outdoor":
        style = str(rng.choice(["grass", "sand", "deck"]))
        s = pick(
            {
                "grass": [(0.3, 0.52, 0.18), (0.4, 0.58, 0.22), (0.25, 0.42, 0.15)],
                "sand": [(0.88, 0.78, 0.58), (0.8, 0.7, 0.52)],
                "deck": woods,
            }[style]
        )
        pal.update(
            surface=s,
            surface2=jitter(rng, s * 0.75, 0.04),
            surface_style=style,
            wall=pick([(0.45, 0.65, 0.92), (0.6, 0.75, 0.95), (0.8, 0.85, 0.92), (0.95, 0.75, 0.55)]),
            wall2=col([0.96, 0.96, 0.98]),
            cabinet=pick([(0.15, 0.3, 0.15), (0.25, 0.35, 0.2)]),
        )
    else:
        style = str(rng.choice(["wood", "marble", "gingham"]))
        s = pick(woods if style == "wood" else (stones if style == "marble" else tiles + paints))
        s2 = jitter(rng, s * 0.8, 0.03) if style != "gingham" else col([0.97, 0.97, 0.95])
        pal.update(
            surface=s,
            surface2=s2,
            surface_style=style,
            wall=pick([(0.3, 0.2, 0.14), (0.2, 0.18, 0.16), (0.45, 0.35, 0.25), (0.55, 0.5, 0.45)]),
            wall2=pick([(1.0, 0.85, 0.55), (1.0, 0.95, 0.8)]),
            cabinet=pick(woods),
        )
    pal["wall_style"] = {
        "kitchen": str(rng.choice(["subway", "square"])),
        "bathroom": str(rng.choice(["square", "mirror"])),
        "desk": str(rng.choice(["window", "frame", "plain"])),
        "outdoor": "sky",
        "cafe": "bokeh",
    }[kind]
    return pal


def matched_palette(rng: Rng, pal: dict, product: Product, where: str, closeness: float) -> dict:
    """Indistinctiveness: take the product's colours into the wall and/or the surface."""
    p = product.colour
    solid = product.rgba[..., 3] > 0.5
    pix = product.rgba[..., :3][solid]
    second = pix[rng.integers(len(pix))] if len(pix) else p
    pal = dict(pal)
    if where in ("wall", "both"):
        pal["wall"] = jitter(rng, p, closeness)
        pal["wall2"] = jitter(rng, second, closeness)
        if pal["wall_style"] in ("window", "bokeh", "mirror", "frame") and rng.random() < 0.6:
            pal["wall_style"] = "plain"
    if where in ("surface", "both"):
        pal["surface"] = jitter(rng, p, closeness)
        pal["surface2"] = jitter(rng, second * 0.5 + p * 0.5, closeness)
        if pal["surface_style"] in ("grass", "gingham"):
            pal["surface_style"] = str(rng.choice(["plain", "wood", "tiles"]))
    return pal


def render_ground(rng: Rng, sc: Scene, pal: dict) -> None:
    s = sc.size
    tex, tile_m, haze = _surface_texture(rng, sc.kind, pal)
    t = tex.shape[0]
    ss = 2
    y = (np.arange(s * ss, dtype=F32) + 0.5) / ss
    x = (np.arange(s * ss, dtype=F32) + 0.5) / ss
    dy = np.maximum(y - sc.horizon, 1e-2)
    z = np.minimum(sc.focal * sc.cam_h / dy, 400.0)
    xm = (x[None, :] - s / 2) * z[:, None] / sc.focal
    off_u, off_v = rng.uniform(0, t, 2)
    mu = (xm / tile_m * t + off_u).astype(F32) % t
    mv = np.broadcast_to((z / tile_m * t + off_v)[:, None] % t, mu.shape).astype(F32)
    ground = cv2.remap(tex, mu, np.ascontiguousarray(mv), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    ground = cv2.resize(ground, (s, s), interpolation=cv2.INTER_AREA)
    zr = np.minimum(sc.focal * sc.cam_h / np.maximum(np.arange(s, dtype=F32) + 0.5 - sc.horizon, 1e-2), 400.0)
    zp = sc.depth_at(sc.edge_y if sc.edge_y < s else s) * 3.0
    far = (
        np.clip((zr - zp) / (zp * 6 + 1e-3), 0, 1)
        if not haze
        else 1 - np.exp(-zr / (zp * rng.uniform(4, 12)))
    )
    mean = tex.reshape(-1, 3).mean(axis=0)
    hz = pal["wall"] * 0.6 + 0.4 if haze else mean
    ground = ground * (1 - 0.85 * far[:, None, None]) + hz * 0.85 * far[:, None, None]
    # light falloff towards the back
    ground = ground * (1.0 - 0.12 * far[:, None, None])
    rows = np.arange(s)[:, None] + 0.5 > sc.horizon
    sc.rgb = np.where(rows[..., None], ground, sc.rgb).astype(F32)
    sc.depth = np.where(rows, zr[:, None], sc.depth).astype(F32)


def render_wall(rng: Rng, sc: Scene, pal: dict) -> None:
    s = sc.size
    top = int(np.clip(np.ceil(sc.wall_y), 0, s))
    if top <= 0:
        return
    ys, xs = np.mgrid[0:top, 0:s].astype(F32)
    style = pal["wall_style"]
    c1, c2 = pal["wall"], pal["wall2"]
    if style == "sky":
        g = (ys / max(sc.horizon, 1.0))[..., None]
        wall = c1 * (1 - 0.5 * g) + c2 * 0.5 * g
        clouds = periodic_noise(rng, 128, 5, 9)
        clouds = cv2.resize(clouds, (s, top), interpolation=cv2.INTER_LINEAR)
        cl = np.clip((clouds - rng.uniform(0.45, 0.75)) * 3.0, 0, 1)[..., None] * (1 - 0.7 * g)
        wall = wall * (1 - cl) + np.array([0.97, 0.97, 0.98], F32) * cl
        # distant tree line / hills sitting on the horizon
        hx = np.arange(s, dtype=F32)
        bumps = cv2.resize(rng.random((1, 12)).astype(F32), (s, 1), interpolation=cv2.INTER_CUBIC)[0]
        fine = cv2.resize(rng.random((1, 48)).astype(F32), (s, 1), interpolation=cv2.INTER_CUBIC)[0]
        height = s * rng.uniform(0.02, 0.09) * (0.6 + 0.5 * bumps + 0.2 * fine)
        line = sc.horizon - height[None, :]
        trees = (ys >= line) & (ys <= sc.horizon)
        tcol = jitter(rng, pal["cabinet"], 0.03) * (0.8 + 0.3 * (hx / s))[None, :, None]
        tcol = tcol * 0.7 + np.array([0.6, 0.7, 0.8], F32) * 0.3
        wall = np.where(trees[..., None], tcol, wall)
        sc.rgb[:top] = wall
        sc.depth[:top] = np.float32(1e4)
        return
    ppm = sc.ppm(sc.wall_y)
    xm = (xs - s / 2) / ppm
    hm = (sc.wall_y - ys) / ppm
    wall = np.broadcast_to(c1, (top, s, 3)).copy()
    if style in ("subway", "square"):
        tw = rng.uniform(0.1, 0.2) if style == "square" else rng.uniform(0.14, 0.22)
        th = tw if style == "square" else tw / 2
        row = np.floor(hm / th)
        xo = xm + (row % 2) * tw / 2 if style == "subway" else xm
        gw = rng.uniform(0.004, 0.008)
        grout = ((hm % th) < gw) | ((xo % tw) < gw)
        shine = 1.0 + 0.04 * np.sin(row * 1.7 + np.floor(xo / tw) * 2.3)[..., None]
        wall = np.where(grout[..., None], c2 * 0.85, c1 * shine)
    elif style == "mirror":
        x0m, x1m = sorted(rng.uniform(-0.8, 0.8, 2))
        x1m = max(x1m, x0m + 0.4)
        inside = (xm > x0m) & (xm < x1m) & (hm > rng.uniform(0.15, 0.35))
        refl = np.array([0.78, 0.84, 0.88], F32) * (0.85 + 0.25 * (ys / max(top, 1)))[..., None]
        wall = np.where(inside[..., None], refl, wall)
    elif style == "window":
        x0m = rng.uniform(-0.9, 0.3)
        x1m = x0m + rng.uniform(0.5, 1.2)
        h0 = rng.uniform(0.25, 0.5)
        inside = (xm > x0m) & (xm < x1m) & (hm > h0)
        light = np.array([0.92, 0.95, 1.0], F32) * rng.uniform(0.95, 1.1)
        mull = (np.abs(xm - (x0m + x1m) / 2) < 0.025) | (np.abs(hm - h0 - 0.5) < 0.02)
        wall = np.where(inside[..., None], np.where(mull[..., None], c2, light), wall)
    elif style == "frame":
        x0m = rng.uniform(-0.6, 0.2)
        x1m, h0 = x0m + rng.uniform(0.25, 0.6), rng.uniform(0.15, 0.35)
        h1 = h0 + rng.uniform(0.25, 0.5)
        outer = (xm > x0m) & (xm < x1m) & (hm > h0) & (hm < h1)
        inner = (xm > x0m + 0.03) & (xm < x1m - 0.03) & (hm > h0 + 0.03) & (hm < h1 - 0.03)
        art = jitter(rng, c2 * 0.6 + np.array([0.2, 0.3, 0.4], F32), 0.1)
        wall = np.where(outer[..., None], np.where(inner[..., None], art, c2 * 0.3), wall)
    elif style == "bokeh":
        g = (ys / max(top, 1))[..., None]
        wall = c1 * (0.7 + 0.5 * g)
        layer = np.zeros((top, s), F32)
        for _ in range(int(rng.integers(6, 16))):
            cx, cy = rng.uniform(0, s), rng.uniform(0, top * 0.8)
            r = rng.uniform(0.02, 0.06) * s
            layer = np.maximum(layer, rng.uniform(0.4, 1.0) * (((xs - cx) ** 2 + (ys - cy) ** 2) < r * r))
        layer = cv2.GaussianBlur(layer, (0, 0), 0.01 * s + 0.5)
        wall = wall * (1 - 0.7 * layer[..., None]) + c2 * 0.7 * layer[..., None]
    # soft shading: darker towards the top of the wall and into the corner with the surface
    shade = 1.0 - 0.15 * np.clip(hm / 2.0, 0, 1) - 0.12 * np.exp(-hm / 0.04)
    sc.rgb[:top] = (wall * shade[..., None]).astype(F32)
    sc.depth[:top] = np.float32(sc.depth_at(sc.wall_y))


def render_side_end(sc: Scene, pal: dict, x_end: float, y_ref: float, sign: int) -> None:
    """The surface stops at ``x_end`` (at row ``y_ref``); beyond it (``sign`` +1: right) a drop."""
    s = sc.size
    x_m = (x_end - s / 2) * sc.cam_h / max(y_ref - sc.horizon, 1e-3)
    rows = np.arange(s, dtype=F32) + 0.5
    xb = s / 2 + x_m * np.maximum(rows - sc.horizon, 0) / sc.cam_h
    xs = np.arange(s, dtype=F32)[None, :] + 0.5
    beyond = (sign * (xs - xb[:, None]) > 0) & (rows[:, None] > max(sc.wall_y, sc.horizon))
    g = np.clip((rows - sc.wall_y) / max(s - sc.wall_y, 1.0), 0, 1)[:, None, None]
    void = pal["wall"] * (0.55 - 0.25 * g) + pal["cabinet"] * 0.1
    lip = beyond & ~np.roll(beyond, 2 * sign, axis=1)
    sc.rgb = np.where(beyond[..., None], void, sc.rgb).astype(F32)
    sc.rgb = np.where(lip[..., None], col(pal["surface"] * 1.1), sc.rgb).astype(F32)
    sc.depth = np.where(beyond, np.float32(sc.depth_at(sc.wall_y) * 1.5), sc.depth).astype(F32)


def render_edge(rng: Rng, sc: Scene, pal: dict) -> None:
    """Front edge of a counter, shelf or table, and what is seen below it."""
    s = sc.size
    if sc.kind == "outdoor" or sc.edge_y >= s - 1:
        return
    e = round(sc.edge_y)
    ppm = sc.ppm(sc.edge_y)
    lip = max(1, round(ppm * rng.uniform(0.015, 0.04)))
    sc.rgb[e : e + lip] = col(pal["surface"] * rng.uniform(0.75, 1.1))
    below = sc.rgb[e + lip :]
    if below.shape[0] == 0:
        return
    if sc.kind in ("kitchen", "bathroom"):
        cab = pal["cabinet"] * rng.uniform(0.6, 0.9)
        below[:] = cab
        xs = np.arange(s)
        door = ((xs - s / 2) / ppm) % rng.uniform(0.35, 0.6) < 0.012
        below[:, door] = cab * 0.6
        hy = min(below.shape[0] - 1, int(ppm * 0.05))
        hx = (((xs - s / 2) / ppm) % 0.45 > 0.15) & (((xs - s / 2) / ppm) % 0.45 < 0.3)
        below[hy : hy + max(1, int(ppm * 0.012)), hx] = col([0.75, 0.75, 0.76])
    else:
        floor = pal["cabinet"] * 0.5 + 0.05
        g = np.linspace(0.6, 1.0, below.shape[0], dtype=F32)[:, None, None]
        below[:] = floor * g
        below[:] = cv2.GaussianBlur(below, (0, 0), 1.5)
    sc.depth[e:] = np.float32(sc.depth_at(sc.edge_y))
