"""Typed configs for RFNet: the architecture (:class:`RFNetConfig`), training and evaluation jobs.

``RFNetConfig`` is what a checkpoint stores in ``config.json``: everything needed to rebuild the
network (weights come from ``model.safetensors``). Its presets:

- ``tiny``: a few-thousand-parameter network for tests; random weights, milliseconds per image.
- ``small``: ImageNet EfficientNet-Lite0 encoders (generated image, product, product-centred
  view) at 128 px on a CPU, auxiliary maps stacked as input channels, a byte-level tiny caption
  encoder, the hand-made product descriptor and boosted trees over it. Minutes per run; training
  starts from the shipped ``builtin:small`` weights (see rfnet.pretrain).
- ``toy``: ``small`` at 96 px without the hand-made descriptor, product search or local view: the
  toy world's differentiable reward and its judge.
- ``paper``: the paper's design (Du et al. 2024): one ResNet-50 per image at 384 px (product,
  generated image, depth map, saliency map), RoBERTa-base captions, the Feature Filter Module and
  three self-attention fusion layers. For GPUs.

``TrainRFNetConfig`` / ``EvaluateConfig`` wrap it for ``reliable-ad train-rfnet`` / ``evaluate``;
their presets derive the model part from ``RFNetConfig.PRESETS`` (never copied).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipelines.config import ConfigBase, ConfigError

# Image backbones by name (see rfnet.backbones). "compact" is the project's own small CNN, trained from
# scratch; EfficientNet-Lite is written in rfnet.backbones.efficientnet_lite (ImageNet weights for
# lite0 ship as builtin:efficientnet_lite0); the others are transformers architectures. Random init
# unless backbone_source is given.
Backbone = Literal[
    "compact",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "resnet18",
    "resnet50",
    "convnext_tiny",
    "convnext_base",
    "clip_vit_b16",
    "dinov2_small",
    "dinov2_base",
    "siglip_base",
]
# Caption encoders by name (see rfnet.encoders). "bert_tiny"/"bert_small": random-init BERTs over a
# byte-level tokenizer (no vocabulary download); "roberta_base": the paper's encoder.
CaptionEncoder = Literal["bert_tiny", "bert_small", "roberta_base"]
# Auxiliary extractors by name (see rfnet.aux).
DepthExtractor = Literal["depth_anything", "dpt", "tiny_depth_anything", "defocus"]
SaliencyExtractor = Literal["spectral_residual", "frequency_tuned"]


def _dict(**kwargs: Any) -> dict[str, Any]:
    return kwargs


# Flags that add measurements to the product descriptor (rfnet.aux); each needs use_descriptor.
DESCRIPTOR_EXTENSIONS = (
    "descriptor_scene",
    "descriptor_integrity",
    "descriptor_support",
    "descriptor_attached",
    "descriptor_grain",
    "descriptor_continuity",
)
_NO_EXTENSIONS = dict.fromkeys(DESCRIPTOR_EXTENSIONS, False)


class RFNetConfig(ConfigBase):
    """Architecture of RFNet. Defaults are the paper's design; presets change what differs."""

    # --- inputs -------------------------------------------------------------------------------
    # px, side the generated image (and its aux maps) is resized to
    image_size: int = Field(384, ge=32, le=1024, multiple_of=16)
    # px, side of the canonical product (alpha-bbox crop, square pad)
    product_size: int = Field(384, ge=16, le=1024, multiple_of=16)
    # Modality switches. A switched-off modality is not computed and not read: its encoder is not
    # built and changing that input cannot change the output (tested).
    use_product: bool = True  # product cut-out (RGBA); the paper's ablation says it matters most
    use_depth: bool = True  # depth map of the generated image
    use_saliency: bool = True  # saliency map of the generated image
    use_caption: bool = True  # product caption (title text)
    # Explicit product/image comparison (beyond the paper): a product-colour back-projection map of
    # the generated image (where do the product's colours appear, rel. to how common they are in the
    # scene), fed to the image encoder as two more channels (rfnet.aux.product_match_maps). Needs use_product.
    use_product_match: bool = False
    # soft colour bins per RGB axis for the back-projection (bins**3 in all)
    match_bins: int = Field(4, ge=2, le=8)
    # Product localisation (beyond the paper): find the unchanged product in the image by masked
    # template matching (rfnet.aux.locate_product), add its placement mask as one more image channel.
    # Needs use_product.
    use_placement: bool = False
    # A product-centred view (needs use_placement): a local_size px crop centred on the found product,
    # local_context x its longer side, through its own encoder (local_widths). The product then always
    # has the same size and place, so what is under, beside and around it is where the encoder expects.
    local_view: bool = False
    local_size: int = Field(64, ge=16, le=512, multiple_of=16)  # px of the product-centred view
    local_context: float = Field(2.5, ge=1.0, le=8.0)  # view side / the product box's longer side
    local_widths: tuple[int, ...] | None = None  # "compact" local encoder channels; None: compact_widths
    # An explicit descriptor of the located product in its scene (rfnet.aux.product_descriptor:
    # contrast, support under the base, product-coloured matter on the outline, clutter, neighbour
    # heights), one more token through a small MLP. Needs use_placement and use_product_match.
    use_descriptor: bool = False
    # How the descriptor's 46 differently scaled measurements are normalised before its MLP. "data":
    # standardised per feature with the training set's mean and std (stored in the checkpoint, set
    # by the trainer before the first epoch; clipped to +-5 std). "layer": a LayerNorm across the
    # features of each sample (mixes unrelated units; kept for older checkpoints).
    descriptor_norm: Literal["layer", "data"] = "layer"
    # Also a linear map from the (standardised) descriptor straight to the logits, added to the
    # head's: what a linear model of the measurements gets right is there from the first epochs.
    descriptor_logits: bool = False
    # Extend the descriptor with rfnet.aux.scene_descriptor (38 more measurements: outline contrast,
    # product-coloured matter attached to the outline, horizontal structure at the base, heights of
    # other objects, edge orientation, standing objects in real product heights by perspective). Needs use_descriptor.
    descriptor_scene: bool = False
    # Extend the descriptor with rfnet.aux.integrity_descriptor (18 measurements of whether the
    # picture itself is broken: bands moved sideways, split channels, block artefacts, flat or
    # posterised colour, clipping, noise, clutter). Needs use_descriptor.
    descriptor_integrity: bool = False
    # Extend the descriptor with rfnet.aux.support_descriptor (30 measurements of the surface under
    # the product: how far it reaches on either side, in product widths, at three depths below the
    # base). Needs use_descriptor.
    descriptor_support: bool = False
    # Extend the descriptor with rfnet.aux.attached_descriptor (10 measurements of scene matter grown
    # onto the product's outline above its base: its area, how far it reaches above and beside the
    # product, how much of the outline it touches). Needs use_descriptor.
    descriptor_attached: bool = False
    # Extend the descriptor with rfnet.aux.grain_descriptor (9 measurements of how fine the scene's
    # texture is in product heights, under, beside and above the product). Needs use_descriptor.
    descriptor_grain: bool = False
    # Extend the descriptor with rfnet.aux.continuity_descriptor (15 measurements of where the scene
    # just outside the product's outline has the product's colour). Needs use_descriptor.
    descriptor_continuity: bool = False
    # Gradient-boosted trees over the raw descriptor (rfnet.trees): this many boosting rounds of one
    # tree per class, each tree complete to descriptor_tree_depth. The trainer fits them on the
    # training split before the first epoch and picks, at every validation, how much their class
    # probabilities weigh against the network's (0 to 1); in eval mode the logits are the mixture.
    # 0: no trees. Needs use_descriptor.
    descriptor_trees: int = Field(0, ge=0, le=5000)
    descriptor_tree_depth: int = Field(4, ge=1, le=10)
    # How the trees meet the network. "mixture": the network trains alone; in eval mode the logits
    # are (1 - w) log_softmax(net) + w log_softmax(trees). "offset": the network trains on top of
    # the trees' scores (out-of-fold ones for training examples, so it learns what they miss
    # rather than what they memorised); the logits are net + w * trees.
    descriptor_tree_mix: Literal["mixture", "offset"] = "mixture"

    # --- image encoders -----------------------------------------------------------------------
    backbone: Backbone = "resnet50"  # image encoder architecture (one per image input unless share_encoders)
    # Pretrained weights for every image encoder, whatever its input channels (rfnet.backbones.stem):
    # a directory, s3:// prefix or hub id (safetensors), or builtin:efficientnet_lite0; None: random init.
    backbone_source: str | None = None
    compact_widths: tuple[int, ...] = (
        32,
        64,
        128,
        192,
    )  # "compact" backbone: channels per stage (stride 4, then 2 per stage)
    compact_blocks: int = Field(1, ge=1, le=4)  # "compact" backbone: residual blocks per stage
    product_widths: tuple[int, ...] | None = None  # "compact" product encoder channels; None: compact_widths
    share_encoders: bool = False  # one encoder for the depth/saliency inputs too (paper: one per image)
    # "tokens": each aux map has its own encoder and tokens (paper). "channels": depth/saliency maps
    # are stacked onto the generated image as extra input channels of its encoder (4-5x cheaper).
    aux_fusion: Literal["tokens", "channels"] = "tokens"
    token_grid: int = Field(4, ge=1, le=24)  # each image becomes token_grid**2 tokens (adaptive average pool)
    # px the generated-image encoder sees (the image and its maps are downscaled to it); None:
    # image_size. The product-centred view is cut from the full image_size input either way.
    global_size: int | None = Field(None, ge=32, le=1024, multiple_of=16)

    # --- caption encoder ----------------------------------------------------------------------
    caption_encoder: CaptionEncoder = "roberta_base"
    caption_source: str | None = (
        None  # pretrained encoder + tokenizer (dir / s3:// / hub id); None: random init, byte tokenizer
    )
    caption_max_length: int = Field(64, ge=4, le=512)  # tokens (bytes for the byte tokenizer), incl. BOS/EOS

    # --- fusion -------------------------------------------------------------------------------
    dim: int = Field(768, ge=8, multiple_of=4)  # token width in the FFM and the fusion transformer
    use_ffm: bool = (
        True  # Feature Filter Module: product tokens attend to caption tokens (needs product + caption)
    )
    fusion_layers: int = Field(3, ge=0, le=24)  # self-attention layers over the concatenated tokens
    fusion_heads: int = Field(8, ge=1, le=64)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # dropout in fusion layers and before the head

    # --- auxiliary extractors -----------------------------------------------------------------
    depth: DepthExtractor = "depth_anything"  # depth estimator (rfnet.aux); random init unless depth_source
    depth_source: str | None = None  # pretrained depth weights (dir / s3:// / hub id, safetensors)
    depth_size: int = Field(252, ge=28, le=1036)  # px the depth network runs at (multiple of its patch size)
    saliency: SaliencyExtractor = "spectral_residual"  # saliency method (rfnet.aux)

    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {
        # Du et al. (2024): ResNet-50 per image at 384 px, RoBERTa-base, FFM, 3 fusion layers.
        "paper": (None, {}),
        # ImageNet Lite0 encoders fine-tuned on a CPU at 128 px (see docs/rfnet.md for the choices).
        "small": (
            None,
            _dict(
                image_size=128,
                product_size=64,
                backbone="efficientnet_lite0",
                backbone_source="builtin:efficientnet_lite0",
                aux_fusion="channels",
                token_grid=4,
                use_product_match=True,
                use_placement=True,
                local_view=True,
                local_size=64,
                local_context=2.5,
                use_descriptor=True,
                descriptor_norm="data",
                descriptor_logits=True,
                **dict.fromkeys(DESCRIPTOR_EXTENSIONS, True),
                descriptor_trees=300,
                caption_encoder="bert_tiny",
                caption_max_length=48,
                dim=128,
                fusion_layers=2,
                fusion_heads=4,
                dropout=0.1,
                depth="defocus",
                saliency="spectral_residual",
            ),
        ),
        # The toy world's reward and judge (docs/toy.md): small at 96 px (the image seen at 64) with
        # no descriptor, search or local view, so differentiable end to end.
        "toy": (
            "small",
            _dict(
                image_size=96,
                global_size=64,
                use_placement=False,
                local_view=False,
                use_descriptor=False,
                descriptor_logits=False,
                descriptor_trees=0,
                **_NO_EXTENSIONS,
            ),
        ),
        # Tests: the same shape as small, a fraction of the width. Random weights, milliseconds.
        "tiny": (
            "small",
            _dict(
                image_size=64,
                product_size=32,
                backbone="compact",
                backbone_source=None,
                compact_widths=(8, 16, 16, 24),
                # Three stages at 32 px: the deepest map stays 2x2 (see _check).
                product_widths=(8, 8, 16),
                local_widths=(8, 8, 16),
                local_size=32,
                token_grid=2,
                caption_max_length=24,
                dim=32,
                fusion_layers=1,
                fusion_heads=2,
                # as before these switches existed, so the seeded "tiny" source scores as it did
                descriptor_norm="layer",
                descriptor_logits=False,
                descriptor_trees=0,
                global_size=None,
                **_NO_EXTENSIONS,
            ),
        ),
    }

    @model_validator(mode="after")
    def _check(self) -> RFNetConfig:
        if self.dim % self.fusion_heads:
            raise ValueError(f"dim={self.dim} must be divisible by fusion_heads={self.fusion_heads}")
        if self.use_product_match and not self.use_product:
            raise ValueError(
                "use_product_match compares the product with the image: it needs use_product=True"
            )
        if self.use_placement and not self.use_product:
            raise ValueError("use_placement looks for the product in the image: it needs use_product=True")
        if self.local_view and not self.use_placement:
            raise ValueError("local_view is centred on the located product: it needs use_placement=True")
        if self.use_descriptor and not (self.use_placement and self.use_product_match):
            raise ValueError(
                "use_descriptor describes the located product: it needs use_placement and use_product_match"
            )
        for extension in DESCRIPTOR_EXTENSIONS:
            if getattr(self, extension) and not self.use_descriptor:
                raise ValueError(f"{extension} extends the product descriptor: it needs use_descriptor=True")
        if self.descriptor_trees and not self.use_descriptor:
            raise ValueError("descriptor_trees read the product descriptor: they need use_descriptor=True")
        if self.backbone == "compact" and self.backbone_source:
            raise ValueError(
                f"backbone='compact' is trained from scratch and has no pretrained weights, but "
                f"backbone_source={self.backbone_source!r}; leave backbone_source empty or choose a "
                "pretrained backbone (e.g. backbone=efficientnet_lite0 with backbone_source=builtin:efficientnet_lite0)"
            )
        for name in ("compact_widths", "product_widths", "local_widths"):
            widths = getattr(self, name)
            if widths is not None and (len(widths) < 1 or min(widths) < 4):
                raise ValueError(f"{name} must list at least one stage width >= 4, got {widths}")
        if self.backbone == "compact":
            self._check_compact_depth()
        return self

    def _check_compact_depth(self) -> None:
        """Every "compact" encoder must end on a map of at least 2x2.

        It halves its input ``len(widths) + 1`` times. On a 1x1 map each GroupNorm group holds
        ``channels / groups`` numbers (two, for 16 channels), and normalising two numbers keeps
        little more than the sign of their difference: the features become near binary and their
        gradients depend on float rounding.
        """
        image = self.global_size or self.image_size
        encoders = [("compact_widths", self.compact_widths, image, "global_size / image_size")]
        if self.use_product:
            # With share_encoders (and 3 image channels) the product goes through the image encoder.
            shared = self.share_encoders and self.image_channels == 3
            name = "compact_widths" if shared else "product_widths"
            widths = self.compact_widths if shared else self.product_widths or self.compact_widths
            encoders.append((name, widths, self.product_size, "product_size"))
        if self.local_view:
            encoders.append(
                ("local_widths", self.local_widths or self.compact_widths, self.local_size, "local_size")
            )
        for name, widths, size, size_name in encoders:
            side = size // 2 ** (len(widths) + 1)
            if side < 2:
                raise ValueError(
                    f"{name}={tuple(widths)} on {size} px input ends on a {max(side, 0)}x{max(side, 0)} map: "
                    f"a 'compact' encoder halves its input len(widths) + 1 times and needs a final map of "
                    f"at least 2x2 (GroupNorm over a 1x1 map normalises a couple of numbers per group); "
                    f"use fewer stages or a larger {size_name}"
                )

    @property
    def descriptor_size(self) -> int:
        """Length of the raw descriptor the model reads (0 without ``use_descriptor``)."""
        from rfnet.aux import (
            ATTACHED_DESCRIPTOR_SIZE,
            CONTINUITY_DESCRIPTOR_SIZE,
            DESCRIPTOR_SIZE,
            GRAIN_DESCRIPTOR_SIZE,
            INTEGRITY_DESCRIPTOR_SIZE,
            SCENE_DESCRIPTOR_SIZE,
            SUPPORT_DESCRIPTOR_SIZE,
        )

        if not self.use_descriptor:
            return 0
        return (
            DESCRIPTOR_SIZE
            + (SCENE_DESCRIPTOR_SIZE if self.descriptor_scene else 0)
            + (INTEGRITY_DESCRIPTOR_SIZE if self.descriptor_integrity else 0)
            + (SUPPORT_DESCRIPTOR_SIZE if self.descriptor_support else 0)
            + (ATTACHED_DESCRIPTOR_SIZE if self.descriptor_attached else 0)
            + (GRAIN_DESCRIPTOR_SIZE if self.descriptor_grain else 0)
            + (CONTINUITY_DESCRIPTOR_SIZE if self.descriptor_continuity else 0)
        )

    @property
    def image_channels(self) -> int:
        """Input channels of the generated-image encoder: RGB (+ stacked aux maps, 2 match maps, placement)."""
        extra = 0
        if self.aux_fusion == "channels":
            extra += int(self.use_depth) + int(self.use_saliency)
        return 3 + extra + 2 * int(self.use_product_match) + int(self.use_placement)


# ----------------------------------------------------------------------------------------------------
# Training (`reliable-ad train-rfnet`).


class TrainDataConfig(ConfigBase):
    """Which samples are trained on and how they are loaded."""

    root: str | None = None  # RF1M-layout directory or s3:// prefix (--data)
    # A set with one label file is split three ways by image-path hash (rfnet.data.holdout_split):
    # test_fraction of it is held out from training AND from every choice made on validation (the
    # epoch, the tree weight); `evaluate` scores it by default. val_fraction of the rest validates.
    # test_fraction=0: no test share (evaluate then scores the validation share).
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    # seed of the split hash; recorded in the checkpoint so evaluate reproduces it
    split_seed: int = Field(0, ge=0)
    # "memory": every worker decodes its samples once into RAM (fast epochs; up to ~100k images at
    # 128 px). "stream": Ray Data shards stream decoded batches every epoch (RF1M scale).
    loader: Literal["memory", "stream"] = "memory"
    load_threads: int = Field(8, ge=1, le=64)  # threads decoding images for the memory loader
    max_samples: int | None = Field(None, ge=1)  # use only the first N samples (by path hash); None: all
    # Memory loader: compute each example's product descriptor once, from the unaugmented image (its
    # box geometry follows the flip and shift; its measurements are flip-invariant), instead of at
    # every step from the augmented batch. False: every step (colour jitter reaches the descriptor).
    cache_descriptor: bool = False


class AugmentConfig(ConfigBase):
    """Augmentations that keep every defect's evidence (see docs/rfnet.md for what is left out and why)."""

    enabled: bool = True
    hflip: bool = True  # mirror image AND product together (a mirrored defect is the same defect)
    # max shift, fraction of the side, edge-replicated (no crop cuts the product)
    translate: float = Field(0.03, ge=0.0, le=0.2)
    # brightness/contrast/saturation jitter, the same for image and product
    color: float = Field(0.1, ge=0.0, le=0.5)


class OptimConfig(ConfigBase):
    """Optimiser, schedule, imbalance handling and the stopping rule."""

    epochs: int = Field(30, ge=1)  # upper bound on epochs (the time budget may end training earlier)
    batch_size: int = Field(64, ge=1)  # global batch (split evenly across workers)
    lr: float = Field(2e-3, gt=0.0)  # peak AdamW learning rate (after warm-up)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)  # linear warm-up, then cosine decay to zero at the last epoch
    label_smoothing: float = Field(0.05, ge=0.0, lt=1.0)
    # Class imbalance: "weights" scales each sample's loss by N / (K * n_class) (mean weight 1);
    # "sampler" draws each epoch class-balanced with replacement; "none" leaves it.
    balance: Literal["weights", "sampler", "none"] = "weights"
    grad_clip: float | None = Field(1.0, gt=0.0)  # max global grad norm; None: no clipping
    # Wall-clock budget for training (minutes, from the worker's start, data loading included). After
    # the first epoch the number of epochs that fit is fixed and the cosine schedule stretched to it.
    # None: exactly `epochs` epochs.
    max_train_minutes: float | None = Field(None, gt=0.0)
    early_stop_patience: int | None = Field(None, ge=1)  # stop after N epochs without a better val macro F1
    # After the last epoch, refit the descriptor trees on the training AND validation examples (rank
    # 0's share of validation: all of it with one worker) and store them in the saved best model,
    # under the tree weight validation chose: ~20 % more examples for the part of the model that
    # usually weighs most. meta.json's validation scores stay those of the trees fitted on the
    # training split (what chose the epoch); the test split is untouched either way.
    refit_trees: bool = True
    # Exponential moving average of the weights (decay per step, warmed up as min(decay, (1+t)/(10+t))):
    # validation, model selection and the saved model use the averaged weights. None: off.
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)  # init, data order, augmentation and dropout seed


class TrainWorkersConfig(ConfigBase):
    """Ray Train scaling. Does not change results beyond float reduction order (DDP is exact)."""

    num_workers: int = Field(1, ge=1)  # DDP workers (--workers)
    use_gpu: bool = False  # one GPU per worker; bf16 autocast through pipelines.device
    cpus_per_worker: float = Field(1.0, gt=0.0)  # logical CPUs Ray reserves per worker
    # Lost workers (a killed process, a lost node) survived per run: Ray Train restarts the worker
    # group, which resumes from the last reported epoch's checkpoint. -1: no limit; 0: fail at once.
    max_failures: int = Field(3, ge=-1)
    threads_per_worker: int | None = Field(None, ge=1)  # torch threads per worker; None: cores / workers
    ray_address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray started by the job
    ray_num_cpus: int | None = Field(None, ge=1)  # logical CPUs of a local Ray; None: Ray's default
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # compute dtype (autocast); weights stay fp32
    # Seconds to wait for an autoscaler to add nodes for the workers (one log line a minute), then fail;
    # a cluster that can never fit them fails at once (pipelines.resources).
    resource_wait_s: float = Field(1800.0, ge=0.0)


class TrainRFNetConfig(ConfigBase):
    """`reliable-ad train-rfnet`: an RF1M-layout directory in, an RFNet checkpoint directory out."""

    out: str | None = (
        None  # output dir (local or s3://): the best checkpoint, tensorboard logs, Ray Train state
    )
    # Start from these RFNet weights (checkpoint dir / s3:// / builtin:<name> / random:<preset>):
    # every tensor whose name and shape match is copied, the rest keeps its initialisation.
    init_from: str | None = None
    resume: bool = True  # continue from the last Ray Train checkpoint under `out` if there is one
    tensorboard: bool = True  # write per-epoch metrics to OUT/tensorboard (rank 0)
    data: TrainDataConfig = TrainDataConfig()
    model: RFNetConfig = RFNetConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    workers: TrainWorkersConfig = TrainWorkersConfig()

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = (
        "out",
        "resume",
        "tensorboard",
        "data.load_threads",
        "workers.threads_per_worker",
        "workers.max_failures",
        "workers.cpus_per_worker",
        "workers.ray_address",
        "workers.ray_num_cpus",
        "workers.resource_wait_s",
    )

    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {
        # The paper's model on GPUs: AdamW, 4 workers x 16 images, bf16 autocast, streamed data.
        "paper": (
            None,
            _dict(
                model=RFNetConfig.preset_overrides("paper"),
                data={"loader": "stream"},
                optim={"epochs": 20, "batch_size": 64, "lr": 1e-4, "weight_decay": 0.05},
                workers={"num_workers": 4, "use_gpu": True, "cpus_per_worker": 4.0},
            ),
        ),
        # Lite0 encoders on a 2-core CPU, fine-tuned from the shipped weights (builtin:small, trained on
        # the synthetic defect set by rfnet.pretrain): the time budget picks the epoch count, the
        # best epoch by validation macro F1 is kept.
        "small": (
            None,
            _dict(
                model=RFNetConfig.preset_overrides("small"),
                init_from="builtin:small",
                data={"cache_descriptor": True},
                optim={
                    "epochs": 40,
                    "batch_size": 32,
                    "lr": 2e-3,
                    "max_train_minutes": 8.0,
                    "ema_decay": 0.995,
                },
                workers={"num_workers": 1, "cpus_per_worker": 1.0},
            ),
        ),
        # The toy reward and judge on painted toy scenes (rfnet.pretrain --preset toy); lr 5e-4: the
        # image encoder is pretrained.
        "toy": (
            "small",
            _dict(
                model=RFNetConfig.preset_overrides("toy"),
                init_from=None,
                data={"cache_descriptor": False},
                optim={"max_train_minutes": 10.0, "lr": 5e-4},
            ),
        ),
        # Tests: a couple of epochs of the tiny model; no time budget, deterministic.
        "tiny": (
            "small",
            _dict(
                model=RFNetConfig.preset_overrides("tiny"),
                init_from=None,
                optim={"epochs": 2, "batch_size": 8, "max_train_minutes": None, "ema_decay": None},
                data={"load_threads": 2, "cache_descriptor": False},
            ),
        ),
    }

    def check_ready(self) -> None:
        """Raise :class:`ConfigError` if the job cannot start (checked before Ray starts)."""
        missing = [flag for flag, value in (("--data", self.data.root), ("--out", self.out)) if not value]
        if missing:
            raise ConfigError(
                f"train-rfnet needs {' and '.join(missing)} (or set data.root / out in the config file)"
            )
        if self.model.descriptor_trees and self.data.loader != "memory":
            raise ConfigError(
                "model.descriptor_trees are fitted on the descriptor of every training example, which "
                "needs data.loader='memory'; set model.descriptor_trees=0 to stream the data"
            )
        if self.optim.batch_size % self.workers.num_workers:
            raise ConfigError(
                f"optim.batch_size={self.optim.batch_size} is the global batch and must be divisible by "
                f"workers.num_workers={self.workers.num_workers}; change one of them"
            )


# ----------------------------------------------------------------------------------------------------
# Evaluation (`reliable-ad evaluate`).


class EvaluateConfig(ConfigBase):
    """`reliable-ad evaluate`: score a labelled RF1M-layout set, write eval.json, confusion.png,
    predictions.parquet and errors.png."""

    rfnet: str | None = None  # RFNet checkpoint dir / s3:// prefix / "tiny" (--rfnet)
    data: str | None = None  # RF1M-layout directory or s3:// prefix (--data)
    out: str | None = None  # output directory (local or s3://) for eval.json and the other outputs (--out)
    # Which samples are scored. "auto": the set's test file if it has split files; else the test
    # split the checkpoint held out (its split parameters are in its meta.json), or its validation
    # split if it held out no test split; every labelled sample if the checkpoint records no split.
    # "test" / "val": that split (error if there is none). "all": every labelled sample.
    split: Literal["auto", "test", "val", "all"] = "auto"
    # accept threshold: lowest p_available reaching this precision on Available
    target_precision: float = Field(0.9, gt=0.0, le=1.0)
    # also store the chosen threshold in the checkpoint's meta.json (--write-threshold)
    write_threshold: bool = False
    batch_size: int = Field(64, ge=1)  # images per forward pass
    load_threads: int = Field(8, ge=1, le=64)  # threads decoding images
    device: str = "auto"  # see pipelines.device
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out", "batch_size", "load_threads", "device")

    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {
        # Batch sizes per preset, so `--preset` works alike for train-rfnet and evaluate.
        "paper": (None, {"batch_size": 128}),
        "small": (None, {"batch_size": 64}),
        "toy": ("small", {}),
        "tiny": ("small", {"batch_size": 16, "load_threads": 2}),
    }

    def check_ready(self) -> None:
        missing = [f"--{name}" for name in ("rfnet", "data", "out") if not getattr(self, name)]
        if missing:
            raise ConfigError(f"evaluate needs {', '.join(missing)} (or set them in the config file)")
