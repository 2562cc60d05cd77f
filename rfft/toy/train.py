"""Train the ``toy`` generator on painted scenes: one command, reproducible per seed.

    python -m rfft.toy.train --out pipelines/assets/toy --seed 0        # ~30 min on 2 CPU cores
    python -m rfft.toy.train --out /tmp/toy-smoke --preset smoke        # seconds (tests)

Stages, each logged with loss, it/s and ETA:

1. paint ``data.num_scenes`` training scenes and ``data.num_val`` held-out ones
   (:mod:`rfnet.data.scenes.toy`, laid out by the generation pipeline's own ``prepare_product``);
2. train the VAE (L1 + image-gradient L1 + a small KL) on random crops, then set its
   ``scaling_factor`` to 1 / the standard deviation of the training latents, as SD's VAE has;
3. encode every scene once (posterior mean and standard deviation, sampled per step);
4. train the CLIP text encoder, UNet and ControlNet together on v-prediction (SD's betas rescaled
   to zero terminal SNR, prompts dropped for classifier-free guidance, EMA; with
   ``denoiser.snapshot_every`` the EMA weights are also written every N steps to
   ``OUT/snapshots/step-N/``, to look at while it trains);
5. write the EMA weights in the diffusers layout (``model_index.json``, ``unet/``, ``vae/``,
   ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``controlnet/``; safetensors in float16, loaded
   as float32) and ``provenance.json`` (command, seed, config, timings, losses, machine).

The result is what ``--set models.base=DIR --set models.controlnet=DIR/controlnet`` (or, for the
shipped copy in ``pipelines/assets/toy``, the model source ``toy``) loads.

Determinism: every random draw comes from generators seeded by ``seed``; with the same thread count
(``threads``) on the same CPU the weights are bit-identical (``tests/rfft/test_toy.py``).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait stall each other on a shared CPU: on the 2-core machine
# at load 8 a training step took 12x longer with 2 spinning threads than with 1, and as long as with
# 1 when they wait passively. Read when torch loads its OpenMP runtime, so set before importing torch
# (hence the imports below it; pyproject exempts this file from E402).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import logging
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.attempts import SHAPE_NEGATIVE
from pipelines.config import DEFAULT_NEGATIVE, GenerateConfig, load_config, parse_assignment
from pipelines.models import build_byte_tokenizer
from rfft.toy.config import DenoiserTrainConfig, ToyTrainConfig, VAETrainConfig
from rfft.toy.data import ToyData, paint_scenes

logger = logging.getLogger(__name__)

# Unconditional prompts seen in training (each as likely): the empty prompt and the negative prompts
# generation uses, so a negative prompt acts as the unconditional branch of classifier-free guidance.
UNCONDITIONAL = ("", DEFAULT_NEGATIVE, f"{DEFAULT_NEGATIVE}, {SHAPE_NEGATIVE}")


class Progress:
    """Logs ``name step/total loss it/s ETA`` every ``every`` steps (loss: mean since the last line)."""

    def __init__(self, name: str, total: int, every: int):
        self.name, self.total, self.every = name, total, every
        self.start = self.last = time.perf_counter()
        self.losses: list[float] = []

    def step(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if step % self.every and step != self.total:
            return
        now = time.perf_counter()
        rate = len(self.losses) / max(now - self.last, 1e-9)
        eta = (self.total - step) / max(step / (now - self.start), 1e-9)
        logger.info(
            "%s step %d/%d loss %.4f %.2f it/s eta %.1f min",
            self.name,
            step,
            self.total,
            float(np.mean(self.losses)),
            rate,
            eta / 60,
        )
        self.losses, self.last = [], now

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 10% of it at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def build_models(cfg: ToyTrainConfig) -> dict[str, Any]:
    """Randomly initialised VAE, text encoder, UNet, ControlNet (from the UNet), tokenizer, scheduler."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**cfg.arch.vae)
    with torch.no_grad():
        # Start with a near-deterministic posterior (std ~0.02): the pipelines sample it when they
        # encode the init image, and the tiny KL weight would take long to shrink a unit std.
        c = vae.config.latent_channels
        vae.quant_conv.bias[c:] = -8.0
        vae.quant_conv.weight[c:] *= 0.01
    text_cfg = cfg.arch.text_encoder
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    unet = UNet2DConditionModel(**cfg.arch.unet)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(cfg.arch.controlnet_conditioning_channels)
    )
    tokenizer = build_byte_tokenizer(text_cfg["bos_token_id"], text_cfg["eos_token_id"])
    scheduler = DDIMScheduler(**SCHEDULER)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "unet": unet,
        "controlnet": controlnet,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


# SD1.5's betas, rescaled to zero terminal SNR, with v-prediction and trailing timesteps (Lin et al.
# 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"; SD 2's parametrisation): the
# first of 10-20 sampling steps starts from pure noise, as training saw it, and the network predicts
# the image (not the noise) where the noise dominates, which a model trained for minutes needs to
# get the layout and colours right. The diffusers schedulers and pipelines handle both settings.
SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


def to_unit(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ----------------------------------------------------------------------------------------------------
# VAE.


def vae_loss(vae, x: torch.Tensor, cfg: VAETrainConfig, generator: torch.Generator) -> torch.Tensor:
    """L1 + ``edge_weight`` x L1 of horizontal/vertical differences + ``kl_weight`` x mean KL."""
    posterior = vae.encode(x).latent_dist
    rec = vae.decode(posterior.sample(generator)).sample
    l1 = (rec - x).abs().mean()
    edge = (rec.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (rec.diff(dim=-2) - x.diff(dim=-2)).abs().mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return l1 + cfg.edge_weight * edge + cfg.kl_weight * kl


def train_vae(vae, data: ToyData, cfg: VAETrainConfig, seed: int, every: int) -> dict[str, float]:
    rng = np.random.default_rng([seed, 1])
    generator = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    progress = Progress("vae", cfg.steps, every)
    n, r = len(data), data.images.shape[1]
    vae.train()
    for step in range(1, cfg.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, cfg.lr, cfg.warmup_steps, cfg.steps)
        idx = rng.integers(0, n, cfg.batch_size)
        ys, xs = rng.integers(0, r - cfg.crop + 1, (2, cfg.batch_size))
        crops = np.stack(
            [data.images[i, y : y + cfg.crop, x : x + cfg.crop] for i, y, x in zip(idx, ys, xs, strict=True)]
        )
        loss = vae_loss(vae, to_unit(crops), cfg, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.step(step, loss.item())
    vae.eval()
    return {"seconds": progress.seconds}


@torch.no_grad()
def encode(vae, images: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation of every image, ``(N, 4, h, w)`` float16 each."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(to_unit(images[i : i + batch])).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_error(vae, images: np.ndarray) -> float:
    """Mean absolute error in grey levels (0-255) of decode(mean latent) on ``images``."""
    x = to_unit(images)
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return float((rec - x).abs().mean() * 127.5)


# ----------------------------------------------------------------------------------------------------
# Text encoder + UNet + ControlNet.


class EMA:
    """Exponential moving average of parameters (decay warmed up as ``min(decay, (1 + n) / (10 + n))``)."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=True):
            p.copy_(s)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the averages (twice restores them)."""
        for p, s in zip(self.params, self.shadow, strict=True):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def denoiser_loss(
    models: dict[str, Any],
    latents: torch.Tensor,
    control: torch.Tensor,
    ids: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """v-prediction MSE of UNet + ControlNet on ``latents`` (already scaled), timesteps uniform.

    ``control``: ``(B, 3, R, R)`` in [0, 1]; ``ids``: ``(B, L)`` token ids (unconditional rows
    already substituted).
    """
    unet, controlnet, scheduler = models["unet"], models["controlnet"], models["scheduler"]
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    target = scheduler.get_velocity(latents, noise, t)
    embeds = models["text_encoder"](ids)[0]
    down, mid = controlnet(noisy, t, embeds, controlnet_cond=control, return_dict=False)
    pred = unet(
        noisy, t, embeds, down_block_additional_residuals=down, mid_block_additional_residual=mid
    ).sample
    return F.mse_loss(pred, target)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


class DenoiserBatches:
    """Seeded batches: sampled latents, control images, token ids with unconditional substitution."""

    def __init__(self, models, data: ToyData, mean, std, scaling: float, uncond_prob: float, seed: int):
        self.mean, self.std, self.scaling = mean, std, scaling
        self.control = data.control
        self.ids = tokenize(models["tokenizer"], data.prompts)
        self.uncond = tokenize(models["tokenizer"], list(UNCONDITIONAL))
        self.uncond_prob = uncond_prob
        self.rng = np.random.default_rng([seed, 2])
        self.generator = torch.Generator().manual_seed(seed + 2)

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(idx)
        eps = torch.randn(self.mean[i].shape, generator=self.generator)
        latents = (self.mean[i].float() + self.std[i].float() * eps) * self.scaling
        control = torch.from_numpy(self.control[idx]).float().div(255.0)[:, None].expand(-1, 3, -1, -1)
        ids = self.ids[i].clone()
        drop = self.rng.random(len(idx)) < self.uncond_prob
        for k in np.flatnonzero(drop):
            ids[k] = self.uncond[int(self.rng.integers(len(self.uncond)))]
        return latents, control.contiguous(), ids

    def sample(self, batch_size: int):
        return self.take(self.rng.integers(0, len(self.ids), batch_size))


@torch.no_grad()
def validation_loss(models, batches: DenoiserBatches, cfg: DenoiserTrainConfig, seed: int) -> float:
    """Denoising loss on the held-out scenes at fixed noise and timesteps (comparable across runs)."""
    for m in ("unet", "controlnet", "text_encoder"):
        models[m].eval()
    saved_rng, saved_gen = batches.rng, batches.generator
    batches.rng, batches.generator = np.random.default_rng([seed, 3]), torch.Generator().manual_seed(seed + 3)
    generator = torch.Generator().manual_seed(seed + 4)
    total, count = 0.0, 0
    n = len(batches.ids)
    for start in range(0, n, cfg.batch_size):
        idx = np.arange(start, min(n, start + cfg.batch_size))
        latents, control, ids = batches.take(idx)
        total += denoiser_loss(models, latents, control, ids, generator).item() * len(idx)
        count += len(idx)
    batches.rng, batches.generator = saved_rng, saved_gen
    return total / count


def train_denoiser(
    models,
    train: DenoiserBatches,
    val: DenoiserBatches,
    cfg: DenoiserTrainConfig,
    seed: int,
    every: int,
    snapshots: Path | None = None,
):
    modules = [models["text_encoder"], models["unet"], models["controlnet"]]
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(modules, cfg.ema_decay)
    generator = torch.Generator().manual_seed(seed + 5)
    progress = Progress("denoiser", cfg.steps, every)
    history = []
    for m in modules:
        m.train()
    for step in range(1, cfg.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, cfg.lr, cfg.warmup_steps, cfg.steps)
        latents, control, ids = train.sample(cfg.batch_size)
        loss = denoiser_loss(models, latents, control, ids, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        ema.update()
        progress.step(step, loss.item())
        if step % (every * 10) == 0 or step == cfg.steps:
            history.append(
                {"step": step, "train_loss": loss.item(), "val_loss": validation_loss(models, val, cfg, seed)}
            )
            logger.info("denoiser step %d val loss %.4f", step, history[-1]["val_loss"])
            for m in modules:
                m.train()
        if (
            snapshots is not None
            and cfg.snapshot_every
            and step % cfg.snapshot_every == 0
            and step < cfg.steps
        ):
            ema.swap()
            export(models, snapshots / f"step-{step}", {"step": step})
            ema.swap()
    ema.copy_to()
    ema_val = validation_loss(models, val, cfg, seed)
    logger.info("denoiser EMA weights: val loss %.4f", ema_val)
    return {"seconds": progress.seconds, "history": history, "val_loss_ema": ema_val}


# ----------------------------------------------------------------------------------------------------
# Export.


def export(models: dict[str, Any], out: Path, provenance: dict[str, Any]) -> None:
    """Write the diffusers layout (float16 safetensors) and ``provenance.json`` to ``out``."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(models["vae"]).half(),
        text_encoder=copy.deepcopy(models["text_encoder"]).half(),
        tokenizer=models["tokenizer"],
        unet=copy.deepcopy(models["unet"]).half(),
        scheduler=models["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    copy.deepcopy(models["controlnet"]).half().save_pretrained(out / "controlnet", safe_serialization=True)
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def machine() -> dict[str, Any]:
    """CPU model, logical CPUs, torch threads and the load average (for the provenance note)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def parameter_counts(models: dict[str, Any]) -> dict[str, int]:
    return {
        k: sum(p.numel() for p in models[k].parameters())
        for k in ("vae", "text_encoder", "unet", "controlnet")
    }


def train(cfg: ToyTrainConfig, command: str = "") -> dict[str, Any]:
    """Run every stage and write the generator to ``cfg.out``; returns the provenance record."""
    if not cfg.out:
        raise ValueError("missing --out: the directory the trained generator is written to")
    torch.set_num_threads(cfg.threads)
    gen_cfg = load_config(GenerateConfig, preset="toy")
    prepare = gen_cfg.prepare
    started, machine_before = time.perf_counter(), machine()
    models = build_models(cfg)
    counts = parameter_counts(models)
    logger.info("parameters: %s", ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))

    t0 = time.perf_counter()
    data = paint_scenes(cfg.seed, 0, cfg.data.num_scenes, prepare)
    val = paint_scenes(cfg.seed, cfg.data.num_scenes, cfg.data.num_val, prepare)
    paint_s = time.perf_counter() - t0
    logger.info("painted %d + %d scenes at %d px in %.0f s", len(data), len(val), prepare.resolution, paint_s)

    vae = models["vae"]
    vae_stats = train_vae(vae, data, cfg.vae, cfg.seed, cfg.log_every)
    vae_stats["val_l1_grey_levels"] = reconstruction_error(vae, val.images)
    logger.info(
        "VAE reconstruction error on held-out scenes: %.2f grey levels", vae_stats["val_l1_grey_levels"]
    )
    for p in vae.parameters():
        p.requires_grad_(False)

    t0 = time.perf_counter()
    mean, std = encode(vae, data.images)
    val_mean, val_std = encode(vae, val.images)
    scaling = float(1.0 / mean.float().std())
    vae.register_to_config(scaling_factor=scaling)
    encode_s = time.perf_counter() - t0
    logger.info("encoded %d scenes in %.0f s; latent scaling factor %.4f", len(data), encode_s, scaling)

    train_batches = DenoiserBatches(models, data, mean, std, scaling, cfg.denoiser.uncond_prob, cfg.seed)
    val_batches = DenoiserBatches(
        models, val, val_mean, val_std, scaling, cfg.denoiser.uncond_prob, cfg.seed + 7
    )
    del data  # the images are encoded; keep memory for training
    den_stats = train_denoiser(
        models, train_batches, val_batches, cfg.denoiser, cfg.seed, cfg.log_every, Path(cfg.out) / "snapshots"
    )

    provenance = {
        "command": command,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "data": (
            f"{cfg.data.num_scenes} scenes painted by rfnet.data.scenes.toy (seed {cfg.seed}, "
            f"{prepare.resolution} px, products drawn by rfnet.data.scenes.draw_product); "
            "no external images"
        ),
        "parameters": counts,
        "seconds": {
            "paint": round(paint_s, 1),
            "vae": round(vae_stats["seconds"], 1),
            "encode": round(encode_s, 1),
            "denoiser": round(den_stats["seconds"], 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "vae": {"val_l1_grey_levels": round(vae_stats["val_l1_grey_levels"], 3), "scaling_factor": scaling},
        "denoiser": {"history": den_stats["history"], "val_loss_ema": den_stats["val_loss_ema"]},
        "machine_before": machine_before,
        "machine_after": machine(),
        "versions": _versions(),
    }
    export(models, Path(cfg.out), provenance)
    logger.info(
        "wrote the toy generator to %s (%.1f min in all)", cfg.out, provenance["seconds"]["total"] / 60
    )
    return provenance


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the diffusers-layout generator")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--preset", default="toy", help="toy (the shipped weights) or smoke (seconds)")
    parser.add_argument("--config", help="YAML file of ToyTrainConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field")
    parser.add_argument("--print-config", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(
        ToyTrainConfig,
        preset=args.preset,
        config_file=args.config,
        assignments=dict(parse_assignment(a) for a in args.set),
        overrides={"out": args.out, "seed": args.seed},
    )
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    command = "python -m rfft.toy.train " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    train(cfg, command)


if __name__ == "__main__":
    main()
