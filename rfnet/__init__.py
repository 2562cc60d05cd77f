"""RFNet, the multimodal inspector of generated advertising images (Du et al., ECCV 2024).

Public API (imported lazily, so ``import rfnet`` stays cheap for the data readers)::

    from rfnet import RFNetConfig, load_rfnet, save_rfnet, RFNetScorer, ScoreStage

- :mod:`rfnet.config`: ``RFNetConfig`` (architecture, presets ``tiny``/``small``/``paper``) and the
  training / evaluation job configs.
- :mod:`rfnet.model`: the network; :mod:`rfnet.encoders`, :mod:`rfnet.aux`, :mod:`rfnet.trees`: its parts.
- :mod:`rfnet.checkpoint`: ``save_rfnet`` / ``load_rfnet`` (safetensors + JSON, never pickle).
- :mod:`rfnet.scorer`: ``RFNetScorer`` (the scoring contract shared with RFFT) and ``ScoreStage``
  (the Ray Data stage of the generation pipeline).
- :mod:`rfnet.train` (Ray Train), :mod:`rfnet.evaluate`, :mod:`rfnet.metrics`.
- :mod:`rfnet.data`: readers, splits, the synthetic defect set (the six classes are
  :mod:`pipelines.labels`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RFNetConfig": "rfnet.config",
    "RFNet": "rfnet.model",
    "build_rfnet": "rfnet.model",
    "LoadedRFNet": "rfnet.checkpoint",
    "load_rfnet": "rfnet.checkpoint",
    "save_rfnet": "rfnet.checkpoint",
    "RFNetScorer": "rfnet.scorer",
    "ScoreStage": "rfnet.scorer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rfnet' has no attribute {name!r}")
