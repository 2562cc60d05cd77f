"""Scene measurements around the located product: objects, outline and perspective
(:func:`scene_descriptor`), the scene's grain (:func:`grain_descriptor`) and the product's colour
continuing across its outline (:func:`continuity_descriptor`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rfnet.aux.imageops import gaussian_blur, unit_lab
from rfnet.aux.measure import (
    _components,
    _differences,
    _dilate,
    _grow,
    _masked_mean,
    _norm,
)

# ----------------------------------------------------------------------------------------------------
# Scene measurements around the located product (an extension of the descriptor).

SCENE_DESCRIPTOR_SIZE = 38


def _floor_objects(
    objects: torch.Tensor, box: torch.Tensor, horizon: torch.Tensor, area: torch.Tensor
) -> list[torch.Tensor]:
    """Sizes of the objects standing in the scene against the product's, corrected for perspective.

    ``objects`` ``(B, 1, S, S)`` marks scene pixels unlike their row; ``horizon`` ``(B,)`` is the
    estimated far end of the ground (fraction of the side), ``area`` the product's area fraction.
    On a ground plane seen from a level camera, an object's height in the image divided by how far
    its base is below the horizon is its real height over the camera's, whatever its distance; so
    ``(H / (base - horizon)) / (h / (y1 - horizon))`` is its real height in product heights.
    """
    b, _, s, _ = objects.shape
    dev = objects.device
    labels = _components(objects)
    n = s * s + 1
    grid = torch.arange(s, device=dev, dtype=torch.float32)
    rows = grid.view(s, 1).expand(s, s).reshape(1, -1).expand(b, -1)
    cols = grid.view(1, s).expand(s, s).reshape(1, -1).expand(b, -1)

    def reduce(values: torch.Tensor, how: str, start: float) -> torch.Tensor:
        out = torch.full((b, n), start, device=dev)
        return out.scatter_reduce(1, labels, values, how, include_self=True)[:, 1:]

    top, bottom = reduce(rows, "amin", float(s)), reduce(rows, "amax", -1.0)
    left, right = reduce(cols, "amin", float(s)), reduce(cols, "amax", -1.0)
    count = torch.zeros((b, n), device=dev).scatter_add(1, labels, torch.ones_like(rows))[:, 1:]
    height, width, base = (bottom - top + 1) / s, (right - left + 1) / s, (bottom + 1) / s
    y0, y1 = box.float()[:, 1], box.float()[:, 3]
    h = (y1 - y0).clamp(min=1e-3)
    horizon_ = horizon.view(-1, 1)
    # Upright things standing below the horizon, not specks, not cut by the top of the frame.
    standing = (
        (count >= 4)
        & (count >= 0.01 * area.view(-1, 1) * s * s)
        & (height >= 0.25 * width)
        & (base > horizon_ + 0.02)
        & (top > 0)
    )
    own = h / (y1 - horizon).clamp(min=0.03)
    log_real = ((height / (base - horizon_).clamp(min=0.03)) / own.view(-1, 1)).clamp(1e-3, 1e3).log()
    log_box = (height / h.view(-1, 1)).clamp(1e-3, 1e3).log()
    beside = standing & ((base - y1.view(-1, 1)).abs() < 0.15 * h.view(-1, 1))
    far = torch.full_like(log_real, 1e9)
    zero = torch.zeros_like(h)

    def extreme(values: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        some = keep.any(dim=1)
        high = torch.where(keep, values, -far).amax(dim=1)
        low = torch.where(keep, values, far).amin(dim=1)
        return [torch.where(some, high, zero), torch.where(some, low, zero)]

    largest = torch.where(standing, count, -1.0).argmax(dim=1, keepdim=True)
    return [
        standing.any(dim=1).float(),
        *extreme(log_real, standing),
        torch.where(standing.any(dim=1), log_real.gather(1, largest)[:, 0], zero),
        standing.float().sum(dim=1).log1p(),
        beside.any(dim=1).float(),
        *extreme(log_box, beside),
        ((y1 - horizon) / h).clamp(-4, 8),
    ]


def scene_descriptor(
    image: torch.Tensor,
    placement: torch.Tensor,
    match: torch.Tensor,
    box: torch.Tensor,
    *,
    lab: torch.Tensor | None = None,
) -> torch.Tensor:
    """Measurements of the scene relative to the located product: ``(B, SCENE_DESCRIPTOR_SIZE)``.

    Each follows from a defect's definition and is computed the same way for any image (no
    learned part, nothing specific to one data source); all are invariant to a horizontal flip
    (left and right are pooled by max / min), so they can be computed once per training example.
    Inputs as for :func:`product_descriptor`.

    - outline (7): how the scene just outside the outline (~3 px) compares with the product colour
      just inside it: the share of the ring whose Lab distance is below 0.06 / 0.12, overall and
      for the most and least similar of the left, right and upper sides, and the mean distance.
      An outline that the scene continues (Shape Hallucination on one side, Indistinctiveness all
      round) has low contrast there;
    - attached product-coloured matter (8): the product mask grown geodesically through pixels of
      product colour (match likelihood above 0.4 / 0.7 of its mean inside the product): the grown area in product areas, how far it
      reaches above the top and beyond the sides in box heights / widths, and the product-coloured
      area not connected to the product (Shape Hallucination, Indistinctiveness);
    - horizontal structure (7): the row profile of long horizontal edges in the background (signed
      vertical luma gradient averaged along each row, so texture cancels): where the strongest
      line is relative to the base, in box heights, and its strength; the strongest line near the
      base, just below it and above it, relative to the strongest; luma right under the base minus
      beside it at the same height (contact shadow); the colour change across the base line
      (Space Mismatch: a product with nothing under it);
    - other objects (5): pixels unlike their row's median colour (layered scenes: wall, floor,
      table) outside the product's surroundings; the tallest such column, its 90th and 75th
      percentile, and the tallest within two box widths beside the product, in box heights; their
      area in product areas (log) (Size Mismatch: neighbouring objects out of scale);
    - edge orientation (2): share of background gradient energy within 0.2 rad of horizontal or
      vertical, and near the diagonals (Unsuitable: a tilted or warped scene);
    - standing objects (9): the same "other objects" pixels as connected components; those upright,
      not specks and standing below the horizon (the strongest long horizontal line above the base)
      are measured in real product heights by perspective (:func:`_floor_objects`): whether there is
      one, the largest and smallest ratio (log), the ratio of the biggest object, their number (log);
      whether one stands at the product's depth (base within 0.15 box heights), the largest and
      smallest of those in box heights (log); and the base's distance below the horizon in box
      heights (Size Mismatch: furniture at dolls'-house scale, tabletop things towering over it).
    """
    s = image.shape[-1]
    dev = image.device
    img = image.float().clamp(0, 1)
    lab = unit_lab(img) if lab is None else lab
    luma = lab[:, :1]
    mask = (placement.float() > 0.5).float()
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    pos = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s
    gx_pos, gy_pos = pos.view(1, 1, 1, s), pos.view(1, 1, s, 1)
    feats: list[torch.Tensor] = []

    # Outline contrast.
    outer = _dilate(mask, max(3, s // 64 * 2 + 1)) - mask
    inside_colour = gaussian_blur(lab * mask, 2.0) / (gaussian_blur(mask, 2.0) + 1e-4)
    diff = _norm(lab - inside_colour)
    dx = (gx_pos - ((x0 + x1) / 2).view(-1, 1, 1, 1)) / w.view(-1, 1, 1, 1)
    dy = (gy_pos - ((y0 + y1) / 2).view(-1, 1, 1, 1)) / h.view(-1, 1, 1, 1)
    side = (dx.abs() >= dy.abs()).float()
    sectors = [
        outer * side * (dx < 0).float(),
        outer * side * (dx >= 0).float(),
        outer * (1 - side) * (dy < 0).float(),
    ]
    for t in (0.06, 0.12):
        low = (diff < t).float()
        per_side = torch.stack([_masked_mean(low, m)[:, 0] for m in sectors], dim=1)
        feats += [_masked_mean(low, outer)[:, 0], per_side.amax(dim=1), per_side.amin(dim=1)]
    feats.append(_masked_mean(diff, outer)[:, 0])

    # Product-coloured matter attached to the product (at half resolution: cheap, wide enough).
    half = max(16, s // 2)
    mask_h = (
        F.interpolate(placement.float(), size=(half, half), mode="bilinear", align_corners=False) > 0.5
    ).float()
    like_h = F.interpolate(match[:, :1].float(), size=(half, half), mode="bilinear", align_corners=False)
    area_h = mask_h.sum(dim=(1, 2, 3)).clamp(min=1.0)
    pos_h = (torch.arange(half, device=dev, dtype=torch.float32) + 0.5) / half
    own = _masked_mean(like_h, mask_h).view(-1, 1, 1, 1)  # how product-coloured the product itself is
    for share in (0.4, 0.7):
        similar = (like_h > share * own).float()
        grown, extra, top, left, right = _grow(mask_h, similar, max(4, half // 6), pos_h)
        feats += [
            (extra.sum(dim=(1, 2, 3)) / area_h).clamp(max=20).log1p(),
            ((y0 - top) / h).clamp(-1, 2),
            torch.maximum((x0 - left) / w, (right - x1) / w).clamp(-1, 2),
            ((similar * (1 - grown)).sum(dim=(1, 2, 3)) / area_h).clamp(max=50).log1p(),
        ]

    # Horizontal structure and the base.
    background = 1 - _dilate(mask, max(5, s // 16 * 2 + 1))
    gx, gy = _differences(luma)
    coverage = background.mean(dim=3)[:, 0]
    profile = ((gy * background).sum(dim=3) / (background.sum(dim=3) + 1e-3))[:, 0].abs()
    profile = profile * (coverage > 0.2).float()
    strongest, where = profile.max(dim=1)
    feats += [((y1 - pos[where]) / h).clamp(-4, 4), strongest]
    above = profile * (pos.view(1, -1) < (y1 - 0.05 * h).view(-1, 1)).float()
    line, line_at = above.max(dim=1)
    horizon = torch.where(line > 0.01, pos[line_at], torch.zeros_like(y1))

    def band(lo: float, hi: float) -> torch.Tensor:
        sel = (pos.view(1, -1) >= (y1 + lo * h).view(-1, 1)) & (pos.view(1, -1) < (y1 + hi * h).view(-1, 1))
        return (profile * sel.float()).amax(dim=1) / (strongest + 1e-3)

    feats += [band(-0.1, 0.1), band(0.1, 0.4), band(-0.6, -0.1)]

    def region(xa: torch.Tensor, xb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        inside = (
            (gx_pos >= xa.view(-1, 1, 1, 1))
            & (gx_pos < xb.view(-1, 1, 1, 1))
            & (gy_pos >= ya.view(-1, 1, 1, 1))
            & (gy_pos < yb.view(-1, 1, 1, 1))
        )
        return inside.float() * (1 - mask)

    below = y1 + 0.12 * h
    under = region(x0, x1, y1, below)
    beside = region(x0 - 0.6 * w, x0 - 0.1 * w, y1, below) + region(x1 + 0.1 * w, x1 + 0.6 * w, y1, below)
    feats.append((_masked_mean(luma, under) - _masked_mean(luma, beside))[:, 0])
    strip_above = region(x0 - 0.6 * w, x1 + 0.6 * w, y1 - 0.12 * h, y1)
    strip_below = region(x0 - 0.6 * w, x1 + 0.6 * w, y1, below)
    feats.append((_masked_mean(lab, strip_above) - _masked_mean(lab, strip_below)).norm(dim=1))

    # Other objects: unlike their row's median colour.
    median = lab.median(dim=3, keepdim=True).values
    objects = (gaussian_blur(_norm(lab - median), 1.0) > 0.12).float() * background
    heights = objects.sum(dim=2)[:, 0] / s / h.view(-1, 1)  # (B, S) per column, in box heights
    ranked = heights.sort(dim=1, descending=True).values
    near = ((pos.view(1, -1) > (x0 - 2 * w).view(-1, 1)) & (pos.view(1, -1) < x0.view(-1, 1))) | (
        (pos.view(1, -1) > x1.view(-1, 1)) & (pos.view(1, -1) < (x1 + 2 * w).view(-1, 1))
    )
    feats += [
        ranked[:, 0].clamp(max=5),
        ranked[:, s // 10].clamp(max=5),
        ranked[:, s // 4].clamp(max=5),
        (heights * near.float()).amax(dim=1).clamp(max=5),
        (objects.sum(dim=(1, 2, 3)) / area).clamp(max=20).log1p(),
    ]

    # Orientation of background edges.
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12) * background
    angle = torch.atan2(gy, gx).remainder(math.pi)
    axis = (angle < 0.2) | (angle > math.pi - 0.2) | ((angle - math.pi / 2).abs() < 0.2)
    diagonal = ((angle - math.pi / 4).abs() < 0.3) | ((angle - 3 * math.pi / 4).abs() < 0.3)
    total = magnitude.sum(dim=(1, 2, 3)) + 1e-3
    feats += [
        (magnitude * axis.float()).sum(dim=(1, 2, 3)) / total,
        (magnitude * diagonal.float()).sum(dim=(1, 2, 3)) / total,
    ]

    # Standing objects in real product heights.
    feats += _floor_objects(objects, box, horizon, area / (s * s))

    out = torch.stack(feats, dim=1)
    assert out.shape[1] == SCENE_DESCRIPTOR_SIZE
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The scene's grain against the product's size (an extension of the descriptor).

GRAIN_SIGMAS = (2.0, 4.0, 8.0, 16.0)  # px at 128 px: the blurs whose residue is the scene's "detail"
GRAIN_DESCRIPTOR_SIZE = 9


def grain_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """How fine the scene's texture is, in product heights: ``(B, GRAIN_DESCRIPTOR_SIZE)``.

    Wood grain, planks, tiles, bricks, fabric weave and grass have sizes in the world, so their
    period in the picture, over the product's height, is one more reading of whether the product
    and its scene share a scale (Size Mismatch: a bottle as tall as forty floor tiles, a shoe on
    boards wider than itself). The detail is the luma (blurred by 0.7 px against noise) minus the
    same blurred by about a quarter of the box height (the nearest of ``GRAIN_SIGMAS``), so shading
    and the scene's large parts do not count; the texture's RMS spatial frequency along x and along
    y is read as ``sqrt(E[grad^2] / E[detail^2])`` with the central-difference gradient of the
    blurred luma, here in radians per box height (log): close for a sine finer than the blur (3 %
    low at a 16 px period, 10 % at 8 px), too high for a texture coarse enough that the blur takes
    part of it away. Over three regions of the scene, outside the product's outline grown by 4 px:
    the band under the base (0.03 to 0.35 box heights below it, the surface it stands on), the band
    at the product's own height (0.15 to 0.85 of it, wall or surface behind and beside it) and the
    band above its top (up to 0.6 box heights): per region the x and y frequencies and the detail's energy (log; a plain region has
    little, and its frequencies mean little). Regions are whole rows, so a horizontal flip changes
    nothing; a region with under 20 pixels reads 0. No learned part and no threshold fitted to a
    set. About 1 ms per 128 px image at batch 16 on two CPU threads. Inputs as for
    :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    luma = gaussian_blur((unit_lab(image) if lab is None else lab)[:, :1], 0.7)
    keep = 1 - _dilate((placement.float() > 0.5).float(), 9)
    _, y0, _, y1 = box.float().unbind(1)
    h = (y1 - y0).clamp(min=1e-3)
    sigmas = torch.tensor(GRAIN_SIGMAS, device=dev) * s / 128
    pick = ((0.25 * h * s).view(-1, 1) - sigmas.view(1, -1)).abs().argmin(1)
    detail = luma.clone()
    for k in pick.unique().tolist():
        chosen = pick == k
        detail[chosen] -= gaussian_blur(luma[chosen], float(sigmas[k]))
    gx, gy = (g / 2 for g in _differences(luma))
    rows = ((torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s).view(1, 1, s, 1)
    feats: list[torch.Tensor] = []
    for top, bottom in (
        (y1 + 0.03 * h, y1 + 0.35 * h),
        (y0 + 0.15 * h, y1 - 0.15 * h),
        (y0 - 0.6 * h, y0 - 0.05 * h),
    ):
        region = ((rows >= top.view(-1, 1, 1, 1)) & (rows < bottom.view(-1, 1, 1, 1))).float() * keep
        count = region.sum(dim=(1, 2, 3)) + 1e-3
        energy = (detail**2 * region).sum(dim=(1, 2, 3)) / count
        some = (count > 20).float()
        for grad in (gx, gy):
            frequency = ((grad**2 * region).sum(dim=(1, 2, 3)) / count / (energy + 1e-6)).sqrt() * h * s
            feats.append(some * frequency.clamp(1e-2, 1e3).log())
        feats.append(some * (energy + 1e-6).log())
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == GRAIN_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The product's colour continuing across its outline (an extension of the descriptor).

CONTINUITY_QUANTILES = (0.05, 0.15, 0.3)
CONTINUITY_TOLERANCES = (0.05, 0.1)
CONTINUITY_DESCRIPTOR_SIZE = 3 * (len(CONTINUITY_QUANTILES) + len(CONTINUITY_TOLERANCES))


def continuity_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """Where the scene just outside the outline has the product's colour: ``(B, CONTINUITY_DESCRIPTOR_SIZE)``.

    Shape Hallucination continues the product across its outline (an extruded top or side, a knob,
    a plinth in its colour); a product that stands out from its scene does not. Per pixel 2-3 px
    outside the outline and above the base, the Lab distance to the product's own colour just inside
    (the product's Lab blurred over its mask); over that ring, its top part (above 0.15 box heights
    below the top) and the rest (the sides): the 5/15/30% quantiles of the distance and the share
    of the ring under each of ``CONTINUITY_TOLERANCES`` (5 numbers each). Invariant to a horizontal
    flip. Inputs as for :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    lab = unit_lab(image) if lab is None else lab
    mask = (placement.float() > 0.5).float()
    weight = gaussian_blur(mask, 2.0)
    inside = gaussian_blur(lab * mask, 2.0) / (weight + 1e-4)
    distance = _norm(lab - inside)
    ring = (_dilate(mask, 7) - _dilate(mask, 3)) * (weight > 0.02).float()
    _, y0, _, y1 = box.float().unbind(1)
    h = (y1 - y0).clamp(min=1e-3)
    rows = ((torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s).view(1, 1, s, 1)
    ring = ring * (rows < (y1 - 0.06 * h).view(-1, 1, 1, 1)).float()
    top = (rows < (y0 + 0.15 * h).view(-1, 1, 1, 1)).float()
    q = torch.tensor(CONTINUITY_QUANTILES, device=dev)
    feats: list[torch.Tensor] = []
    for region in (ring, ring * top, ring * (1 - top)):
        values = torch.where(region > 0, distance, torch.full_like(distance, float("nan"))).flatten(1)
        feats.append(torch.nan_to_num(torch.nanquantile(values, q, dim=1).T, nan=1.0))
        area = region.sum(dim=(1, 2, 3)) + 1.0
        for tolerance in CONTINUITY_TOLERANCES:
            feats.append((((distance < tolerance).float() * region).sum(dim=(1, 2, 3)) / area).unsqueeze(1))
    out = torch.cat(feats, dim=1)
    assert out.shape[1] == CONTINUITY_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)
