"""Image integrity: is the picture itself broken (:func:`integrity_descriptor`)?"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rfnet.aux.imageops import gaussian_blur, to_gray
from rfnet.aux.measure import (
    _differences,
    _dilate,
)

# ----------------------------------------------------------------------------------------------------
# Image integrity: is the picture itself broken (an extension of the descriptor)?

INTEGRITY_DESCRIPTOR_SIZE = 18
_SLICE_SHIFTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
_CHANNEL_SHIFTS = tuple(range(1, 13))
_BLOCK_PERIODS = (4, 6, 8, 12, 16)


def _shift_gain(img: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """How much sliding each row sideways makes it continue the row above: ``(B, H - 1)``.

    For each pair of neighbouring rows, the mean colour difference as they are, minus the smallest
    difference over the sideways shifts (both signs, circular), over the image's median difference.
    A band of rows moved sideways (a glitch, a collage strip) gives a large gain at its two ends; a
    real horizontal edge (a table's front, a shelf) gives none, as no shift makes it continue."""
    a, b = img[..., 1:, :], img[..., :-1, :]
    base = (a - b).abs().mean(dim=(1, 3))
    best = base
    for k in shifts:
        for sign in (1, -1):
            best = torch.minimum(best, (a - torch.roll(b, sign * k, dims=-1)).abs().mean(dim=(1, 3)))
    scale = base.median(dim=1, keepdim=True).values + 0.01
    return (base - best) / scale


def _channel_misregistration(img: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """``(B,)``: how much better the red or blue channel's fine detail lines up with the green
    channel's when moved by a few pixels (along either axis) than where it is. Cameras, codecs and
    diffusion models keep the channels registered: a split channel is a broken picture."""
    hp = img - gaussian_blur(img, 1.5)
    hp = hp - hp.mean(dim=(2, 3), keepdim=True)
    g = hp[:, 1]
    gn = g.pow(2).mean(dim=(1, 2)).sqrt() + 1e-6

    def corr(c: torch.Tensor) -> torch.Tensor:
        return (c * g).mean(dim=(1, 2)) / (c.pow(2).mean(dim=(1, 2)).sqrt() + 1e-6) / gn

    gain = torch.zeros(img.shape[0], device=img.device, dtype=img.dtype)
    for ch in (0, 2):
        c = hp[:, ch]
        here = corr(c)
        best = here
        for k in shifts:
            for sign in (1, -1):
                for dim in (-1, -2):
                    best = torch.maximum(best, corr(torch.roll(c, sign * k, dims=dim)))
        gain = torch.maximum(gain, best - here)
    return gain


def _grid_energy(diff: torch.Tensor, periods: tuple[int, ...]) -> torch.Tensor:
    """``(B,)``: the largest share of the gradient energy ``diff`` (``(B, L)``, one value per column
    boundary) that falls on one regular grid of boundaries (any period in ``periods``, best phase),
    over the share a grid of that period would get by chance. Block codecs at low quality and
    enlarged pixels put nearly all of it on a grid."""
    total = diff.sum(dim=1) + 1e-6
    best = torch.ones_like(total)
    n = diff.shape[1]
    for p in periods:
        usable = n - n % p
        on_grid = diff[:, :usable].reshape(diff.shape[0], -1, p).sum(dim=1)  # (B, p) per phase
        best = torch.maximum(best, on_grid.amax(dim=1) / total * p)
    return best


def integrity_descriptor(image: torch.Tensor, placement: torch.Tensor) -> torch.Tensor:
    """Measurements of whether the picture itself is broken: ``(B, INTEGRITY_DESCRIPTOR_SIZE)``.

    The Unsuitable class covers images that are unusable whatever the product does: glitched,
    collaged, over-compressed, posterised, blown out, smeared or tilted. These are standard,
    generic readings of an image's integrity (no learned part; invariant to a horizontal flip, the
    block-grid readings to within the boundaries a grid period leaves over), taken outside the
    located product (``placement``, dilated) where they count pixels, since the
    pasted product is intact by construction:

    - bands moved sideways (4): :func:`_shift_gain` for rows and for columns, the largest and the
      mean of the three largest (log);
    - split colour channels (1): :func:`_channel_misregistration`;
    - block artefacts (2): :func:`_grid_energy` of the column and row boundaries' colour change;
    - flat and quantised colour (4): share of background pixels equal to both their right and
      lower neighbour (8-bit), share of the background in its 8 commonest colours (16 levels per
      channel), share of the 256 luma levels between the 2nd and 98th percentile that occur at
      all, and the number of occupied 32-level luma bins;
    - exposure (2): share of background pixels at the top (any channel >= 0.99) or the bottom
      (all channels <= 0.01) of the range;
    - noise (1): the noise level of the luma by Immerkaer's Laplacian-difference estimate (log);
    - texture (4): share of background pixels on an edge (clutter), colourfulness (Hasler and
      Suesstrunk), fine-detail energy in the top third against the bottom third (log ratio: a ground
      plane in perspective has finer texture higher up), and the strongest long vertical line
      (column mean of the horizontal luma gradient) against the mean.
    """
    s = image.shape[-1]
    img = image.float().clamp(0, 1)
    bsz = img.shape[0]
    background = 1.0 - _dilate((placement.float() > 0.5).float(), 5)  # (B, 1, S, S)
    bg_area = background.sum(dim=(1, 2, 3)) + 1.0
    feats: list[torch.Tensor] = []

    # Bands moved sideways.
    for gains in (_shift_gain(img, _SLICE_SHIFTS), _shift_gain(img.transpose(-1, -2), _SLICE_SHIFTS)):
        top = gains.topk(3, dim=1).values.clamp(min=0)
        feats += [top[:, 0].log1p(), top.mean(dim=1).log1p()]

    # Split channels.
    feats.append(_channel_misregistration(img, _CHANNEL_SHIFTS))

    # Block artefacts.
    col_diff = (img[..., :, 1:] - img[..., :, :-1]).abs().sum(dim=(1, 2))  # (B, S - 1)
    row_diff = (img[..., 1:, :] - img[..., :-1, :]).abs().sum(dim=(1, 3))
    feats += [_grid_energy(col_diff, _BLOCK_PERIODS).log(), _grid_energy(row_diff, _BLOCK_PERIODS).log()]

    # Flat and quantised colour.
    q = (img * 255.0).round()
    same = (
        (q[..., :-1, :-1] == q[..., :-1, 1:]).all(dim=1) & (q[..., :-1, :-1] == q[..., 1:, :-1]).all(dim=1)
    ).float()
    feats.append((same.unsqueeze(1) * background[..., :-1, :-1]).sum(dim=(1, 2, 3)) / bg_area)
    weight = background.flatten(1)
    weight = torch.where(weight.sum(dim=1, keepdim=True) > 16, weight, torch.ones_like(weight))
    bins = q.long().clamp(0, 255) // 16  # 16 levels per channel
    codes = (bins[:, 0] * 256 + bins[:, 1] * 16 + bins[:, 2]).flatten(1)
    colours = torch.zeros(bsz, 4096, device=img.device).scatter_add_(1, codes, weight)
    feats.append(colours.topk(8, dim=1).values.sum(dim=1) / weight.sum(dim=1))
    luma_q = to_gray(q).round().long().clamp(0, 255).flatten(1)
    hist = torch.zeros(bsz, 256, device=img.device).scatter_add_(1, luma_q, weight)
    cdf = hist.cumsum(dim=1) / weight.sum(dim=1, keepdim=True)
    levels = torch.arange(256, device=img.device).view(1, -1)
    lo = (cdf < 0.02).sum(dim=1, keepdim=True)
    hi = torch.maximum(lo, (cdf < 0.98).sum(dim=1, keepdim=True))
    in_range = ((levels >= lo) & (levels <= hi)).float()
    feats.append(((hist > 0).float() * in_range).sum(dim=1) / in_range.sum(dim=1))
    feats.append((hist.view(bsz, 8, 32).sum(dim=2) > 0).float().sum(dim=1) / 8.0)

    # Exposure.
    bright = (img >= 0.99).any(dim=1, keepdim=True).float()
    dark = (img <= 0.01).all(dim=1, keepdim=True).float()
    feats += [
        (bright * background).sum(dim=(1, 2, 3)) / bg_area,
        (dark * background).sum(dim=(1, 2, 3)) / bg_area,
    ]

    # Noise (Immerkaer 1996: the difference of two Laplacians cancels edges to first order).
    luma = to_gray(img)
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=img.device)
    response = F.conv2d(luma, kernel.view(1, 1, 3, 3)).abs()
    sigma = response.mean(dim=(1, 2, 3)) * math.sqrt(math.pi / 2) / 6.0
    feats.append((sigma * 255.0).log1p())

    # Texture: clutter, colourfulness, detail by height, long vertical lines.
    gx, gy = _differences(luma)
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12)
    feats.append(((magnitude > 0.08).float() * background).sum(dim=(1, 2, 3)) / bg_area)
    rg = img[:, 0] - img[:, 1]
    yb = 0.5 * (img[:, 0] + img[:, 1]) - img[:, 2]
    feats.append(
        torch.sqrt(rg.var(dim=(1, 2)) + yb.var(dim=(1, 2)))
        + 0.3 * torch.sqrt(rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2)
    )
    detail = (luma - gaussian_blur(luma, 1.0)).abs()
    third = s // 3
    feats.append(
        (
            (detail[..., :third, :].mean(dim=(1, 2, 3)) + 1e-4)
            / (detail[..., -third:, :].mean(dim=(1, 2, 3)) + 1e-4)
        ).log()
    )
    columns = gx.mean(dim=(1, 2)).abs()  # (B, S): signed gradient averaged down each column
    feats.append((columns.amax(dim=1) + 1e-4) / (gx.abs().mean(dim=(1, 2, 3)) + 1e-4))

    out = torch.stack(feats, dim=1)
    assert out.shape[1] == INTEGRITY_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)
