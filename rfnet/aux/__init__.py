"""Auxiliary maps of the generated image (depth, saliency) behind one interface, chosen by name.

Every extractor is an ``nn.Module`` mapping ``image (B, 3, H, W)`` in [0, 1] to a map
``(B, 1, H, W)`` in [0, 1] (per image min-max normalised, so only the relative layout counts). All
of them are written in torch and differentiable, so RFFT can choose to let its reward gradient flow
through them (``aux_grad``). Networks are frozen: they stay in eval mode and never receive
gradients for their own weights.

Depth (``RFNetConfig.depth``):

- ``depth_anything``: Depth Anything (Yang et al. 2024; ViT-S/14 DINOv2 + DPT head, 25M
  parameters) through ``transformers.DepthAnythingForDepthEstimation``. Random init unless
  ``depth_source`` names weights (e.g. a local mirror of ``depth-anything/Depth-Anything-V2-Small-hf``).
- ``dpt``: DPT (Ranftl et al. 2021) with a ViT-B/16 backbone, ``transformers.DPTForDepthEstimation``.
- ``tiny_depth_anything``: the Depth Anything architecture at a few thousand parameters (tests).
- ``defocus``: a classical, weight-free fallback: relative depth from defocus blur, after Zhuo & Sim
  (2011, "Defocus map estimation from a single image"): re-blur the image with a known Gaussian, the
  ratio of gradient magnitudes at edges gives the local blur scale, spread to the whole image by a
  normalised Gaussian convolution (instead of the paper's matting Laplacian, which needs a sparse
  solver). Advertising photos focus on the product, so blur grows with distance from the focal
  plane: a usable depth cue at ~0.3 ms per 128 px image on a CPU.

Saliency (``RFNetConfig.saliency``):

- ``spectral_residual`` (default; Hou & Zhang 2007, "Saliency detection: a spectral residual
  approach"): the log amplitude spectrum minus its local average marks what is unexpected in the
  image; with the phase kept, the inverse FFT highlights it. Chosen because it is training-free,
  needs no weights to ship, is differentiable (``torch.fft``), costs well under a millisecond per
  image, and responds to exactly what RFNet needs to see: whether the product stands out from the
  scene (Indistinctiveness) and whether the scene grows extra salient structure (Shape
  Hallucination).
- ``frequency_tuned`` (Achanta et al. 2009): distance of each blurred Lab pixel from the image's
  mean Lab colour. Also training-free; full-resolution, favours large uniformly coloured objects.

The package by responsibility: :mod:`rfnet.aux.maps` (the extractors above, :func:`build_aux`),
:mod:`rfnet.aux.search` (where the product is: :func:`locate_product`, the placement mask, the
product/image match maps RFNet adds beyond the paper), the descriptors of the located product in
its scene (:mod:`rfnet.aux.product`, :mod:`rfnet.aux.scene`, :mod:`rfnet.aux.integrity`), and the
primitives they share (:mod:`rfnet.aux.imageops`, :mod:`rfnet.aux.measure`).
"""

from rfnet.aux.imageops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    gaussian_blur,
    gaussian_kernel1d,
    normalize_map,
    to_gray,
    unit_lab,
)
from rfnet.aux.integrity import (
    INTEGRITY_DESCRIPTOR_SIZE,
    integrity_descriptor,
)
from rfnet.aux.maps import (
    DEPTH_EXTRACTORS,
    SALIENCY_EXTRACTORS,
    AuxExtractor,
    DefocusDepth,
    FrequencyTunedSaliency,
    NetworkDepth,
    SpectralResidualSaliency,
    build_aux,
)
from rfnet.aux.product import (
    ATTACHED_DESCRIPTOR_SIZE,
    ATTACHED_TOLERANCES,
    DESCRIPTOR_SIZE,
    SUPPORT_DEPTHS,
    SUPPORT_DESCRIPTOR_SIZE,
    SUPPORT_TOLERANCES,
    attached_descriptor,
    product_descriptor,
    support_descriptor,
)
from rfnet.aux.scene import (
    CONTINUITY_DESCRIPTOR_SIZE,
    CONTINUITY_QUANTILES,
    CONTINUITY_TOLERANCES,
    GRAIN_DESCRIPTOR_SIZE,
    GRAIN_SIGMAS,
    SCENE_DESCRIPTOR_SIZE,
    continuity_descriptor,
    grain_descriptor,
    scene_descriptor,
)
from rfnet.aux.search import (
    COARSE_VARIANCE_FLOOR,
    POOR_SEARCH_ERROR,
    POOR_SEARCH_WARN_SHARE,
    alpha_box,
    crop_around,
    find_product,
    locate_product,
    placement_error,
    placement_map,
    product_match_maps,
    search_report,
    search_warning,
)

__all__ = [
    "ATTACHED_DESCRIPTOR_SIZE",
    "ATTACHED_TOLERANCES",
    "COARSE_VARIANCE_FLOOR",
    "CONTINUITY_DESCRIPTOR_SIZE",
    "CONTINUITY_QUANTILES",
    "CONTINUITY_TOLERANCES",
    "DEPTH_EXTRACTORS",
    "DESCRIPTOR_SIZE",
    "GRAIN_DESCRIPTOR_SIZE",
    "GRAIN_SIGMAS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTEGRITY_DESCRIPTOR_SIZE",
    "POOR_SEARCH_ERROR",
    "POOR_SEARCH_WARN_SHARE",
    "SALIENCY_EXTRACTORS",
    "SCENE_DESCRIPTOR_SIZE",
    "SUPPORT_DEPTHS",
    "SUPPORT_DESCRIPTOR_SIZE",
    "SUPPORT_TOLERANCES",
    "AuxExtractor",
    "DefocusDepth",
    "FrequencyTunedSaliency",
    "NetworkDepth",
    "SpectralResidualSaliency",
    "alpha_box",
    "attached_descriptor",
    "build_aux",
    "continuity_descriptor",
    "crop_around",
    "find_product",
    "gaussian_blur",
    "gaussian_kernel1d",
    "grain_descriptor",
    "integrity_descriptor",
    "locate_product",
    "normalize_map",
    "placement_error",
    "placement_map",
    "product_descriptor",
    "product_match_maps",
    "scene_descriptor",
    "search_report",
    "search_warning",
    "support_descriptor",
    "to_gray",
    "unit_lab",
]
