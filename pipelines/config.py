"""Typed configuration: the machinery every job uses, and the catalog-generation config.

Each job has one frozen pydantic config, validated once before Ray starts and passed whole to the
workers. Values are layered, later wins::

    class defaults  <  preset  <  --config FILE.yaml  <  command-line flags

A preset is a nested dict of overrides on the class defaults and may derive from another preset
(``reliable`` is ``sd15`` plus a fine-tuned ControlNet), so presets never copy each other. Unknown
keys are errors (``extra="forbid"``), so a typo in a YAML file fails loudly instead of being ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

C = TypeVar("C", bound="ConfigBase")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which value, why, and how to fix it."""


class InputError(ValueError):
    """Input a job cannot use (a dataset with no usable sample, a missing label file, ...); the
    message says what was found and how to fix it."""


class ConfigBase(BaseModel):
    """Frozen, strict base for every config section."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # name -> (parent preset or None, overrides). Overrides are nested dicts over the class defaults.
    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {}
    # Top-level or dotted field names that do not change outputs (speed, placement, paths); they are
    # left out of config_hash so that, e.g., a bigger batch size still resumes the same run.
    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preset_overrides(cls, name: str) -> dict[str, Any]:
        if name not in cls.PRESETS:
            raise ConfigError(
                f"unknown preset {name!r} for {cls.__name__}; choose one of {sorted(cls.PRESETS)}"
            )
        parent, overrides = cls.PRESETS[name]
        base = cls.preset_overrides(parent) if parent else {}
        return deep_merge(base, overrides)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """sha256 over the fields that change outputs (``HASH_EXCLUDE`` left out), 16 hex digits."""
        data = self.to_dict()
        for dotted in self.HASH_EXCLUDE:
            _pop_dotted(data, dotted)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _pop_dotted(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data.get(p, {})
    data.pop(last, None)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, everything else (lists too) is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c = value`` (intermediate dicts created)."""
    parts = dotted.split(".")
    nested: Any = value
    for p in reversed(parts):
        nested = {p: nested}
    return deep_merge(data, nested)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"generation.batch_size=8"`` -> ``("generation.batch_size", 8)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. generation.batch_size=8), got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping at top level, got {type(data).__name__}"
        )
    return data


def load_config(
    cls: type[C],
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    assignments: Mapping[str, Any] | None = None,
) -> C:
    """Build a ``cls`` from defaults < preset < YAML file < ``assignments`` < ``overrides`` (dotted
    keys allowed).

    A ``None`` in ``overrides`` means "not given" (a flag left out); a ``None`` in ``assignments``
    (``--set KEY=null``) sets the field to None. A YAML file may name its preset with a top-level
    ``preset:`` key; an explicit ``preset`` argument (the ``--preset`` flag) wins over it.
    """
    file_data = read_yaml(config_file) if config_file else {}
    file_preset = file_data.pop("preset", None)
    chosen = preset or file_preset
    data: dict[str, Any] = cls.preset_overrides(chosen) if chosen else {}
    data = deep_merge(data, file_data)
    for key, value in (assignments or {}).items():
        data = set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            data = set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        where = f" (preset={chosen!r}" + (f", file={str(config_file)!r})" if config_file else ")")
        raise ConfigError(f"invalid {cls.__name__}{where}:\n{_format_errors(exc)}") from None


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        given = err.get("input")
        lines.append(f"  {loc}: {err['msg']} (given: {given!r})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Catalog generation (`reliable-ad generate` / `refresh`).

DEFAULT_NEGATIVE = (
    "lowres, bad anatomy, worst quality, low quality, blurry, watermark, text, logo, deformed, "
    "floating object, duplicate product, extra product, distorted, oversaturated"
)


class PromptTemplate(ConfigBase):
    """One scene template. ``{color}`` (optional) is filled from ``PromptConfig.colors``."""

    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE
    # True if the scene gives the product a surface to stand on; retries after a Space Mismatch
    # verdict (a floating product) prefer grounded templates.
    grounded: bool = False


class PromptConfig(ConfigBase):
    """Prompt pool: per attempt a template and a colour are drawn from the attempt's seed."""

    templates: tuple[PromptTemplate, ...] = (
        PromptTemplate(
            prompt="a product on a {color} marble table, soft daylight, minimal interior, "
            "professional product photography, high detail",
            grounded=True,
        ),
        PromptTemplate(
            prompt="a product standing on a wooden shelf in a bright {color} room, "
            "studio lighting, advertising photo, 8k",
            grounded=True,
        ),
        PromptTemplate(
            prompt="a product on a {color} podium, pastel background, studio product shot, sharp focus",
            grounded=True,
        ),
        PromptTemplate(
            prompt="a product in a cozy {color} living room, natural light, bokeh, commercial photography"
        ),
        PromptTemplate(
            prompt="a product outdoors on a stone surface, {color} flowers, sunlight, "
            "shallow depth of field, advertising",
            grounded=True,
        ),
        PromptTemplate(
            prompt="a product in a modern kitchen with {color} tiles, morning light, realistic, high quality"
        ),
    )
    colors: tuple[str, ...] = ("white", "beige", "light grey", "pale blue", "sage green", "warm wood", "pink")

    @field_validator("templates")
    @classmethod
    def _need_templates(cls, v: tuple[PromptTemplate, ...]) -> tuple[PromptTemplate, ...]:
        if not v:
            raise ValueError("the prompt pool needs at least one template")
        return v

    @model_validator(mode="after")
    def _colors_for_placeholders(self) -> PromptConfig:
        if any("{color}" in t.prompt for t in self.templates) and not self.colors:
            raise ValueError("templates use {color} but prompts.colors is empty")
        return self


class ModelsConfig(ConfigBase):
    """Model sources (see ``pipelines.models``): ``tiny``, ``random:sd15``, dir, ``s3://`` or hub id."""

    base: str = "digiplay/majicMIX_realistic_v7"  # SD1.5 base model (diffusers format)
    base_revision: str | None = None  # hub revision (commit/tag) to pin; None = default branch
    controlnet: str = "lllyasviel/control_v11p_sd15_canny"  # canny ControlNet (or an RFFT export)
    controlnet_revision: str | None = None
    lora: str | None = None  # optional LoRA weights (safetensors dir / s3 prefix / hub id)
    lora_scale: float = Field(1.0, ge=0.0, le=2.0)  # LoRA strength, fused into the UNet at load


class PrepareConfig(ConfigBase):
    """Pre-processing of a product cut-out into (canvas product, inpaint mask, control image)."""

    resolution: int = Field(512, ge=64, le=2048, multiple_of=8)  # square canvas side, px
    image_scale_range: tuple[float, float] = (
        0.66,
        0.78,
    )  # product's longer side / canvas side, drawn per attempt
    keep_loc: bool = False  # True: keep the product where it is in the input (input resized to the canvas)
    mask_dilation: int = Field(20, ge=0, le=256)  # px, square kernel dilating the inverted alpha
    canny_low: int = Field(100, ge=0, le=255)  # Canny hysteresis thresholds
    canny_high: int = Field(200, ge=0, le=255)
    alpha_threshold: int = Field(127, ge=0, le=254)  # alpha > this counts as product (paste-back, canny)
    white_threshold: int = Field(
        240, ge=128, le=255
    )  # RGB images: border-connected pixels >= this are background
    max_pixels: int = Field(40_000_000, ge=1)  # decoded width*height above this is an error row
    max_file_bytes: int = Field(100 * 2**20, ge=1)  # source files larger than this are error rows

    @field_validator("image_scale_range")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0.0 < lo <= hi <= 1.0) or math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"image_scale_range must satisfy 0 < low <= high <= 1, got {v}")
        return v


SchedulerName = Literal["ddim", "euler", "euler_a", "dpmpp_sde_karras", "dpmpp_2m_karras", "unipc"]


class GenerationConfig(ConfigBase):
    """The diffusion sampler and the generation actor pool."""

    num_inference_steps: int = Field(40, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=1.0, le=30.0)  # CFG; 1.0 disables the unconditional branch
    controlnet_conditioning_scale: float = Field(1.0, ge=0.0, le=2.0)
    scheduler: SchedulerName = "ddim"
    device: str = "auto"  # see pipelines.device
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    compile: bool = False  # torch.compile UNet + ControlNet once per actor (GPU; ~65 s on an H200)
    channels_last: bool = False  # memory format for UNet/ControlNet/VAE convolutions
    fuse_qkv: bool = False  # one q/k/v projection matmul per attention layer (exact up to rounding)
    batch_size: int = Field(16, ge=1)  # images per generation call (CFG doubles the UNet batch)
    concurrency: int = Field(1, ge=1)  # actors in the generation pool (= GPUs when num_gpus=1)
    # GPUs per actor; 0 runs on CPU. 0.9 leaves room for a fractional inspection actor on the same GPU
    # (inspect.num_gpus = 0.1), so one GPU runs both pools.
    num_gpus: float = Field(0.9, ge=0.0)
    num_cpus: float = Field(1.0, gt=0.0)  # CPUs reserved per actor
    torch_threads: int | None = Field(None, ge=1)  # intra-op CPU threads per actor (None: torch default)
    # Custom Ray resources per actor, e.g. {"accelerator_type:H100": 0.001} to pin a GPU model, or a
    # stand-in such as {"fake_gpu": 1} in tests. Placement only; the amounts are Ray's logical units.
    resources: dict[str, float] = {}

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        reserved = sorted({"CPU", "GPU", "memory", "object_store_memory"} & set(v))
        if reserved:
            raise ValueError(
                f"generation.resources holds {reserved}; set CPUs and GPUs with generation.num_cpus / "
                "generation.num_gpus, and keep resources for custom Ray resources"
            )
        negative = {k: x for k, x in v.items() if not x >= 0}
        if negative:
            raise ValueError(f"generation.resources amounts must be >= 0, got {negative}")
        return v


class InspectConfig(ConfigBase):
    """RFNet inspection (the accept/reject decision)."""

    enabled: bool = True  # False (--no-inspect): every image is kept with status 'generated'
    rfnet: str | None = None  # RFNet source: a checkpoint dir, s3:// prefix, 'builtin:small' or 'tiny'
    threshold: float | None = Field(
        None, ge=0.0, le=1.0
    )  # accept if p_available >= this; None: the checkpoint's
    batch_size: int = Field(32, ge=1)
    concurrency: int = Field(1, ge=1)
    num_gpus: float = Field(0.1, ge=0.0)  # a fraction: inspection is cheap next to generation
    num_cpus: float = Field(0.5, gt=0.0)
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


class RetryConfig(ConfigBase):
    """Recurrent generation: how rejected items are regenerated."""

    max_attempts: int = Field(3, ge=1, le=64)  # attempts per item, the first included
    # 'reseed': a new seed only (the paper). 'defect': also change what the predicted defect points at
    # (Size Mismatch -> another image_scale, Indistinctiveness -> another colour/template,
    # Space Mismatch -> a grounded template, Shape Hallucination -> stronger control). See docs.
    steering: Literal["reseed", "defect"] = "defect"


class StorageConfig(ConfigBase):
    retries: int = Field(3, ge=0, le=20)  # extra tries for a failed read/write
    backoff_s: float = Field(0.2, ge=0.0)  # first retry delay; doubles each try
    # Chaos drills only: the first N writes to each path matching the glob fail.
    inject_write_failures: tuple[str, int] | None = None

    def policy(self):
        """The :class:`pipelines.storage.RetryPolicy` these settings describe."""
        from pipelines.storage import RetryPolicy

        return RetryPolicy(retries=self.retries, backoff_s=self.backoff_s)


class RunConfig(ConfigBase):
    """Stream and driver settings that do not change outputs."""

    chunk_size: int = Field(2048, ge=1)  # new catalog items admitted per wave (rejects ride along)
    prepare_batch_size: int = Field(16, ge=1)
    prepare_num_cpus: float = Field(0.5, gt=0.0)
    write_num_cpus: float = Field(0.25, gt=0.0)
    prepare_memory_mb: int = Field(
        512, ge=0
    )  # memory reserved per prepare task (decoded images can be large)
    progress_interval_s: float = Field(30.0, gt=0.0)  # seconds between one-line progress summaries
    flush_interval_s: float = Field(60.0, gt=0.0)  # seconds between attempts/ part files within a wave
    ray_address: str | None = None  # None: connect to RAY_ADDRESS if set, else start a local Ray
    ray_num_cpus: int | None = None  # logical CPUs for a local Ray (None: Ray's default)
    ray_dashboard: bool = (
        False  # start the Ray dashboard with a local Ray (costs ~1 GiB; progress is logged anyway)
    )
    # Seconds to wait, before the first wave, for an autoscaler to add the nodes the pools need (e.g.
    # KubeRay GPU pods); one log line a minute while waiting, then the run fails naming the fields.
    # A cluster that can never fit the pools (no autoscaler, or none of its node types fit) fails at
    # once, whatever this says. See pipelines.resources.
    resource_wait_s: float = Field(1800.0, ge=0.0)


class GenerateConfig(ConfigBase):
    """`reliable-ad generate` and `refresh`: catalog in, images and tables out."""

    catalog: str | None = None  # catalog file/folder, local or s3://
    out: str | None = None  # output root, local or s3://
    seed: int = Field(0, ge=0)  # run seed; attempt seed = f(seed, sku_id, attempt)
    models: ModelsConfig = ModelsConfig()
    prepare: PrepareConfig = PrepareConfig()
    prompts: PromptConfig = PromptConfig()
    generation: GenerationConfig = GenerationConfig()
    inspect: InspectConfig = InspectConfig()
    retry: RetryConfig = RetryConfig()
    storage: StorageConfig = StorageConfig()
    run: RunConfig = RunConfig()

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = (
        "catalog",
        "out",
        "run",
        "storage",
        "generation.device",
        "generation.compile",
        "generation.channels_last",
        "generation.fuse_qkv",
        "generation.batch_size",
        "generation.concurrency",
        "generation.num_gpus",
        "generation.num_cpus",
        "generation.torch_threads",
        "generation.resources",
        "inspect.batch_size",
        "inspect.concurrency",
        "inspect.num_gpus",
        "inspect.num_cpus",
        "inspect.device",
    )

    PRESETS: ClassVar[dict[str, tuple[str | None, dict[str, Any]]]] = {
        # The paper's reference setting (Du et al. 2024): SD1.5 majicMIX + canny ControlNet, 512 px,
        # DDIM 40 steps, CFG 7.5, ControlNet scale 1.0. Inspection needs a trained RFNet (--rfnet).
        "sd15": (None, {}),
        # sd15 with the paper authors' RFFT-fine-tuned ControlNet.
        "reliable": ("sd15", {"models": {"controlnet": "ZhenbangDu/reliable_controlnet"}}),
        # Random-weight tiny models and RFNet: seconds on a CPU, no download. Images are noise; the
        # plumbing (tables, retries, resume, report) is real. The tiny RFNet is untrained: on the demo
        # catalog's tiny-preset images its p_available spans ~0.17-0.26 with a median of ~0.23, so the
        # threshold sits there and both verdicts occur (about half of the first attempts are rejected).
        "tiny": (
            None,
            {
                "models": {"base": "tiny", "controlnet": "tiny"},
                "prepare": {"resolution": 128, "mask_dilation": 5},
                "generation": {"num_inference_steps": 8, "batch_size": 8, "num_gpus": 0.0, "num_cpus": 0.5},
                "inspect": {
                    "enabled": True,
                    "rfnet": "tiny",
                    "threshold": 0.23,
                    "batch_size": 16,
                    "num_gpus": 0.0,
                    "num_cpus": 0.25,
                },
                "run": {"chunk_size": 1024},
            },
        ),
        # Small models trained on a CPU on painted scenes (pipelines/assets/toy, docs/toy.md): the
        # product on a smooth backdrop whose colour follows the prompt's colour word. The prompt pool
        # uses the words the generator was trained on (the wall colour, a table or floor, a plant).
        # The inspector is the toy reward RFNet (builtin:toy_reward, trained on painted toy scenes;
        # RFFT's reward too); builtin:toy_judge only judges (bench.toy_claims).
        "toy": (
            "tiny",
            {
                "models": {"base": "toy", "controlnet": "toy"},
                "prepare": {"resolution": 96, "mask_dilation": 4},
                "prompts": {
                    "templates": [
                        {"prompt": "a product on a wooden table against a {color} wall", "grounded": True},
                        {"prompt": "a product on a marble table in a {color} room", "grounded": True},
                        {"prompt": "a product on the wooden floor in a {color} room", "grounded": True},
                        {"prompt": "a product on a white table against a {color} wall", "grounded": True},
                        {"prompt": "a product in front of a {color} wall"},
                        {"prompt": "a product in a {color} room with a plant"},
                    ],
                    "colors": [
                        "white",
                        "beige",
                        "light grey",
                        "pale blue",
                        "sage green",
                        "pink",
                        "yellow",
                        "orange",
                        "red",
                        "blue",
                        "teal",
                        "navy",
                    ],
                },
                "generation": {"num_inference_steps": 15, "guidance_scale": 4.0},
                "inspect": {"rfnet": "builtin:toy_reward", "threshold": None},
            },
        ),
    }

    @model_validator(mode="after")
    def _check_placement(self) -> GenerateConfig:
        if self.generation.num_gpus == 0 and self.generation.compile:
            raise ValueError("generation.compile needs a GPU actor (generation.num_gpus > 0)")
        for name, section in (("generation", self.generation), ("inspect", self.inspect)):
            if section.device == "cpu" and section.num_gpus > 0:
                # Ray would still hold a GPU per actor (or wait forever for one on a CPU-only cluster).
                raise ValueError(
                    f"{name}.device='cpu' with {name}.num_gpus={section.num_gpus:g} reserves a GPU the actor "
                    f"never uses; set {name}.num_gpus=0 as well"
                )
        return self

    def check_ready(self) -> None:
        """Raise :class:`ConfigError` if the config cannot start a run (checked before Ray starts)."""
        missing = [name for name in ("catalog", "out") if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"missing {', '.join('--' + m for m in missing)} (or set it in the config file)"
            )
        if self.inspect.enabled and not self.inspect.rfnet:
            raise ConfigError(
                "inspection is enabled but no RFNet is configured: pass --rfnet DIR (a trained checkpoint), "
                "--rfnet builtin:small (shipped, trained on synthetic defects only), --rfnet tiny (random "
                "weights, plumbing only) or --no-inspect"
            )
