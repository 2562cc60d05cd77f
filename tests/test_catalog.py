"""Catalog reading and validation: every bad row becomes a precise error, never an exception."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.catalog import InvalidInput, decode_product, read_catalog, resolve_image_uri
from pipelines.config import PrepareConfig
from pipelines.naming import check_sku_id, decode_sku, encode_sku


def png(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def rgba_product(h=40, w=30) -> np.ndarray:
    a = np.zeros((h, w, 4), np.uint8)
    a[5:-5, 5:-5] = (30, 120, 200, 255)
    return a


@pytest.fixture
def images(tmp_path):
    (tmp_path / "a.png").write_bytes(png(rgba_product()))
    (tmp_path / "b.png").write_bytes(png(rgba_product(50, 50)))
    return tmp_path


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def by_row(catalog):
    return {e.row: e.reason for e in catalog.errors}


def test_jsonl_good_and_bad_rows(images):
    cat = write_jsonl(
        images / "cat.jsonl",
        [
            {"sku_id": "A", "image": "a.png", "prompt": "p", "caption": "c", "image_scale": 0.7, "seed": 3},
            {"sku_id": "B", "image": str(images / "b.png")},
            {"sku_id": "A", "image": "b.png"},  # duplicate
            {"sku_id": "", "image": "a.png"},
            {"sku_id": "C\u0007D", "image": "a.png"},
            {"sku_id": 17, "image": "a.png"},
            {"image": "a.png"},
            {"sku_id": "D"},
            {"sku_id": "E", "image": "gs://bucket/e.png"},
            {"sku_id": "F", "image": "a.png", "image_scale": "NaN"},
            {"sku_id": "G", "image": "a.png", "image_scale": 1.5},
            {"sku_id": "H", "image": "a.png", "seed": -1},
            {"sku_id": "商品/01 é", "image": "a.png"},
        ],
        extra_lines=["", '{"sku_id": "broken", ', "[1, 2]"],
    )
    catalog = read_catalog(str(cat))
    assert len(catalog) == 15  # the blank line is not an item
    assert {it.sku_id for it in catalog.items} == {"A", "B", "商品/01 é"}
    a = next(it for it in catalog.items if it.sku_id == "A")
    assert a.image == str(images / "a.png") and a.image_scale == 0.7 and a.seed == 3 and a.prompt == "p"
    errors = by_row(catalog)
    assert errors[3] == "duplicate sku_id 'A' (first at row 1)"
    assert "unsafe sku_id ''" in errors[4] and "empty" in errors[4]
    assert "control" in errors[5]
    assert "sku_id must be a string" in errors[6]
    assert errors[7] == "missing required field 'sku_id'"
    assert errors[8] == "missing required field 'image'"
    assert "unsupported URI scheme 'gs'" in errors[9]
    assert "image_scale must be in (0, 1]" in errors[10]
    assert "image_scale must be in (0, 1]" in errors[11]
    assert "seed must be in" in errors[12]
    assert "line 15: not valid JSON" in errors[15]
    assert "expected a JSON object" in errors[16]
    err_rows = {e.row for e in catalog.errors}
    assert err_rows.isdisjoint({it.row for it in catalog.items})  # each row exactly once


def test_csv_and_parquet_and_folder(images):
    (images / "cat.csv").write_text(
        "sku_id,image,image_scale\nA,a.png,0.7\nB,b.png,\nC,a.png,x\nD,a.png,0.5,extra\n"
    )
    catalog = read_catalog(str(images / "cat.csv"))
    assert [it.sku_id for it in catalog.items] == ["A", "B"]
    assert catalog.items[1].image_scale is None
    assert "image_scale must be a number" in by_row(catalog)[3]
    assert "has 4 fields, the header has 3" in by_row(catalog)[4]

    table = pa.table(
        {"sku_id": ["P1", "P2", None], "image": ["a.png", "b.png", "a.png"], "seed": [1, None, 2]}
    )
    pq.write_table(table, images / "cat.parquet")
    catalog = read_catalog(str(images / "cat.parquet"))
    assert [it.sku_id for it in catalog.items] == ["P1", "P2"] and catalog.items[0].seed == 1
    assert by_row(catalog)[3] == "missing required field 'sku_id'"

    folder = images / "folder"
    folder.mkdir()
    (folder / "x1.png").write_bytes(png(rgba_product()))
    (folder / "notes.txt").write_text("not a product")
    (folder / ".DS_Store").write_bytes(b"\0")
    catalog = read_catalog(str(folder))
    assert catalog.format == "folder"
    assert [it.sku_id for it in catalog.items] == ["x1"]
    assert len(catalog.errors) == 1 and "not an image file" in catalog.errors[0].reason


def test_catalog_level_failures_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_catalog(str(tmp_path / "missing.jsonl"))
    (tmp_path / "cat.xml").write_text("<x/>")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_catalog(str(tmp_path / "cat.xml"))


def test_relative_paths_resolve_against_catalog(tmp_path):
    assert resolve_image_uri("img/a.png", str(tmp_path)) == str(tmp_path / "img" / "a.png")
    assert resolve_image_uri("img/a.png", "s3://b/cat") == "s3://b/cat/img/a.png"
    with pytest.raises(ValueError, match="absolute local path"):
        resolve_image_uri("/abs/a.png", "s3://b/cat")


# ---- image decoding ---------------------------------------------------------------------------------

CFG = PrepareConfig()


def test_rgba_and_palette_modes():
    rgba = decode_product(png(rgba_product()), CFG)
    assert rgba.shape == (40, 30, 4) and rgba[0, 0, 3] == 0 and rgba[20, 15, 3] == 255
    la = np.zeros((20, 20, 2), np.uint8)
    la[5:15, 5:15] = (100, 255)
    assert decode_product(png(la), CFG)[10, 10].tolist() == [100, 100, 100, 255]


def test_white_background_mask_is_derived():
    rgb = np.full((60, 60, 3), 255, np.uint8)
    rgb[10:50, 20:40] = (40, 60, 200)
    rgb[25:30, 25:35] = 255  # an enclosed white label stays product
    rgba = decode_product(png(rgb), CFG)
    assert rgba[0, 0, 3] == 0 and rgba[20, 30, 3] == 255
    assert rgba[27, 30, 3] == 255  # enclosed white is not background
    jpg = io.BytesIO()
    Image.fromarray(rgb).save(jpg, format="JPEG", quality=95)
    assert decode_product(jpg.getvalue(), CFG)[20, 30, 3] == 255


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"not an image at all", "not a recognised image"),
        (png(rgba_product())[:60], "truncated"),
        (png(np.zeros((10, 10, 4), np.uint8)), "fully transparent"),
        (png(np.full((10, 10, 3), 255, np.uint8)), "entirely white"),
        (png(np.full((10, 10, 3), 90, np.uint8)), "no white background"),
        (png(np.zeros((10, 10), np.uint16)), "unsupported image mode"),
    ],
)
def test_bad_images_give_precise_reasons(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        decode_product(data, CFG)


def test_pixel_limit_checked_before_decoding():
    big = png(np.zeros((300, 300, 4), np.uint8) + 255)
    with pytest.raises(InvalidInput, match=r"300x300 = 90000 pixels, over the limit of 1000"):
        decode_product(big, PrepareConfig(max_pixels=1000))


# ---- sku ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sku", ["A-1", "商品/01", "..", ".", "a b%c~d", "x" * 60, "😀"])
def test_sku_encoding_is_safe_and_reversible(sku):
    enc = encode_sku(sku)
    assert decode_sku(enc) == sku
    assert "/" not in enc and not enc.startswith(".") and enc not in (".", "..")
    assert all(c.isalnum() or c in "%-_" for c in enc)


@pytest.mark.parametrize(
    ("sku", "problem"),
    [("", "empty"), ("  ", "empty"), (" a", "whitespace"), ("a\tb", "control"), ("x" * 201, "longer than")],
)
def test_unsafe_sku_ids(sku, problem):
    assert problem in check_sku_id(sku)


def test_nan_scale_is_not_silently_accepted(images):
    cat = write_jsonl(images / "c.jsonl", [{"sku_id": "A", "image": "a.png", "image_scale": math.nan}])
    # json.dumps writes NaN, which Python's json reads back: the validator must reject it.
    catalog = read_catalog(str(cat))
    assert not catalog.items and "image_scale" in catalog.errors[0].reason
