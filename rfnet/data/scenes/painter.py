"""What a scene family implements (:class:`Painter`), what it returns (:class:`Painted`), and the
one writer of the RF1M layout that every family shares (:func:`write_set`)."""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from pipelines import storage
from pipelines.labels import DISPLAY_NAMES, NUM_CLASSES

logger = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "jpg")
JPEG_QUALITY = 92


@dataclass
class Painted:
    """One labelled sample, as a painter returns it."""

    name: str  # file stem under images/ and products/ (names say nothing about the class)
    image: np.ndarray  # (S, S, 3) uint8 RGB
    product: np.ndarray  # (h, w, 4) uint8 RGBA: the product file written next to the image
    caption: str
    label: int  # class index 0-5, in the order of pipelines.labels.LABELS
    # How the scene was drawn (JSON-serialisable; keys other than "image" and "label"): written to
    # the family's meta file, one record per image, for error breakdowns (bench.rfnet_errors).
    scene: dict[str, Any]


class Painter(ABC):
    """Paints the samples of one set: one instance per ``(image_size, seed, products_dir)``.

    :meth:`paint` must be a pure function of ``(seed, label, index)`` and the constructor's
    arguments (a set is reproducible, and growing ``n_per_class`` keeps the earlier samples), with
    one allowed exception: a family may keep state to keep file names unique within a set, which is
    why :func:`write_set` paints in a fixed order (class 0 to 5, index 0 to ``n_per_class - 1``).
    """

    #: the set's name in :data:`rfnet.data.scenes.SETS`
    name: ClassVar[str]
    #: the meta file (one JSON record per image: ``image``, ``label``, then :attr:`Painted.scene`),
    #: or None to write none
    meta_file: ClassVar[str | None] = "meta.jsonl"
    #: how the meta file names the class: ``DISPLAY_NAMES`` ("Space Mismatch") or ``LABELS``
    meta_labels: ClassVar[tuple[str, ...]] = DISPLAY_NAMES
    #: OpenCV parameters for the PNG files (empty: OpenCV's defaults); each family keeps the ones
    #: its sets were first written with, so that they stay byte for byte the same
    png_params: ClassVar[tuple[int, ...]] = ()
    #: whether the family can paint around real cut-outs (``products_dir``)
    takes_products: ClassVar[bool] = False

    def __init__(self, *, image_size: int, seed: int, products_dir: str | None = None):
        if products_dir is not None and not self.takes_products:
            raise ValueError(
                f"the {self.name} set draws its own products and takes no products_dir "
                f"(got {products_dir!r}); leave it out, or use a family that paints real cut-outs"
            )
        self.image_size = image_size
        self.seed = seed
        self.products_dir = products_dir

    @abstractmethod
    def paint(self, label: int, index: int) -> Painted:
        """Sample ``index`` of class ``label`` (0-5)."""


def encode(array: np.ndarray, fmt: str, png_params: tuple[int, ...] = ()) -> bytes:
    """``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 as PNG or JPEG (quality :data:`JPEG_QUALITY`) bytes."""
    if fmt == "png":
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        ok, buf = cv2.imencode(".png", cv2.cvtColor(array, code), list(png_params))
    else:
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {array.shape} image as {fmt}")
    return buf.tobytes()


def _write(uri: str, data: bytes) -> None:
    # Local files are written directly (no fsync per image: label.txt, written last and atomically,
    # is what makes the set visible); remote objects go through storage's retries.
    if storage.is_remote(uri):
        storage.write_bytes(uri, data)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        with open(uri, "wb") as f:
            f.write(data)


def write_set(painter: Painter, out: str, *, n_per_class: int, image_format: str = "png") -> str:
    """Write ``n_per_class`` samples of each class in the RF1M layout to ``out`` (local directory or
    ``s3://`` prefix); returns ``out``, normalised.

    Files: ``images/<name>.<png|jpg>``, ``products/<name>.png`` (RGBA), ``captions.jsonl``, the
    family's meta file (:attr:`Painter.meta_file`) and, last, ``label.txt``
    (``images/<name>.<ext><TAB><1-6>``). Every index file is sorted by image name.
    """
    out = storage.normalize(out)
    start = time.perf_counter()
    rows = []
    for label in range(NUM_CLASSES):
        for index in range(n_per_class):
            sample = painter.paint(label, index)
            image = f"images/{sample.name}.{image_format}"
            _write(storage.join(out, image), encode(sample.image, image_format, painter.png_params))
            _write(
                storage.join(out, f"products/{sample.name}.png"),
                encode(sample.product, "png", painter.png_params),
            )
            assert not {"image", "label"} & set(sample.scene), "scene keys clash with the meta record's"
            rows.append((image, sample.label, sample.caption, sample.scene))
    rows.sort(key=lambda row: row[0])
    storage.write_text(
        storage.join(out, "captions.jsonl"),
        "".join(json.dumps({"image": image, "caption": caption}) + "\n" for image, _, caption, _ in rows),
    )
    if painter.meta_file:
        storage.write_text(
            storage.join(out, painter.meta_file),
            "".join(
                json.dumps({"image": image, "label": painter.meta_labels[label], **scene}) + "\n"
                for image, label, _, scene in rows
            ),
        )
    storage.write_text(
        storage.join(out, "label.txt"), "".join(f"{image}\t{label + 1}\n" for image, label, _, _ in rows)
    )
    logger.info(
        "wrote %d %s images (%d per class, %d px, seed %d) to %s in %.1f s",
        len(rows),
        painter.name,
        n_per_class,
        painter.image_size,
        painter.seed,
        out,
        time.perf_counter() - start,
    )
    return out
