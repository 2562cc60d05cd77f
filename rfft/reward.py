"""The RFFT reward: RFNet's probability that a generated image is *Available*.

A thin wrapper over :class:`rfnet.scorer.RFNetScorer`, the same scorer the generation pipeline
inspects with (one scorer contract). The scorer is frozen (no parameter takes gradient) but
differentiable with respect to the image, so the feedback loss F_AC = -mean log p(Available) sends
gradient back through the image into the sampler.

Depth and saliency maps: RFNet computes them from the generated image inside ``predict_proba``. RFFT
recomputes them for every graded image (they must describe the image being scored) but, by default,
*without* gradient (``loss.aux_grad=False``): the maps enter RFNet as constants and gradient reaches
the image only through RFNet's image branch. Reasons: (1) letting the reward push pixels through a
depth or saliency network invites adversarial changes that move those estimators rather than the
scene (the same reward hacking the guards watch for); (2) a depth network's backward pass at 512 px
adds memory to the largest step of training. The paper does not say which it does.
``loss.aux_grad=True`` enables the gradient for ablation.

Placement: RFFT draws the product on the image's canvas, so where it is in the scored image is
known (its alpha bounding box, :func:`rfnet.aux.alpha_box`) and passed to the scorer, which then
does not search for it (the search is not differentiable anyway).
"""

from __future__ import annotations

import torch

from rfnet.aux import alpha_box

AVAILABLE = 0  # column of p(Available) in the scorer's (B, 6) output (pipelines.labels.LABELS[0])


class AvailabilityReward:
    """``p_available(image, product, caption) -> (B,)``; ``threshold`` is the scorer's accept threshold."""

    def __init__(self, scorer, *, aux_grad: bool = False):
        self.scorer = scorer
        self.aux_grad = aux_grad

    @classmethod
    def load(
        cls, source: str, *, device: str = "auto", dtype: str = "auto", aux_grad: bool = False
    ) -> AvailabilityReward:
        """Load the scorer from an RFNet source (``"tiny"``, a checkpoint dir or an ``s3://`` prefix)."""
        from rfnet.scorer import RFNetScorer

        return cls(RFNetScorer(source, device=device, dtype=dtype), aux_grad=aux_grad)

    @property
    def threshold(self) -> float:
        return float(self.scorer.threshold)

    def probabilities(
        self, image: torch.Tensor, product: torch.Tensor | None, caption: list[str]
    ) -> torch.Tensor:
        """All six class probabilities ``(B, 6)`` (differentiable w.r.t. ``image``). A ``product`` on
        the image's canvas (the same H and W) gives the scorer its placement."""
        box = None
        if product is not None and product.shape[-2:] == image.shape[-2:]:
            box = alpha_box(product.detach())
        return self.scorer.predict_proba(image, product, caption, aux_grad=self.aux_grad, box=box)

    def p_available(
        self, image: torch.Tensor, product: torch.Tensor | None, caption: list[str]
    ) -> torch.Tensor:
        """``(B,)`` p(Available) for ``image`` ``(B, 3, H, W)`` in [0, 1] and ``product`` ``(B, 4, H, W)`` RGBA."""
        return self.probabilities(image, product, caption)[:, AVAILABLE].float()
