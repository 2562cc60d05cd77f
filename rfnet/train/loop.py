"""The training loop of one Ray Train worker (:func:`train_loop_per_worker`)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipelines import storage
from pipelines.device import autocast, place
from pipelines.labels import LABELS, NUM_CLASSES
from rfnet import metrics
from rfnet.checkpoint import init_from, save_rfnet
from rfnet.config import TrainRFNetConfig
from rfnet.model import RFNet, build_rfnet
from rfnet.train.collectives import all_reduce, broadcast, broadcast_trees
from rfnet.train.fitting import (
    evaluate_batches,
    fit_descriptor_stats,
    fit_descriptor_trees,
    refit_saved_trees,
)
from rfnet.train.loaders import MemoryData, StreamData
from rfnet.train.steps import class_weights, ema_update, lr_factor, weighted_loss

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_FILE = "ema.safetensors"
MODEL_FILE = "model.safetensors"
# Folds of the descriptor trees' out-of-fold training scores (descriptor_tree_mix="offset").
TREE_FOLDS = 5
# Mixing weights of the descriptor trees tried at every validation (RFNet.mix_trees).
TREE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Seconds kept free at the end of a time budget for the last checkpoint, the copy-out and shutdown.
END_MARGIN_S = 25.0


def save_optimizer(optimizer: torch.optim.Optimizer, path: str) -> None:
    """AdamW state as flat safetensors (``state.<param index>.<name>``) + param groups in metadata."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{idx}.{name}"] = t.detach().cpu().contiguous()
    save_file(tensors, path, metadata={"param_groups": json.dumps(sd["param_groups"])})


def load_optimizer(optimizer: torch.optim.Optimizer, path: str) -> None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    tensors = load_file(path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------------------------------


def _threads(cfg: TrainRFNetConfig, world: int) -> int:
    if cfg.workers.threads_per_worker:
        return cfg.workers.threads_per_worker
    return max(1, (os.cpu_count() or 1) // world)


class RaySession:
    """What the loop needs from Ray Train: rank, world size, the last checkpoint, ``report``."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def restore(self):
        """A context manager yielding the last checkpoint's local directory, or None."""
        import contextlib

        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(None)

    def dataset_shard(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def report(self, metrics_: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics_, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker. ``config``: ``cfg`` (TrainRFNetConfig dict), ``train``/``val``
    (lists of Sample fields, memory loader), ``deadline`` (unix time or None), ``meta``."""
    fit_worker(config, RaySession())


def fit_worker(config: dict[str, Any], session) -> None:
    """The training loop of one worker; ``session`` is a :class:`RaySession` (or a stand-in with the
    same four members for running the loop without Ray)."""
    run = WorkerRun(config, session)
    run.prepare()
    while run.state["epoch"] < run.state["total_epochs"]:
        run.epoch()
    run.finish()


@dataclass
class Validation:
    """One epoch's validation, summed over all workers: the confusion matrix at the tree weight it
    chose, macro F1 (NaN without validation examples) of it and of the network alone, the mean
    losses."""

    cm: np.ndarray
    f1: float
    network_f1: float
    tree_weight: float
    loss: float
    count: int
    train_loss: float


class WorkerRun:
    """One worker's run, in the order it happens: the constructor builds the model and optimizer on
    the device and resumes the last checkpoint; :meth:`prepare` loads the data, fits the descriptor
    statistics and trees and sets up the EMA and TensorBoard; :meth:`epoch` trains, validates,
    re-plans, saves and reports one epoch; :meth:`finish` refits the trees of the best model."""

    def __init__(self, config: dict[str, Any], session) -> None:
        self.config, self.session = config, session
        self.cfg = cfg = TrainRFNetConfig.model_validate(config["cfg"])
        self.oc = oc = cfg.optim
        self.rank, self.world = session.rank, session.world
        torch.set_num_threads(_threads(cfg, self.world))
        self.device, self.placement = _device(cfg)
        self.deadline: float | None = config.get("deadline")
        self.core, self.stats_loaded = self._build_model()
        # On the device before the optimizer exists: a resumed optimizer state then lands on it too.
        self.core.to(self.device)
        torch.manual_seed(oc.seed * 1000 + self.rank)  # dropout: differs per worker, reproducible
        self.params = [p for p in self.core.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim > 1]
        no_decay = [p for p in self.params if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": oc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=oc.lr,
        )
        self.state: dict[str, Any] = {
            "epoch": 0,
            "step": 0,
            "total_epochs": oc.epochs,
            "best_f1": -1.0,
            "best_epoch": -1,
            "history": [],
            "resumed_at": [],  # epochs after which a rerun picked the run up
        }
        self.ema_state = self._restore()
        self.model: torch.nn.Module = self.core  # what trains: DDP-wrapped with several workers
        if self.world > 1:
            import ray.train.torch as rtt

            self.model = rtt.prepare_model(self.core, move_to_device=False)
        self.epoch_times: list[float] = []

    # --- set-up -------------------------------------------------------------------------------

    def _build_model(self) -> tuple[RFNet, bool]:
        """The model (pretrained encoders, then ``init_from``) and whether its descriptor statistics
        came with it."""
        cfg = self.cfg
        model = build_rfnet(cfg.model, pretrained=True, seed=self.oc.seed)
        if not cfg.init_from:
            return model, False
        copied, kept = init_from(model, cfg.init_from)
        if self.rank == 0:
            logger.info(
                "initialised %d of %d weight tensors from %s%s",
                len(copied),
                len(copied) + len(kept),
                cfg.init_from,
                f"; {len(kept)} keep their initialisation (e.g. {', '.join(kept[:3])})" if kept else "",
            )
        return model, "descriptor_mean" in copied and "descriptor_std" in copied

    def _restore(self) -> dict[str, torch.Tensor] | None:
        """Continue from the last checkpoint Ray Train holds, if any; returns its EMA weights."""
        ema_state = None
        with self.session.restore() as d:
            if d is None:
                return None
            self.core.load_state_dict(load_file(os.path.join(d, MODEL_FILE)))
            if self.oc.ema_decay and os.path.exists(os.path.join(d, EMA_FILE)):
                ema_state = load_file(os.path.join(d, EMA_FILE))
            load_optimizer(self.optimizer, os.path.join(d, OPTIMIZER_FILE))
            with open(os.path.join(d, STATE_FILE)) as f:
                self.state.update(json.load(f))
        state = self.state
        state["total_epochs"] = self.oc.epochs  # a rerun may extend the run; the budget re-plans later
        state["resumed_at"] = [*state.get("resumed_at", []), state["epoch"]]
        logger.info("resumed from epoch %d (best val macro F1 %.4f)", state["epoch"], state["best_f1"])
        return ema_state

    def prepare(self) -> None:
        """Data, class weights, descriptor statistics and trees, the EMA copy, TensorBoard."""
        cfg, oc, core = self.cfg, self.oc, self.core
        t_load = time.time()
        loader = StreamData if cfg.data.loader == "stream" else MemoryData
        self.data = loader(cfg, self.config, self.session, core, self.device)
        logger.info(
            "rank %d: data ready in %.1f s (%s)", self.rank, time.time() - t_load, self.data.describe()
        )
        counts = np.asarray(self.config["class_counts"], np.int64)
        weights = torch.from_numpy(class_weights(np.repeat(np.arange(NUM_CLASSES), counts))).to(self.device)
        self.weights = weights if oc.balance == "weights" else None
        if self.state["epoch"] == 0 and not self.stats_loaded:
            # From an init checkpoint the statistics come with the weights that were trained on them.
            fit_descriptor_stats(core, self.data.stat_batches())
        # Refit the trees on train + validation after the last epoch (OptimConfig.refit_trees).
        self.refit = bool(cfg.model.descriptor_trees and oc.refit_trees and self.config.get("n_val", 1))
        self.refit_s = self._fit_trees() if cfg.model.descriptor_trees else 0.0
        self.steps_per_epoch = self.data.steps_per_epoch()
        self.warmup_steps = round(oc.warmup_epochs * self.steps_per_epoch)
        self.ema: RFNet | None = None
        if oc.ema_decay:
            self.ema = copy.deepcopy(core).requires_grad_(False)
            if self.ema_state is not None:
                self.ema.load_state_dict(self.ema_state)
        self.scored = self.ema if self.ema is not None else self.model  # validated, selected, saved
        self.saved = self.ema if self.ema is not None else core
        self.writer, self.tb_dir = None, None
        if self.rank == 0 and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            remote = storage.is_remote(cfg.out)
            self.tb_dir = (
                tempfile.mkdtemp(prefix="rfnet-tb-") if remote else storage.join(cfg.out, "tensorboard")
            )
            self.writer = SummaryWriter(self.tb_dir)

    def _fit_trees(self) -> float:
        """Fit the descriptor trees on rank 0 and give them to every worker; returns the seconds the
        plan keeps free for the final refit.

        Fitted on every fresh start (an init checkpoint's trees belong to its own training data); a
        resumed run has them in its checkpoint and refits only the out-of-fold scores, which come
        out the same (seeded)."""
        cfg, core = self.cfg, self.core
        offset = cfg.model.descriptor_tree_mix == "offset"
        fresh = self.state["epoch"] == 0
        oof = None
        refit_s = 0.0
        t_fit = time.time()
        if self.rank == 0 and (fresh or offset):
            rows, oof = fit_descriptor_trees(
                core, self.data.stat_batches(), self.oc, install=fresh, folds=TREE_FOLDS if offset else 0
            )
            logger.info(
                "descriptor trees: %d rounds x %d classes on %d examples%s in %.1f s",
                cfg.model.descriptor_trees, NUM_CLASSES, rows,
                f" (+ {TREE_FOLDS} fits for out-of-fold scores)" if offset else "", time.time() - t_fit,
            )  # fmt: skip
        if self.refit:
            # the final refit costs about the first fit, scaled to the examples it adds
            estimate = 1.25 * (time.time() - t_fit) if self.rank == 0 else 0.0
            refit_s = float(broadcast(torch.tensor([estimate], dtype=torch.float64))[0])
        broadcast_trees(core)
        if offset:
            self.data.train.tree_logits = broadcast(
                oof if oof is not None else torch.zeros(len(self.data.train), NUM_CLASSES)
            )
        return refit_s

    # --- one epoch ----------------------------------------------------------------------------

    def epoch(self) -> None:
        """Train one epoch, validate, update the run state and the plan, save and report."""
        state, epoch, t0 = self.state, self.state["epoch"], time.time()
        loss_sum, lr = self._train_epoch(epoch)
        train_time = time.time() - t0
        v = self._validate(loss_sum)
        state["epoch"] = epoch + 1
        improved = v.count == 0 or v.f1 > state["best_f1"]
        if improved:
            state["best_f1"], state["best_epoch"] = (v.f1 if v.count else -1.0), epoch + 1
        epoch_metrics = {
            "epoch": epoch + 1,
            "train_loss": v.train_loss,
            "val_loss": v.loss,
            "val_macro_f1": v.f1,
            "val_accuracy": float(np.trace(v.cm) / max(1, v.cm.sum())),
            "val_macro_f1_network": v.network_f1,
            "tree_weight": v.tree_weight,
            "lr": lr,
            "epoch_s": time.time() - t0,
            "train_s": train_time,
            "best_val_macro_f1": state["best_f1"],
            "best_epoch": state["best_epoch"],
        }
        state["history"].append(
            {k: (round(x, 5) if isinstance(x, float) else x) for k, x in epoch_metrics.items()}
        )
        self._replan(t0)
        if self.rank == 0:
            self._publish(epoch_metrics, v, improved)
        else:
            self.session.report(epoch_metrics, None)

    def _train_epoch(self, epoch: int) -> tuple[torch.Tensor, float]:
        """One pass over this worker's training batches; returns the summed loss (on the loss's
        device: no host sync per step) and the last learning rate."""
        oc, state, core = self.oc, self.state, self.core
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        lr = oc.lr
        for b in self.data.train_batches(epoch):
            factor = lr_factor(state["step"], self.warmup_steps, state["total_epochs"] * self.steps_per_epoch)
            lr = oc.lr * factor
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with autocast(self.placement):
                logits = self.model(
                    b["image"], b["product"], b["has_product"], core.tokenize(b["caption"]), maps=b["maps"]
                )
            loss = weighted_loss(logits, b["label"], self.weights, oc.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if oc.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, oc.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                ema_update(self.ema, core, oc.ema_decay, state["step"])
            loss_sum += loss.detach().double()
            state["step"] += 1
        return loss_sum, lr

    def _validate(self, loss_sum: torch.Tensor) -> Validation:
        """Score the validation batches at every tree weight; all workers get the same sums, pick the
        same weight and set it on the model."""
        cms, val_loss, val_count = evaluate_batches(
            self.scored, self.data.val_batches(), self.placement, TREE_WEIGHTS
        )
        reduced = all_reduce(
            torch.tensor([*cms.ravel().tolist(), val_loss, val_count, float(loss_sum)], dtype=torch.float64)
        )
        cms = reduced[: cms.size].numpy().round().astype(np.int64).reshape(cms.shape)
        # How much the trees weigh: the grid weight with the best validation macro F1 (the first
        # of equals, so the network alone wins ties), like the epoch itself.
        # Without validation examples: the middle of the grid.
        f1s = [metrics.macro_f1(m) for m in cms]
        count = int(reduced[-2])
        pick = int(np.argmax(f1s)) if count else len(cms) // 2
        cm, tree_weight = cms[pick], (TREE_WEIGHTS[pick] if len(cms) > 1 else 0.0)
        if self.cfg.model.descriptor_trees:
            for m in {
                id(self.core): self.core,
                id(self.saved): self.saved,
            }.values():  # EMA copies core's buffers
                m.tree_weight.fill_(tree_weight)
        return Validation(
            cm=cm,
            f1=metrics.macro_f1(cm) if count else float("nan"),
            network_f1=f1s[0] if count else float("nan"),
            tree_weight=tree_weight,
            loss=float(reduced[-3]) / max(1, count),
            count=count,
            train_loss=float(reduced[-1]) / (self.world * self.steps_per_epoch),
        )

    def _replan(self, t0: float) -> None:
        """Re-plan the number of epochs from the slowest worker's epoch time, and stop early when
        validation has not improved for ``early_stop_patience`` epochs."""
        state, oc = self.state, self.oc
        self.epoch_times.append(
            float(all_reduce(torch.tensor([time.time() - t0], dtype=torch.float64), "max")[0])
        )
        if self.deadline is not None:
            # Recent and pessimistic; the plan may grow again when epochs get faster than the first
            # ones (start-up, a busy machine), so the budget is not left unused.
            per_epoch = max(self.epoch_times[-2:])
            left = self.deadline - time.time() - END_MARGIN_S - self.refit_s
            fit = state["epoch"] + max(0, math.floor(left / per_epoch))
            state["total_epochs"] = max(state["epoch"], min(oc.epochs, fit))
        if oc.early_stop_patience and state["epoch"] - state["best_epoch"] >= oc.early_stop_patience:
            state["total_epochs"] = state["epoch"]

    def _publish(self, epoch_metrics: dict[str, Any], v: Validation, improved: bool) -> None:
        """Rank 0: the best model to ``OUT``, TensorBoard scalars, the epoch's log line, and the
        resume checkpoint handed to Ray Train with the report."""
        cfg, state, epoch = self.cfg, self.state, epoch_metrics["epoch"]
        per = metrics.per_class_metrics(v.cm)
        if improved:
            meta = _best_meta(cfg, self.config["meta"], state, per, v.cm, self.data.skipped, self.data.search)
            save_rfnet(self.saved, cfg.model, cfg.out, meta=meta)
        if self.writer is not None:
            for k, x in epoch_metrics.items():
                if k != "epoch":
                    self.writer.add_scalar(k, x, epoch)
            for i, name in enumerate(LABELS):
                self.writer.add_scalar(f"val_f1/{name}", per.f1[i], epoch)
            self.writer.flush()
            if self.tb_dir and storage.is_remote(cfg.out):
                _upload_dir(self.tb_dir, storage.join(cfg.out, "tensorboard"))
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val macro F1 %.4f (best %.4f @ %d), %.1f s",
            epoch, state["total_epochs"], v.train_loss, v.loss, v.f1, state["best_f1"],
            state["best_epoch"], epoch_metrics["epoch_s"],
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            _save_tensors(self.core, os.path.join(tmp, MODEL_FILE))
            save_optimizer(self.optimizer, os.path.join(tmp, OPTIMIZER_FILE))
            if self.ema is not None:
                _save_tensors(self.ema, os.path.join(tmp, EMA_FILE))
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(state, f)
            self.session.report(epoch_metrics, tmp)

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.refit and self.rank == 0 and self.state["best_epoch"] > 0:
            refit_saved_trees(self.cfg, self.data, str(self.device))


def _device(cfg: TrainRFNetConfig) -> tuple[torch.device, Any]:
    """This worker's device and its placement (dtype, autocast) for ``cfg.workers``."""
    if cfg.workers.use_gpu:
        import ray.train.torch as rtt

        device = rtt.get_device()
        return device, place(str(device), cfg.workers.dtype, component="rfnet-train")
    dtype = "float32" if cfg.workers.dtype == "auto" else cfg.workers.dtype
    return torch.device("cpu"), place("cpu", dtype, component="rfnet-train")


def _save_tensors(module: torch.nn.Module, path: str) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, path)


def _upload_dir(local: str, remote: str) -> None:
    for name in os.listdir(local):
        path = os.path.join(local, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                storage.write_bytes(storage.join(remote, name), f.read())


def _best_meta(
    cfg: TrainRFNetConfig,
    base: dict[str, Any],
    state: dict[str, Any],
    per,
    cm: np.ndarray,
    skipped: int,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **base,
        "train": {
            "best_epoch": state["best_epoch"],
            "val_macro_f1": state["best_f1"],
            "val_per_class_f1": {name: round(float(per.f1[i]), 5) for i, name in enumerate(LABELS)},
            "val_confusion": cm.tolist(),
            "history": state["history"],
            "skipped_examples": skipped,
            "product_search": search,
            "config_hash": cfg.config_hash(),
            "config": cfg.to_dict(),
        },
    }
