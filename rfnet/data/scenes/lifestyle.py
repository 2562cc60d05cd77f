"""The ``lifestyle`` family: procedural, labelled lifestyle ad images, for checking how RFNet generalises.

Dataset card
------------
Purpose. An evaluation-only set in the RF1M layout, drawn by code that shares nothing with the
generators used for training but the set writer and alpha compositing, so a trained RFNet can be
scored on scenes, products and defect renderings it has never seen. Every sample depends only on ``(seed, label, index)``.

Scenes ("lifestyle" photography). Five scene families, each a ground plane seen through a pinhole
camera whose horizon row varies from above the frame (near top-down tabletop shots) through eye
level to low camera angles:

- kitchen: stone, marble, wood or tiled counters with a visible front edge and cabinet doors, a
  subway-tile backsplash; mugs, fruit, jars, oil bottles and pot plants; cutting boards.
- bathroom: white or wooden shelves close to a tiled or painted wall with a mirror; soap
  dispensers, candles, folded towels, cups.
- desk: wood or laminate desks against a painted wall with a window or picture frame; laptops,
  book stacks, notebooks, mugs.
- outdoor: grass, sand or deck boards under a sky with clouds, distant tree lines and haze;
  stones, flowers, balls, bushes and garden chairs.
- cafe: wood, marble or gingham table tops before a dim interior with blurred lights; cups,
  glasses, sugar jars, plants.

The surface texture is mapped through the camera (farther = higher and smaller), reference
objects are drawn at real-world sizes at their depth, and every image gets soft contact and cast
shadows, depth-of-field blur away from the product's depth, warm or cool light, vignetting,
sensor noise and a JPEG round trip. All of that is applied to the scene *before* the product is
pasted, so the product pixels are exactly the resized cut-out.

Products. Twelve procedural kinds (bottle, jar, cosmetics tube, can, box, handbag, watch, mug,
pot plant, speaker, shoe, perfume) drawn with cylinder or face shading, labels and logos, and an
anti-aliased alpha. ``products/<name>.png`` is the RGBA cut-out at its own resolution; the image
holds the same pixels, only resized. ``captions.jsonl`` holds a short caption ("a red glass
bottle"). Product size (22-60 % of the frame height) and position are drawn from the same ranges in
every class, and in every class but Indistinctiveness the product colour is chosen to stand out from
the scene behind it.

Classes (RF1M label ids):

1. Available: the product stands on the surface with a contact shadow, at a size consistent with
   the reference objects and textures, whole and distinct; sometimes on a flat board or tray.
2. Unsuitable: the image is broken: shifted or channel-split slices, corrupted JPEG blocks, heavy
   compression, strong warps, a tilted or upside-down scene, collages of mismatched scene strips,
   blown-out exposure with banding.
3. Space Mismatch: the product floats above its shadow, is stuck on the wall or sky, hangs over
   the front edge of a counter, sits in front of the cabinet with nothing under it, or stands
   upright on a steep ramp touching it at one corner.
4. Size Mismatch: the scene's scale disagrees with the product: reference objects (and, in some
   samples, the textures too) are 2.5-5x too large or 0.18-0.4x too small for their depth.
5. Indistinctiveness: the wall, the surface or both take the product's own colours (plain, tiled
   or striped), at a colour distance from subtle to near-identical.
6. Shape Hallucination: scene pixels in the product's colours continue its outline: the top or a
   side extruded, a partial copy attached behind it, an extra handle/knob/strap, or a plinth that
   continues its base.

How each image was drawn. ``meta.jsonl`` has one record per image: its class, scene family,
camera ("eye", "low", "top"), product kind, real height and height in pixels, and for the two
classes with variants the variant (Space Mismatch: "float", "wall", "ramp", "overhang",
"nosupport"; Size Mismatch: "big" or "small", and whether the textures share the wrong scale or
only the reference objects have it) with the scene's scale against the product. Nothing reads it
for training or scoring; ``python -m bench.rfnet_errors`` joins it to ``reliable-ad evaluate``'s
``predictions.parquet`` to show which variants a model gets wrong.
"""

from __future__ import annotations

import cv2
import numpy as np

from rfnet.data.scenes.drawing import paste_rgba
from rfnet.data.scenes.lifestyle_defects import blend_in, extension, glitch, photo_finish
from rfnet.data.scenes.lifestyle_objects import (
    Light,
    Placement,
    alpha_canvas,
    apply_shadow,
    cast_shadow,
    flat_board,
    place_refs,
    silhouette_base,
)
from rfnet.data.scenes.lifestyle_products import (
    F32,
    KINDS,
    PRODUCT_COLOURS,
    Product,
    Rng,
    jitter,
    render_product,
    resize_rgba,
)
from rfnet.data.scenes.lifestyle_scene import (
    Scene,
    delta_e,
    matched_palette,
    palette,
    render_edge,
    render_ground,
    render_side_end,
    render_wall,
)
from rfnet.data.scenes.painter import Painted, Painter

SCENES = ("kitchen", "bathroom", "desk", "outdoor", "cafe")


def _make_sample(label: int, rng: Rng, s: int) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """Render one labelled image: (RGB uint8 image, RGBA uint8 product cut-out, caption, how it was
    drawn: the ``meta.jsonl`` record)."""
    kind_name = str(rng.choice(SCENES))
    prod_kind = str(rng.choice(list(KINDS)))
    spec = KINDS[prod_kind][0]
    aspect = rng.uniform(*spec.aspect)
    height_m = rng.uniform(*spec.height_m)

    # product pixel size: same range in every class
    hp = rng.uniform(0.22, 0.6) * s
    wp = hp * aspect
    if wp > 0.8 * s:
        hp *= 0.8 * s / wp
    hp = max(8.0, hp)

    cam = str(rng.choice(["eye", "low", "top"], p=[0.5, 0.25, 0.25]))
    horizon = {"eye": rng.uniform(0.1, 0.5), "low": rng.uniform(0.45, 0.7), "top": rng.uniform(-2.0, 0.05)}[
        cam
    ] * s
    space_mode = ""
    if label == 3:
        modes = ["float", "wall", "ramp"]
        if kind_name != "outdoor":
            modes += ["overhang", "nosupport"]
        space_mode = str(rng.choice(modes))
        if space_mode == "wall":
            horizon = rng.uniform(0.35, 0.7) * s if kind_name == "outdoor" else horizon
            hp = min(hp, 0.42 * s)
    y_lo = max(horizon + 0.08 * s, hp + 3)
    y_hi = s - 3.0
    if y_lo > y_hi:
        hp = max(8.0, y_hi - max(horizon + 0.08 * s, 3.0) - 3)
        y_lo = max(horizon + 0.08 * s, hp + 3)
    y_b = rng.uniform(y_lo, max(y_lo, y_hi))
    wp = hp * aspect
    x_c = rng.uniform(wp / 2 + 2, s - wp / 2 - 2)

    if kind_name == "outdoor":
        wall_y, edge_r = horizon, None
    elif kind_name == "bathroom":
        wall_y = horizon + (y_b - horizon) * rng.uniform(0.6, 0.85)
        edge_r = rng.uniform(0.78, 0.95)
    else:
        lo = 0.05 if cam == "top" else 0.3
        wall_y = horizon + (y_b - horizon) * rng.uniform(lo, 0.85)
        edge_r = rng.uniform(0.55, 0.92)
    edge_y = np.inf if edge_r is None else horizon + (y_b - horizon) / edge_r
    if label == 3 and space_mode in ("overhang", "nosupport"):
        # bring the front edge into view just below / above the product base
        edge_y = min(edge_y, y_b + rng.uniform(0.05, 0.25) * hp)
        if space_mode == "nosupport":
            edge_y = max(y_b - hp * rng.uniform(0.6, 1.05), horizon + 0.1 * s, 0.12 * s)
            wall_y = min(wall_y, horizon + (edge_y - horizon) * 0.8)
    if label == 3 and space_mode == "wall":
        # the product hangs on the wall / sky: the base well above where the wall meets the surface
        wall_y = max(wall_y, y_b + rng.uniform(0.08, 0.3) * s)
        if kind_name == "outdoor":
            horizon = wall_y

    ppm_p = hp / height_m
    focal = s * rng.uniform(0.9, 1.6)
    ground_y = y_b
    if label == 3 and space_mode == "wall":
        ground_y = wall_y + (s - wall_y) * rng.uniform(0.3, 0.8)
    cam_h = max(ground_y - horizon, 1.0) / ppm_p

    # Size Mismatch: the scene (textures and / or references) on a different scale from the product
    ref_scale, size_mode = 1.0, ""
    if label == 4:
        size_mode = str(rng.choice(["big", "small"]))
        ref_scale = rng.uniform(2.5, 5.0) if size_mode == "big" else rng.uniform(0.18, 0.4)
    tex_follows = label == 4 and rng.random() < 0.5
    if tex_follows:
        cam_h /= ref_scale  # the textures and the references share the wrong scale

    sc = Scene(
        kind=kind_name,
        size=s,
        horizon=horizon,
        wall_y=wall_y,
        edge_y=float(edge_y),
        focal=focal,
        cam_h=cam_h,
        rgb=np.zeros((s, s, 3), F32),
        depth=np.full((s, s), 1e4, F32),
    )
    pal = palette(rng, kind_name)

    accent_name = str(rng.choice(list(PRODUCT_COLOURS)))
    accent = jitter(rng, np.array(PRODUCT_COLOURS[accent_name]), 0.05)
    product: Product | None = None
    if label == 5:
        colour_name = str(rng.choice(list(PRODUCT_COLOURS)))
        product = render_product(rng, prod_kind, aspect, colour_name, accent, height_m)
        top_frac = float(np.clip((wall_y - (y_b - hp)) / hp, 0, 1))
        where = str(rng.choice(["both", "wall" if top_frac > 0.5 else "surface"], p=[0.55, 0.45]))
        pal = matched_palette(rng, pal, product, where, rng.uniform(0.01, 0.07))

    render_ground(rng, sc, pal)
    render_wall(rng, sc, pal)
    render_edge(rng, sc, pal)
    # the side end of a counter / shelf / table: under the product for "overhang", elsewhere
    # (clear of the product) in a quarter of the other indoor images
    if space_mode == "overhang":
        sign = 1 if rng.random() < 0.5 else -1
        render_side_end(sc, pal, x_c + sign * wp * rng.uniform(-0.25, 0.2), y_b, sign)
    elif kind_name != "outdoor" and rng.random() < 0.25:
        sign = 1 if rng.random() < 0.5 else -1
        x_end = x_c + sign * (wp / 2 + rng.uniform(0.12, 0.4) * s)
        if 0 < x_end < s:
            render_side_end(sc, pal, x_end, y_b, sign)
    light = Light(
        kx=rng.uniform(-0.9, 0.9),
        ky=rng.uniform(-0.3, 0.45),
        strength=rng.uniform(0.25, 0.6),
        blur=rng.uniform(0.6, 2.5) * s / 128,
    )

    # references: for a texture-following Size Mismatch the scene itself is rescaled, so refs use 1.0
    prod_place = Placement(round(x_c - wp / 2), round(y_b - hp), max(2, round(wp)), round(hp))
    r_scale = ref_scale if (label == 4 and not tex_follows) else 1.0
    ref_mode = size_mode if label == 4 else ""
    if label == 3 and space_mode == "wall":
        prod_ground = Placement(prod_place.x0, round(ground_y - hp), prod_place.w, prod_place.h)
        place_refs(rng, sc, light, prod_ground, r_scale, ref_mode, s)
    else:
        place_refs(rng, sc, light, prod_place, r_scale, ref_mode, s)

    # product colour: stands out from what is behind it (every class but Indistinctiveness)
    if product is None:
        y0, y1 = max(0, prod_place.y0), min(s, prod_place.y0 + prod_place.h)
        x0, x1 = max(0, prod_place.x0), min(s, prod_place.x0 + prod_place.w)
        behind = sc.rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        names = list(PRODUCT_COLOURS)
        order = rng.permutation(len(names))
        threshold = rng.uniform(28, 45)
        chosen = names[int(order[0])]
        for j in order:
            if delta_e(np.array(PRODUCT_COLOURS[names[int(j)]]), behind) >= threshold:
                chosen = names[int(j)]
                break
        product = render_product(rng, prod_kind, aspect, chosen, accent, height_m)

    pw, ph = max(2, round(hp * product.rgba.shape[1] / product.rgba.shape[0])), round(hp)
    pasted = resize_rgba(product.rgba, pw, ph)
    px0 = round(x_c - pw / 2)
    py0 = round(y_b - ph)
    fs = float(np.clip((y_b - horizon) / focal, 0.06, 1.0))
    z_focus = sc.depth_at(y_b)

    ext = None
    if label == 6:
        ext = extension(rng, pasted)

    # support and shadows (scene side)
    shadow_y, contact = float(py0 + ph), True
    lift = 0
    if label == 3:
        if space_mode == "float":
            lift = round(ph * rng.uniform(0.12, 0.6))
            lift = min(lift, py0 - 1)
            lift = max(lift, 3)
            contact = rng.random() < 0.6
        elif space_mode == "wall":
            shadow_y = -1.0
        elif space_mode == "ramp":
            tilt = rng.uniform(22, 50) * rng.choice([-1, 1])
            # touch the ramp at the uphill corner of the base
            corner = px0 + pw if tilt > 0 else px0
            board = flat_board(rng, sc, corner, py0 + ph, pw, float(tilt))
            apply_shadow(sc.rgb, cv2.GaussianBlur(board[..., 3], (0, 0), 1.5) * 0.3)
            paste_rgba(sc.rgb, board, 0, 0)
            shadow_y, contact = -1.0, False
        elif space_mode in ("overhang", "nosupport"):
            contact = False
    elif rng.random() < 0.2 and label != 2:
        board = flat_board(rng, sc, x_c, py0 + ph, pw, None)
        paste_rgba(sc.rgb, board, 0, 0)

    sil = alpha_canvas(s, pasted[..., 3], px0, py0)
    if ext is not None:
        layer, ox, oy = ext
        sil = np.maximum(sil, alpha_canvas(s, layer[..., 3], px0 + ox, py0 + oy))
    if shadow_y > 0:
        base_y, bx0, bx1 = silhouette_base(sil)
        if lift:
            sil_l = sil
            strength = light.strength * (rng.uniform(0.3, 0.8) if contact else rng.uniform(0.5, 1.0))
            lt = Light(light.kx, light.ky, strength, light.blur * rng.uniform(1.0, 2.0))
            apply_shadow(sc.rgb, cast_shadow(sc, lt, sil_l, base_y, bx0, bx1, fs, contact))
        elif space_mode in ("overhang", "nosupport"):
            pass
        else:
            apply_shadow(sc.rgb, cast_shadow(sc, light, sil, base_y, bx0, bx1, fs, contact))
    elif label == 3 and space_mode == "wall" and rng.random() < 0.5:
        drop = np.roll(sil, (int(rng.integers(1, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        apply_shadow(sc.rgb, cv2.GaussianBlur(drop, (0, 0), 1.5) * 0.35)

    img = sc.rgb
    if label == 2 and rng.random() < 0.5:
        img = glitch(rng, img)  # the scene is broken but the product is intact
        broken_after = False
    else:
        broken_after = label == 2
    img = photo_finish(rng, img, sc, z_focus)
    if label == 5:
        img = blend_in(rng, img, product.colour, (px0, py0, pw, ph))
    if ext is not None:
        layer, ox, oy = ext
        paste_rgba(img, layer, px0 + ox, py0 + oy)
    paste_rgba(img, pasted, px0, py0 - lift)
    if broken_after:
        img = glitch(rng, img)

    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    cut = (np.clip(product.rgba, 0, 1) * 255 + 0.5).astype(np.uint8)
    meta = {
        "scene": kind_name,
        "camera": cam,
        "product": prod_kind,
        "product_height_m": round(float(height_m), 4),
        "product_px": round(float(hp), 1),
        "space_mode": space_mode or None,
        "size_mode": (
            f"{size_mode}, {'textures and references' if tex_follows else 'references'}"
            if label == 4
            else None
        ),
        "scene_scale": round(float(ref_scale), 3),
    }
    return image, cut, product.caption, meta


class LifestylePainter(Painter):
    """The ``lifestyle`` family (see the module docstring)."""

    name = "lifestyle"

    def __init__(self, *, image_size: int, seed: int, products_dir: str | None = None):
        super().__init__(image_size=image_size, seed=seed, products_dir=products_dir)
        self.names: dict[str, tuple[int, int]] = {}  # name -> (label, index) painted under it

    def paint(self, label: int, index: int) -> Painted:
        rng = np.random.default_rng([self.seed, label + 1, index, 1])
        image, cut, caption, meta = _make_sample(label + 1, rng, self.image_size)
        return Painted(self._name(label, index), image, cut, caption, label, meta)

    def _name(self, label: int, index: int) -> str:
        """A name drawn from ``(seed, label, index)`` alone, redrawn while another sample has it."""
        k = 0
        while True:
            key = [self.seed, label + 1, index] if k == 0 else [self.seed, label + 1, index, 7919, k]
            name = f"{int(np.random.default_rng(key).integers(0, 2**48)):012x}"
            if self.names.setdefault(name, (label, index)) == (label, index):
                return name
            k += 1
