"""Collectives between the training workers; no-ops with one worker or without a process group."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from rfnet.model import RFNet

logger = logging.getLogger(__name__)


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    """Where the process group's collectives run: this worker's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The sum (or max) of ``t`` over all workers, on ``t``'s device (``t`` itself without
    torch.distributed); a copy travels to the backend's device and back."""
    if not _dist_on():
        return t
    moved = t.detach().to(_collective_device(), copy=True)
    dist.all_reduce(moved, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return moved.to(t.device)


# ----------------------------------------------------------------------------------------------------
# The worker loop.
def broadcast(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every worker (``t`` itself without torch.distributed)."""
    if not _dist_on():
        return t
    moved = t.detach().to(_collective_device(), copy=True)
    dist.broadcast(moved, src=0)
    return moved.to(t.device)


def broadcast_trees(model: RFNet) -> None:
    """Give every worker rank 0's trees (no-op without torch.distributed or trees)."""
    if not (_dist_on() and model.config.descriptor_trees):
        return
    for name in ("tree_feature", "tree_threshold", "tree_leaf", "tree_base", "tree_weight"):
        buffer = getattr(model, name)
        buffer.copy_(broadcast(buffer))
