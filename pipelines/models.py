"""Model sources and the generation pipeline's components.

A *model source* is one string:

- ``"tiny"`` (alias of ``"random:tiny"``): a tiny UNet / ControlNet / VAE / CLIP text encoder and a
  byte-level tokenizer built from the JSON configs in ``pipelines/assets/tiny`` with seeded random
  weights. No download; seconds on a CPU. Images are noise, the plumbing is real.
- ``"toy"``: small UNet / ControlNet / VAE / CLIP text encoder trained on a CPU on painted scenes,
  shipped in ``pipelines/assets/toy`` (diffusers layout, float16 safetensors loaded in the compute
  dtype; how they were made: ``provenance.json`` there and docs/toy.md). No download.
- ``"random:sd15"``: the full-size SD1.5 architecture (``pipelines/assets/sd15``) with random
  weights: the same compute as the real models, for benchmarks on machines without a hub.
- a local directory in diffusers format (``model_index.json`` for a base model, ``config.json`` for a
  ControlNet), loaded from ``*.safetensors`` only;
- an ``s3://bucket/prefix`` holding such a directory: downloaded once to a local cache
  (:func:`fetch_s3_prefix`) and then loaded as a local directory;
- otherwise a Hugging Face hub id (``org/name``), optionally pinned with a revision.

Weights are never unpickled: every ``from_pretrained`` call passes ``use_safetensors=True``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from pipelines import cache, storage

logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
RANDOM_ARCHS = ("tiny", "sd15")
TOY = "toy"
TOY_DIR = Path(__file__).resolve().parent / "assets" / "toy"  # the trained toy generator
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")

SCHEDULERS = ("ddim", "euler", "euler_a", "dpmpp_sde_karras", "dpmpp_2m_karras", "unipc")


@dataclass(frozen=True)
class Source:
    """A parsed model source. ``kind`` is one of ``random``, ``toy``, ``local``, ``s3``, ``hub``."""

    kind: str
    location: str
    revision: str | None = None

    @property
    def arch(self) -> str:
        assert self.kind == "random"
        return self.location


def parse_source(source: str, revision: str | None = None) -> Source:
    """Classify a model source string; raise ``ValueError`` naming the value if it fits no kind."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"model source must be a non-empty string, got {source!r}")
    if source == "tiny":
        source = RANDOM_PREFIX + "tiny"
    if source == TOY:
        return Source("toy", str(TOY_DIR))
    if source.startswith(RANDOM_PREFIX):
        arch = source.removeprefix(RANDOM_PREFIX)
        if arch not in RANDOM_ARCHS:
            raise ValueError(
                f"unknown random architecture {arch!r} in {source!r}; choose one of {RANDOM_ARCHS}"
            )
        return Source("random", arch)
    if source.startswith("s3://"):
        return Source("s3", source.rstrip("/"), revision)
    if "://" in source:
        raise ValueError(
            f"model source {source!r} has an unsupported scheme; use a local directory, an s3:// prefix, "
            "a hub id (org/name), 'toy' or 'tiny'"
        )
    if os.path.isdir(source):
        return Source("local", os.path.abspath(source), revision)
    if _HUB_ID.match(source):
        return Source("hub", source, revision)
    raise ValueError(
        f"model source {source!r} is not an existing directory, an s3:// prefix, a hub id (org/name), "
        "'toy' or 'tiny'"
    )


def fetch_s3_prefix(uri: str) -> Path:
    """Mirror ``s3://bucket/prefix`` into the local cache (:mod:`pipelines.cache`) and return the
    local directory.

    The ``.complete`` marker, written last, records each file's ETag (or size) as listed: while the
    listing is the same the mirror is used as it is; otherwise only files whose entry changed are
    downloaded again. Every file is downloaded to a temporary name and renamed, so processes sharing
    the cache (GPU pods on one volume) never load a half-written file.
    """
    fs, root = storage.filesystem(uri)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    local = cache.root() / "s3" / digest
    files = fs.find(root, detail=True)
    if not files:
        raise FileNotFoundError(f"model source {uri!r} holds no files")
    manifest = {
        k.removeprefix(root).lstrip("/"): str(v.get("ETag") or v.get("size")) for k, v in files.items()
    }
    marker = local / ".complete"
    previous = json.loads(marker.read_text()) if marker.exists() else {}
    if previous == manifest:
        logger.info("model source %s: mirror %s is current", uri, local)
        return local
    fetched = 0
    for key, rel in ((k, k.removeprefix(root).lstrip("/")) for k in files):
        if rel.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")):
            continue  # never fetched: only safetensors weights are loaded
        target = local / rel
        if previous.get(rel) == manifest[rel] and target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fs.get(key, str(tmp))
        os.replace(tmp, target)
        fetched += 1
    tmp = marker.with_name(f".complete.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, marker)
    logger.info("model source %s: fetched %d of %d files into %s", uri, fetched, len(manifest), local)
    return local


def materialize(source: Source) -> tuple[str, str | None]:
    """Return ``(path_or_hub_id, revision)`` for ``from_pretrained``; S3 prefixes are fetched first."""
    if source.kind == "s3":
        return str(fetch_s3_prefix(source.location)), None
    if source.kind == "toy":
        if not (TOY_DIR / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the toy generator is missing from the package ({TOY_DIR} has no model_index.json); "
                "reinstall the package or rebuild it with: python -m rfft.toy.train --out pipelines/assets/toy"
            )
        return source.location, None
    if source.kind in ("local", "hub"):
        return source.location, source.revision
    raise ValueError(f"{source} is built in memory, not loaded")


def identity(source_str: str, revision: str | None = None) -> tuple[str, str]:
    """``(model id, revision)`` recorded with every attempt, so results can be traced to weights."""
    source = parse_source(source_str, revision)
    if source.kind == "random":
        return f"{RANDOM_PREFIX}{source.arch}", f"seed{TINY_SEED}"
    if source.kind == "toy":
        return TOY, toy_fingerprint()
    if source.kind == "local":
        return source.location, _directory_fingerprint(Path(source.location))
    return source.location, source.revision or "default"


@lru_cache(maxsize=1)
def toy_fingerprint() -> str:
    """``sha-<12 hex>`` of the shipped toy weights and configs (content, not file times)."""
    h = hashlib.sha256()
    for f in sorted(TOY_DIR.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(f"{f.relative_to(TOY_DIR).as_posix()}:".encode())
            h.update(f.read_bytes())
    return "sha-" + h.hexdigest()[:12]


def _directory_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return "dir-" + h.hexdigest()[:12]


# ----------------------------------------------------------------------------------------------------
# Random-weight components built from the configs in the package.

TINY_SEED = 0


def _asset_config(arch: str, name: str) -> dict[str, Any]:
    text = resources.files("pipelines").joinpath("assets", arch, f"{name}.json").read_text()
    return json.loads(text)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map (so any language tokenises)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_byte_tokenizer(bos_token_id: int, eos_token_id: int, max_length: int = 77):
    """A CLIP tokenizer over raw bytes: 512 byte tokens, 1,352 letter-pair merges, BOS/EOS at the given ids.

    Built in memory, so random-weight presets need no vocabulary download. Every string tokenises
    (one token per UTF-8 byte), which keeps captions in any language working.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    # Merges of lowercase letter pairs (word-internal and word-final) halve the token count of
    # English prompts, so a typical scene prompt fits CLIP's 77 positions.
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = []
    for a in letters:
        for b in letters:
            for right in (b, b + "</w>"):
                merges.append((a, right))
                vocab[a + right] = len(vocab)
    if max(vocab.values()) >= min(bos_token_id, eos_token_id):
        raise ValueError(
            f"special token ids {bos_token_id}/{eos_token_id} collide with the {len(vocab)}-token vocabulary"
        )
    vocab["<|startoftext|>"] = bos_token_id
    vocab["<|endoftext|>"] = eos_token_id
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = max_length
    # Byte tokens are ~2 characters, so the default negative prompt is ~90 of them. diffusers cuts
    # prompts to `max_length` before encoding, but first tokenises them whole (to look for textual-
    # inversion tokens), which would make transformers warn that the sequence "will result in
    # indexing errors"; it cannot here. Marked as already shown.
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


def build_random_components(arch: str = "tiny", seed: int = TINY_SEED) -> dict[str, Any]:
    """UNet, ControlNet, VAE, text encoder, tokenizer and DDIM scheduler with seeded random weights.

    The same ``(arch, seed)`` gives bit-identical weights in every process, so Ray actors agree.
    """
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if arch not in RANDOM_ARCHS:
        raise ValueError(f"unknown random architecture {arch!r}; choose one of {RANDOM_ARCHS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_asset_config(arch, "unet"))
        controlnet = ControlNetModel.from_unet(unet)
        # from_unet copies the UNet's weights and zero-initialises the output convolutions; give the
        # zero convs small random weights so the tiny ControlNet actually steers (and RFFT has a
        # gradient path through it from the first step).
        for module in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            torch.nn.init.normal_(module.weight, std=0.02)
        vae = AutoencoderKL(**_asset_config(arch, "vae"))
        text_cfg = _asset_config(arch, "text_encoder")
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    tokenizer = build_byte_tokenizer(text_cfg["bos_token_id"], text_cfg["eos_token_id"])
    scheduler = DDIMScheduler(**_asset_config(arch, "scheduler"))
    for m in (unet, controlnet, vae, text_encoder):
        m.eval()
    return {
        "unet": unet,
        "controlnet": controlnet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


# ----------------------------------------------------------------------------------------------------
# Loading.


@functools.cache
def seeded_sde_scheduler_class(base: type) -> type:
    """``DPMSolverSDEScheduler`` whose Brownian noise comes from the pipeline's per-row generators.

    Deviation from diffusers: upstream draws the SDE noise from one Brownian tree seeded by
    ``noise_sampler_seed`` (random when unset) and ignores ``generator``, so an attempt's seed did not
    fix its image. Here ``step`` takes the pipeline's ``generator`` (a list, one per row) and, at the
    first step, seeds one Brownian tree per row from that row's generator: an image depends on its
    own seed only, as with every other scheduler.
    """

    class SeededDPMSolverSDEScheduler(base):
        def step(self, model_output, timestep, sample, return_dict=True, s_noise=1.0, generator=None):
            if self.noise_sampler is None and generator is not None:
                rows = generator if isinstance(generator, list) else [generator] * sample.shape[0]
                self.noise_sampler_seed = [int(torch.randint(0, 2**62, (), generator=g)) for g in rows]
            return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)

    return SeededDPMSolverSDEScheduler


def make_scheduler(name: str, config: Any):
    """A diffusers scheduler by short name, built from another scheduler's config."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        DPMSolverSDEScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "dpmpp_sde_karras":
        return seeded_sde_scheduler_class(DPMSolverSDEScheduler).from_config(config, use_karras_sigmas=True)
    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise ValueError(f"scheduler={name!r} is not supported; choose one of {SCHEDULERS}")


def load_controlnet(source_str: str, revision: str | None, dtype: torch.dtype, random_controlnet=None):
    """A ControlNet from a source. ``random_controlnet`` is used when the source is random."""
    from diffusers import ControlNetModel

    source = parse_source(source_str, revision)
    if source.kind == "random":
        if random_controlnet is None:
            random_controlnet = build_random_components(source.arch)["controlnet"]
        return random_controlnet if random_controlnet.dtype == dtype else random_controlnet.to(dtype)
    path, rev = materialize(source)
    if source.kind == "toy":
        path = os.path.join(path, "controlnet")
    return ControlNetModel.from_pretrained(path, revision=rev, torch_dtype=dtype, use_safetensors=True)


def load_components(
    base: str,
    controlnet: str,
    *,
    dtype: torch.dtype,
    base_revision: str | None = None,
    controlnet_revision: str | None = None,
) -> dict[str, Any]:
    """All pipeline components (UNet, ControlNet, VAE, text encoder, tokenizer, scheduler) in ``dtype``.

    A random base may be combined with a trained ControlNet of the same architecture (e.g. the tiny
    preset with an RFFT export), and a real base with a random ControlNet (benchmarks).
    """
    from diffusers import StableDiffusionPipeline

    base_source = parse_source(base, base_revision)
    if base_source.kind == "random":
        components = build_random_components(base_source.arch)
        for key in ("unet", "vae", "text_encoder"):
            if components[key].dtype != dtype:
                components[key] = components[key].to(dtype)
    else:
        path, rev = materialize(base_source)
        extra: dict[str, Any] = {}
        if base_source.kind == "toy":
            # The same byte tokenizer the files describe, built in memory (see build_byte_tokenizer).
            text_cfg = json.loads((TOY_DIR / "text_encoder" / "config.json").read_text())
            extra["tokenizer"] = build_byte_tokenizer(text_cfg["bos_token_id"], text_cfg["eos_token_id"])
        pipe = StableDiffusionPipeline.from_pretrained(
            path,
            revision=rev,
            torch_dtype=dtype,
            use_safetensors=True,
            safety_checker=None,
            requires_safety_checker=False,
            **extra,
        )
        components = {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
        components["controlnet"] = None
    components["controlnet"] = load_controlnet(
        controlnet, controlnet_revision, dtype, random_controlnet=components.get("controlnet")
    )
    return components
