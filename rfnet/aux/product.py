"""The product descriptor (:func:`product_descriptor`) and two of its extensions: the surface the
product stands on (:func:`support_descriptor`) and scene matter attached to it
(:func:`attached_descriptor`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rfnet.aux.imageops import gaussian_blur, unit_lab
from rfnet.aux.measure import (
    _dilate,
    _grow,
    _masked_mean,
    _max3,
    _norm,
    _sample_points,
)

# ----------------------------------------------------------------------------------------------------
# An explicit descriptor of the product in its scene.

DESCRIPTOR_SIZE = 46


def product_descriptor(
    image: torch.Tensor,
    placement: torch.Tensor,
    match: torch.Tensor,
    box: torch.Tensor,
    error: torch.Tensor | None = None,
    *,
    lab: torch.Tensor | None = None,
) -> torch.Tensor:
    """A fixed-length description of the located product in its scene: ``(B, DESCRIPTOR_SIZE)``.

    The defect classes are statements about the product relative to its scene; this measures them
    directly, so a network trained on a few thousand images does not have to discover them. From
    ``image (B, 3, S, S)`` in [0, 1], the ``placement`` mask and ``match`` maps and the ``box``
    (see :func:`locate_product`), with rings just outside the product (``ring1``, ~2 px at 128 px),
    around it (``ring2``, ~8 px) and the rest of the scene (``background``):

    - geometry (8): box x0, y0, x1, y1, width, height, product area, search error;
    - contrast (3): Lab distance between the product's mean colour and ring1 / ring2 / background
      (Indistinctiveness);
    - product colours (6): the match likelihood inside the product, in ring1 / ring2 / background,
      and the match ratio inside and in the background (Indistinctiveness, Shape Hallucination:
      product-coloured matter attached to the outline);
    - scene texture (5): gradient magnitude in the background, ring1 and product; luma and chroma
      spread of the background (Unsuitable: clutter, garbling);
    - support (16): under the product's base, at 8 depths from -0.1 to 0.6 box heights, the mean
      vertical luma gradient (is there a surface edge, and how far below?) and the luma relative
      to the background (a contact shadow?) across the box's width (Space Mismatch);
    - surroundings (8): beside the product (half a box width to 1.5 widths out, both sides), the
      gradient magnitude at 8 heights from 0.1 to 3 box heights above the base: how tall the
      neighbouring objects are in product heights (Size Mismatch).

    Differentiable w.r.t. ``image`` (the box is a constant). Rows without a product describe the
    whole frame; the model masks them like the product tokens.
    ``lab`` (here and in the other descriptor parts) is :func:`unit_lab` of ``image`` when the
    caller already has it.
    """
    b, _, s, _ = image.shape
    img = image.float()
    lab = unit_lab(img) if lab is None else lab
    luma = lab[:, :1]
    mask = (placement.float() > 0.5).float()
    k1, k2 = max(3, s // 64 * 2 + 1), max(5, s // 16 * 2 + 1)
    near = _dilate(mask, k1)
    around = _dilate(mask, k2)
    ring1, ring2, background = near - mask, around - near, 1 - around
    box = box.float()
    x0, y0, x1, y1 = box.unbind(dim=1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    err = error.float().view(b) if error is not None else torch.zeros(b, device=img.device)
    geometry = torch.stack([x0, y0, x1, y1, w, h, mask.mean(dim=(1, 2, 3)), err.clamp(max=1.0).sqrt()], dim=1)

    mean_p = _masked_mean(lab, mask)
    contrast = torch.stack(
        [(mean_p - _masked_mean(lab, m)).norm(dim=1) for m in (ring1, ring2, background)], dim=1
    )
    likelihood, ratio = match[:, :1].float(), match[:, 1:2].float()
    colours = torch.cat(
        [
            _masked_mean(likelihood, mask),
            _masked_mean(likelihood, ring1),
            _masked_mean(likelihood, ring2),
            _masked_mean(likelihood, background),
            _masked_mean(ratio, mask),
            _masked_mean(ratio, background),
        ],
        dim=1,
    )
    gx = (luma[..., :, 2:] - luma[..., :, :-2]).abs()
    gy = (luma[..., 2:, :] - luma[..., :-2, :]).abs()
    gx, gy = F.pad(gx, (1, 1, 0, 0)), F.pad(gy, (0, 0, 1, 1))
    grad = gx + gy
    bg_std = torch.sqrt(_masked_mean(lab**2, background) - _masked_mean(lab, background) ** 2 + 1e-6)
    texture = torch.cat(
        [
            _masked_mean(grad, background),
            _masked_mean(grad, ring1),
            _masked_mean(grad, mask),
            bg_std[:, :1],
            bg_std[:, 1:].mean(dim=1, keepdim=True),
        ],
        dim=1,
    )
    depths = torch.linspace(-0.1, 0.6, 8, device=img.device)
    across = torch.linspace(0.1, 0.9, 12, device=img.device)
    xs = x0.view(-1, 1) + w.view(-1, 1) * across.view(1, -1)
    ys = y1.view(-1, 1) + h.view(-1, 1) * depths.view(1, -1)
    bg_luma = _masked_mean(luma, background).view(-1, 1)
    support = torch.cat(
        [_sample_points(gy, xs, ys).mean(dim=2), _sample_points(luma, xs, ys).mean(dim=2) - bg_luma], dim=1
    )
    heights = torch.linspace(0.1, 3.0, 8, device=img.device)
    out = torch.linspace(0.5, 1.5, 6, device=img.device)
    sides = torch.cat(
        [x0.view(-1, 1) - w.view(-1, 1) * out.view(1, -1), x1.view(-1, 1) + w.view(-1, 1) * out.view(1, -1)],
        dim=1,
    )
    ys_up = y1.view(-1, 1) - h.view(-1, 1) * heights.view(1, -1)
    surroundings = _sample_points(grad, sides, ys_up).mean(dim=2)
    desc = torch.cat([geometry, contrast, colours, texture, support, surroundings], dim=1)
    assert desc.shape[1] == DESCRIPTOR_SIZE
    return desc.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The surface the product stands on (an extension of the descriptor).

SUPPORT_DEPTHS = (0.04, 0.12, 0.25)  # rows below the base, in box heights
SUPPORT_TOLERANCES = (0.06, 0.15)  # Lab distance (L/100, a/128, b/128) that still counts as the same surface
SUPPORT_DESCRIPTOR_SIZE = 5 * len(SUPPORT_DEPTHS) * len(SUPPORT_TOLERANCES)


def support_descriptor(
    image: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """How far the surface under the product reaches, in product widths: ``(B, SUPPORT_DESCRIPTOR_SIZE)``.

    A product stands on something: a table, a podium, a shelf, a floor. How wide that surface is
    against the product says whether the two are at one scale (a vase wider than the plinth it
    stands on, a bottle as wide as the table is Size Mismatch) and whether the product stands on it
    at all (a base at the very end of a shelf, over its edge, or on nothing is Space Mismatch).
    For each row at ``SUPPORT_DEPTHS`` box heights below the base, the reference colour is the
    median, across the box's width, of the Lab image blurred by one pixel; from the box's centre
    the surface runs left and right while pixels stay within each of ``SUPPORT_TOLERANCES`` of it.
    Per row and tolerance (5): the run's width in box widths (log1p, at most 8), whether it reaches
    both sides of the frame, the share of the row within the tolerance anywhere, and the shorter
    and longer of the run's two arms from the centre in box widths (log1p; pooled, so the numbers
    do not change under a horizontal flip). A row below the frame reads the bottom row.
    About 0.5 ms per 128 px image at batch 16 on two CPU threads. Inputs as for :func:`product_descriptor`.
    """
    b, _, s, _ = image.shape
    dev = image.device
    lab = gaussian_blur(unit_lab(image) if lab is None else lab, 1.0)
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    pos = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s
    col = torch.arange(s, device=dev).view(1, -1)
    under = (pos.view(1, -1) >= x0.view(-1, 1)) & (pos.view(1, -1) < x1.view(-1, 1))  # (B, S)
    centre = ((x0 + x1) / 2 * s).long().clamp(0, s - 1).view(-1, 1)
    feats: list[torch.Tensor] = []
    for depth in SUPPORT_DEPTHS:
        y = ((y1 + depth * h) * s).long().clamp(0, s - 1)
        row = lab.gather(2, y.view(b, 1, 1, 1).expand(b, 3, 1, s)).squeeze(2)  # (B, 3, S)
        masked = torch.where(under.unsqueeze(1), row, torch.full_like(row, float("nan")))
        reference = masked.nanmedian(dim=2).values
        reference = torch.where(torch.isfinite(reference), reference, row.mean(dim=2))
        distance = (row - reference.unsqueeze(2)).norm(dim=1)  # (B, S)
        for tolerance in SUPPORT_TOLERANCES:
            same = distance < tolerance
            right = torch.where(~same & (col > centre), col, s).amin(dim=1).float()  # first break
            left = torch.where(~same & (col < centre), col, -1).amax(dim=1).float()
            arm_left = (centre[:, 0].float() - left) / s / w
            arm_right = (right - centre[:, 0].float()) / s / w
            feats += [
                ((right - left - 1) / s / w).clamp(0, 8).log1p(),
                ((right >= s) & (left < 0)).float(),
                same.float().mean(dim=1),
                torch.minimum(arm_left, arm_right).clamp(0, 8).log1p(),
                torch.maximum(arm_left, arm_right).clamp(0, 8).log1p(),
            ]
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == SUPPORT_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Scene matter attached to the product's outline (an extension of the descriptor).

ATTACHED_TOLERANCES = (0.12, 0.2)  # Lab distance from the row's median colour that makes a pixel "matter"
ATTACHED_DESCRIPTOR_SIZE = 5 * len(ATTACHED_TOLERANCES)


def attached_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """Scene matter grown onto the product's outline above its base: ``(B, ATTACHED_DESCRIPTOR_SIZE)``.

    Shape Hallucination is the scene continuing the product's silhouette, and what it grows there
    need not share the product's colours: a second shade on a lamp, leaves or ears sprouting from a
    can, a wider copy behind it. The scene's own parts are, in a layered picture (wall, floor,
    table), pixels near their row's median colour; anything else is matter. From the product's
    mask, grow geodesically (at half resolution, up to a quarter of the frame) through matter that
    lies above the base (more than 0.04 box heights above it, so the table or podium the product
    stands on does not count), for a matter threshold of each of ``ATTACHED_TOLERANCES`` (Lab
    distance from the row's median, blurred by one pixel over the scene alone, so the product's own
    contrast does not spill onto its surroundings). Per threshold (5): the grown
    area in product areas (log1p), how far it reaches above the box's top in box heights, the
    farther and the nearer of its reach beyond the left and right sides in box widths (pooled, so
    the numbers do not change under a horizontal flip), and the share of the ring just outside the
    outline (about 4 px, above the base) that is matter. About 0.7 ms per 128 px image at batch 16 on
    two CPU threads. Inputs as for :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    lab = unit_lab(image) if lab is None else lab
    full = (placement.float() > 0.5).float()
    # Blurred over the scene only, so the product's own contrast does not spill onto its surroundings.
    distance = gaussian_blur(_norm(lab - lab.median(dim=3, keepdim=True).values) * (1 - full), 1.0) / (
        gaussian_blur(1 - full, 1.0) + 1e-4
    )
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    half = max(16, s // 2)
    pos = (torch.arange(half, device=dev, dtype=torch.float32) + 0.5) / half
    mask = (F.interpolate(full, size=(half, half), mode="bilinear", align_corners=False) > 0.5).float()
    distance = F.interpolate(distance, size=(half, half), mode="bilinear", align_corners=False)
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    above = (pos.view(1, 1, -1, 1) < (y1 - 0.04 * h).view(-1, 1, 1, 1)).float()
    ring = (_max3(_max3(mask)) - mask) * above
    feats: list[torch.Tensor] = []
    for tolerance in ATTACHED_TOLERANCES:
        matter = (distance > tolerance).float() * (1 - mask) * above
        _, extra, top, left, right = _grow(mask, matter, half // 4, pos)
        beyond_left, beyond_right = ((x0 - left) / w).clamp(-1, 3), ((right - x1) / w).clamp(-1, 3)
        feats += [
            (extra.sum(dim=(1, 2, 3)) / area).clamp(max=20).log1p(),
            ((y0 - top) / h).clamp(-1, 3),
            torch.maximum(beyond_left, beyond_right),
            torch.minimum(beyond_left, beyond_right),
            _masked_mean(matter, ring)[:, 0],
        ]
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == ATTACHED_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The scene's grain against the product's size (an extension of the descriptor).
