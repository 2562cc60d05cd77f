"""Pretrained weights for inputs that are not RGB, and pretrained BatchNorm statistics kept while fine-tuning.

Every RFNet encoder may start from ImageNet weights, whatever its number of input channels: the
generated image alone (3), a depth or saliency map (1), the RGBA product (4), or RGB with stacked
maps (``aux_fusion="channels"``: 3 + depth + saliency + 2 match maps + placement = 8).
:func:`adapt_stem_weight` maps the pretrained first layer's ``(O, 3, k, k)`` weight (a CNN's stem
convolution or a ViT's patch embedding, which is a convolution too) to ``(O, N, k, k)``:

- ``N = 3``: unchanged.
- ``N < 3`` (a map): every channel gets the sum of the RGB filters divided by ``N`` (for one
  channel: 3 x their mean), so a grey input, the same value in every channel, gives exactly the
  response the RGB stem gives to that grey in R, G and B. The encoders are fed each map as a grey
  image in the backbone's own normalisation (:func:`rfnet.backbones.input_normalization`).
- ``N > 3``: the RGB filters for the first three channels, zeros for the rest. The network starts
  as exactly its pretrained function of the RGB channels; the extra channels' filters are learned
  from there (their gradient is not zero: their inputs are not).

:class:`FrozenBatchNorm2d` / :func:`freeze_batchnorm`: a backbone loaded from pretrained weights
normalises with the statistics it was pretrained with, in training as in evaluation, and learns
only the affine scale and shift. Batch statistics of the 8-32 images a CPU step or a DDP worker
sees would be noisy, would differ between workers, and would drift from what the later layers were
trained on; GroupNorm is no option (the weights were trained with BatchNorm). A backbone built
without pretrained weights keeps ordinary BatchNorm (from scratch there are no statistics to keep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A pretrained RGB first-layer weight ``(O, 3, ...)`` for ``in_channels`` inputs (rules above)."""
    if weight.ndim < 3 or weight.shape[1] != 3:
        raise ValueError(
            f"expected a pretrained RGB stem weight (O, 3, ...), got shape {tuple(weight.shape)}"
        )
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 3:
        return weight.clone()
    if in_channels < 3:
        summed = weight.sum(dim=1, keepdim=True) / in_channels
        return summed.repeat(1, in_channels, *([1] * (weight.ndim - 2)))
    extra = weight.new_zeros(weight.shape[0], in_channels - 3, *weight.shape[2:])
    return torch.cat([weight, extra], dim=1)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them.

    Same parameters and buffers as ``nn.BatchNorm2d`` (checkpoints are interchangeable); the
    affine ``weight`` and ``bias`` stay trainable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a :class:`FrozenBatchNorm2d` with the
    same state (in place; returns ``module``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
            frozen = FrozenBatchNorm2d(
                child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine
            )
            frozen.load_state_dict(child.state_dict())
            frozen.to(device=child.running_mean.device, dtype=child.running_mean.dtype)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
