"""The ``studio`` family: studio product photography, written from the class definitions alone.

Every image is a procedurally drawn product cut-out (bottles, jars, cans, vases, perfume, tubes,
lamps, boxes, bags, sneakers, headphones; shaded, labelled, anti-aliased alpha) pasted unchanged
onto a procedurally drawn studio scene: a tabletop, podium, shelf or floor plane drawn in
perspective against a wall, with photographic-looking textures (wood grain, marble veins, fabric
weave, concrete, terrazzo, tiles), soft light gradients, window light, bokeh and reference objects
(mugs, books, plants, candles, lamps, boxes, doors, chairs) at real-world sizes. Mild noise, blur,
colour cast and vignetting touch the background only. Images are labelled with the six RFNet
classes by construction: 1 Available (product standing on a surface with a contact shadow,
sensible scale, contrasting background), 2 Unsuitable (glitched, melted, collaged, fragmented,
stretched or artefact-ridden scene), 3 Space Mismatch (floating above the surface, stuck on the
wall, hanging off a table end, or standing on a surface seen at an impossible angle), 4 Size
Mismatch (product as tall as a door or chair, dwarfed by giant mugs and books, far too big for its
podium or shelf), 5 Indistinctiveness (background in the product's own colours) and 6 Shape
Hallucination (the scene continues, widens, duplicates or grows the product's silhouette).

Meta file ``meta.jsonl``: per image its class, :data:`VARIANTS` variant, what the product stands
on (``scene``: table, podium, shelf, floor) and the product's kind. With ``products_dir`` each
image takes one of the real RGBA cut-outs at random and saves it at its own resolution (cropped to
its alpha, shrunk to at most 1024 px), as a catalogue's product file would be; captions name its
colour, and its real height is taken as :data:`_REAL_CM`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.scenes.drawing import over
from rfnet.data.scenes.painter import Painted, Painter
from rfnet.data.scenes.products import Product, load_product_pool
from rfnet.data.scenes.studio_defects import hallucinate, unsuitable
from rfnet.data.scenes.studio_scene import (
    WALL_TONES,
    add_refs,
    base_span,
    cast_shadow,
    draw_scene,
    fbm,
    finish_background,
    pick_tone,
    surface_choice,
)
from rfnet.data.scenes.studio_sprites import product_sprite, real_sprite, shaded

# variants of each class, by RF1M label id (1-6)
VARIANTS = {
    1: ("plain",),
    2: ("glitch", "melt", "collage", "fragments", "artefacts", "stretch"),
    3: ("float", "wall", "edge", "tilt"),
    4: ("room", "dwarf", "podium", "shelf"),
    5: ("tone", "camo"),
    6: ("taller", "wider", "duplicate", "growths"),
}
_SALT = 0x57D10

_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.12),
    "blue": (0.15, 0.35, 0.82),
    "navy": (0.10, 0.15, 0.40),
    "green": (0.15, 0.58, 0.25),
    "olive": (0.45, 0.48, 0.18),
    "yellow": (0.96, 0.80, 0.15),
    "orange": (0.96, 0.50, 0.10),
    "pink": (0.96, 0.55, 0.72),
    "purple": (0.50, 0.25, 0.66),
    "white": (0.94, 0.94, 0.92),
    "black": (0.10, 0.10, 0.11),
    "grey": (0.55, 0.56, 0.58),
    "teal": (0.05, 0.56, 0.56),
    "brown": (0.46, 0.28, 0.15),
    "beige": (0.86, 0.76, 0.60),
    "gold": (0.86, 0.66, 0.22),
    "mint": (0.60, 0.88, 0.75),
    "coral": (0.97, 0.45, 0.38),
    "burgundy": (0.50, 0.08, 0.18),
    "lavender": (0.72, 0.65, 0.92),
    "sky blue": (0.45, 0.72, 0.94),
}
# kind -> (caption nouns, real height in cm)
_KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    "bottle": (("glass bottle", "shampoo bottle", "water bottle", "wine bottle"), 28.0),
    "jar": (("glass jar", "cream jar", "honey jar", "candle jar"), 11.0),
    "can": (("soda can", "aluminium can", "energy drink can"), 12.0),
    "vase": (("ceramic vase", "porcelain vase", "glazed vase"), 25.0),
    "perfume": (("perfume bottle", "fragrance bottle", "eau de parfum"), 11.0),
    "tube": (("cosmetic tube", "lotion tube", "hand cream tube"), 16.0),
    "lamp": (("desk lamp", "table lamp", "bedside lamp"), 42.0),
    "box": (("gift box", "product box", "cardboard box"), 18.0),
    "bag": (("shopping bag", "paper bag", "tote bag"), 38.0),
    "sneaker": (("sneaker", "running shoe", "canvas sneaker"), 11.0),
    "headphones": (("wireless headphones", "over-ear headphones"), 19.0),
}
# the real height given to a real cut-out (``products_dir``), whose kind the set does not know:
# reference objects are drawn at their real sizes next to a product of this height
_REAL_CM = 20.0
_REAL_MAX_SIDE = 1024  # real cut-outs larger than this are shrunk when loaded


@dataclass
class _Sample:
    image: np.ndarray  # uint8 SxSx3 RGB
    product: np.ndarray  # uint8 hxwx4 RGBA
    caption: str
    variant: str
    scene: str = ""  # what the product stands on: table, podium, shelf, floor
    kind: str = ""  # the product's kind


def _make_sample(rng: np.random.Generator, label: int, S: int, pool: list[Product] | None = None) -> _Sample:
    """One image of class ``label``; with a ``pool`` of real cut-outs, the product is one of them."""
    variant = str(rng.choice(VARIANTS[label]))
    light = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0))

    # ---- product
    real = pool[int(rng.integers(len(pool)))] if pool else None
    if real is not None:
        kind, caption, prod_cm = real.kind, real.caption, _REAL_CM
        colour = real.colour / 255.0
    else:
        kinds = list(_KINDS)
        if label == 4 and variant == "room":
            kinds = ["bottle", "perfume", "can", "jar", "tube", "headphones", "sneaker", "box"]
        if label == 4 and variant == "shelf":
            kinds = ["bottle", "vase", "perfume", "tube", "lamp", "bag", "can", "headphones"]
        kind = kinds[int(rng.integers(len(kinds)))]
        names = list(_COLOURS)
        cname = names[int(rng.integers(len(names)))]
        colour = np.asarray(_COLOURS[cname], np.float32) * rng.uniform(0.9, 1.06)
        colour = np.clip(colour, 0, 1)
        accent = np.asarray(_COLOURS[names[int(rng.integers(len(names)))]], np.float32)
        lab_col = np.float32([0.96, 0.95, 0.92]) if rng.random() < 0.6 else accent
        nouns, prod_cm = _KINDS[kind]
        caption = f"{cname} {nouns[int(rng.integers(len(nouns)))]}"

    L = rng.uniform(0.45, 0.78) if rng.random() < 0.8 else rng.uniform(0.3, 0.45)
    if label == 4 and variant == "dwarf":
        L = rng.uniform(0.22, 0.36)
    elif label == 3 and variant == "wall":
        L = rng.uniform(0.28, 0.5)
    elif label == 3 and variant == "edge":
        L = rng.uniform(0.3, 0.6)
    elif label == 4 and variant == "room":
        L = rng.uniform(0.45, 0.7)
    elif label == 4 and variant == "shelf":
        L = rng.uniform(0.5, 0.75)
    elif label == 6 and variant == "taller":
        L = rng.uniform(0.35, 0.6)
    if real is not None:
        prgb, pa = real_sprite(real, L * S, 0.9 * S)
    else:
        prgb, pa = product_sprite(rng, kind, L * S, tuple(colour), tuple(accent), tuple(lab_col), light)
    # quantise and crop: these exact pixels are saved and pasted
    pa8 = np.round(pa * 255).astype(np.uint8)
    ys, xs = np.nonzero(pa8)
    pa8 = pa8[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    prgb8 = np.round(prgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] * 255).astype(np.uint8)
    ph, pw = pa8.shape
    scale = min(1.0, (S - 2) / max(ph, pw))
    if scale < 1.0:  # never happens with the size ranges above, but keep the cut-out inside
        pa8 = cv2.resize(pa8, (int(pw * scale), int(ph * scale)), interpolation=cv2.INTER_AREA)
        prgb8 = cv2.resize(prgb8, (int(pw * scale), int(ph * scale)), interpolation=cv2.INTER_AREA)
        ph, pw = pa8.shape
    pa_f = pa8.astype(np.float32) / 255
    prgb_f = prgb8.astype(np.float32) / 255
    body = colour * 0.85
    pmean = (prgb_f * pa_f[..., None]).reshape(-1, 3).sum(0) / max(float(pa_f.sum()), 1.0)
    avoid = [body, pmean]

    # ---- layout
    scene_kind = str(rng.choice(["table", "table", "table", "podium", "shelf", "floor"]))
    if label == 3 and variant == "wall":
        scene_kind = "table" if rng.random() < 0.6 else "floor"
    if label == 3 and variant == "edge":
        scene_kind = "table" if rng.random() < 0.5 else "shelf"
    if label == 4:
        scene_kind = {"room": "floor", "dwarf": "table", "podium": "podium", "shelf": "shelf"}[variant]
    off = rng.normal(0, 0.05) * S
    if rng.random() < 0.25:
        off = rng.choice([-1, 1]) * rng.uniform(0.1, 0.22) * S
    bx = float(np.clip(S / 2 + off, pw / 2 + 1, S - pw / 2 - 1))
    if scene_kind in ("table", "floor"):
        lo = max(ph * (1.4 if label == 6 and variant == "taller" else 1.0) + 0.03 * S, 0.62 * S)
        by = rng.uniform(min(lo, 0.97 * S), 0.97 * S)
    else:
        lo = max(ph * (1.4 if label == 6 and variant == "taller" else 1.0) + 0.03 * S, 0.55 * S)
        by = rng.uniform(min(lo, 0.88 * S), 0.88 * S)
    by = float(min(by, S - 1))
    opts: dict = {"ph": ph}
    gap = 0.0
    if label == 3 and variant == "float":
        gap = rng.uniform(0.1, 0.22) * S
        by = max(by, min(S - 1.0, ph + gap + 0.02 * S))
        gap = min(gap, by - ph - 1)
    if label == 3 and variant == "wall":
        y_back = rng.uniform(0.72, 0.92) * S
        opts["y_back"] = y_back
        by_prod = y_back - rng.uniform(0.1, 0.3) * S
        by_prod = max(by_prod, ph + 0.02 * S)
        by_surf = min(S - 2.0, y_back + 0.08 * S)
    if label == 3 and variant == "edge":
        b0, b1 = base_span(pa_f)
        side = 1 if rng.random() < 0.5 else -1
        frac = rng.uniform(0.4, 0.75)  # share of the base beyond the edge
        xbl = bx - pw / 2 + b0
        bwid = b1 - b0
        xe = xbl + (1 - frac) * bwid if side > 0 else xbl + frac * bwid
        opts["edge"] = (side, xe)
        if scene_kind == "table":
            by = float(max(ph + 0.03 * S, min(by, rng.uniform(0.7, 0.86) * S)))
            opts["y_back"] = rng.uniform(0.25, max(0.26, (by - 0.12 * S) / S)) * S
    if label == 4 and variant == "room":
        y_back = rng.uniform(max(0.5 * S, ph + 0.02 * S), 0.9 * S)
        opts["y_back"] = y_back
        by = min(S - 1.0, y_back + rng.uniform(0.01, 0.05) * S)
        opts["window"] = False
    if label == 4 and variant == "podium":
        opts["podium_r"] = pw / 2 * rng.uniform(0.25, 0.45)
    if label == 4 and variant == "shelf":
        opts["upper_shelf"] = by - ph * rng.uniform(0.35, 0.7)
        opts["lower_shelf"] = False

    # ---- tones
    if label == 5:
        tone_c = body if rng.random() < 0.7 else pmean
        wall_tone = np.clip(tone_c * rng.uniform(0.9, 1.1) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
        st = np.clip(tone_c * rng.uniform(0.88, 1.08) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
        surf = (str(rng.choice(["plaster", "fabric", "concrete", "marble", "wood"])), st)
        opts["tex_amp"] = rng.uniform(0.3, 0.8)
        opts["window"] = False
    else:
        wall_tone = pick_tone(rng, avoid, WALL_TONES)
        surf = surface_choice(rng, avoid)
    sc = draw_scene(
        rng,
        S,
        scene_kind,
        bx,
        by if not (label == 3 and variant == "wall") else by_surf,
        pw,
        light,
        wall_tone,
        surf,
        opts,
    )
    img = sc.img

    x0 = round(bx - pw / 2)
    y0 = round(by - ph)
    if label == 3 and variant == "wall":
        y0 = round(by_prod - ph)
    if gap:
        y0 = round(by - gap - ph)

    # ---- reference objects
    if label == 4 and variant == "dwarf":
        add_refs(
            rng,
            sc,
            S,
            ["mug", "books", "candle", "mug"],
            int(rng.integers(1, 3)),
            x0,
            x0 + pw,
            by,
            ph,
            prod_cm,
            scale=rng.uniform(1.6, 2.6),
            jitter_back=0.02,
            tries=8,
        )
    elif label == 4 and variant == "room":
        # a door in the wall and a chair / plant at the product's depth, no taller than the product
        dh = ph * rng.uniform(0.75, 1.05)
        dw = dh * 0.43
        left_space, right_space = x0, S - (x0 + pw)
        side = -1 if left_space > right_space else 1
        dxa = x0 - rng.uniform(0.02, 0.06) * S - dw if side < 0 else x0 + pw + rng.uniform(0.02, 0.06) * S
        dyb = sc.y_back
        dc = (
            shaded(wall_tone, 0.75)
            if rng.random() < 0.5
            else tuple(float(v) for v in rng.uniform(0.4, 0.9, 3))
        )
        cv2.rectangle(
            img,
            (round(dxa - 0.02 * S), round(dyb - dh - 0.02 * S)),
            (round(dxa + dw + 0.02 * S), round(dyb)),
            (0.95, 0.95, 0.93),
            -1,
        )
        cv2.rectangle(img, (round(dxa), round(dyb - dh)), (round(dxa + dw), round(dyb)), dc, -1)
        for k in range(2):
            py0 = dyb - dh + dh * (0.08 + 0.47 * k)
            cv2.rectangle(
                img,
                (round(dxa + dw * 0.15), round(py0)),
                (round(dxa + dw * 0.85), round(py0 + dh * 0.38)),
                shaded(dc, 0.85),
                max(1, S // 128),
            )
        cv2.circle(
            img,
            (round(dxa + dw * (0.85 if side > 0 else 0.15)), round(dyb - dh * 0.47)),
            max(1, round(dw * 0.06)),
            (0.85, 0.7, 0.3),
            -1,
            cv2.LINE_AA,
        )
        add_refs(
            rng,
            sc,
            S,
            ["chair", "floor_plant", "chair"],
            1,
            x0,
            x0 + pw,
            by,
            ph,
            prod_cm,
            scale=rng.uniform(0.5, 0.9),
            jitter_back=0.0,
            tries=4,
        )
    elif label == 4 and variant == "shelf":
        add_refs(
            rng,
            sc,
            S,
            ["upright_books"],
            2,
            x0,
            x0 + pw,
            by,
            (by - opts["upper_shelf"]),
            23,
            scale=rng.uniform(0.6, 0.85),
            jitter_back=0.0,
            tries=4,
        )
    elif rng.random() < 0.55 and not (label == 3 and variant == "edge"):
        refk = {
            "table": ["mug", "books", "plant", "candle", "lamp", "box"],
            "shelf": ["upright_books", "plant", "candle", "mug"],
            "floor": ["floor_plant", "chair", "box"],
            "podium": [],
        }[scene_kind]
        if refk:
            add_refs(rng, sc, S, refk, int(rng.integers(1, 3)), x0, x0 + pw, by, ph, prod_cm)

    # ---- defects that change the scene around the product
    shadow_kind = "normal"
    if label == 3:
        if variant == "float":
            shadow_kind = "none" if rng.random() < 0.15 and scene_kind in ("podium", "shelf") else "ground"
        elif variant == "wall":
            shadow_kind = "none" if rng.random() < 0.5 else "wall"
    if label == 5:
        shadow_kind = "weak"
        if variant == "camo":
            # a pattern made of the product's own colours and shading (stripes, checks or patches)
            cols = np.stack([body * 0.75, body, np.clip(body * 1.15 + 0.03, 0, 1), pmean]).astype(np.float32)
            y, x = np.mgrid[0:S, 0:S].astype(np.float32)
            pat = str(rng.choice(["patches", "stripes", "checks"]))
            if pat == "patches":
                f = fbm(rng, S, S, (3, 6))
            elif pat == "stripes":
                a = rng.uniform(0, np.pi)
                f = np.sin((x * np.cos(a) + y * np.sin(a)) * 2 * np.pi / (rng.uniform(0.06, 0.15) * S)) * 1.4
            else:
                p = rng.uniform(0.08, 0.16) * S
                f = (
                    np.sign(np.sin(x * 2 * np.pi / p)) * np.sign(np.sin(y * 2 * np.pi / p))
                ) * 0.9 + 0.3 * fbm(rng, S, S, (6,))
            idx = np.clip(((f + 1.5) / 3 * len(cols)).astype(np.int32), 0, len(cols) - 1)
            camo = cv2.GaussianBlur(cols[idx], (0, 0), rng.uniform(0.8, 2.0) * S / 128)
            mix = rng.uniform(0.55, 0.85)
            img[:] = img * (1 - mix) + camo * mix
    if shadow_kind == "normal":
        img *= (1 - cast_shadow(S, pa_f, x0, y0, light, rng) * np.maximum(sc.support, 0.25))[..., None]
    elif shadow_kind == "weak":
        img *= (1 - cast_shadow(S, pa_f, x0, y0, light, rng, strength=rng.uniform(0.2, 0.5)) * sc.support)[
            ..., None
        ]
    elif shadow_kind == "ground":
        gy = round(by - ph)
        img *= (
            1
            - cast_shadow(S, pa_f, x0, gy, light, rng, strength=rng.uniform(0.4, 0.8), cast=False)
            * sc.support
        )[..., None]
    elif shadow_kind == "wall":
        dx = round(rng.uniform(0.015, 0.04) * S * (-light / max(abs(light), 1e-3)))
        dy = round(rng.uniform(0.01, 0.03) * S)
        msk = np.zeros((S, S, 1), np.float32)
        over(msk, np.ones((ph, pw, 1), np.float32), pa_f, x0 + dx, y0 + dy)
        sh = cv2.GaussianBlur(msk[..., 0], (0, 0), 1.2) * rng.uniform(0.3, 0.5)
        img *= (1 - sh)[..., None]
    if label == 6:
        hallucinate(rng, img, variant, prgb_f, pa_f, x0, y0, S)
    if label == 2:
        img = unsuitable(rng, np.clip(img, 0, 1), variant, S)
    img = finish_background(rng, img)
    if label == 3 and variant == "tilt":
        ang = float(rng.choice([-1, 1]) * rng.uniform(18, 38))
        M = cv2.getRotationMatrix2D((bx, by), ang, 1.0 + 1.1 * abs(math.sin(math.radians(ang))))
        img = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # ---- paste the product unchanged
    out = img.copy()
    over(out, prgb_f, pa_f, x0, y0)
    image = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
    # a real cut-out is saved as it came (cropped to its alpha), not at the pasted size, as a
    # catalogue's product file would be
    product = real.rgba if real is not None else np.dstack([prgb8, pa8])
    return _Sample(image, product, caption, variant, scene_kind, kind)


class StudioPainter(Painter):
    """The ``studio`` family (see the module docstring)."""

    name = "studio"
    takes_products = True

    def __init__(self, *, image_size: int, seed: int, products_dir: str | None = None):
        super().__init__(image_size=image_size, seed=seed, products_dir=products_dir)
        self.pool = load_product_pool(products_dir, _REAL_MAX_SIDE) if products_dir else None
        self.names: dict[str, tuple[int, int]] = {}  # name -> (label, index) painted under it

    def paint(self, label: int, index: int) -> Painted:
        rng = np.random.default_rng([self.seed, label + 1, index, _SALT])
        name = f"{int(rng.integers(0, 2**62)):016x}"[:12]
        while self.names.setdefault(name, (label, index)) != (label, index):  # taken by another
            name = f"{int(rng.integers(0, 2**62)):016x}"[:12]
        s = _make_sample(rng, label + 1, self.image_size, self.pool)
        scene = {"variant": s.variant, "scene": s.scene, "product": s.kind}
        return Painted(name, s.image, s.product, s.caption, label, scene)
