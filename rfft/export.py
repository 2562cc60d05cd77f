"""RFFT artifacts: training checkpoints (save/load pair) and the exported ControlNet + metrics.

Checkpoint directory (written by rank 0, handed to Ray Train, which persists it under
``OUT/checkpoints/``)::

    controlnet/config.json, controlnet/diffusion_pytorch_model.safetensors   # fp32 student
    kept_controlnet/ (same files)    # the best evaluated step by the judge, when it is not this step
    optimizer.safetensors                                                    # AdamW moments per parameter
    trainer_state.json                                                       # step, history, guards, config hash

Export (``OUT``, local or ``s3://``)::

    OUT/controlnet/    diffusers format (safetensors): ControlNetModel.from_pretrained(OUT/controlnet),
                       or `reliable-ad generate --controlnet OUT/controlnet`. The last step's weights,
                       or on a guard stop the kept step's (metrics.json ``guard.kept_step``)
    OUT/metrics.json   per-step f_ac / l_cc / grad_norm, evaluations, p_available_before/after, guards

Nothing is pickled: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipelines import storage

logger = logging.getLogger(__name__)

CONTROLNET_DIR = "controlnet"
KEPT_DIR = "kept_controlnet"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.json"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def save_checkpoint(
    directory: str | Path,
    controlnet,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    *,
    kept_weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``controlnet`` (fp32), the optimiser moments and ``state`` (JSON-able) to a local dir,
    and ``kept_weights`` (a state dict of the same ControlNet) to ``kept_controlnet/`` when given."""
    directory = Path(directory)
    controlnet.save_pretrained(directory / CONTROLNET_DIR, safe_serialization=True)
    if kept_weights is not None:
        (directory / KEPT_DIR).mkdir()
        (directory / KEPT_DIR / "config.json").write_bytes(
            (directory / CONTROLNET_DIR / "config.json").read_bytes()
        )
        save_file(
            {k: v.contiguous() for k, v in kept_weights.items()}, str(directory / KEPT_DIR / WEIGHTS_FILE)
        )
    save_file(optimizer_tensors(controlnet, optimizer), str(directory / OPTIMIZER_FILE))
    (directory / STATE_FILE).write_text(json.dumps(state))


def load_checkpoint(directory: str | Path, controlnet, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load weights and optimiser moments in place from a :func:`save_checkpoint` dir; return the state."""
    directory = Path(directory)
    weights_file = directory / CONTROLNET_DIR / WEIGHTS_FILE
    if not weights_file.is_file():
        raise FileNotFoundError(f"{directory} is not an RFFT checkpoint: {weights_file} is missing")
    weights = load_file(str(weights_file), device=str(next(controlnet.parameters()).device))
    missing, unexpected = controlnet.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not fit this ControlNet: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; was it written with a different models.controlnet?"
        )
    load_optimizer_tensors(controlnet, optimizer, load_file(str(directory / OPTIMIZER_FILE)))
    return json.loads((directory / STATE_FILE).read_text())


def load_kept_weights(kept_dir: str | Path) -> dict[str, torch.Tensor]:
    """The ``kept_controlnet/`` state dict of a checkpoint (CPU)."""
    return load_file(str(Path(kept_dir) / WEIGHTS_FILE))


def optimizer_tensors(model, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as ``{"<param name>.<exp_avg|exp_avg_sq|step>": tensor}`` (names, not indices)."""
    out = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        for key in ADAM_KEYS:
            if key in state:
                value = state[key]
                value = value if torch.is_tensor(value) else torch.tensor(float(value))
                out[f"{name}.{key}"] = value.detach().cpu().contiguous()
    return out


def load_optimizer_tensors(model, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        entries = {key: tensors[f"{name}.{key}"] for key in ADAM_KEYS if f"{name}.{key}" in tensors}
        if not entries:
            continue
        if set(entries) != set(ADAM_KEYS):
            raise ValueError(
                f"optimizer state for {name} is incomplete: has {sorted(entries)}, needs {ADAM_KEYS}"
            )
        optimizer.state[param] = {
            "step": entries["step"].to(torch.float32),
            "exp_avg": entries["exp_avg"].to(param.device, param.dtype),
            "exp_avg_sq": entries["exp_avg_sq"].to(param.device, param.dtype),
        }


def export_run(
    checkpoint_dir: str | Path, out: str, metrics: dict[str, Any], *, controlnet_dir: str = CONTROLNET_DIR
) -> str:
    """Copy the checkpoint's ControlNet (``controlnet_dir``: ``controlnet`` or ``kept_controlnet``) to
    ``OUT/controlnet/`` and write ``OUT/metrics.json``.

    Files are written atomically one by one (local rename / S3 put); ``metrics.json`` last, so its
    presence means the export is complete. Returns the ControlNet's URI.
    """
    source = Path(checkpoint_dir) / controlnet_dir
    target = storage.join(storage.normalize(out), CONTROLNET_DIR)
    for path in sorted(source.iterdir()):
        if path.is_file():
            storage.write_bytes(storage.join(target, path.name), path.read_bytes())
    write_metrics(out, metrics)
    logger.info("exported the fine-tuned ControlNet to %s", target)
    return target


def write_metrics(out: str, metrics: dict[str, Any]) -> None:
    storage.write_text(
        storage.join(storage.normalize(out), METRICS_FILE), json.dumps(metrics, indent=1) + "\n"
    )


def read_metrics(out: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(storage.join(storage.normalize(out), METRICS_FILE)))


def export_controlnet(controlnet, out: str) -> str:
    """Save a ControlNet module straight to ``OUT/controlnet/`` (diffusers format, safetensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        controlnet.save_pretrained(os.path.join(tmp, CONTROLNET_DIR), safe_serialization=True)
        target = storage.join(storage.normalize(out), CONTROLNET_DIR)
        for path in sorted(Path(tmp, CONTROLNET_DIR).iterdir()):
            storage.write_bytes(storage.join(target, path.name), path.read_bytes())
    return target
