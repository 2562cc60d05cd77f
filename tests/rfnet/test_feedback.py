"""The labelling loop: attempts table -> labelling sheet -> human labels -> RF1M dataset."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.labels import LABELS
from rfnet.data import export_for_labelling, import_labels, read_rf1m


def png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def run_out(tmp_path):
    """A generation run's output: images, placed products and two attempts Parquet files.

    sku "a" accepted at attempt 2; "b" exhausted after 2 rejected attempts; "ü-β" not inspected.
    """
    out = tmp_path / "run"
    rows = []
    specs = [
        ("a", 1, "size_mismatch", 0.1, False),
        ("a", 2, "available", 0.9, True),
        ("b", 1, "indistinctiveness", 0.2, False),
        ("b", 2, "shape_hallucination", 0.3, False),
        ("ü-β", 1, "", math.nan, False),
    ]
    for k, (sku, attempt, label, p, accepted) in enumerate(specs):
        image = np.full((16, 16, 3), (20 * k, 100, 200 - 20 * k), np.uint8)
        image_path = out / "images" / sku / f"{attempt}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(png(image, "RGB"))
        product = np.zeros((16, 16, 4), np.uint8)
        product[4:12, 5:11] = (200, 10 * k, 10, 255)
        product_path = out / "products" / sku / f"{attempt}.png"
        product_path.parent.mkdir(parents=True, exist_ok=True)
        product_path.write_bytes(png(product, "RGBA"))
        rows.append(
            {
                "sku_id": sku,
                "attempt": attempt,
                # One row stores a path relative to the run directory.
                "image": str(image_path) if k != 1 else f"images/{sku}/{attempt}.png",
                "product": str(product_path),
                "caption": f'caption of {sku}, "quoted"',
                "label": label,
                "p_available": p,
                "accepted": accepted,
                "seed": 1000 + k,
            }
        )
    (out / "attempts").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:3]), out / "attempts" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), out / "attempts" / "part-1.parquet")
    return out


def read_sheet(path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_sheet(path, rows, delimiter=","):
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def test_export_filters_and_columns(run_out, tmp_path):
    sheet = export_for_labelling(str(run_out), str(tmp_path / "sheet.csv"))
    rows = read_sheet(sheet)
    assert list(rows[0]) == [
        "image",
        "product",
        "caption",
        "sku_id",
        "attempt",
        "predicted_label",
        "p_available",
        "human_label",
    ]
    assert [(r["sku_id"], r["attempt"]) for r in rows] == [
        ("a", "1"),
        ("a", "2"),
        ("b", "1"),
        ("b", "2"),
        ("ü-β", "1"),
    ]
    assert rows[1]["image"] == str(run_out / "images" / "a" / "2.png")  # relative path resolved against OUT
    assert all(r["human_label"] == "" for r in rows)
    assert rows[4]["predicted_label"] == "" and rows[4]["p_available"] == ""
    assert rows[0]["caption"] == 'caption of a, "quoted"'
    parquet = pq.read_table(tmp_path / "sheet.parquet").to_pylist()
    assert [r["image"] for r in parquet] == [r["image"] for r in rows]

    rejected = read_sheet(export_for_labelling(str(run_out), str(tmp_path / "rej"), only="rejected"))
    assert {(r["sku_id"], r["attempt"]) for r in rejected} == {("a", "1"), ("b", "1"), ("b", "2")}
    accepted = read_sheet(export_for_labelling(str(run_out), str(tmp_path / "acc.parquet"), only="accepted"))
    assert [(r["sku_id"], r["predicted_label"]) for r in accepted] == [("a", "available")]
    with pytest.raises(ValueError, match="only must be one of"):
        export_for_labelling(str(run_out), str(tmp_path / "x.csv"), only="some")
    with pytest.raises(FileNotFoundError, match="attempts"):
        export_for_labelling(str(tmp_path / "nothing"), str(tmp_path / "x.csv"))


def test_round_trip_export_label_import_read(run_out, tmp_path):
    rows = read_sheet(export_for_labelling(str(run_out), str(tmp_path / "sheet.csv")))
    labels = ["4", "Available", "", "shape-hallucination", "7"]  # one unlabelled, one invalid
    for row, value in zip(rows, labels, strict=True):
        row["human_label"] = value
    filled = tmp_path / "filled.csv"
    write_sheet(filled, rows, delimiter=";")  # a spreadsheet saved in a locale using ';'
    dest = tmp_path / "dataset"

    report = import_labels(str(filled), str(dest))
    assert (report.rows, report.imported, report.skipped_unlabelled) == (5, 3, 1)
    assert [(p.location, "unknown label '7'" in p.reason) for p in report.invalid] == [
        ("filled.csv:row 6", True)
    ]

    index = read_rf1m(str(dest))
    assert not index.problems
    got = {}
    for s in index.samples:
        with open(s.image, "rb") as f:
            image_bytes = f.read()
        with open(s.product, "rb") as f:
            product_bytes = f.read()
        got[image_bytes] = (LABELS[s.label], product_bytes, s.caption)
    expected = {}
    for row, name in ((rows[0], "size_mismatch"), (rows[1], "available"), (rows[3], "shape_hallucination")):
        with open(row["image"], "rb") as f, open(row["product"], "rb") as g:
            expected[f.read()] = (name, g.read(), row["caption"])
    assert got == expected

    # Re-importing adds nothing; a changed label replaces the old one; new rows append.
    again = import_labels(str(filled), str(dest))
    assert (again.imported, again.already_present, again.relabelled) == (0, 3, 0)
    rows[1]["human_label"] = "unsuitable"
    rows[2]["human_label"] = "Indistinctiveness"
    write_sheet(filled, rows)
    third = import_labels(str(filled), str(dest))
    assert (third.imported, third.already_present, third.relabelled) == (1, 2, 1)
    index = read_rf1m(str(dest))
    assert sorted(LABELS[s.label] for s in index.samples) == sorted(
        ["size_mismatch", "unsuitable", "shape_hallucination", "indistinctiveness"]
    )
    assert len({s.image for s in index.samples}) == 4 and not index.problems


def test_import_reports_conflicts_and_unreadable_images(run_out, tmp_path):
    rows = read_sheet(export_for_labelling(str(run_out), str(tmp_path / "sheet.csv")))
    rows = rows[:3]
    rows.append(dict(rows[0]))
    rows[0]["human_label"], rows[3]["human_label"] = "1", "2"  # same image, two labels
    rows[1]["human_label"] = "3"
    rows[1]["product"] = str(tmp_path / "missing-product.png")
    rows[2]["human_label"] = "5"
    rows[2]["image"] = str(tmp_path / "missing.png")
    sheet = tmp_path / "conflicts.csv"
    write_sheet(sheet, rows)
    report = import_labels(str(sheet), str(tmp_path / "ds"))
    assert report.imported == 1
    assert {p.location for p in report.invalid} == {"conflicts.csv:row 5"}
    assert "row 2" in report.invalid[0].reason
    assert {p.location for p in report.unreadable} == {"conflicts.csv:row 3", "conflicts.csv:row 4"}
    (sample,) = read_rf1m(str(tmp_path / "ds")).samples
    assert sample.label == 2 and sample.product is None  # imported without the unreadable product

    with pytest.raises(ValueError, match="human_label"):
        bad = tmp_path / "bad.csv"
        bad.write_text("image,label\nx.png,1\n")
        import_labels(str(bad), str(tmp_path / "ds2"))


def test_import_appends_to_an_existing_rf1m_dataset(run_out, tmp_path):
    dest = tmp_path / "rf1m"
    (dest / "images").mkdir(parents=True)
    (dest / "images" / "old.png").write_bytes(png(np.zeros((8, 8, 3), np.uint8), "RGB"))
    (dest / "label.txt").write_bytes(b"\xef\xbb\xbf# existing data\r\nimages/old.png\tSpace Mismatch\r\n")
    rows = read_sheet(export_for_labelling(str(run_out), str(tmp_path / "s.csv")))
    rows[0]["human_label"] = "2"
    write_sheet(tmp_path / "s.csv", rows)
    assert import_labels(str(tmp_path / "s.csv"), str(dest)).imported == 1
    index = read_rf1m(str(dest))
    assert sorted(s.label for s in index.samples) == [1, 2] and index.notes["comment lines"] == 1

    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("images/x.png 1\n")
    with pytest.raises(ValueError, match="split into"):
        import_labels(str(tmp_path / "s.csv"), str(split))
