"""The generation stage: ControlNet inpainting on the run's GPU workers (one model load per worker per run).

Reads the prepared columns (``product``, ``mask_image``, ``control_image``, ``prompt``,
``negative_prompt``, ``seed``), adds ``image`` (R,R,3) uint8 with the product pasted back,
``generate_s`` (busy seconds per row) and ``generate_batch_s`` (the call's seconds), and drops the mask
and control image it consumed. The stage runs on the run's long-lived workers
(:mod:`pipelines.pool`), which time its construction (model load + compile); resources (pool size,
GPUs, batch size) are chosen there and where the wave calls ``map_batches`` (:mod:`pipelines.wave`),
never here.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from PIL import Image

from pipelines.batch import Batch, num_rows, row_errors
from pipelines.config import GenerateConfig
from pipelines.device import Placement, place
from pipelines.models import identity, load_components, make_scheduler
from pipelines.prepare import composite_on, paste_back

logger = logging.getLogger(__name__)


class ReuseConditioning(torch.nn.Module):
    """The ControlNet's conditioning embedding, computed once per control image instead of per call.

    ``StableDiffusionControlNetInpaintPipeline`` passes the same control-image tensor to the ControlNet
    at every denoising step, and ``ControlNetModel`` re-embeds it every time (eight convolutions at
    full resolution: ~45% of the tiny preset's generation time, 1.3% of SD1.5's FLOPs at 512 px). This
    wrapper returns the previous output while its input is the very same tensor object (the reference
    it keeps means no other tensor can take that identity). Exact: the same module on the same input.
    Only without autograd; with gradients enabled it always recomputes.
    """

    def __init__(self, embedding: torch.nn.Module):
        super().__init__()
        self.embedding = embedding
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.compiler.disable
    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self._last = None
            return self.embedding(cond)
        if self._last is not None and self._last[0] is cond:
            return self._last[1]
        out = self.embedding(cond)
        self._last = (cond, out)
        return out

    def clear(self) -> None:
        self._last = None


def fuse_attention_projections(model: torch.nn.Module) -> int:
    """Fuse each attention layer's q/k/v projections (k/v for cross-attention) into one matmul.

    The same arithmetic as separate projections (one wider GEMM instead of three narrow ones: fewer
    launches, better tensor-core occupancy), so images change only by floating-point rounding.
    ``UNet2DConditionModel.fuse_qkv_projections`` does this for the UNet; ``ControlNetModel`` has
    no such method, so this works on any diffusers model with ``Attention`` layers. Returns how many
    layers were fused.
    """
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    layers = [m for m in model.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.fuse_projections(fuse=True)
        layer.set_processor(FusedAttnProcessor2_0())
    return len(layers)


def speed_up(pipe, *, channels_last: bool, fuse_qkv: bool, compile: bool) -> None:
    """Apply the exact (image-preserving) speed settings to a loaded diffusers ControlNet pipeline.

    ``channels_last`` for UNet, ControlNet and VAE convolutions; fused q/k/v projections
    (:func:`fuse_attention_projections`); ``torch.compile`` of UNet and ControlNet (static shapes; the first call at a
    new batch shape compiles, so callers warm up once). With compilation, 1x1 convolutions (SD1.5's
    attention ``proj_in``/``proj_out``) are lowered to matmuls, which inductor fuses with their
    neighbours. Quality-changing speedups (fewer steps, other schedulers, caching) are not here.
    """
    if fuse_qkv:
        fused = sum(fuse_attention_projections(m) for m in (pipe.unet, pipe.controlnet))
        logger.info("fused q/k/v projections in %d attention layers", fused)
    if channels_last:
        for module in (pipe.unet, pipe.controlnet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.conv_1x1_as_mm = True
        pipe.unet = torch.compile(pipe.unet, fullgraph=False, dynamic=False)
        pipe.controlnet = torch.compile(pipe.controlnet, fullgraph=False, dynamic=False)


class GenerateStage:
    """StableDiffusionControlNetInpaintPipeline around the prepared inputs; models load once per actor.

    Noise comes from one CPU ``torch.Generator`` per row seeded with the attempt seed, so an image
    depends only on its own seed and inputs (not on which other rows share its batch, up to
    floating-point reduction order). A failing batch is split in halves and retried, so one bad row or
    an out-of-memory batch costs that row's attempt, not the batch.
    """

    def __init__(self, cfg: GenerateConfig):
        from diffusers import StableDiffusionControlNetInpaintPipeline

        self.cfg = cfg
        g = cfg.generation
        if g.torch_threads:
            torch.set_num_threads(g.torch_threads)
        t0 = time.perf_counter()
        self.placement = place(g.device, g.dtype, component="generation")
        m = cfg.models
        components = load_components(
            m.base,
            m.controlnet,
            dtype=self.placement.dtype,
            base_revision=m.base_revision,
            controlnet_revision=m.controlnet_revision,
        )
        components["scheduler"] = make_scheduler(g.scheduler, components["scheduler"].config)
        pipe = StableDiffusionControlNetInpaintPipeline(
            **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        if m.lora:
            from pipelines.models import materialize, parse_source

            path, rev = materialize(parse_source(m.lora))
            pipe.load_lora_weights(path, revision=rev, use_safetensors=True)
            pipe.fuse_lora(lora_scale=m.lora_scale)
            pipe.unload_lora_weights()
        pipe = pipe.to(self.placement.device)
        pipe.set_progress_bar_config(disable=True)
        self.reuse_conditioning = ReuseConditioning(pipe.controlnet.controlnet_cond_embedding)
        pipe.controlnet.controlnet_cond_embedding = self.reuse_conditioning
        self.compile_cache = None
        if g.compile:  # compiled graphs persist across runs (pipelines.cache)
            from pipelines.cache import configure_compile_cache

            self.compile_cache = configure_compile_cache(
                self.placement.device, compile_settings(cfg, self.placement)
            )
        speed_up(pipe, channels_last=g.channels_last, fuse_qkv=g.fuse_qkv, compile=g.compile)
        self.pipe = pipe
        self.load_s = time.perf_counter() - t0
        self.compile_s = 0.0
        compiled = ""
        # torch.compile is lazy: the first batch at the real shape compiles
        if self.compile_cache is not None:
            t1 = time.perf_counter()
            self._warm_up()
            self.compile_s = time.perf_counter() - t1
            hits = self.compile_cache.report()
            compiled = f" (FX graph cache {hits['hits']} hits, {hits['misses']} misses)"
        logger.info(
            "generation actor ready: %s on %s/%s, load %.1f s, compile %.1f s%s",
            m.base,
            self.placement.device,
            self.placement.dtype,
            self.load_s,
            self.compile_s,
            compiled,
        )

    def _warm_up(self) -> None:
        """Run one full batch so torch.compile traces/compiles before real work (cost reported)."""
        r, b = self.cfg.prepare.resolution, self.cfg.generation.batch_size
        blank = np.zeros((r, r, 4), np.uint8)
        blank[r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 255
        self._generate(
            [blank] * b,
            [np.full((r, r), 255, np.uint8)] * b,
            [np.zeros((r, r, 3), np.uint8)] * b,
            ["warm-up"] * b,
            [""] * b,
            list(range(b)),
        )

    def _generate(self, products, masks, controls, prompts, negatives, seeds) -> np.ndarray:
        g, r = self.cfg.generation, self.cfg.prepare.resolution
        n = len(products)
        if g.compile and 0 < n < g.batch_size:
            # A compiled model is specialised to the batch shape: pad a short batch with copies of its
            # first row (their results are dropped) instead of paying for a recompilation.
            def pad(column):
                return [*column, *[column[0]] * (g.batch_size - n)]

            products, masks, controls, prompts, negatives, seeds = map(
                pad, (products, masks, controls, prompts, negatives, seeds)
            )
        white = np.full((r, r, 3), 255, np.uint8)
        try:
            # Inference mode here, not in the callers: the warm-up must trace torch.compile's graphs
            # under the same dispatch keys as real batches, or the first real batch recompiles.
            with torch.inference_mode():
                out = self.pipe(
                    prompt=list(prompts),
                    negative_prompt=list(negatives),
                    image=[Image.fromarray(composite_on(p, white)) for p in products],
                    mask_image=[Image.fromarray(m) for m in masks],
                    control_image=[Image.fromarray(c) for c in controls],
                    height=r,
                    width=r,
                    num_inference_steps=g.num_inference_steps,
                    guidance_scale=g.guidance_scale,
                    controlnet_conditioning_scale=g.controlnet_conditioning_scale,
                    generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
                    output_type="np",
                )
        finally:
            self.reuse_conditioning.clear()  # do not hold a batch's activations after it
        images = (np.clip(out.images[:n], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return np.stack([paste_back(img, p) for img, p in zip(images, products[:n], strict=True)])

    def _generate_rows(self, batch: Batch, idx: list[int], images: np.ndarray, errors: list[str]) -> None:
        try:
            out = self._generate(
                [batch["product"][i] for i in idx],
                [batch["mask_image"][i] for i in idx],
                [batch["control_image"][i] for i in idx],
                [str(batch["prompt"][i]) for i in idx],
                [str(batch["negative_prompt"][i]) for i in idx],
                [int(batch["seed"][i]) for i in idx],
            )
        except Exception as exc:  # the batch failed; isolate the failing rows by bisection
            if self.placement.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(idx) > 1:
                half = len(idx) // 2
                self._generate_rows(batch, idx[:half], images, errors)
                self._generate_rows(batch, idx[half:], images, errors)
                return
            logger.exception(
                "generation failed for sku %s attempt %s", batch["sku_id"][idx[0]], batch["attempt"][idx[0]]
            )
            errors[idx[0]] = f"generation failed: {type(exc).__name__}: {exc}"
            return
        images[idx] = out

    def __call__(self, batch: Batch) -> Batch:
        t0 = time.perf_counter()
        n, r = num_rows(batch), self.cfg.prepare.resolution
        errors = row_errors(batch)
        images = np.zeros((n, r, r, 3), np.uint8)
        todo = [i for i in range(n) if not errors[i]]
        if todo:
            self._generate_rows(batch, todo, images, errors)
        elapsed = time.perf_counter() - t0
        batch["image"] = images
        batch["error"] = np.array(errors, dtype=object)
        batch["generate_s"] = np.full(n, elapsed / max(1, n), np.float32)
        batch["generate_batch_s"] = np.full(n, elapsed, np.float32)
        del batch["mask_image"], batch["control_image"]
        return batch


def compile_settings(cfg: GenerateConfig, placement: Placement) -> dict[str, object]:
    """What shapes the compiled UNet/ControlNet graphs: the compile cache's settings key."""
    g = cfg.generation
    ids = {k: v for k, v in model_ids(cfg).items() if k != "rfnet_model"}
    return {
        **ids,
        "lora_scale": cfg.models.lora_scale if cfg.models.lora else None,
        "dtype": str(placement.dtype),
        "resolution": cfg.prepare.resolution,
        "batch_size": g.batch_size,
        "cfg": g.guidance_scale > 1.0,  # classifier-free guidance doubles the UNet batch
        "channels_last": g.channels_last,
        "fuse_qkv": g.fuse_qkv,
    }


def model_ids(cfg: GenerateConfig) -> dict[str, str]:
    """Model ids and revisions recorded with every attempt."""
    base, base_rev = identity(cfg.models.base, cfg.models.base_revision)
    cn, cn_rev = identity(cfg.models.controlnet, cfg.models.controlnet_revision)
    ids = {
        "base_model": base,
        "base_revision": base_rev,
        "controlnet_model": cn,
        "controlnet_revision": cn_rev,
    }
    ids["lora"] = cfg.models.lora or ""
    ids["rfnet_model"] = cfg.inspect.rfnet if cfg.inspect.enabled and cfg.inspect.rfnet else ""
    return ids
