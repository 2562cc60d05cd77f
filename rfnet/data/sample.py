"""A small sample catalog made by the project, for ``make demo`` and the tests (offline, seconds).

Products are drawn procedurally (bottles, jars, cans, mugs, boxes, shoes... with shading and labels;
see ``rfnet.data.scenes.draw_product``) and saved as RGBA cut-outs; one is saved as an RGB image on
a white background to show the derived mask. ``--with-bad-rows`` appends rows that must end as
``status=error`` (missing file, corrupt file, fully transparent alpha, unsafe and duplicate sku_id,
out-of-range image_scale, unsupported URI scheme, malformed JSON line).

    python -m rfnet.data.sample --out out/demo-catalog [--items 12] [--with-bad-rows]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from rfnet.data.scenes import draw_product


def write_sample_catalog(
    out: str | Path, items: int = 12, seed: int = 7, with_bad_rows: bool = False
) -> Path:
    """Write ``out/catalog.jsonl`` and ``out/images/*``; return the catalog path."""
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(items):
        product = draw_product(rng, height=int(rng.integers(220, 360)))
        sku = f"SKU-{i:04d}"
        if i == 1:  # one product photographed on white (no alpha): the mask is derived
            rgb = np.full((*product.rgba.shape[:2], 3), 255, np.uint8)
            a = product.rgba[..., 3:4].astype(np.float32) / 255.0
            rgb = (product.rgba[..., :3] * a + rgb * (1 - a)).round().astype(np.uint8)
            rgb = np.pad(rgb, ((16, 16), (16, 16), (0, 0)), constant_values=255)
            name = f"{sku}.jpg"
            Image.fromarray(rgb).save(images / name, quality=95)
        else:
            name = f"{sku}.png"
            Image.fromarray(product.rgba).save(images / name)
        rows.append({"sku_id": sku, "image": f"images/{name}", "caption": product.caption})
    rows.append(
        {"sku_id": "商品-αβ/01", "image": rows[0]["image"], "caption": "unicode sku id, same product"}
    )
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if with_bad_rows:
        (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(images / "transparent.png")
        bad = [
            {"sku_id": "BAD-missing-file", "image": "images/does-not-exist.png"},
            {"sku_id": "BAD-corrupt", "image": "images/corrupt.png"},
            {"sku_id": "BAD-transparent", "image": "images/transparent.png"},
            {"sku_id": " BAD-whitespace", "image": rows[0]["image"]},
            {"sku_id": "SKU-0000", "image": rows[0]["image"]},
            {"sku_id": "BAD-scale", "image": rows[0]["image"], "image_scale": 1.7},
            {"sku_id": "BAD-scheme", "image": "http://example.com/a.png"},
            {"image": rows[0]["image"]},
        ]
        lines += [json.dumps(r, ensure_ascii=False) for r in bad]
        lines.append('{"sku_id": "BAD-json", "image": ')
    path = out / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo-catalog")
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--with-bad-rows", action="store_true")
    args = parser.parse_args()
    path = write_sample_catalog(args.out, args.items, args.seed, args.with_bad_rows)
    print(f"sample catalog: {path}")


if __name__ == "__main__":
    main()
