"""RFNet: the multimodal inspector of generated advertising images (Du et al., ECCV 2024).

Inputs (per sample): the generated image, its depth and saliency maps (computed inside from the
image, see :mod:`rfnet.aux`), the product cut-out (RGBA, canonicalised: alpha-bbox crop, square
pad, resize) and the product caption. Output: logits over the six classes of
:data:`pipelines.labels.LABELS`; ``softmax(logits)[:, 0]`` is ``p_available``.

Architecture (the paper's, with the switches of :class:`rfnet.config.RFNetConfig`)::

    generated image ─ encoder ─┐                       (aux_fusion="channels": depth / saliency /
    depth map ───── encoder ──┤                         match maps are extra input channels of
    saliency map ── encoder ──┤ tokens (g*g per image)  the generated-image encoder instead)
    product RGBA ── encoder ──┴─ FFM(product tokens <- caption tokens) ─┐
    caption ─────── text encoder ───────────────────────────────────────┘
        [CLS] + all tokens + type/position embeddings -> self-attention fusion -> LN -> linear -> 6

Feature Filter Module (FFM): product tokens cross-attend to caption tokens; a conv branch over the
product's token grid produces a sigmoid gate for the attended features; the result is added back
to the product tokens (residual), so the caption filters which product features matter.

Departures from the paper, each a config switch (docs/rfnet.md says why; bench/results/ has the runs):

- ``aux_fusion="channels"`` (small/tiny presets): depth and saliency maps are stacked onto the
  generated image as input channels of one encoder instead of two more ResNets (4-5x cheaper).
- ``use_product_match``: two product/image comparison maps (:func:`rfnet.aux.product_match_maps`)
  are stacked onto the generated image. They tell a small CNN trained from scratch where the
  product's colours are in the scene, which is what Size Mismatch, Indistinctiveness and Shape
  Hallucination are about.
- The caption reaches the fusion only through the FFM when the FFM is on (as in the paper); with
  the FFM off (or no product) its tokens join the fusion directly, so the modality still counts.
- A missing product (``has_product`` False) is zeroed and its tokens are masked out of attention.
- ``descriptor_trees``: boosted trees over the raw descriptor (:mod:`rfnet.trees`), fitted by the
  trainer; in eval mode the logits are the network's mixed with theirs (:meth:`RFNet.mix_trees`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.labels import NUM_CLASSES
from rfnet.aux import (
    AuxExtractor,
    attached_descriptor,
    build_aux,
    continuity_descriptor,
    crop_around,
    find_product,
    grain_descriptor,
    integrity_descriptor,
    placement_map,
    product_descriptor,
    product_match_maps,
    scene_descriptor,
    support_descriptor,
    unit_lab,
)
from rfnet.backbones import build_backbone, input_normalization, save_backbone_config
from rfnet.config import RFNetConfig
from rfnet.encoders import CaptionBatch, CaptionEncoder
from rfnet.trees import TreeEnsemble, tree_logits

# Token types in the fusion sequence.
_CLS, _IMAGE, _PRODUCT, _DEPTH, _SALIENCY, _CAPTION, _LOCAL, _DESCRIPTOR = range(8)


class FeatureFilter(nn.Module):
    """FFM: ``product (B, g*g, D)`` attends to ``caption (B, L, D)``, gated by a conv branch, residual."""

    def __init__(self, dim: int, heads: int, grid: int):
        super().__init__()
        self.grid = grid
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.gate = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(dim, dim, 1),
            nn.Sigmoid(),
        )

    def forward(
        self, product: torch.Tensor, caption: torch.Tensor, caption_pad: torch.Tensor
    ) -> torch.Tensor:
        b, _, d = product.shape
        kv = self.norm_kv(caption)
        attended, _ = self.attn(
            self.norm_q(product), kv, kv, key_padding_mask=caption_pad, need_weights=False
        )
        grid = product.transpose(1, 2).reshape(b, d, self.grid, self.grid)
        gate = self.gate(grid).flatten(2).transpose(1, 2)
        return product + gate * attended


class TokenProjector(nn.Module):
    """Feature map ``(B, C, h, w)`` -> ``grid**2`` tokens ``(B, grid**2, dim)``."""

    def __init__(self, in_channels: int, dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.proj = nn.Conv2d(in_channels, dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(features)
        if x.shape[-2:] != (self.grid, self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)
        return x.flatten(2).transpose(1, 2)


class RFNet(nn.Module):
    """The inspector. Build with :func:`build_rfnet`; load trained weights with ``rfnet.checkpoint``."""

    def __init__(self, config: RFNetConfig, *, pretrained: bool = True, assets: str | None = None):
        super().__init__()
        self.config = config
        c = config
        g = c.token_grid
        # RGB is normalised as the backbone was pretrained; "compact" (from scratch) gets ImageNet's.
        mean, std = input_normalization(c.backbone)
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        def asset(name: str) -> str | None:  # a folder of a saved checkpoint (see save_assets)
            path = os.path.join(assets, name) if assets is not None else None
            return path if path is not None and os.path.isdir(path) else None

        def backbone(
            in_channels: int, widths: tuple[int, ...] | None = None, size: int = c.image_size
        ) -> nn.Module:
            return build_backbone(
                c.backbone,
                in_channels=in_channels,
                image_size=size,
                widths=widths or c.compact_widths,
                blocks=c.compact_blocks,
                source=c.backbone_source if pretrained else None,
                config_dir=None if pretrained else asset("backbone"),
            )

        self.image_encoder = backbone(c.image_channels)
        self.image_tokens = TokenProjector(self.image_encoder.out_channels, c.dim, g)
        n_types = 8
        self.descriptor: nn.Module | None = None
        self.descriptor_logits: nn.Linear | None = None
        if c.use_descriptor:
            n_desc = c.descriptor_size
            data_norm = c.descriptor_norm == "data"
            if data_norm:
                # Per-feature standardisation, set from the training set (set_descriptor_stats).
                self.register_buffer("descriptor_mean", torch.zeros(n_desc))
                self.register_buffer("descriptor_std", torch.ones(n_desc))
            self.descriptor = nn.Sequential(
                nn.Identity() if data_norm else nn.LayerNorm(n_desc),
                nn.Linear(n_desc, c.dim),
                nn.GELU(),
                nn.Linear(c.dim, c.dim),
            )
            if c.descriptor_logits:
                self.descriptor_logits = nn.Linear(n_desc, NUM_CLASSES)
                nn.init.zeros_(self.descriptor_logits.weight)
                nn.init.zeros_(self.descriptor_logits.bias)
            if c.descriptor_trees:
                # Boosted trees over the raw descriptor (rfnet.trees), set by set_trees. Their floats
                # are kept as int32 bit patterns so that casting the model to half precision cannot
                # move a threshold. tree_weight 0 (not fitted): the network's logits alone.
                n_trees, inner = c.descriptor_trees * NUM_CLASSES, 2**c.descriptor_tree_depth - 1
                self.register_buffer("tree_feature", torch.zeros(n_trees, inner, dtype=torch.int32))
                self.register_buffer("tree_threshold", torch.zeros(n_trees, inner, dtype=torch.int32))
                self.register_buffer("tree_leaf", torch.zeros(n_trees, inner + 1, dtype=torch.int32))
                self.register_buffer("tree_base", torch.zeros(NUM_CLASSES, dtype=torch.int32))
                self.register_buffer("tree_weight", torch.zeros(()))
        self.local_encoder: nn.Module | None = None
        if c.local_view:
            self.local_encoder = backbone(c.image_channels, c.local_widths, c.local_size)
            self.local_tokens = TokenProjector(self.local_encoder.out_channels, c.dim, g)

        self.depth: AuxExtractor | None = None
        self.saliency: AuxExtractor | None = None
        if c.use_depth:
            self.depth = build_aux(
                c.depth,
                size=c.depth_size,
                source=c.depth_source,
                pretrained=pretrained,
                config_dir=None if pretrained else asset("depth"),
            )
        if c.use_saliency:
            self.saliency = build_aux(c.saliency)
        # share_encoders: every image input goes through the generated-image encoder (3 channels).
        shared = c.share_encoders and c.image_channels == 3
        self.aux_encoders = nn.ModuleDict()
        self.aux_tokens = nn.ModuleDict()
        if c.aux_fusion == "tokens":
            for name, on in (("depth", c.use_depth), ("saliency", c.use_saliency)):
                if on:
                    if not shared:
                        self.aux_encoders[name] = backbone(1)
                    out = self.image_encoder.out_channels if shared else self.aux_encoders[name].out_channels
                    self.aux_tokens[name] = TokenProjector(out, c.dim, g)

        self.product_encoder: nn.Module | None = None
        if c.use_product:
            self.product_encoder = None if shared else backbone(4, c.product_widths, c.product_size)
            out = self.image_encoder.out_channels if shared else self.product_encoder.out_channels
            self.product_tokens = TokenProjector(out, c.dim, g)

        self.caption_encoder: CaptionEncoder | None = None
        if c.use_caption:
            self.caption_encoder = CaptionEncoder(
                c.caption_encoder,
                max_length=c.caption_max_length,
                source=c.caption_source,
                pretrained=pretrained,
                assets_dir=None if pretrained else asset("caption"),
                dropout=c.dropout,
            )
            self.caption_proj = nn.Linear(self.caption_encoder.out_channels, c.dim)
        self.ffm = (
            FeatureFilter(c.dim, c.fusion_heads, g)
            if (c.use_ffm and c.use_product and c.use_caption)
            else None
        )

        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.type_embed = nn.Embedding(n_types, c.dim)
        self.grid_pos = nn.Parameter(torch.zeros(1, g * g, c.dim))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.grid_pos, std=0.02)
        nn.init.normal_(self.type_embed.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            c.dim,
            c.fusion_heads,
            dim_feedforward=4 * c.dim,
            dropout=c.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = (
            nn.TransformerEncoder(layer, c.fusion_layers, enable_nested_tensor=False)
            if c.fusion_layers
            else None
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head_dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.dim, NUM_CLASSES)

    # ------------------------------------------------------------------------------------------
    def save_assets(self, directory: str) -> list[str]:
        """Write what rebuilding this network without its pretrained sources needs into local
        ``directory``: ``caption/`` (tokenizer + config), ``backbone/`` (the image backbone's
        config), ``depth/`` (the depth network's config), each only for a component loaded from a
        source. Returns the folders written."""
        written = []
        c = self.config
        if self.caption_encoder is not None and self.caption_encoder.save_assets(
            os.path.join(directory, "caption")
        ):
            written.append("caption")
        if c.backbone_source is not None:
            save_backbone_config(self.image_encoder, os.path.join(directory, "backbone"))
            written.append("backbone")
        if c.depth_source is not None and hasattr(self.depth, "network"):
            self.depth.network.config.save_pretrained(os.path.join(directory, "depth"))
            written.append("depth")
        return written

    def tokenize(self, captions: list[str]) -> CaptionBatch | None:
        """Token ids for ``captions`` (``None`` if the caption modality is off)."""
        if self.caption_encoder is None:
            return None
        return self.caption_encoder.tokenize(list(captions))

    def aux_maps(
        self,
        image: torch.Tensor,
        product: torch.Tensor | None,
        has_product: torch.Tensor | None,
        box: torch.Tensor | None = None,
    ) -> dict:
        """What is computed from the image (and product) before the encoders.

        ``depth`` / ``saliency`` ``(B, 1, S, S)``, ``match`` ``(B, 2, S, S)``, ``placement``
        ``(B, 1, S, S)`` (all in [0, 1]), ``box`` ``(B, 4)`` (the located product, x0 y0 x1 y1
        as fractions of the side) and ``box_error`` ``(B,)``, each only if its switch is on.
        ``box``: where the product is where that is known (see :func:`rfnet.aux.find_product`).
        """
        maps = {}
        if self.depth is not None:
            maps["depth"] = self.depth(image)
        if self.saliency is not None:
            maps["saliency"] = self.saliency(image)
        if self.config.use_product_match:
            maps["match"] = product_match_maps(image, product, has_product, bins=self.config.match_bins)
        if self.config.use_placement:
            box, error = find_product(image, product, has_product, box)
            maps["box"] = box
            maps["box_error"] = error
            maps["placement"] = placement_map(product, box, image.shape[-1]) * has_product.view(
                -1, 1, 1, 1
            ).to(image.dtype)
        return maps

    def _fit(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(
        self,
        image: torch.Tensor,
        product: torch.Tensor | None = None,
        has_product: torch.Tensor | None = None,
        captions: CaptionBatch | None = None,
        *,
        aux_grad: bool = False,
        maps: dict[str, torch.Tensor] | None = None,
        box: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(B, 6)``.

        ``image (B, 3, H, W)`` in [0, 1] (resized to ``image_size`` if needed); ``product
        (B, 4, P, P)`` RGBA in [0, 1], canonicalised (``rfnet.data.transforms.canonical_product``),
        resized to ``product_size`` if needed; ``has_product (B,)`` bool (default: alpha not all 0);
        ``captions`` from :meth:`tokenize`. Inputs of switched-off modalities are ignored (may be
        None). ``aux_grad=False`` computes the depth / saliency / match maps without gradient.
        ``maps``: those maps precomputed by :meth:`aux_maps` (the trainer computes them once per
        example instead of once per epoch); None computes them here. ``box (B, 4)``: the product's
        placement where known (NaN rows: searched; :func:`rfnet.aux.find_product`).

        With ``descriptor_trees``, the network's and the trees' scores are combined by
        :meth:`mix_trees` (rows without a product: the network's alone). In training mode the trees
        are fixed: ``descriptor_tree_mix="mixture"`` returns the network's logits alone, ``"offset"``
        the network's plus the trees' (``maps["tree_logits"]``, out-of-fold scores, when given).
        """
        net, trees, has_product = self.logit_parts(
            image, product, has_product, captions, aux_grad=aux_grad, maps=maps, box=box
        )
        if trees is None:
            return net
        if self.training:
            if self.config.descriptor_tree_mix == "offset":
                return net + trees.to(net.dtype) * has_product.to(net.dtype).view(-1, 1)
            return net
        return self.mix_trees(net, trees, has_product, self.tree_weight)

    def mix_trees(
        self, net: torch.Tensor, trees: torch.Tensor, has_product: torch.Tensor, weight: torch.Tensor | float
    ) -> torch.Tensor:
        """The logits of rows with a product, by ``descriptor_tree_mix``: ``"mixture"``,
        ``(1 - weight) * log_softmax(net) + weight * log_softmax(trees)`` (a weighted geometric mean
        of the two distributions); ``"offset"``, ``net + weight * trees``. Rows without a product:
        ``net``. Returned as log-probabilities."""
        net = net.float()
        weight = torch.as_tensor(weight, dtype=net.dtype, device=net.device)
        if self.config.descriptor_tree_mix == "offset":
            mixed = F.log_softmax(net + weight * trees.float(), dim=1)
        else:
            mixed = (1 - weight) * F.log_softmax(net, dim=1) + weight * F.log_softmax(trees.float(), dim=1)
        return torch.where(has_product.view(-1, 1), mixed, F.log_softmax(net, dim=1))

    def tree_logits(self, raw_descriptor: torch.Tensor) -> torch.Tensor:
        """The boosted trees' ``(B, 6)`` class scores of raw descriptors (``descriptor_trees`` > 0)."""
        return tree_logits(
            raw_descriptor,
            self.tree_feature,
            self.tree_threshold.view(torch.float32),
            self.tree_leaf.view(torch.float32),
            self.tree_base.view(torch.float32),
        )

    def set_trees(self, trees: TreeEnsemble) -> None:
        """Install fitted trees (:func:`rfnet.trees.fit_trees` on raw descriptors); shapes must match
        ``descriptor_trees`` and ``descriptor_tree_depth``. Their weight is set by the caller."""
        for name, value in (
            ("tree_feature", trees.feature.to(torch.int32)),
            ("tree_threshold", trees.threshold.float().contiguous().view(torch.int32)),
            ("tree_leaf", trees.leaf.float().contiguous().view(torch.int32)),
            ("tree_base", trees.base.float().contiguous().view(torch.int32)),
        ):
            buffer = getattr(self, name)
            if buffer.shape != value.shape:
                raise ValueError(
                    f"{name}: fitted trees have shape {tuple(value.shape)}, the model {tuple(buffer.shape)}"
                )
            buffer.copy_(value.to(buffer.device))

    def logit_parts(
        self,
        image: torch.Tensor,
        product: torch.Tensor | None = None,
        has_product: torch.Tensor | None = None,
        captions: CaptionBatch | None = None,
        *,
        aux_grad: bool = False,
        maps: dict[str, torch.Tensor] | None = None,
        box: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(network logits, tree logits or None, has_product or None)``; arguments as :meth:`forward`."""
        c = self.config
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W) in [0, 1], got shape {tuple(image.shape)}")
        b = image.shape[0]
        image = self._fit(image, c.image_size)
        if c.use_product:
            if product is None:
                product = image.new_zeros(b, 4, c.product_size, c.product_size)
                has_product = torch.zeros(b, dtype=torch.bool, device=image.device)
            if product.ndim != 4 or product.shape[1] != 4 or product.shape[0] != b:
                raise ValueError(
                    f"product must be (B={b}, 4, P, P) RGBA in [0, 1], got shape {tuple(product.shape)}"
                )
            product = self._fit(product.to(image.dtype), c.product_size)
            if has_product is None:
                has_product = product[:, 3].flatten(1).amax(dim=1) > 0
            has_product = has_product.to(device=image.device, dtype=torch.bool)
            # An absent product is zeros whatever was passed.
            product = product * has_product.to(product.dtype).view(-1, 1, 1, 1)
        if c.use_caption and captions is None:
            raise ValueError("the caption modality is on: pass captions=model.tokenize(list_of_strings)")

        if maps is None:
            with torch.set_grad_enabled(aux_grad and torch.is_grad_enabled()):
                maps = self.aux_maps(image, product, has_product, box)
        if product is not None:
            # RGB premultiplied by alpha, so the colour of transparent pixels (undefined in a cut-out)
            # cannot matter to the encoder.
            product = torch.cat([product[:, :3] * product[:, 3:4], product[:, 3:4]], dim=1)
        rgb = (image - self.rgb_mean.to(image.dtype)) / self.rgb_std.to(image.dtype)

        def as_input(m: torch.Tensor) -> torch.Tensor:  # [0, 1] map -> roughly zero-mean, unit scale
            return (m.to(image.dtype) - 0.5) / 0.25

        # A pretrained backbone reads a map as a grey image in its own normalisation (its stem for
        # one channel sums the RGB filters: rfnet.backbones.stem) and the product's RGB as RGB.
        pretrained_arch = c.backbone != "compact"

        def as_grey(m: torch.Tensor) -> torch.Tensor:
            return (m.to(image.dtype) - self.rgb_mean.mean().to(image.dtype)) / self.rgb_std.mean().to(
                image.dtype
            )

        # Maps are read by the config's switches, never by what happens to be passed in `maps`.
        channels = [rgb]
        if c.aux_fusion == "channels":
            channels += [as_input(maps[k]) for k in ("depth", "saliency") if getattr(c, f"use_{k}")]
        if c.use_product_match:
            channels.append(as_input(maps["match"]))
        if c.use_placement:
            channels.append(as_input(maps["placement"]))
        x = torch.cat(channels, dim=1) if len(channels) > 1 else rgb

        tokens = [self.cls_token.expand(b, -1, -1).to(x.dtype)]
        types = [_CLS]
        pads = [torch.zeros(b, 1, dtype=torch.bool, device=x.device)]
        n_grid = c.token_grid**2

        def add(t: torch.Tensor, kind: int, pad: torch.Tensor | None = None) -> None:
            tokens.append(t)
            types.append(kind)
            pads.append(
                pad if pad is not None else torch.zeros(b, t.shape[1], dtype=torch.bool, device=x.device)
            )

        x_global = x
        if c.global_size is not None and c.global_size != x.shape[-1]:
            x_global = F.interpolate(
                x, size=(c.global_size, c.global_size), mode="bilinear", antialias=True, align_corners=False
            )
        add(self.image_tokens(self.image_encoder(x_global)) + self.grid_pos, _IMAGE)
        if self.local_encoder is not None:
            local = crop_around(x, maps["box"], c.local_size, c.local_context)
            add(self.local_tokens(self.local_encoder(local)) + self.grid_pos, _LOCAL)
        desc = raw = None
        if self.descriptor is not None:
            raw = maps.get("descriptor")
            if raw is None:
                raw = self.raw_descriptor(image, maps)
            desc = self.normalise_descriptor(raw)
            add(self.descriptor(desc).unsqueeze(1), _DESCRIPTOR, (~has_product).view(-1, 1))
        for name, kind in (("depth", _DEPTH), ("saliency", _SALIENCY)):
            if name in self.aux_tokens:
                m = as_grey(maps[name]) if pretrained_arch else as_input(maps[name])
                shared = name not in self.aux_encoders
                encoder = self.image_encoder if shared else self.aux_encoders[name]
                if shared:
                    m = m.expand(-1, 3, -1, -1)
                add(self.aux_tokens[name](encoder(m)) + self.grid_pos, kind)

        caption_tokens = caption_pad = None
        if self.caption_encoder is not None:
            caption_tokens = self.caption_proj(self.caption_encoder(captions.to(x.device)))
            caption_pad = captions.attention_mask.to(x.device) == 0
        if c.use_product:
            if pretrained_arch:  # premultiplied RGB (black where transparent) as RGB, alpha as a map
                p_rgb = (product[:, :3] - self.rgb_mean.to(product.dtype)) / self.rgb_std.to(product.dtype)
                p_in = torch.cat([p_rgb, as_input(product[:, 3:4])], dim=1)
            else:
                p_in = as_input(product)
            if self.product_encoder is None:
                # Shared encoder: the product composited on mid-grey, as RGB.
                p_rgb = product[:, :3] + 0.5 * (1 - product[:, 3:4])
                p_in = (p_rgb - self.rgb_mean.to(p_rgb.dtype)) / self.rgb_std.to(p_rgb.dtype)
                encoder = self.image_encoder
            else:
                encoder = self.product_encoder
            p_tok = self.product_tokens(encoder(p_in)) + self.grid_pos
            if self.ffm is not None:
                p_tok = self.ffm(p_tok, caption_tokens, caption_pad)
            add(p_tok, _PRODUCT, (~has_product).view(-1, 1).expand(-1, n_grid))
        if caption_tokens is not None and self.ffm is None:
            add(caption_tokens, _CAPTION, caption_pad)

        seq = torch.cat(tokens, dim=1)
        type_ids = torch.cat(
            [
                torch.full((t.shape[1],), k, dtype=torch.long, device=x.device)
                for t, k in zip(tokens, types, strict=True)
            ]
        )
        seq = seq + self.type_embed(type_ids).unsqueeze(0).to(seq.dtype)
        pad = torch.cat(pads, dim=1)
        if self.fusion is not None:
            seq = self.fusion(seq, src_key_padding_mask=pad)
        cls = self.norm(seq[:, 0])
        logits = self.head(self.head_dropout(cls))
        if self.descriptor_logits is not None:
            logits = logits + self.descriptor_logits(desc) * has_product.to(logits.dtype).view(-1, 1)
        trees = None
        if c.descriptor_trees:
            trees = maps.get("tree_logits")
            trees = self.tree_logits(raw) if trees is None else trees
        return logits, trees, has_product

    def normalise_descriptor(self, raw: torch.Tensor) -> torch.Tensor:
        """The raw product descriptor (:meth:`raw_descriptor`) as the network reads it: standardised
        with the training set's statistics and clipped to +-5 when ``descriptor_norm="data"``, as is
        otherwise (the descriptor MLP starts with a LayerNorm)."""
        if self.config.descriptor_norm == "data":
            return ((raw - self.descriptor_mean.to(raw.dtype)) / self.descriptor_std.to(raw.dtype)).clamp(
                -5.0, 5.0
            )
        return raw

    def raw_descriptor(self, image: torch.Tensor, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unnormalised descriptor ``(B, config.descriptor_size)`` of ``image`` (at ``image_size``)
        from its ``maps`` (placement, match, box): :func:`rfnet.aux.product_descriptor`, then
        :func:`rfnet.aux.scene_descriptor` if ``descriptor_scene``,
        :func:`rfnet.aux.integrity_descriptor` if ``descriptor_integrity``,
        :func:`rfnet.aux.support_descriptor` if ``descriptor_support``,
        :func:`rfnet.aux.attached_descriptor` if ``descriptor_attached`` and
        :func:`rfnet.aux.grain_descriptor` if ``descriptor_grain``."""
        lab = unit_lab(image)  # every part reads it: convert once
        placement, box = maps["placement"], maps["box"]
        parts = [product_descriptor(image, placement, maps["match"], box, maps.get("box_error"), lab=lab)]
        if self.config.descriptor_scene:
            parts.append(scene_descriptor(image, placement, maps["match"], box, lab=lab))
        if self.config.descriptor_integrity:
            parts.append(integrity_descriptor(image, placement))
        if self.config.descriptor_support:
            parts.append(support_descriptor(image, box, lab=lab))
        if self.config.descriptor_attached:
            parts.append(attached_descriptor(image, placement, box, lab=lab))
        if self.config.descriptor_grain:
            parts.append(grain_descriptor(image, placement, box, lab=lab))
        if self.config.descriptor_continuity:
            parts.append(continuity_descriptor(image, placement, box, lab=lab))
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def set_descriptor_stats(self, raw: torch.Tensor) -> None:
        """Set the descriptor standardisation from raw descriptors ``(N, config.descriptor_size)`` of
        training examples with a product (no-op unless ``descriptor_norm="data"``)."""
        if not (self.config.use_descriptor and self.config.descriptor_norm == "data") or not len(raw):
            return
        raw = raw.double()
        self.descriptor_mean.copy_(raw.mean(dim=0).float())
        self.descriptor_std.copy_(raw.std(dim=0, unbiased=False).clamp(min=1e-4).float())


def build_rfnet(
    config: RFNetConfig,
    *,
    pretrained: bool = True,
    seed: int | None = None,
    assets: str | None = None,
) -> RFNet:
    """A new RFNet. ``seed`` makes the random init identical in every process (without touching the
    global RNG); ``pretrained=False`` skips fetching pretrained weights (a checkpoint supplies them),
    building the pretrained components' architectures from ``assets`` (a checkpoint directory with
    the folders :meth:`RFNet.save_assets` writes) where it has them.
    """
    if seed is None:
        return RFNet(config, pretrained=pretrained, assets=assets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RFNet(config, pretrained=pretrained, assets=assets)
