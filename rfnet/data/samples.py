"""Labelled samples: what a dataset row is, how it is decoded, and how rows split into train/val.

A :class:`Sample` only names files (local paths or ``s3://`` URIs); :func:`load_example` decodes one
into the arrays RFNet consumes. Readers (:func:`rfnet.data.read_rf1m`, the labelling import) build
samples; the trainer, the evaluator and :func:`rfnet.data.to_ray_dataset` decode them.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines import storage
from pipelines.labels import NUM_CLASSES
from rfnet.data.transforms import canonical_product, decode_product, decode_rgb, resize_rgb

UNLABELLED = -1


@dataclass(frozen=True)
class Sample:
    """One generated image with its label and optional product cut-out and caption.

    ``image``: path or URI of the generated image. ``label``: class index 0-5 (see
    :data:`pipelines.labels.LABELS`), or ``-1`` when unlabelled. ``product``: path or URI of the
    product's RGBA cut-out, ``None`` when the dataset has none for this image. ``caption``: the
    product's title text, ``""`` when unknown. ``source``: where the sample was declared, e.g.
    ``"label.txt:17"``, for error messages.
    """

    image: str
    label: int
    product: str | None = None
    caption: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image:
            raise ValueError(f"Sample.image must be a non-empty path or URI, got {self.image!r}")
        if isinstance(self.label, bool) or not isinstance(self.label, int | np.integer):
            raise ValueError(f"Sample.label must be an int 0-{NUM_CLASSES - 1} or -1, got {self.label!r}")
        if not (self.label == UNLABELLED or 0 <= self.label < NUM_CLASSES):
            raise ValueError(f"Sample.label must be 0-{NUM_CLASSES - 1} or -1 (unlabelled), got {self.label}")


class ExampleError(ValueError):
    """A sample whose files cannot be read or decoded; the message names the file and the sample."""


def _read(uri: str, what: str, sample: Sample) -> bytes:
    try:
        return storage.read_bytes(uri)
    except (OSError, storage.StorageError) as exc:
        raise ExampleError(f"cannot read {what} {uri!r} (sample from {sample.source or '?'}): {exc}") from exc


def load_example(sample: Sample, *, image_size: int, product_size: int) -> dict:
    """Decode ``sample`` into numpy arrays.

    Returns a dict with ``image`` ``(image_size, image_size, 3)`` uint8 RGB (any file mode
    converted, stretched to the square size), ``product`` ``(product_size, product_size, 4)`` uint8
    RGBA from :func:`canonical_product` (a product file without alpha on white has its background
    keyed out, as the catalog does; all zeros when the sample has no product or its alpha is
    empty), ``has_product`` (bool: a product with visible pixels), ``caption`` (str) and ``label``
    (int, -1 if unlabelled). An unreadable or undecodable file raises :class:`ExampleError` naming
    the file; deciding to skip and count it is the caller's job.
    """
    data = _read(sample.image, "image", sample)
    try:
        image = resize_rgb(decode_rgb(data), image_size)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for corrupt/unknown files
        raise ExampleError(
            f"cannot decode image {sample.image!r} (sample from {sample.source or '?'}): {exc}"
        ) from exc
    product = np.zeros((product_size, product_size, 4), np.uint8)
    if sample.product is not None:
        product_data = _read(sample.product, "product", sample)
        try:
            product = canonical_product(decode_product(product_data), product_size)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ExampleError(
                f"cannot decode product {sample.product!r} (sample from {sample.source or '?'}): {exc}"
            ) from exc
    return {
        "image": image,
        "product": product,
        "has_product": bool(product[:, :, 3].any()),
        "caption": sample.caption,
        "label": int(sample.label),
    }


# ----------------------------------------------------------------------------------------------------
# Train / validation split.


def _split_keys(samples: Sequence[Sample]) -> list[str]:
    """Image paths relative to the deepest directory all samples share (scheme dropped).

    Hashing these instead of full paths keeps the split identical when a dataset is moved or
    copied (local dir -> s3:// prefix), so an evaluation never meets images its model trained on.
    """
    paths = [s.image.split("://", 1)[-1] for s in samples]
    try:
        common = posixpath.commonpath(sorted({posixpath.dirname(p) for p in paths}))
    except ValueError:  # absolute and relative paths mixed: no common directory
        common = ""
    cut = 0 if common == "" else len(common) if common.endswith("/") else len(common) + 1
    return [p[cut:] for p in paths]


def _unit_hash(key: str, seed: int, salt: str = "") -> float:
    text = f"{seed}\x00{key}" if not salt else f"{seed}\x00{salt}\x00{key}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_samples(
    samples: Sequence[Sample], val_fraction: float, seed: int, *, salt: str = ""
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic train/val split by a hash of each image path; returns ``(train, val)``.

    Each sample goes to val when ``sha256(seed, path) < val_fraction``, so its side depends on its
    own path only: reordering the input changes nothing, and appending samples leaves existing ones
    where they were. Paths are taken relative to the samples' deepest common directory, so a moved
    or copied dataset splits the same way. Both outputs keep the input order.

    Stratification: a class with at least 2 samples but none in val by hash gets its lowest-hash
    sample moved to val (and, symmetrically, one with none in train gets its highest-hash val sample
    moved back), so every such class is evaluated and trained on. Only in that case can an append
    move a sample (the class's lowest-hash one); unlabelled samples (-1) split by hash alone.

    ``salt`` makes an independent split from the same seed (:func:`holdout_split` draws its test
    share with one, so the validation share is not the test share's complement).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not samples:
        return [], []
    keys = _split_keys(samples)
    scores = [_unit_hash(k, seed, salt) for k in keys]
    in_val = [s < val_fraction for s in scores]
    if val_fraction > 0.0:
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, sample in enumerate(samples):
            if sample.label != UNLABELLED:
                by_class[sample.label].append(i)
        for members in by_class.values():
            if len(members) < 2:
                continue
            if not any(in_val[i] for i in members):
                in_val[min(members, key=lambda i: (scores[i], keys[i]))] = True
            if all(in_val[i] for i in members):
                in_val[max(members, key=lambda i: (scores[i], keys[i]))] = False
    train = [s for s, v in zip(samples, in_val, strict=True) if not v]
    val = [s for s, v in zip(samples, in_val, strict=True) if v]
    return train, val


def holdout_split(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Deterministic train / validation / test split; returns ``(train, val, test)``.

    The test share (``test_fraction`` of ``samples``, drawn with its own hash salt) is held out
    first: nothing in it is trained on or used to choose an epoch, a tree weight or a threshold, so
    a score on it is a fair estimate for new data. The validation share is ``val_fraction`` of what
    is left. Both follow :func:`split_samples` (a sample's side depends on its own path; every class
    with two or more samples is represented). ``test_fraction=0`` gives :func:`split_samples`'
    train / val split and an empty test split.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    rest, test = (
        split_samples(samples, test_fraction, seed, salt="test") if test_fraction else (list(samples), [])
    )
    train, val = split_samples(rest, val_fraction, seed)
    return train, val, test


def set_identity(samples: Sequence[Sample], sketch_size: int = 256) -> dict:
    """What recognises this set of images later, wherever it is copied: ``fingerprint`` (sha256 of
    the sorted image paths relative to their deepest common directory, as the split hashes them;
    labels are left out, so a relabelled set is still the same set), ``n`` and ``sketch``, the
    ``sketch_size`` smallest 64-bit path hashes (hex; all of them for a set that small).
    ``train-rfnet`` stores it in the checkpoint's meta.json; :func:`shared_images` reads it."""
    keys = sorted(_split_keys(samples))
    hashes = sorted({_path_hash(k) for k in keys})
    return {
        "fingerprint": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "n": len(hashes),
        "sketch": [f"{h:016x}" for h in hashes[:sketch_size]],
    }


def shared_images(identity: dict, samples: Sequence[Sample]) -> tuple[int, int]:
    """``(shared, checked)``: how many of the ``samples`` the stored ``identity``'s sketch can
    vouch for are images of that set. The sketch holds every path hash of the set up to its
    largest one, so each sample whose hash is not larger is checked exactly; a set that shares a
    share ``f`` of its images with the stored one shares about ``f * checked`` of them."""
    sketch = {int(h, 16) for h in identity["sketch"]}
    complete = len(sketch) >= int(identity["n"])
    bound = max(sketch, default=-1)
    checked = [h for h in {_path_hash(k) for k in _split_keys(samples)} if complete or h <= bound]
    return sum(h in sketch for h in checked), len(checked)


def _path_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
