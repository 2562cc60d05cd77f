"""Write a labelled scene set in the RF1M layout.

python -m rfnet.data.scenes --set synthetic --out out/syn --n-per-class 300 --image-size 128 --seed 0
python -m rfnet.data.scenes --set studio --out out/studio-real --products-dir ../shared/data/products
python -m rfnet.data.scenes --set lifestyle --out out/lifestyle --n-per-class 20 --sheet out/lifestyle.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from pipelines.labels import DISPLAY_NAMES
from rfnet.data.scenes import SETS, make_set
from rfnet.data.scenes.painter import IMAGE_FORMATS


def contact_sheet(out: str, path: str, per_class: int = 8, cell: int = 128) -> str:
    """A PNG grid of the first ``per_class`` images of each class (rows = classes), for a visual check."""
    root = Path(out)
    by_class: dict[int, list[str]] = {k: [] for k in range(1, len(DISPLAY_NAMES) + 1)}
    for line in (root / "label.txt").read_text().splitlines():
        image, label = line.split("\t")
        by_class[int(label)].append(image)
    margin = 150
    sheet = np.full((cell * len(by_class), margin + cell * per_class, 3), 255, np.uint8)
    for row, (label, images) in enumerate(sorted(by_class.items())):
        cv2.putText(
            sheet,
            DISPLAY_NAMES[label - 1],
            (4, row * cell + cell // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        for col, image in enumerate(images[:per_class]):
            tile = cv2.resize(cv2.imread(str(root / image)), (cell, cell), interpolation=cv2.INTER_NEAREST)
            sheet[row * cell : (row + 1) * cell, margin + col * cell : margin + (col + 1) * cell] = tile
    cv2.imwrite(path, sheet)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rfnet.data.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, choices=list(SETS), help="the family of scenes")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix (RF1M layout)")
    parser.add_argument("--n-per-class", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--products-dir", default=None, help="real RGBA cut-outs to paint instead of drawn products"
    )
    parser.add_argument("--image-format", default="png", choices=IMAGE_FORMATS)
    parser.add_argument("--sheet", default=None, help="also write a contact sheet PNG here (local sets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = make_set(
            args.set,
            args.out,
            n_per_class=args.n_per_class,
            image_size=args.image_size,
            seed=args.seed,
            products_dir=args.products_dir,
            image_format=args.image_format,
        )
    except ValueError as exc:  # arguments the set cannot take
        parser.error(str(exc))
    if args.sheet:
        contact_sheet(out, args.sheet, per_class=min(8, args.n_per_class), cell=max(96, args.image_size))
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
