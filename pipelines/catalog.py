"""Catalog input: read rows, validate them in one place, decode product images.

Formats: JSONL (``.jsonl``/``.ndjson``/``.json`` with one object per line), CSV (``.csv``, ``.tsv``),
Parquet (``.parquet``/``.pq``) or a folder of images (one product per file, ``sku_id`` = file stem),
local or ``s3://``.

Columns: ``sku_id`` (required, non-empty string), ``image`` (required: path relative to the catalog
file, absolute path, ``file://`` or ``s3://`` URI), optional ``prompt``, ``negative_prompt``,
``caption``, ``image_scale`` (0 < s <= 1), ``seed`` (int >= 0), ``image_sha256`` (the hex SHA-256 of
the image file: refresh then compares it instead of the file's listing metadata). Other columns are
ignored (logged once).

A bad row never raises: :class:`CatalogReader` (a stream of chunks; :func:`read_catalog` reads them all)
returns it as a :class:`RowError` with a precise reason, and the run writes it to ``results/`` with
``status=error``. Image-level checks (reachable, decodable,
mode, alpha, size) happen later, on the workers, in :func:`load_product_rgba`; they raise
:class:`InvalidInput`, which the prepare stage turns into an error row the same way.

Accepted image modes (:func:`to_rgba`):

- ``RGBA``; ``LA``/``PA``/``P`` with transparency/``RGB`` with a transparency key: converted to RGBA.
- ``RGB``, ``L``, ``1``, ``P`` without transparency, ``CMYK``, ``YCbCr``: treated as a product on a
  white background: converted to RGB, and the background is the set of near-white pixels
  (all channels >= ``white_threshold``) connected to the image border; everything else is product
  (alpha 255). Enclosed white areas (a white label on a bottle) stay product.
- anything else (16-bit ``I;16``, 32-bit ``I``/``F``, ...): error row ("unsupported image mode").

EXIF orientation is applied before anything else, so the product is upright as a viewer shows it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipelines import storage
from pipelines.config import PrepareConfig
from pipelines.naming import check_sku_id
from pipelines.seen import SeenSkus

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
KNOWN_COLUMNS = (
    "sku_id",
    "image",
    "prompt",
    "negative_prompt",
    "caption",
    "image_scale",
    "seed",
    "image_sha256",
)
RGBA_MODES = ("RGBA", "LA", "PA")
WHITE_BACKGROUND_MODES = ("RGB", "L", "1", "P", "CMYK", "YCbCr")
WHITE_THRESHOLD = 240  # px value, the default of prepare.white_threshold
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def white_background(rgb: np.ndarray, white_threshold: int = WHITE_THRESHOLD) -> np.ndarray:
    """``(H, W)`` bool: the background of a product photographed on white, i.e. the near-white pixels
    (every channel >= ``white_threshold``) connected to the image border (4-connectivity). Enclosed
    white areas (a white label on a bottle) are not background. All False when no near-white pixel
    touches the border (a photo that is not on white)."""
    near_white = np.all(rgb >= white_threshold, axis=-1).astype(np.uint8)
    _, labels = cv2.connectedComponents(near_white, connectivity=4)
    # Label 0 is every non-white pixel; white components touching the border are the background.
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])


class InvalidInput(ValueError):
    """A catalog item that cannot be processed; ``str()`` is the reason written to ``results/``."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """A validated catalog row."""

    row: int  # 1-based position in the catalog (line for JSONL, data row for CSV/Parquet, file for folders)
    sku_id: str
    image: str  # resolved URI (absolute local path or s3://)
    prompt: str | None = None
    negative_prompt: str | None = None
    caption: str = ""
    image_scale: float | None = None
    seed: int | None = None
    image_sha256: str | None = None  # the catalog's SHA-256 of the image file (64 lower-case hex digits)

    def fields_hash(self) -> str:
        """Hash of the row's fields (not the image bytes, and not ``image_sha256``, which only says
        what the bytes are), part of the refresh content hash."""
        data = [
            self.sku_id,
            self.image,
            self.prompt,
            self.negative_prompt,
            self.caption,
            self.image_scale,
            self.seed,
        ]
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RowError:
    """A catalog row rejected before generation."""

    row: int
    sku_id: str | None  # the raw value if it was a string, else None
    reason: str


@dataclass
class Catalog:
    source: str
    format: str
    items: list[CatalogItem] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items) + len(self.errors)


# ----------------------------------------------------------------------------------------------------
# Reading.

CHUNK_ROWS = 8192  # catalog rows per chunk of the stream


def detect_format(uri: str) -> str:
    fs, path = storage.filesystem(uri)
    if fs.isdir(path):
        return "folder"
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if not fs.exists(path):
        raise FileNotFoundError(f"catalog {uri!r} does not exist")
    raise ValueError(
        f"cannot tell the format of catalog {uri!r}: use a .jsonl, .csv, .tsv or .parquet file, or a folder of images"
    )


@dataclass
class CatalogChunk:
    """Up to ``chunk_rows`` consecutive catalog rows, validated. ``index`` numbers the chunks from 0;
    the same catalog always splits into the same chunks."""

    index: int
    items: list[CatalogItem]
    errors: list[RowError]


class CatalogReader:
    """Streams a catalog in chunks of validated rows, holding one chunk at a time.

    JSONL and CSV are read line by line, Parquet a row-group batch at a time, a folder a listing page
    at a time (:func:`pipelines.storage.list_pages`), locally or from ``s3://``. Rows are validated as
    they come (:func:`validate_row`); a ``sku_id`` seen before becomes a duplicate error row, found
    through :class:`SeenSkus` (16 bytes per item). Iterating again reads the catalog again.
    """

    def __init__(self, uri: str, chunk_rows: int = CHUNK_ROWS, page_size: int = 1000):
        self.source = storage.normalize(uri)
        self.format = detect_format(self.source)
        self.base = self.source if self.format == "folder" else storage.parent(self.source)
        self.chunk_rows, self.page_size = chunk_rows, page_size
        self.seen = SeenSkus()
        self.rows = self.valid = self.rejected = 0

    def __iter__(self) -> Iterator[CatalogChunk]:
        self.seen = SeenSkus()
        self.rows = self.valid = self.rejected = 0
        unknown: set[str] = set()
        index = 0
        raw: list[tuple[int, dict[str, Any] | str]] = []
        for entry in _raw_rows(self.source, self.format, self.page_size):
            raw.append(entry)
            if len(raw) >= self.chunk_rows:
                yield self._validate(index, raw, unknown)
                index, raw = index + 1, []
        if raw:
            yield self._validate(index, raw, unknown)
        if unknown:
            logger.info("catalog %s: ignoring columns %s", self.source, sorted(map(str, unknown)))
        logger.info(
            "catalog %s (%s): %d rows, %d valid, %d rejected",
            self.source,
            self.format,
            self.rows,
            self.valid,
            self.rejected,
        )

    def _validate(self, index: int, raw: list, unknown: set[str]) -> CatalogChunk:
        validated: list[CatalogItem | RowError] = []
        for row, rec in raw:
            if isinstance(rec, str):  # a parse error for this row
                validated.append(RowError(row, None, rec))
                continue
            unknown.update(k for k in rec if k not in KNOWN_COLUMNS)
            validated.append(validate_row(rec, row, self.base))
        valid = [v for v in validated if isinstance(v, CatalogItem)]
        firsts = self.seen.first_rows([it.sku_id for it in valid], [it.row for it in valid])
        duplicates = {
            it.row: RowError(it.row, it.sku_id, f"duplicate sku_id {it.sku_id!r} (first at row {first})")
            for it, first in zip(valid, firsts, strict=True)
            if first is not None
        }
        chunk = CatalogChunk(index, [], [])
        for v in validated:
            v = duplicates.get(v.row, v) if isinstance(v, CatalogItem) else v
            (chunk.items if isinstance(v, CatalogItem) else chunk.errors).append(v)
        self.rows += len(validated)
        self.valid += len(chunk.items)
        self.rejected += len(chunk.errors)
        return chunk

    def count_rows(self) -> int:
        """The number of rows without validating them (a cheap pass: Parquet metadata, a line count,
        a listing); progress reports use it for the total."""
        if self.format == "parquet":
            with _open_binary(self.source) as f:
                return pq.ParquetFile(f).metadata.num_rows
        if self.format == "folder":
            return sum(len(page) for page in storage.list_pages(self.source, self.page_size))
        return sum(1 for _ in _raw_rows(self.source, self.format, self.page_size, parse=False))


def read_catalog(uri: str) -> Catalog:
    """Read and validate a whole catalog into memory (small catalogs: RFFT prompts, tests). Raises
    only if the catalog itself cannot be read. Runs stream it instead (:class:`CatalogReader`)."""
    reader = CatalogReader(uri)
    catalog = Catalog(source=reader.source, format=reader.format)
    for chunk in reader:
        catalog.items.extend(chunk.items)
        catalog.errors.extend(chunk.errors)
    return catalog


def _open_binary(uri: str):
    fs, path = storage.filesystem(uri)
    return fs.open(path, "rb")


def _raw_rows(uri: str, fmt: str, page_size: int = 1000, parse: bool = True):
    """Yield ``(row_number, dict | error_reason)`` as the catalog is read (``parse=False``: only the
    row numbers, for counting)."""
    if fmt == "folder":
        row = 0
        for page in storage.list_pages(uri, page_size):
            for entry in page:
                row += 1
                name = entry["name"]
                stem, ext = os.path.splitext(name)
                if ext.lower() not in IMAGE_EXTENSIONS:
                    yield (
                        row,
                        f"{name}: not an image file (extension {ext or 'none'!r}; expected one of {IMAGE_EXTENSIONS})",
                    )
                else:
                    yield row, {"sku_id": stem, "image": name}
        return
    if fmt == "parquet":
        with _open_binary(uri) as f:
            try:
                pf = pq.ParquetFile(f)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError variants
                raise ValueError(f"catalog {uri!r} is not a readable Parquet file: {exc}") from exc
            row = 0
            for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
                for rec in batch.to_pylist():
                    row += 1
                    yield row, rec
        return
    if fmt == "jsonl":
        with _open_binary(uri) as f:
            for i, data in enumerate(f, start=1):
                if not data.strip():
                    continue
                if not parse:
                    yield i, ""
                    continue
                try:
                    line = data.decode("utf-8-sig" if i == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    if i == 1:
                        raise ValueError(f"catalog {uri!r} is not UTF-8 text: {exc}") from exc
                    yield i, f"line {i}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield i, f"line {i}: not valid JSON ({exc.msg} at column {exc.colno})"
                    continue
                if not isinstance(rec, dict):
                    yield i, f"line {i}: expected a JSON object, got {type(rec).__name__}"
                    continue
                yield i, rec
        return
    delimiter = "\t" if uri.lower().endswith(".tsv") else ","
    with _open_binary(uri) as f, io.TextIOWrapper(f, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
            for i, values in enumerate(reader, start=1):
                if not values or all(not v.strip() for v in values):
                    continue
                if not parse:
                    yield i, ""
                elif len(values) != len(header):
                    yield i, f"row {i}: has {len(values)} fields, the header has {len(header)}"
                else:
                    yield i, {k: (v if v != "" else None) for k, v in zip(header, values, strict=True)}
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise ValueError(f"catalog {uri!r} is not UTF-8 text: {exc}") from exc


# ----------------------------------------------------------------------------------------------------
# Row validation (the one place that decides whether a row is usable).


def validate_row(raw: dict[str, Any], row: int, base: str) -> CatalogItem | RowError:
    sku = raw.get("sku_id")
    sku_str = sku if isinstance(sku, str) else None

    def err(reason: str) -> RowError:
        return RowError(row, sku_str, reason)

    if sku is None:
        return err("missing required field 'sku_id'")
    if not isinstance(sku, str):
        return err(f"sku_id must be a string, got {type(sku).__name__} {sku!r} (quote it in the catalog)")
    problem = check_sku_id(sku)
    if problem:
        return err(f"unsafe sku_id {sku!r}: {problem}")
    image = raw.get("image")
    if image is None or (isinstance(image, str) and not image.strip()):
        return err("missing required field 'image'")
    if not isinstance(image, str):
        return err(f"image must be a string path or URI, got {type(image).__name__}")
    try:
        image_uri = resolve_image_uri(image, base)
    except ValueError as exc:
        return err(str(exc))
    fields: dict[str, Any] = {}
    for name in ("prompt", "negative_prompt", "caption"):
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return err(f"{name} must be a string, got {type(value).__name__}")
        fields[name] = value
    scale = raw.get("image_scale")
    if scale is not None:
        try:
            scale = _as_float(scale)
        except ValueError:
            return err(f"image_scale must be a number in (0, 1], got {scale!r}")
        if math.isnan(scale) or not (0.0 < scale <= 1.0):
            return err(
                f"image_scale must be in (0, 1] (the product's longer side / canvas side), got {scale!r}"
            )
        fields["image_scale"] = scale
    seed = raw.get("seed")
    if seed is not None:
        try:
            seed = _as_int(seed)
        except ValueError:
            return err(f"seed must be a non-negative integer, got {seed!r}")
        if seed < 0 or seed >= 2**63:
            return err(f"seed must be in [0, 2**63), got {seed}")
        fields["seed"] = seed
    digest = raw.get("image_sha256")
    if digest is not None:
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest.strip()):
            return err(
                f"image_sha256 must be the 64-digit hex SHA-256 of the image file, got {digest!r} "
                "(leave the field empty to let refresh compare the file's listing metadata instead)"
            )
        fields["image_sha256"] = digest.strip().lower()
    return CatalogItem(row=row, sku_id=sku, image=image_uri, **fields)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(value)


def resolve_image_uri(image: str, base: str) -> str:
    """Absolute URI for an ``image`` field: relative paths are relative to the catalog's folder."""
    image = unicodedata.normalize("NFC", image.strip())
    if "://" in image:
        scheme = image.split("://", 1)[0].lower()
        if scheme not in storage.SUPPORTED_SCHEMES:
            raise ValueError(
                f"unsupported URI scheme {scheme!r} in image {image!r} (supported: local paths, file://, s3://)"
            )
        return storage.normalize(image)
    if os.path.isabs(image):
        if storage.is_remote(base):
            raise ValueError(f"image {image!r} is an absolute local path but the catalog is remote ({base})")
        return os.path.normpath(image)
    return (
        storage.normalize(storage.join(base, image))
        if storage.is_remote(base)
        else os.path.normpath(os.path.join(base, image))
    )


# ----------------------------------------------------------------------------------------------------
# Product images.


def fetch_product_bytes(
    uri: str, cfg: PrepareConfig, *, policy: storage.RetryPolicy = storage.DEFAULT_RETRY
) -> bytes:
    """Read a product image's bytes (size-checked), or raise :class:`InvalidInput`."""
    try:
        fs, path = storage.filesystem(uri)
        size = storage.with_retries(lambda: fs.size(path), what=f"stat {uri}", policy=policy)
    except FileNotFoundError:
        raise InvalidInput(f"image not found: {uri}") from None
    except PermissionError:
        raise InvalidInput(f"image not readable (permission denied): {uri}") from None
    except (storage.StorageError, ValueError) as exc:
        raise InvalidInput(f"image unreachable: {exc}") from None
    if size is not None and size > cfg.max_file_bytes:
        raise InvalidInput(
            f"image file is {size} bytes, over the limit of {cfg.max_file_bytes} (prepare.max_file_bytes)"
        )
    try:
        return storage.read_bytes(uri, policy=policy)
    except FileNotFoundError:
        raise InvalidInput(f"image not found: {uri}") from None
    except IsADirectoryError:
        raise InvalidInput(f"image path is a directory, not a file: {uri}") from None
    except (storage.StorageError, PermissionError) as exc:
        raise InvalidInput(f"image unreachable: {exc}") from None


def load_product_rgba(
    uri: str, cfg: PrepareConfig, *, policy: storage.RetryPolicy = storage.DEFAULT_RETRY
) -> np.ndarray:
    """Read and decode a product image to ``(H, W, 4)`` uint8 RGBA, or raise :class:`InvalidInput`."""
    return decode_product(fetch_product_bytes(uri, cfg, policy=policy), cfg)


def decode_product(data: bytes, cfg: PrepareConfig) -> np.ndarray:
    """Decode image bytes to RGBA following the mode rules in the module docstring."""
    if not data:
        raise InvalidInput("image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > cfg.max_pixels:
                raise InvalidInput(
                    f"image is {w}x{h} = {w * h} pixels, over the limit of {cfg.max_pixels} (prepare.max_pixels)"
                )
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            img.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"image rejected as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidInput("not a recognised image file (corrupt, or not an image)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"corrupt or truncated image: {exc}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF blocks raise a variety of errors inside Pillow
        raise InvalidInput(f"corrupt EXIF orientation data: {exc}") from None
    return to_rgba(img, cfg.white_threshold)


def to_rgba(img: Image.Image, white_threshold: int) -> np.ndarray:
    mode = img.mode
    has_transparency = "transparency" in img.info
    if mode in RGBA_MODES or (mode in ("P", "RGB", "L") and has_transparency):
        rgba = np.asarray(img.convert("RGBA"))
    elif mode in WHITE_BACKGROUND_MODES:
        rgba = _white_background_to_rgba(np.asarray(img.convert("RGB")), white_threshold)
    else:
        raise InvalidInput(
            f"unsupported image mode {mode!r} (accepted: {', '.join(RGBA_MODES + WHITE_BACKGROUND_MODES)})"
        )
    if not rgba[..., 3].any():
        raise InvalidInput("the alpha channel is fully transparent: there is no product")
    return np.ascontiguousarray(rgba)


def _white_background_to_rgba(rgb: np.ndarray, white_threshold: int) -> np.ndarray:
    """Alpha for a product on white: near-white pixels connected to the border are background
    (:func:`white_background`, which RFNet applies to RGB product files too)."""
    background = white_background(rgb, white_threshold)
    if not background.any():
        raise InvalidInput(
            f"no white background found around the product (an RGB image must show the product on white, "
            f"pixels >= {white_threshold}, touching the border; or provide an RGBA cut-out)"
        )
    if background.all():
        raise InvalidInput("the image is entirely white background: there is no product")
    alpha = np.where(background, 0, 255).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)
