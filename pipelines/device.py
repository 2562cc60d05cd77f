"""Device and dtype policy: the one place that decides where models run and in what precision.

Every stage, trainer and benchmark asks :func:`resolve_device` / :func:`resolve_dtype` instead of
hard-coding ``"cuda"`` or ``torch.float16``; the decision and its reason are logged once per process.

Policy (``dtype="auto"``):
- CUDA with bf16 support (Ampere and newer): ``bfloat16`` for frozen / inference models. bf16 has
  fp32's exponent range, so SD1.5's VAE and attention do not overflow the way they can in fp16, and
  Hopper runs it at the same speed as fp16.
- Older CUDA GPUs: ``float16``.
- CPU / MPS: ``float32``. CPU half-precision convolutions are slower than fp32 and lose accuracy.
Trainable weights always stay ``float32`` (see :func:`trainable_dtype`); autocast handles compute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    """Where a model runs and in which precision, with the reason (for logs and run.json)."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    def describe(self) -> dict[str, str]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "reason": self.reason,
        }


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device Ray (or the user) made visible, else MPS, else CPU."""
    if device != "auto":
        resolved = torch.device(device)
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this machine; "
                "use device='auto' or 'cpu'."
            )
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> tuple[torch.dtype, str]:
    """Return the compute dtype for frozen/inference models on ``device`` and why it was chosen."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; choose one of {['auto', *DTYPES]}.")
        chosen = DTYPES[dtype]
        if device.type == "cpu" and chosen is torch.float16:
            raise ValueError(
                "dtype='float16' on CPU is not supported (many CPU kernels lack fp16); "
                "use 'float32' or 'bfloat16'."
            )
        return chosen, f"dtype={dtype} set in config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: CUDA device supports bf16 (fp32 range, no fp16 overflow)"
        return torch.float16, "auto: CUDA device without bf16 support"
    return torch.float32, f"auto: {device.type} has no fast half-precision kernels"


def place(device: str = "auto", dtype: str = "auto", *, component: str = "model") -> Placement:
    """Decide device and dtype for ``component`` and log the decision once per process."""
    dev = resolve_device(device)
    dt, reason = resolve_dtype(dtype, dev)
    placement = Placement(dev, dt, reason)
    _log_once(component, str(dev), str(dt), reason)
    return placement


@lru_cache(maxsize=64)
def _log_once(component: str, device: str, dtype: str, reason: str) -> None:
    logger.info("%s runs on %s in %s (%s)", component, device, dtype.removeprefix("torch."), reason)


def trainable_dtype() -> torch.dtype:
    """Trainable (master) weights are kept in fp32 whatever the compute dtype."""
    return torch.float32


def autocast(placement: Placement):
    """Autocast context for mixed-precision compute on ``placement`` (a no-op in fp32)."""
    enabled = placement.dtype in (torch.float16, torch.bfloat16)
    return torch.autocast(device_type=placement.device.type, dtype=placement.dtype, enabled=enabled)
