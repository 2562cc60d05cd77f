"""``ToyTrainConfig``: how the ``toy`` generator is trained (``python -m rfft.toy.train``).

Presets: ``toy`` (the shipped weights, ~40 min on a 2-core CPU) and ``smoke`` (the same stages at a
fraction of the sizes and steps, seconds: tests). Architectures are diffusers constructor arguments;
the canvas, its layout and the prompt pool come from the ``toy`` generation preset
(:class:`pipelines.config.GenerateConfig`), so training and generation agree.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from pipelines.config import ConfigBase

_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    # Three blocks: latents are 4x smaller than the canvas (24 x 24 at 96 px). Narrow at full
    # resolution, where most of the cost is (16 channels: 2.2x cheaper to train and ~5x cheaper to
    # decode than 32).
    "block_out_channels": [16, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 96,
    # No self-attention at 32 x 32 latents: convolutions only, so the VAE trains on crops.
    "mid_block_add_attention": False,
}
_UNET = {
    "sample_size": 24,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64, 128],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "vocab_size": 1900,
    "bos_token_id": 1898,
    "eos_token_id": 1899,
    "pad_token_id": 1899,
    "layer_norm_eps": 1e-05,
    "projection_dim": 64,
}


class ArchConfig(ConfigBase):
    """Model sizes (diffusers / transformers constructor arguments)."""

    vae: dict[str, Any] = _VAE
    unet: dict[str, Any] = _UNET
    text_encoder: dict[str, Any] = _TEXT
    # The ControlNet's image encoder for the control image: one stride-2 stage per entry after the
    # first, so len - 1 must equal the VAE's downsampling stages (2 for 4x). Narrow: it runs at the
    # canvas resolution, and Canny edges need few channels (SD's 16-32-96-256 would cost more than
    # the UNet here).
    controlnet_conditioning_channels: tuple[int, ...] = (8, 16, 32)

    @model_validator(mode="after")
    def _consistent(self) -> ArchConfig:
        width, cross = self.text_encoder["hidden_size"], self.unet["cross_attention_dim"]
        if width != cross:
            raise ValueError(f"unet.cross_attention_dim={cross} must equal text_encoder.hidden_size={width}")
        stages = len(self.vae["block_out_channels"]) - 1
        if len(self.controlnet_conditioning_channels) - 1 != stages:
            raise ValueError(
                f"controlnet_conditioning_channels={self.controlnet_conditioning_channels} downsample "
                f"{len(self.controlnet_conditioning_channels) - 1} times; the VAE downsamples {stages} times"
            )
        return self


class DataConfig(ConfigBase):
    """The painted training scenes (rfnet.data.scenes.toy)."""

    num_scenes: int = Field(6_000, ge=8)  # scenes painted once, reused across epochs
    num_val: int = Field(256, ge=4)  # held-out scenes for the logged validation losses


class VAETrainConfig(ConfigBase):
    steps: int = Field(1_000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop: int = Field(64, ge=16)  # px, random square crops (the VAE is fully convolutional)
    lr: float = Field(1e-3, gt=0)  # peak AdamW learning rate (linear warm-up, cosine decay to 10%)
    warmup_steps: int = Field(100, ge=0)
    kl_weight: float = Field(1e-6, ge=0)  # KL to N(0, I) per latent element, against the L1 loss
    edge_weight: float = Field(1.0, ge=0)  # L1 of image gradients: keeps edges sharp


class DenoiserTrainConfig(ConfigBase):
    """Text encoder + UNet + ControlNet, trained together on v-prediction."""

    steps: int = Field(2_400, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(6e-4, gt=0)  # peak AdamW learning rate (linear warm-up, cosine decay to 10%)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(1e-2, ge=0)
    uncond_prob: float = Field(0.1, ge=0, le=1)  # prompts replaced by an unconditional one (CFG)
    ema_decay: float = Field(0.998, ge=0, lt=1)  # exported weights are the EMA
    max_grad_norm: float = Field(1.0, gt=0)
    snapshot_every: int = Field(0, ge=0)  # steps between EMA snapshots in OUT/snapshots/ (0: none)


class ToyTrainConfig(ConfigBase):
    """``python -m rfft.toy.train``: paint scenes, train the VAE, then text encoder + UNet + ControlNet."""

    out: str | None = None  # output directory: the diffusers-layout generator + provenance.json
    seed: int = Field(0, ge=0)  # all randomness (scenes, initial weights, batches, noise) derives from it
    threads: int = Field(2, ge=1)  # torch intra-op threads (results are reproducible per thread count)
    log_every: int = Field(50, ge=1)  # steps between progress lines
    arch: ArchConfig = ArchConfig()
    data: DataConfig = DataConfig()
    vae: VAETrainConfig = VAETrainConfig()
    denoiser: DenoiserTrainConfig = DenoiserTrainConfig()

    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {
        # The shipped weights (pipelines/assets/toy, docs/toy.md).
        "toy": (None, {}),
        # Every stage at toy sizes: seconds on a CPU (tests).
        "smoke": (
            None,
            {
                "log_every": 2,
                "arch": {
                    "vae": {**_VAE, "block_out_channels": [8, 16, 16], "norm_num_groups": 4},
                    "unet": {
                        **_UNET,
                        "block_out_channels": [16, 16, 32],
                        "norm_num_groups": 4,
                        "cross_attention_dim": 16,
                    },
                    "text_encoder": {
                        **_TEXT,
                        "hidden_size": 16,
                        "intermediate_size": 32,
                        "num_hidden_layers": 1,
                    },
                    "controlnet_conditioning_channels": [4, 8, 8],
                },
                "data": {"num_scenes": 16, "num_val": 4},
                "vae": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
                "denoiser": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
            },
        ),
    }
