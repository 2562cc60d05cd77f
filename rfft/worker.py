"""One RFFT worker (:class:`RFFTWorker`): the models, the optimisation step and the evaluation.

One optimisation step (per worker, repeated ``optim.grad_accum`` times before the update):

1. draw this worker's slice of the global micro-batch (``rfft.data``: product, prompt, scale, noise);
2. draw the graded step g uniformly from the last ``sampling.graded_last_k`` DDIM steps (the same g
   on every worker);
3. **pass 1** - sample steps ``0 .. g-1`` without gradient, then step g with gradient through the
   student ControlNet: predict x0, blend, decode, paste the product back, score with the frozen RFNet;
   ``F_AC = -mean log p(Available)`` (+ the optional KL term); backward;
4. **pass 2** - at the same x_t: the guidance direction ``eps(prompt) - eps(empty)`` of the student
   and of the frozen teacher (the original ControlNet on the same frozen UNet);
   ``L_CC = mean((d_student - d_teacher)^2)``; backward ``beta * L_CC`` (with ``beta = 0`` L_CC is
   still computed, without gradient, so its drift is on record);
5. after the last micro-step: DDP averages the gradients, clip to ``optim.max_grad_norm``, AdamW.

Splitting F_AC and L_CC into two backward passes keeps only one of the two graphs alive at a time
(the UNet + ControlNet activations of 2B images each), at the price of one more ControlNet/UNet
forward over the B conditional inputs.

Trainable: the ControlNet only, fp32 master weights, autocast to the compute dtype on GPUs
(``pipelines.device``), gradient checkpointing in the ControlNet, UNet and VAE decoder. Frozen in the
compute dtype: UNet, VAE, text encoder, RFNet. The teacher ControlNet is a frozen fp32 copy of the
student taken before the first update: it runs under the same autocast as the student, so
``L_CC`` is exactly 0 until the first update (not merely close to 0).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from pipelines import storage
from pipelines.device import autocast, place, trainable_dtype
from pipelines.models import identity, load_components, make_scheduler
from pipelines.prepare import paste_back
from rfft import data as rfft_data
from rfft.config import RFFTConfig
from rfft.export import KEPT_DIR, STATE_FILE, load_checkpoint, load_kept_weights, save_checkpoint
from rfft.guards import (
    GuardMonitor,
    background_detail,
    background_diversity,
    background_drift,
    background_features,
    diversity,
    product_fidelity,
)
from rfft.losses import consistent_condition_loss, feedback_loss, kl_regularizer, total_loss
from rfft.reward import AvailabilityReward
from rfft.sampler import RFFTSampler

logger = logging.getLogger(__name__)


class RFFTWorker:
    """Everything one worker holds: models, optimiser, data, history. Usable without Ray (world size 1)."""

    def __init__(self, cfg: RFFTConfig, *, rank: int = 0, world_size: int = 1):
        if cfg.rfnet is None:
            raise ValueError(
                "RFFTConfig.rfnet is not set: RFFT needs an RFNet source ('tiny', a dir or s3://)"
            )
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.placement = place(cfg.scaling.device, cfg.scaling.dtype, component="rfft frozen models")
        device, dtype = self.placement.device, self.placement.dtype

        # fp32 load, then the frozen parts go to the compute dtype: the ControlNet is loaded once and
        # stays fp32 (master weights) without a lossy bf16 round trip.
        components = load_components(
            cfg.models.base,
            cfg.models.controlnet,
            dtype=trainable_dtype(),
            base_revision=cfg.models.base_revision,
            controlnet_revision=cfg.models.controlnet_revision,
        )
        for key in ("unet", "vae", "text_encoder"):
            _move(components[key], device, dtype).requires_grad_(False).eval()
        self.student = _move(components["controlnet"], device, trainable_dtype())
        self.student.requires_grad_(True).train()
        self.teacher = copy.deepcopy(self.student).requires_grad_(False).eval()
        if cfg.scaling.gradient_checkpointing:
            self.student.enable_gradient_checkpointing()
            components["unet"].enable_gradient_checkpointing()
            components["vae"].enable_gradient_checkpointing()
        self.sampler = RFFTSampler(
            unet=components["unet"],
            controlnet=self.student,
            vae=components["vae"],
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            scheduler=make_scheduler("ddim", components["scheduler"].config),
        )
        self.ddp = self.student
        if world_size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.student, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.reward = AvailabilityReward.load(
            cfg.rfnet, device=cfg.scaling.device, dtype=cfg.scaling.dtype, aux_grad=cfg.loss.aux_grad
        )
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(),
            lr=cfg.optim.lr,
            betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
            eps=cfg.optim.adam_eps,
            weight_decay=cfg.optim.weight_decay,
        )
        self.threshold = cfg.rfnet_threshold if cfg.rfnet_threshold is not None else self.reward.threshold
        self.rfnet_fingerprint = weights_fingerprint(self.reward.scorer.model)
        self.judge: AvailabilityReward | None = None
        self.judge_threshold: float | None = None
        if cfg.judge is None:
            if rank == 0:
                logger.info(
                    "no judge configured (judge: null): judge metrics are null, the reward-judge gap guard is off"
                )
        else:
            self.judge = AvailabilityReward.load(
                cfg.judge, device=cfg.scaling.device, dtype=cfg.scaling.dtype
            )
            self.judge_threshold = (
                cfg.judge_threshold if cfg.judge_threshold is not None else self.judge.threshold
            )
        self.empty_prompt_embeds = self.sampler.encode_prompt([""])  # (1, L, D): the paper's empty prompt

        products = rfft_data.load_products(cfg.data, cfg.prepare, cfg.seed)
        self.train_products, self.eval_products = rfft_data.split_products(
            products, cfg.data.num_eval_products, cfg.seed
        )
        self.eval_set = rfft_data.eval_examples(
            self.eval_products,
            seed=cfg.seed,
            repeats=cfg.data.eval_repeats,
            prepare=cfg.prepare,
            prompts=cfg.prompts,
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.stop_reason: str | None = None
        self.stop_step: int | None = None
        # Step-0 backgrounds (the frozen teacher's images: the student equals it then), per held-out draw.
        self.teacher_reference: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        # The best evaluated step by the judge's available rate (the reward's without a judge): what a
        # stopped run exports. Its weights are held on rank 0 (a CPU copy) until a better step comes.
        self.kept: dict[str, Any] | None = None
        self.kept_weights: dict[str, torch.Tensor] | None = None
        self.resumed_at: list[int] = []  # steps at which a rerun or a restarted worker group resumed
        self.guard = GuardMonitor(cfg.guards)
        self._last_eval_history_len = 0

    # ------------------------------------------------------------------------------------------------
    # Training.

    def graded_step(self, step: int) -> int:
        """The graded step index for optimisation step ``step``: uniform over the last K steps."""
        n, k = self.cfg.sampling.num_inference_steps, self.cfg.sampling.graded_last_k
        return n - k + random.Random(rfft_data.example_seed(self.cfg.seed, "graded", step)).randrange(k)

    def learning_rate(self, step: int) -> float:
        warmup = self.cfg.optim.warmup_steps
        return self.cfg.optim.lr * (min(1.0, step / warmup) if warmup else 1.0)

    def batch_for(self, step: int, micro: int) -> rfft_data.Batch:
        b = self.cfg.optim.batch_size
        examples = rfft_data.training_examples(
            self.train_products,
            seed=self.cfg.seed,
            step=step,
            micro=micro,
            global_size=b * self.world_size,
            rank=self.rank,
            local_size=b,
            prepare=self.cfg.prepare,
            prompts=self.cfg.prompts,
        )
        return rfft_data.collate(examples, self.placement.device)

    def train_step(self) -> dict[str, Any]:
        """One optimisation step over ``grad_accum`` micro-batches; returns the step's record."""
        step = self.step + 1
        started = time.perf_counter()
        accum = self.cfg.optim.grad_accum
        batches = [self.batch_for(step, micro) for micro in range(accum)]
        record = self.step_on_batches(batches, self.graded_step(step), lr=self.learning_rate(step))
        record = {"step": step, **record, "time_s": round(time.perf_counter() - started, 4)}
        if self.placement.device.type == "cuda":
            record["peak_memory_gib"] = round(
                torch.cuda.max_memory_allocated(self.placement.device) / 2**30, 3
            )
        self.step = step
        self.history.append(record)
        return record

    def step_on_batches(
        self, batches: list[rfft_data.Batch], graded_step: int, *, lr: float
    ) -> dict[str, Any]:
        """Accumulate gradients over ``batches`` at ``graded_step``, clip, and apply one AdamW update."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        parts = [
            self._accumulate(batch, graded_step, loss_scale=1.0 / len(batches), sync=i == len(batches) - 1)
            for i, batch in enumerate(batches)
        ]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        means = {key: float(np.mean([p[key] for p in parts])) for key in parts[0] if key != "timestep"}
        means = self._all_reduce_mean(means)
        beta, kl_weight = self.cfg.loss.beta, self.cfg.loss.kl_weight
        return {
            "graded_step": graded_step,
            "timestep": parts[0]["timestep"],
            "lr": lr,
            "loss": means["f_ac"] + beta * means["l_cc"] + kl_weight * means.get("kl", 0.0),
            **means,
            "grad_norm": float(grad_norm),
        }

    def _sample(self, batch: rfft_data.Batch, **kwargs: Any):
        """The sampler on a batch with the configured sampling settings (``kwargs``: training-only inputs)."""
        sampling = self.cfg.sampling
        return self.sampler(
            batch.prompt,
            batch.image,
            batch.mask_image,
            batch.control_image,
            negative_prompt=batch.negative_prompt,
            num_inference_steps=sampling.num_inference_steps,
            guidance_scale=sampling.guidance_scale,
            controlnet_conditioning_scale=sampling.controlnet_conditioning_scale,
            generator=batch.generators(),
            **kwargs,
        )

    def _accumulate(self, batch: rfft_data.Batch, graded_step: int, *, loss_scale: float, sync: bool) -> dict:
        cfg = self.cfg
        sampling = cfg.sampling
        cc_backward = cfg.loss.beta > 0
        # Pass 1: F_AC (+ KL) through the graded step, the VAE decoder and RFNet.
        with self._sync(sync and not cc_backward), autocast(self.placement):
            out = self._sample(batch, product=batch.product, graded_step=graded_step, controlnet=self.ddp)
            p_available = self.reward.p_available(out.image, batch.product, batch.caption)
            f_ac = feedback_loss(p_available)
            kl = None
            if cfg.loss.kl_weight > 0:
                with torch.no_grad():
                    teacher_noise = self.sampler.guided_noise(
                        out.latents,
                        out.timestep,
                        out.prompt_embeds,
                        out.negative_prompt_embeds,
                        out.control_image,
                        sampling.guidance_scale,
                        controlnet=self.teacher,
                        conditioning_scale=sampling.controlnet_conditioning_scale,
                    )
                kl = kl_regularizer(out.noise_pred, teacher_noise)
            loss = total_loss(f_ac, None, beta=0.0, kl=kl, kl_weight=cfg.loss.kl_weight)
        (loss * loss_scale).backward()
        x_t, t, prompt_embeds, control = out.latents, out.timestep, out.prompt_embeds, out.control_image
        p_mean, f_ac_value = float(p_available.detach().mean()), float(f_ac.detach())
        kl_value = float(kl.detach()) if kl is not None else None
        del out, p_available, f_ac, kl, loss  # free pass 1's graph before pass 2

        # Pass 2: Consistent Condition at the same x_t and t.
        empty = self.empty_prompt_embeds.expand(len(batch), -1, -1)
        with self._sync(sync), autocast(self.placement):
            with torch.no_grad():
                d_teacher = self.sampler.guidance_direction(
                    x_t, t, prompt_embeds, empty, control, controlnet=self.teacher,
                    conditioning_scale=sampling.controlnet_conditioning_scale,
                )  # fmt: skip
            with contextlib.nullcontext() if cc_backward else torch.no_grad():
                d_student = self.sampler.guidance_direction(
                    x_t, t, prompt_embeds, empty, control, controlnet=self.ddp if cc_backward else self.student,
                    conditioning_scale=sampling.controlnet_conditioning_scale,
                )  # fmt: skip
            l_cc = consistent_condition_loss(d_student, d_teacher)
        if cc_backward:
            (cfg.loss.beta * l_cc * loss_scale).backward()
        part = {"f_ac": f_ac_value, "l_cc": float(l_cc.detach()), "p_available": p_mean, "timestep": t}
        if kl_value is not None:
            part["kl"] = kl_value
        return part

    def _sync(self, sync: bool):
        """DDP all-reduces gradients only on the last backward of an optimisation step."""
        if self.ddp is self.student or sync:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def _all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world_size == 1:
            return values
        keys = sorted(values)
        tensor = torch.tensor(
            [values[k] for k in keys], dtype=torch.float64, device=self._collective_device()
        )
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}

    def _collective_device(self) -> torch.device:
        return self.placement.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------------------------------------
    # Evaluation on the held-out products.

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Full sampling (every step, no gradient) of the held-out set, judged by RFNet, plus guards.

        Held-out examples are sharded over the workers by index; per-image results are gathered so
        every worker computes the same metrics (and takes the same early-stop decision).
        """
        cfg = self.cfg
        mine = [ex for i, ex in enumerate(self.eval_set) if i % self.world_size == self.rank]
        rows: list[dict[str, Any]] = []
        for start in range(0, len(mine), cfg.eval.batch_size):
            chunk = mine[start : start + cfg.eval.batch_size]
            rows.extend(self._evaluate_chunk(chunk))
        if self.world_size > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(self.world_size)]
            dist.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        rows.sort(key=lambda r: (r["sku_id"], r["seed"]))
        p = np.array([r["p_available"] for r in rows])
        features = np.stack([r["features"] for r in rows])
        coverage = np.stack([r["coverage"] for r in rows])
        keys = [f"{r['sku_id']}#{r['seed']}" for r in rows]
        if self.step == 0 and self.teacher_reference is None:
            self.teacher_reference = {k: (f, c) for k, f, c in zip(keys, features, coverage, strict=True)}
        value, basis = diversity(features, coverage, [r["sku_id"] for r in rows])
        judge_p = np.array([r["judge_p_available"] for r in rows]) if self.judge is not None else None
        recent = [h["l_cc"] for h in self.history[self._last_eval_history_len :]]
        self._last_eval_history_len = len(self.history)
        metrics: dict[str, Any] = {
            "step": self.step,
            "images": len(rows),
            "p_available": float(p.mean()),
            "available_rate": float((p >= self.threshold).mean()),
            "judge_p_available": float(judge_p.mean()) if judge_p is not None else None,
            "judge_available_rate": float((judge_p >= self.judge_threshold).mean())
            if judge_p is not None
            else None,
            "diversity": value,
            "diversity_basis": basis,
            "drift": self._drift(keys, features, coverage),
            "background_diversity": background_diversity(features, coverage),
            "background_detail": float(np.mean([r["detail"] for r in rows])),
            "seam_error": float(np.nanmean([r["seam_error"] for r in rows])),
            "product_pixels_changed": float(np.mean([r["changed"] for r in rows])),
            "l_cc_recent": float(np.mean(recent)) if recent else None,
            "per_product": {f"{r['sku_id']}#{r['seed']}": round(r["p_available"], 6) for r in rows},
        }
        verdict = self.guard.check(self.step, metrics, metrics["l_cc_recent"])
        self.warnings.extend(verdict.warnings)
        if verdict.stop and self.stop_reason is None:
            self.stop_reason = verdict.warnings[0]
            self.stop_step = self.step
        metrics["diversity_baseline"] = self.guard.baseline_diversity
        self.evals.append(metrics)
        self._keep_if_best(metrics)
        if self.rank == 0 and cfg.out:
            self._write_eval_sheet(rows)
        return metrics

    def _drift(self, keys: list[str], features: np.ndarray, coverage: np.ndarray) -> float | None:
        """Mean background distance to the teacher's image of the same draw (None before a reference)."""
        if self.teacher_reference is None:
            return None
        ref = [self.teacher_reference[k] for k in keys]
        return background_drift(
            features, coverage, np.stack([f for f, _ in ref]), np.stack([c for _, c in ref])
        )

    def _keep_if_best(self, metrics: dict[str, Any]) -> None:
        """Remember this step if its judge (else reward) available rate beats every earlier evaluation's
        (ties keep the earlier step: closer to the teacher)."""
        by = "judge" if self.judge is not None else "reward"
        score = metrics["judge_available_rate" if by == "judge" else "available_rate"]
        if self.kept is not None and score <= self.kept["score"]:
            return
        self.kept = {"step": self.step, "by": by, "score": score}
        if self.rank == 0:
            self.kept_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in self.student.state_dict().items()
            }

    def _evaluate_chunk(self, chunk: list[rfft_data.Example]) -> list[dict[str, Any]]:
        cfg = self.cfg
        batch = rfft_data.collate(chunk, self.placement.device)
        with autocast(self.placement):
            out = self._sample(batch)
        # Deliver exactly as the generation pipeline does: uint8 image, product pasted back in uint8.
        decoded = _to_uint8(out.decoded)
        products = np.stack([ex.prepared.product for ex in chunk])
        final = np.stack([paste_back(d, prod) for d, prod in zip(decoded, products, strict=True)])
        final_t = torch.from_numpy(final).permute(0, 3, 1, 2).float().div(255.0).to(self.placement.device)
        with autocast(self.placement):
            p = self.reward.p_available(final_t, batch.product, batch.caption).float().cpu().numpy()
            judge_p = (
                self.judge.p_available(final_t, batch.product, batch.caption).float().cpu().numpy()
                if self.judge is not None
                else None
            )
        masks = (products[..., 3] > 0).astype(np.uint8)
        features, coverage = background_features(final, masks, cfg.guards.diversity_grid)
        rows = []
        for k, ex in enumerate(chunk):
            fidelity = product_fidelity(
                final[k : k + 1], decoded[k : k + 1], products[k : k + 1], cfg.guards.seam_width
            )
            rows.append(
                {
                    "sku_id": ex.sku_id,
                    "seed": ex.seed,
                    "p_available": float(p[k]),
                    "judge_p_available": float(judge_p[k]) if judge_p is not None else None,
                    "features": features[k],
                    "coverage": coverage[k],
                    "detail": background_detail(final[k : k + 1], masks[k : k + 1]),
                    "seam_error": fidelity["seam_error"],
                    "changed": fidelity["product_pixels_changed"],
                    "thumbnail": np.asarray(Image.fromarray(final[k]).resize((96, 96), Image.BILINEAR)),
                }
            )
        return rows

    def _write_eval_sheet(self, rows: list[dict[str, Any]]) -> None:
        """``OUT/eval/step-NNNNNN.png``: the held-out images side by side, to look at for collapse."""
        sheet = np.concatenate([r["thumbnail"] for r in rows], axis=1)
        buf = io.BytesIO()
        Image.fromarray(sheet).save(buf, format="PNG")
        storage.write_bytes(
            storage.join(storage.normalize(self.cfg.out), "eval", f"step-{self.step:06d}.png"), buf.getvalue()
        )

    # ------------------------------------------------------------------------------------------------
    # State.

    @property
    def finished(self) -> bool:
        return self.step >= self.cfg.steps or self.stop_reason is not None

    def state(self) -> dict[str, Any]:
        """Everything besides tensors needed to resume and to write ``metrics.json``."""
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.config_hash(),
            "history": self.history,
            "evals": self.evals,
            "warnings": self.warnings,
            "stop_reason": self.stop_reason,
            "stop_step": self.stop_step,
            "kept": self.kept,
            "resumed_at": self.resumed_at,
            "diversity_baseline": self.guard.baseline_diversity,
            "guard_state": self.guard.state(),
            "teacher_reference": (
                {
                    k: [np.round(f, 5).tolist(), np.round(c, 5).tolist()]
                    for k, (f, c) in self.teacher_reference.items()
                }
                if self.teacher_reference is not None
                else None
            ),
            "last_eval_history_len": self._last_eval_history_len,
            "world_size": self.world_size,
            "placement": self.placement.describe(),
            "rfnet": {
                "source": self.cfg.rfnet,
                "threshold": self.threshold,
                "fingerprint": self.rfnet_fingerprint,
            },
            "judge": (
                {
                    "source": self.cfg.judge,
                    "threshold": self.judge_threshold,
                    "fingerprint": weights_fingerprint(self.judge.scorer.model),
                }
                if self.judge is not None
                else None
            ),
            "models": {
                "base": list(identity(self.cfg.models.base, self.cfg.models.base_revision)),
                "controlnet": list(identity(self.cfg.models.controlnet, self.cfg.models.controlnet_revision)),
            },
        }

    def save(self, directory: str | Path) -> None:
        kept = self.kept_weights if self.kept is not None and self.kept["step"] != self.step else None
        save_checkpoint(directory, self.student, self.optimizer, self.state(), kept_weights=kept)

    def restore(self, directory: str | Path) -> None:
        """Resume from a checkpoint written by :meth:`save` with the same config (hash-checked)."""
        with open(Path(directory) / STATE_FILE) as f:
            saved_hash = json.load(f)["config_hash"]
        if saved_hash != self.cfg.config_hash():
            raise ValueError(
                f"checkpoint {directory} was written with config hash {saved_hash}, this run has "
                f"{self.cfg.config_hash()}; resume with the same config or use a new --out"
            )
        state = load_checkpoint(directory, self.student, self.optimizer)
        self.step = state["step"]
        self.history = state["history"]
        self.evals = state["evals"]
        self.warnings = state["warnings"]
        self.stop_reason = state["stop_reason"]
        self.stop_step = state.get("stop_step")
        self.resumed_at = [*state.get("resumed_at", []), self.step]
        # Checkpoints written before the judge and drift existed hold only the diversity baseline.
        self.guard.load_state(state.get("guard_state") or {"baseline_diversity": state["diversity_baseline"]})
        reference = state.get("teacher_reference")
        if reference is not None:
            self.teacher_reference = {
                k: (np.asarray(f, np.float32), np.asarray(c, np.float32)) for k, (f, c) in reference.items()
            }
        self.kept = state.get("kept")
        if self.kept is not None and self.rank == 0:
            kept_dir = Path(directory) / KEPT_DIR
            self.kept_weights = (
                load_kept_weights(kept_dir)
                if kept_dir.is_dir()
                else {k: v.detach().to("cpu", copy=True) for k, v in self.student.state_dict().items()}
            )
        self._last_eval_history_len = state["last_eval_history_len"]
        logger.info("resumed RFFT from %s at step %d", directory, self.step)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) over a model's parameters and buffers: which RFNet judged a run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to ``device``; cast only if the dtype changes (diffusers logs a warning on every cast)."""
    module.to(device)
    if next(module.parameters()).dtype != dtype:
        module.to(dtype)
    return module


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W, 3)`` uint8 (the pipeline's rounding)."""
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
