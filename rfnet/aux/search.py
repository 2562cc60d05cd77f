"""Where is the product in the generated image: the FFT template search (:func:`locate_product`),
its quality report, the placement mask, crops around the found box and the product/image match
maps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rfnet.aux.imageops import _EPS

# ----------------------------------------------------------------------------------------------------
# Product / image comparison.


def product_match_maps(
    image: torch.Tensor,
    product: torch.Tensor,
    has_product: torch.Tensor,
    bins: int = 4,
    work_size: int = 48,
    scale_prior: float = 0.6,
) -> torch.Tensor:
    """Where the product's colours appear in the generated image: ``(B, 2, H, W)`` in [0, 1].

    A soft colour back-projection (Swain & Ballard 1991). Pixels are softly assigned to ``bins**3``
    RGB bin centres; the product's alpha-weighted histogram ``h_p`` and the image's histogram ``h_i``
    give two maps:

    - channel 0, *likelihood*: ``sum_k w_k(x) h_p[k] / max(h_p)``: the pixel has a product colour.
      Lights up the product, and the scene too when it copies the product's colours
      (Indistinctiveness) or grows product-coloured parts (Shape Hallucination);
    - channel 1, *ratio*: ``sum_k w_k(x) min(a h_p[k] / h_i[k], 1)``: Swain & Ballard's ratio
      histogram, high only where the product's colours are no more common in the image than the
      product itself would make them (the product stands out), low when the scene repeats them.
      ``a`` is the share of the image the product is expected to cover: its alpha coverage of its
      canonical square times ``scale_prior**2`` (the square is assumed to span ``scale_prior`` of
      the image side; the generation pipeline uses 0.66-0.78).

    ``image (B, 3, H, W)`` and ``product (B, 4, P, P)`` in [0, 1]; rows with ``has_product`` False
    get zero maps. Computed at ``work_size`` px and resized back; differentiable w.r.t. ``image``.
    """
    b, _, h, w = image.shape
    size = min(work_size, h)
    img = F.interpolate(
        image.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    prod = product.float()
    if prod.shape[-1] > work_size // 2:
        # The histogram needs no detail: 32 px of product are plenty and 4x cheaper than 64.
        prod = F.interpolate(
            prod, size=(work_size // 2, work_size // 2), mode="bilinear", antialias=True, align_corners=False
        )
    centres = (torch.arange(bins, dtype=img.dtype, device=img.device) + 0.5) / bins
    grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), dim=-1).view(-1, 3)  # (K, 3)
    inv_two_sigma2 = 1.0 / (2.0 * (0.6 / bins) ** 2)

    def assign(rgb: torch.Tensor) -> torch.Tensor:  # (B, 3, N) -> (B, N, K) soft assignment
        # -|x - c|^2 = 2 c.x - |c|^2 - |x|^2; the |x|^2 term is constant over k and cancels in softmax.
        logits = torch.einsum("bcn,kc->bnk", rgb * (2.0 * inv_two_sigma2), grid)
        return torch.softmax(logits - (grid**2).sum(dim=1) * inv_two_sigma2, dim=-1)

    w_img = assign(img.flatten(2))  # (B, N, K)
    alpha = prod[:, 3].flatten(1)  # (B, M)
    w_prod = assign(prod[:, :3].flatten(2))  # (B, M, K)
    h_p = torch.einsum("bmk,bm->bk", w_prod, alpha) / (alpha.sum(dim=1, keepdim=True) + _EPS)  # (B, K)
    h_i = w_img.mean(dim=1)
    likelihood = torch.einsum("bnk,bk->bn", w_img, h_p / (h_p.amax(dim=1, keepdim=True) + _EPS))
    area = alpha.mean(dim=1, keepdim=True) * scale_prior**2  # (B, 1) expected image share of the product
    ratio = torch.einsum("bnk,bk->bn", w_img, (area * h_p / (h_i + _EPS)).clamp(max=1.0))
    maps = torch.stack([likelihood, ratio], dim=1).view(b, 2, size, size)
    maps = maps * has_product.to(maps.dtype).view(-1, 1, 1, 1)
    if size != h or size != w:
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    return maps.clamp(0.0, 1.0).to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Where is the product in the image?


def _box_theta(box: torch.Tensor, context: float) -> torch.Tensor:
    """Affine ``theta (B, 2, 3)`` for ``F.affine_grid`` sampling a square window of side ``context``
    times the box's longer side, centred on the box. ``box (B, 4)``: ``x0, y0, x1, y1`` in [0, 1]."""
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).clamp(min=1e-3) * context
    theta = torch.zeros(box.shape[0], 2, 3, dtype=box.dtype, device=box.device)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 2] = 2 * cy - 1
    return theta


def crop_around(x: torch.Tensor, box: torch.Tensor, size: int, context: float) -> torch.Tensor:
    """A ``size`` px square view of ``x (B, C, H, W)`` centred on ``box``, ``context`` x its longer side.

    Bilinear, zero outside the image, differentiable w.r.t. ``x``. This is RFNet's product-centred
    view: the product always appears at the same place and size, so what is under it (Space
    Mismatch), next to it (Size Mismatch) and on its outline (Shape Hallucination) sits at fixed
    positions for the encoder.
    """
    theta = _box_theta(box.to(x.dtype), context)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _pyramid(prod: torch.Tensor) -> list[torch.Tensor]:
    """``prod`` and its antialiased halvings down to 4 px: templates are sampled from the level at most
    twice their size, so small ones are area-averaged like the downscaled image they are compared with
    (point-sampling a 64 px product down to 8 px would alias labels and edges into large errors)."""
    levels = [prod]
    while levels[-1].shape[-1] // 2 >= 4:
        size = levels[-1].shape[-1] // 2
        levels.append(
            F.interpolate(levels[-1], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        )
    return levels


def _templates(pyramid: list[torch.Tensor], sizes: torch.Tensor, canvas: int) -> torch.Tensor:
    """Each row's product square resized to ``sizes[b]`` px, top-left in a ``canvas`` px frame (zeros
    elsewhere): ``(B, 4, canvas, canvas)``, for rows of different sizes at once."""
    b = sizes.shape[0]
    k = canvas / sizes.clamp(min=1.0)  # frame px per template px
    theta = torch.zeros(b, 2, 3, dtype=pyramid[0].dtype, device=pyramid[0].device)
    theta[:, 0, 0] = k
    theta[:, 1, 1] = k
    theta[:, 0, 2] = k - 1
    theta[:, 1, 2] = k - 1
    grid = F.affine_grid(theta, [b, 4, canvas, canvas], align_corners=False)
    out = None
    for level in pyramid:  # coarsest level whose side is still >= the template size
        use = sizes <= level.shape[-1]
        if out is None:
            out = F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        elif bool(use.any()):
            sampled = F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = torch.where(use.view(-1, 1, 1, 1), sampled, out)
    return out


def _signal_fft(signal: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """rfft2 of ``[sum_c I_c^2, I_r, I_g, I_b, inside]`` for :func:`_correlate`."""
    return torch.fft.rfft2(torch.cat([(signal**2).sum(dim=1, keepdim=True), signal, inside], dim=1))


def _correlate(f_sig: torch.Tensor, n: int, t: torch.Tensor, valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted squared error of template ``t (B, 4, C, C)`` (RGBA) at every top-left position
    ``(y, x) < valid`` of an ``n`` px signal given by ``f_sig`` (:func:`_signal_fft`; its ``inside``
    channel is 1 where the signal is real image): ``(error, product mass inside the frame)``, both
    ``(B, valid, valid)``.

    Pixels are weighted by ``w = alpha^2``: a partly transparent edge pixel of the template is a
    blend of the product and a background it does not know, so it counts less than the product's
    inside (with ``w = alpha`` the edges of a small product outweigh its inside and a flat region of
    similar colour can beat the true placement). ``sum w (I - T)^2 = sum w I^2 - 2 sum w T I +
    sum w T^2`` as FFT cross-correlations, over ``sum w`` inside the frame; positions with
    ``y + C <= n`` do not wrap around.
    """
    shape = (n, n)
    a, rgb = t[:, 3:4], t[:, :3]
    w = a * a
    f_ker = torch.fft.rfft2(
        torch.cat([w, w * rgb, w * (rgb**2).sum(dim=1, keepdim=True), a], dim=1), s=shape
    ).conj()
    prods = torch.stack(
        [
            f_sig[:, 0] * f_ker[:, 0],  # sum w I^2
            (f_sig[:, 1:4] * f_ker[:, 1:4]).sum(dim=1),  # sum w T I
            f_sig[:, 4] * f_ker[:, 4],  # sum w T^2 over the part inside the frame
            f_sig[:, 4] * f_ker[:, 0],  # weight inside the frame
            f_sig[:, 4] * f_ker[:, 5],  # product mass inside the frame
        ],
        dim=1,
    )
    corr = torch.fft.irfft2(prods, s=shape)[:, :, :valid, :valid]
    return (corr[:, 0] - 2 * corr[:, 1] + corr[:, 2]) / corr[:, 3].clamp(min=1e-6), corr[:, 4]


# Added to a template's colour variance before its coarse error is divided by it (RGB in [0, 1]).
# A plain product's variance is far below it, so its placements are ranked much as by the error.
COARSE_VARIANCE_FLOOR = 0.01


def _template_variance(t: torch.Tensor) -> torch.Tensor:
    """Colour variance ``(B,)`` of templates ``t (B, 4, C, C)`` under the search's ``alpha^2`` weights."""
    w = t[:, 3:4] ** 2
    mass = w.flatten(1).sum(dim=1).clamp(min=_EPS)
    mean = (w * t[:, :3]).flatten(2).sum(dim=2) / mass.view(-1, 1)
    return (w * (t[:, :3] - mean[:, :, None, None]) ** 2).flatten(1).sum(dim=1) / mass


def _coarse_search(
    img: torch.Tensor, pyramid: list[torch.Tensor], sizes: list[int], min_inside: float, candidates: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position, every size (the same for all rows): the ``candidates`` best placements per row,
    ``(B, K, 3)`` as ``(size, x, y)`` (top-left, px), and their scores ``(B, K)`` (inf where a row has
    fewer). Candidates are local minima over a 3x3 neighbourhood of top-left positions (each position
    at its best size), so they are distinct places, not one place at neighbouring offsets.

    The score is the error over the template's own colour variance plus
    :data:`COARSE_VARIANCE_FLOOR`. Shrunk to a few coarse pixels, a detailed product (a printed
    label, a console with its controller) loses its detail and fits a patch of its average colour
    better than the true placement fits it, whose error is the detail's resampling: on a background
    in the product's own colours, such patches took all the candidates. Relative to how much the
    template varies, the true placement ranks first again (on studio scenes around real product
    photos, boxes off the exhaustive search's in 22 % of Indistinctiveness images before, 5 % after;
    bench/results/rfnet_search_variance.json)."""
    b, _, w, _ = img.shape
    canvas = max(sizes)
    # The canonical square may reach past the frame by its transparent padding (up to half its side
    # for a long product) plus the share of the product allowed outside: zeros around the image,
    # `pad` on the left/top and `pad + canvas` on the right/bottom so templates of any size fit.
    pad = math.ceil(0.6 * canvas) + 1
    padded = F.pad(img, (pad, pad + canvas, pad, pad + canvas))
    inside = F.pad(
        torch.ones(b, 1, w, w, dtype=img.dtype, device=img.device), (pad, pad + canvas, pad, pad + canvas)
    )
    valid = padded.shape[-1] - canvas + 1
    coords = torch.arange(valid, device=img.device, dtype=img.dtype) - pad
    f_sig = _signal_fft(padded, inside)
    best_err = torch.full((b, valid, valid), float("inf"), device=img.device)
    best_size = torch.zeros(b, valid, valid, device=img.device)
    for size in sizes:
        t = _templates(pyramid, torch.full((b,), float(size), device=img.device), canvas)
        err, n_in = _correlate(f_sig, padded.shape[-1], t, valid)
        total = t[:, 3].flatten(1).sum(dim=1)
        err = err.masked_fill(n_in < min_inside * total.view(-1, 1, 1), float("inf"))
        err = err / (_template_variance(t) + COARSE_VARIANCE_FLOOR).view(-1, 1, 1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_size = torch.where(better, float(size), best_size)
    lowest = -F.max_pool2d(-best_err.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    score = best_err.masked_fill(best_err > lowest, float("inf")).flatten(1)
    value, index = score.topk(min(candidates, score.shape[1]), dim=1, largest=False)
    cand = torch.stack(
        [best_size.flatten(1).gather(1, index), coords[index % valid], coords[index // valid]], dim=2
    )
    return cand, value


def _refine_search(
    img: torch.Tensor,
    pyramid: list[torch.Tensor],
    sizes: torch.Tensor,
    start: torch.Tensor,
    radius: int,
    min_inside: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sizes ``(B, K)`` and top-left positions within ``radius`` px of ``start (B, 2)`` (x, y):
    best ``(size, x, y)`` and its error. Works on a window around each row's start, not the frame."""
    b, _, w, _ = img.shape
    canvas = int(sizes.max().ceil())
    span = canvas + 2 * radius + 1  # window side: every candidate placement fits inside it
    margin = span + 1
    padded = F.pad(img, (margin, margin, margin, margin))
    inside = F.pad(
        torch.ones(b, 1, w, w, dtype=img.dtype, device=img.device), (margin, margin, margin, margin)
    )
    origin = (start.round() - radius).long()  # window top-left, image px
    offs = torch.arange(span, device=img.device)
    ys = (origin[:, 1:2] + margin + offs).clamp(0, padded.shape[-1] - 1)  # (B, span)
    xs = (origin[:, 0:1] + margin + offs).clamp(0, padded.shape[-1] - 1)
    bi = torch.arange(b, device=img.device).view(-1, 1, 1)

    def window(x: torch.Tensor) -> torch.Tensor:  # (B, C, N, N) -> (B, C, span, span)
        return x.permute(0, 2, 3, 1)[bi, ys.unsqueeze(2), xs.unsqueeze(1)].permute(0, 3, 1, 2)

    f_sig = _signal_fft(window(padded), window(inside))
    valid = 2 * radius + 1
    best_err = torch.full((b,), float("inf"), device=img.device)
    best = torch.zeros(b, 3, device=img.device)
    for j in range(sizes.shape[1]):
        size = sizes[:, j]
        t = _templates(pyramid, size, canvas)
        err, n_in = _correlate(f_sig, span, t, valid)
        total = t[:, 3].flatten(1).sum(dim=1)
        err = err.masked_fill(n_in < min_inside * total.view(-1, 1, 1), float("inf"))
        value, index = err.flatten(1).min(dim=1)
        better = value < best_err
        cand = torch.stack([size, origin[:, 0] + index % valid, origin[:, 1] + index // valid], dim=1).float()
        best_err = torch.where(better, value, best_err)
        best = torch.where(better.view(-1, 1), cand, best)
    return best, best_err


def locate_product(
    image: torch.Tensor,
    product: torch.Tensor,
    has_product: torch.Tensor,
    *,
    work_size: int = 32,
    refine_size: int = 48,
    min_scale: float = 0.2,
    num_scales: int = 10,
    refine_steps: int = 7,
    min_inside: float = 0.8,
    candidates: int = 4,
    min_template: int = 10,
    verify_size: int | None = 96,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the product in the generated image: ``(box (B, 4) in [0, 1], error (B,))``.

    The generation pipeline pastes the product back unchanged, so its pixels are in the image; RFNet
    gets it as a canonical square (position and scale thrown away). This finds the placement with
    the lowest weighted mean squared colour difference, ``sum w (I - T)^2 / sum w`` with
    ``w = alpha^2`` (expanded into FFT cross-correlations, see :func:`_correlate`), coarse to fine:

    1. at ``work_size`` px: every position, ``num_scales`` scales (the canonical square spanning
       ``min_scale`` to 1.0 of the image side, geometric steps); a scale whose template would be
       under ``min_template`` px there is searched at twice (or four times, ...) that size instead,
       since a few-pixel template fits any patch of its colour; the ``candidates`` best distinct
       places are kept, because at this size a look-alike object or a flat patch of the product's
       colour can still score better than the product itself (places are ranked by the error over
       the template's colour variance, so a small copy that has lost the product's detail does not
       take every candidate, see :func:`_coarse_search`);
    2. at ``refine_size`` px, for each candidate: ``refine_steps`` scales from one coarse step below
       to one above its size, positions within two coarse pixels of it; the lowest error wins;
    3. at ``verify_size`` px (None: skip), the winner against each candidate over 1.2 times its
       size, each at its refined size, positions within one refine pixel; the lowest error there
       wins. A plain product (a black vase, a single-colour box) shrunk to a few pixels fits
       anywhere inside itself, and at ``refine_size`` that small placement can beat the true one,
       whose outline carries the resampling error; at twice the resolution the outline is sharper
       and the small copy's shading no longer matches.

    Placements with less than ``min_inside`` of the product inside the frame are not considered, nor
    products whose canonical square is under ``min_scale`` of the image side (the production
    pipeline places them at 0.66-0.78). ``box`` is the product's alpha bounding box (x0, y0, x1,
    y1) as fractions of the image side; ``error`` the mean squared difference there (RGB in [0, 1];
    ~0 for an unchanged paste). Rows without a product get the whole image and error 1. A search,
    so not differentiable; the views built from the box (:func:`crop_around`, :func:`placement_map`)
    are differentiable in the image.
    """
    b = image.shape[0]
    dev = image.device
    prod = product.float()
    pyramid = _pyramid(prod)
    ratio = (1.0 / min_scale) ** (1.0 / max(1, num_scales - 1))
    # Each scale is searched at the smallest of work_size, 2 * work_size, ... (up to the image) at
    # which its template has min_template px: a few-pixel template fits any patch of its colour.
    by_side: dict[int, set[int]] = {}
    for i in range(num_scales):
        scale, side = min_scale * ratio**i, work_size
        while scale * side < min_template and side * 2 <= image.shape[-1]:
            side *= 2
        by_side.setdefault(side, set()).add(max(3, round(side * scale)))
    found_cand, found_err = [], []
    for side, sizes in sorted(by_side.items()):
        coarse = F.interpolate(
            image.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
        c, e = _coarse_search(coarse, pyramid, sorted(sizes), min_inside, candidates)
        found_cand.append(c * (work_size / side))  # in work_size px
        found_err.append(e)
    cand_err, pick = torch.cat(found_err, dim=1).topk(candidates, dim=1, largest=False)
    cand = torch.cat(found_cand, dim=1).gather(1, pick.unsqueeze(2).expand(-1, -1, 3))
    k = cand.shape[1]
    cand = cand.flatten(0, 1)  # (B * K, 3): row b's candidates are rows b*K .. b*K + K-1
    f = refine_size / work_size
    rel = ratio ** torch.linspace(-1.0, 1.0, refine_steps, device=dev)
    fine_sizes = (cand[:, :1] * f * rel.view(1, -1)).clamp(3, refine_size).round()
    fine = F.interpolate(
        image.float(), size=(refine_size, refine_size), mode="bilinear", antialias=True, align_corners=False
    )
    radius = max(1, math.ceil(2 * f))  # two coarse pixels
    best, best_err = _refine_search(
        fine.repeat_interleave(k, dim=0),
        [level.repeat_interleave(k, dim=0) for level in pyramid],
        fine_sizes,
        cand[:, 1:] * f,
        radius,
        min_inside,
    )
    best_err = best_err.view(b, k).masked_fill(~torch.isfinite(cand_err), float("inf"))
    rows = torch.arange(b, device=dev)
    pick = best_err.argmin(dim=1)
    best = best.view(b, k, 3)
    if verify_size is not None and k > 1:
        g = verify_size / refine_size
        sizes = best[..., 0]
        contenders = (sizes > 1.2 * sizes[rows, pick].view(-1, 1)) & torch.isfinite(best_err)
        if bool(contenders.any()):
            # Only rows with a contender, and only their contenders and winner, are scored again.
            checked = contenders.clone()
            checked[rows, pick] = contenders.any(dim=1)
            row, cand = checked.nonzero(as_tuple=True)
            large = F.interpolate(
                image[row].float(),
                size=(verify_size, verify_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            _, err = _refine_search(
                large,
                [level[row] for level in pyramid],
                (sizes[row, cand] * g).clamp(3, verify_size).round().view(-1, 1),
                best[row, cand, 1:] * g,
                max(1, math.ceil(g)),
                min_inside,
            )
            check_err = torch.full((b, k), float("inf"), device=dev)
            check_err[row, cand] = err
            lowest, verified = check_err.min(dim=1)
            pick = torch.where(torch.isfinite(lowest), verified, pick)
    best_err, best = best_err[rows, pick], best[rows, pick]
    # The canonical square at the best placement, then the product's alpha bbox inside it.
    size, x_tl, y_tl = best[:, 0], best[:, 1], best[:, 2]
    p = prod.shape[-1]
    c0, r0, c1, r1 = _alpha_extent(prod).unbind(dim=1)
    scale = size / p
    box = (
        torch.stack([x_tl + c0 * scale, y_tl + r0 * scale, x_tl + c1 * scale, y_tl + r1 * scale], dim=1)
        / refine_size
    )
    found = has_product.to(dev) & torch.isfinite(best_err)
    whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=dev).expand(b, 4)
    box = torch.where(found.view(-1, 1), box.clamp(0.0, 1.0), whole)
    error = torch.where(found, best_err, torch.ones_like(best_err))
    return box.to(image.dtype), error.to(image.dtype)


# A search error above this means the product was not found as pasted. On four sets whose images
# hold their cut-outs unchanged the median error is 0.005-0.011 (resampling and blending at the
# outline) and 0-7 % of the images are over it (37 % of one set's broken pictures, its Unsuitable
# class). Cut-outs swapped between images: median 0.09, 89 % over; a cut-out pasted at 0.1 of the
# image side, below the search's range: median 0.08.
POOR_SEARCH_ERROR = 0.05
POOR_SEARCH_WARN_SHARE = 0.25  # warn when more of a set's images than this are over it


def search_report(error: torch.Tensor, has_product: torch.Tensor) -> dict[str, float | int]:
    """How well :func:`locate_product` matched over a set: the number of images with a product, the
    number without one, the median search error among those with one and the share of them over
    :data:`POOR_SEARCH_ERROR` (``poor_share``).

    RFNet's placement channel, centred view and measurements are read at the box the search returns,
    so they mean what they say only where each image holds its product's cut-out unchanged (as the
    generation pipeline pastes it back), at 0.2-1.0 of the image side. A set whose ``products/``
    files are original photos, other products or differently processed copies shows up here as a
    high ``poor_share`` (see :func:`search_warning`).
    """
    has = has_product.detach().cpu().bool()
    err = error.detach().float().cpu()[has]
    if err.numel() == 0:
        return {"with_product": 0, "without_product": int(has.numel())}
    return {
        "with_product": int(err.numel()),
        "without_product": int(has.numel() - err.numel()),
        "median_error": round(float(err.median()), 4),
        "poor_error": POOR_SEARCH_ERROR,
        "poor_share": round(float((err > POOR_SEARCH_ERROR).float().mean()), 4),
    }


def search_warning(report: dict[str, float | int]) -> str | None:
    """The warning an operator should see for a :func:`search_report`, or None when it looks right."""
    if report["with_product"] == 0 and report.get("without_product", 0) > 0:
        return (
            f"none of the {report['without_product']} images has a product cut-out (products/<name>): "
            "RFNet compares the image with its product, and without it reads the image alone (macro F1 "
            "0.38 instead of 0.85 on the synthetic set, bench/results/rfnet_ablations.json); check the set's products/ folder"
        )
    share = report.get("poor_share")
    if share is None or share <= POOR_SEARCH_WARN_SHARE:
        return None
    return (
        f"the product search matched its cut-out poorly (error > {POOR_SEARCH_ERROR}) in "
        f"{100 * share:.0f}% of the {report['with_product']} images with a product (median error "
        f"{report['median_error']:.3f}; sets whose images hold their cut-outs unchanged: 0-7%). RFNet "
        "reads the product's placement and its measurements where the cut-out is found, so check that "
        "products/<name> is the cut-out pasted into image <name> (not an original photo, another "
        "product or a copy processed differently) and that products take 0.2-1.0 of the image side"
    )


def placement_map(product: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """The product's alpha drawn into a ``size`` px image at ``box``: ``(B, 1, size, size)`` in [0, 1].

    Inverse of the canonicalisation: the canonical square is centred on the box with the box's longer
    side, as :func:`rfnet.data.transforms.canonical_product` centred it.
    """
    b = product.shape[0]
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).clamp(min=1e-3)
    # affine_grid maps output coords (image, [-1, 1]) to input coords (canonical square, [-1, 1]).
    theta = torch.zeros(b, 2, 3, dtype=product.dtype, device=product.device)
    theta[:, 0, 0] = 1.0 / side
    theta[:, 1, 1] = 1.0 / side
    theta[:, 0, 2] = (1 - 2 * cx) / side
    theta[:, 1, 2] = (1 - 2 * cy) / side
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    return F.grid_sample(product[:, 3:4], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------------------------------
# An explicit descriptor of the product in its scene.


def _alpha_extent(rgba: torch.Tensor) -> torch.Tensor:
    """Pixel bounding box of ``alpha > 0`` in ``rgba (B, 4, H, W)``: ``(B, 4)`` float (x0, y0, x1, y1),
    ``x1``/``y1`` exclusive; an empty alpha gives ``(W, H, 0, 0)``."""
    alpha = rgba[:, 3] > 0
    h, w = alpha.shape[-2:]
    xs = torch.arange(w, device=rgba.device, dtype=torch.float32)
    ys = torch.arange(h, device=rgba.device, dtype=torch.float32)
    cols, rows = alpha.any(dim=1), alpha.any(dim=2)
    return torch.stack(
        [
            torch.where(cols, xs, float(w)).amin(dim=1),
            torch.where(rows, ys, float(h)).amin(dim=1),
            torch.where(cols, xs + 1, 0.0).amax(dim=1),
            torch.where(rows, ys + 1, 0.0).amax(dim=1),
        ],
        dim=1,
    )


def alpha_box(rgba: torch.Tensor) -> torch.Tensor:
    """Where a product placed on the image's canvas is: the alpha bounding box of ``rgba
    (B, 4, H, W)`` (the product on the canvas, alpha 0 elsewhere) as fractions of the canvas side,
    ``(B, 4)`` float32 (x0, y0, x1, y1), NaN for an empty alpha: the ``known`` placement
    :func:`find_product` takes."""
    h, w = rgba.shape[-2:]
    extent = _alpha_extent(rgba) / torch.tensor([w, h, w, h], dtype=torch.float32, device=rgba.device)
    empty = (rgba[:, 3] <= 0).flatten(1).all(dim=1)
    return extent.masked_fill(empty.view(-1, 1), float("nan"))


def placement_error(
    image: torch.Tensor, product: torch.Tensor, box: torch.Tensor, *, refine_size: int = 48
) -> torch.Tensor:
    """The error :func:`locate_product` reports, measured at a known ``box`` instead of searched:
    ``(B,)``, the ``alpha^2``-weighted mean squared colour difference between the product's canonical
    square placed at ``box`` (its alpha bounding box, fractions of the image side, as the search
    returns it) and the image, at ``refine_size`` px. Where the search finds that box, this is the
    error it returns; a product pasted unchanged scores about 0.005-0.01, a changed or broken one
    more (:data:`POOR_SEARCH_ERROR`)."""
    prod = product.float()
    p = prod.shape[-1]
    c0, r0, c1, r1 = _alpha_extent(prod).unbind(dim=1)
    box = box.float().to(prod.device)
    # The canonical square's side (refine px) from the box's longer extent, as the search's box was
    # made from its square: box = top-left + alpha extent * side / p.
    width = (box[:, 2] - box[:, 0]) * p / (c1 - c0).clamp(min=1)
    height = (box[:, 3] - box[:, 1]) * p / (r1 - r0).clamp(min=1)
    side = torch.maximum(width, height) * refine_size
    start = torch.stack(
        [box[:, 0] * refine_size - c0 * side / p, box[:, 1] * refine_size - r0 * side / p], dim=1
    )
    fine = F.interpolate(
        image.float(), size=(refine_size, refine_size), mode="bilinear", antialias=True, align_corners=False
    )
    _, error = _refine_search(fine, _pyramid(prod), side.clamp(3, refine_size).view(-1, 1), start, 0, 0.0)
    return error.to(image.dtype)


def find_product(
    image: torch.Tensor, product: torch.Tensor, has_product: torch.Tensor, known: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product's box ``(B, 4)`` and search error ``(B,)`` in ``image``, searched only where the
    placement is unknown.

    ``known (B, 4)``: the box (the product's alpha bounding box, x0 y0 x1 y1 as fractions of the
    image side) where the caller knows it, e.g. from the generation pipeline that pasted the
    product; NaN rows are unknown. Known rows with a product are taken as they are, with the error
    measured there (:func:`placement_error`: what the search would report for that box);
    :func:`locate_product` searches the others (all rows when ``known`` is None).
    """
    if known is None:
        return locate_product(image, product, has_product)
    if known.shape != (image.shape[0], 4):
        raise ValueError(
            f"box must be (B={image.shape[0]}, 4): x0, y0, x1, y1 as fractions of the image side "
            f"(NaN where unknown), got shape {tuple(known.shape)}"
        )
    known = known.to(device=image.device, dtype=torch.float32)
    given = torch.isfinite(known).all(dim=1) & has_product.to(image.device)
    box = torch.zeros(image.shape[0], 4, device=image.device)
    error = torch.zeros(image.shape[0], device=image.device)
    if bool(given.any()):
        box[given] = known[given]
        error[given] = placement_error(image[given], product[given], known[given]).float()
    rest = ~given
    if bool(rest.any()):
        found, found_error = locate_product(image[rest], product[rest], has_product[rest])
        box[rest], error[rest] = found.float(), found_error.float()
    return box.to(image.dtype), error.to(image.dtype)
