"""Saving and loading RFNet: safetensors weights + JSON config and meta. Nothing is unpickled.

A checkpoint directory (local or ``s3://``) holds:

- ``model.safetensors``: every weight (frozen depth networks included, so a checkpoint is
  self-contained and loads without network access);
- ``config.json``: the :class:`rfnet.config.RFNetConfig`;
- ``meta.json``: labels, the accept ``threshold`` (written by ``reliable-ad evaluate
  --write-threshold``; absent = 0.5), the train/val split parameters, training metrics, versions;
- ``caption/``, ``backbone/``, ``depth/``: what rebuilding the network without its pretrained
  sources needs (tokenizer files and configs; :meth:`rfnet.model.RFNet.save_assets`), only for
  components loaded from ``caption_source`` / ``backbone_source`` / ``depth_source``.

Sources for :func:`load_rfnet`: a checkpoint directory, an ``s3://`` prefix (mirrored once into the
local cache by :func:`pipelines.models.fetch_s3_prefix`), ``"tiny"`` (the tiny preset with seeded
random weights, identical in every process), ``"random:<preset>"`` (``random:small``,
``random:paper``: seeded random weights at a preset's size, for benchmarks and plumbing), or
``"builtin:<name>"``: a checkpoint shipped inside the package under ``rfnet/weights/<name>/``
(``builtin:small``, the ``small`` architecture trained on the synthetic defect set; see
:mod:`rfnet.pretrain`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from pipelines import models as pipeline_models
from pipelines import storage
from pipelines.config import load_config
from pipelines.device import Placement, place
from pipelines.labels import LABELS
from rfnet.config import RFNetConfig
from rfnet.model import RFNet, build_rfnet

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
META = "meta.json"
DEFAULT_THRESHOLD = 0.5
RANDOM_SEED = 0  # seed of "tiny" / "random:<preset>" weights
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent / "weights"  # builtin:<name> -> BUILTIN_DIR / <name>


@dataclass
class LoadedRFNet:
    """A ready-to-run RFNet: ``model`` (eval mode, frozen), its ``config``, accept ``threshold`` on
    ``p_available`` and ``meta`` (meta.json), placed on ``placement``."""

    model: RFNet
    config: RFNetConfig
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    placement: Placement | None = None
    source: str = ""


def state_dict_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the weights (safetensors refuses views and shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_rfnet(model: RFNet, config: RFNetConfig, out_dir: str, meta: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors``, ``config.json``, ``meta.json`` (and :meth:`RFNet.save_assets`' folders) to ``out_dir``.

    ``meta`` is stored as given, with ``labels`` added; each file is written atomically. Weights are
    written first and meta last, so a reader that sees the new meta also sees the new weights.
    """
    if not isinstance(config, RFNetConfig):
        raise TypeError(f"config must be an RFNetConfig, got {type(config).__name__}")
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    storage.write_bytes(storage.join(out_dir, WEIGHTS), save_safetensors_bytes(state_dict_tensors(module)))
    storage.write_text(storage.join(out_dir, CONFIG), json.dumps(config.to_dict(), indent=2, sort_keys=True))
    with tempfile.TemporaryDirectory() as tmp:
        module.save_assets(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                storage.write_bytes(
                    storage.join(out_dir, path.relative_to(tmp).as_posix()), path.read_bytes()
                )
    full_meta = {"labels": list(LABELS), **(meta or {})}
    storage.write_text(
        storage.join(out_dir, META), json.dumps(full_meta, indent=2, sort_keys=True, default=str)
    )


def read_meta(source_dir: str) -> dict[str, Any]:
    """``meta.json`` of a checkpoint directory (``{}`` if it has none)."""
    uri = storage.join(source_dir, META)
    if not storage.exists(uri):
        return {}
    return json.loads(storage.read_bytes(uri).decode("utf-8"))


def update_meta(source_dir: str, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into a checkpoint's ``meta.json`` (atomic rewrite); returns the new meta."""
    if not storage.exists(storage.join(source_dir, WEIGHTS)):
        raise FileNotFoundError(f"{source_dir!r} is not an RFNet checkpoint directory (no {WEIGHTS})")
    meta = {**read_meta(source_dir), **values}
    storage.write_text(
        storage.join(source_dir, META), json.dumps(meta, indent=2, sort_keys=True, default=str)
    )
    return meta


def _random_preset(source: str) -> str | None:
    if source == "tiny":
        return "tiny"
    if source.startswith(pipeline_models.RANDOM_PREFIX):
        preset = source.removeprefix(pipeline_models.RANDOM_PREFIX)
        if preset not in RFNetConfig.PRESETS:
            raise ValueError(
                f"unknown RFNet preset in {source!r}; choose one of {sorted(RFNetConfig.PRESETS)}"
            )
        return preset
    return None


def builtin_names() -> list[str]:
    """Names of the checkpoints shipped with the package (``builtin:<name>``)."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / WEIGHTS).is_file() and (p / CONFIG).is_file())


def resolve_checkpoint_dir(source: str) -> str:
    """Local directory of a checkpoint source (s3:// prefixes are fetched into the cache)."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        if name not in builtin_names():
            raise FileNotFoundError(
                f"no built-in RFNet checkpoint {name!r}; shipped: {builtin_names() or 'none'} "
                f"(under {BUILTIN_DIR})"
            )
        return str(BUILTIN_DIR / name)
    if source.startswith("s3://"):
        return str(pipeline_models.fetch_s3_prefix(source.rstrip("/")))
    if "://" in source and not source.startswith("file://"):
        raise ValueError(
            f"RFNet source {source!r} has an unsupported scheme; use a directory, s3://, 'builtin:<name>' "
            "or 'tiny'"
        )
    path = source.removeprefix("file://")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"RFNet source {source!r} is not a directory; give a checkpoint directory (with {WEIGHTS} and "
            f"{CONFIG}, as written by `reliable-ad train-rfnet --out`), an s3:// prefix, or 'tiny'"
        )
    return path


def load_weights(model: RFNet, directory: str) -> None:
    """Load ``model.safetensors`` from ``directory`` into ``model`` (strict: names and shapes must match)."""
    weights = load_safetensors_bytes(storage.read_bytes(storage.join(directory, WEIGHTS)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory!r} does not match its config: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}; was config.json edited after training?"
        )


def check_source(source: str) -> None:
    """Raise if ``source`` cannot be loaded (unknown scheme or preset, no checkpoint there)."""
    if _random_preset(source) is None:
        load_rfnet_config(resolve_checkpoint_dir(source))


def load_rfnet_config(directory: str) -> RFNetConfig:
    uri = storage.join(directory, CONFIG)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{directory!r} holds no {CONFIG}: not an RFNet checkpoint directory")
    return RFNetConfig.model_validate(json.loads(storage.read_bytes(uri).decode("utf-8")))


def load_model(source: str) -> tuple[RFNet, RFNetConfig, dict[str, Any]]:
    """``(model in fp32 on CPU, config, meta)`` from any source; the model is left trainable."""
    preset = _random_preset(source)
    if preset is not None:
        config = load_config(RFNetConfig, preset=preset)
        return build_rfnet(config, pretrained=False, seed=RANDOM_SEED), config, {"source": source}
    directory = resolve_checkpoint_dir(source)
    config = load_rfnet_config(directory)
    model = build_rfnet(config, pretrained=False, assets=directory)
    load_weights(model, directory)
    return model, config, read_meta(directory)


def init_from(model: RFNet, source: str) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every weight of ``source`` with the same name and shape (in place).

    For fine-tuning a different configuration from a checkpoint (e.g. ``builtin:small`` into a
    model with a modality switched off): what matches starts trained, the rest keeps its
    initialisation. Returns ``(copied, kept)`` tensor names; raises if nothing matches.
    """
    donor, _, _ = load_model(source)
    theirs = donor.state_dict()
    ours = model.state_dict()
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    if not copied:
        raise ValueError(f"no weight of {source!r} matches the model (names and shapes); is it an RFNet?")
    model.load_state_dict({k: theirs[k] for k in copied}, strict=False)
    return copied, [k for k, v in ours.items() if k not in theirs or theirs[k].shape != v.shape]


def load_rfnet(source: str, device: str = "auto", dtype: str = "auto") -> LoadedRFNet:
    """Load RFNet for inference: eval mode, gradients off for its weights, placed by ``pipelines.device``.

    ``source``: checkpoint directory, ``s3://`` prefix, ``"builtin:<name>"``, ``"tiny"`` or
    ``"random:<preset>"``. The accept threshold is ``meta["threshold"]`` when evaluation stored one,
    else 0.5.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"RFNet source must be a non-empty string, got {source!r}")
    model, config, meta = load_model(source)
    placement = place(device, dtype, component="rfnet")
    model = model.to(device=placement.device, dtype=placement.dtype).eval().requires_grad_(False)
    threshold = meta.get("threshold")
    return LoadedRFNet(
        model=model,
        config=config,
        threshold=float(threshold) if threshold is not None else DEFAULT_THRESHOLD,
        meta=meta,
        placement=placement,
        source=source,
    )
