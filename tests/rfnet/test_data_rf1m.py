"""The RF1M reader on the shipped fixture (good and malformed lines), split files, and S3."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from rfnet.data import RF1MError, load_example, read_rf1m

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rf1m"


@dataclass
class Bucket:
    name: str
    endpoint: str


@pytest.fixture
def s3_bucket(s3_server) -> Bucket:
    """A bucket on the local moto S3 server (tests/conftest.py), reached through the AWS environment."""
    return Bucket(s3_server.bucket("rf1m-test"), s3_server.endpoint)


def by_name(index) -> dict:
    return {s.image.rsplit("/", 1)[1]: s for s in index.samples}


def test_fixture_reads_every_good_line_and_reports_every_bad_one(caplog):
    with caplog.at_level(logging.WARNING, logger="rfnet.data.rf1m"):
        index = read_rf1m(str(FIXTURE))
    samples = by_name(index)
    assert {name: s.label for name, s in samples.items()} == {
        "a01.png": 0,  # tab
        "a02.jpg": 1,  # space
        "a03.png": 2,  # ./ prefix, run of spaces, two-word class name
        "with space 04.png": 3,  # path with spaces
        "a05.png": 4,  # upper-case name
        "a06.png": 5,  # bare file name found under images/, hyphenated name
        "a07.png": 5,  # absolute path from another machine, re-rooted
        "a08.png": 0,  # backslash separator, comma
        "a09.png": 2,  # quoted path, semicolon
        "a12.png": 3,
    }
    assert samples["a01.png"].source == "label.txt:3"
    assert samples["a01.png"].image == str(FIXTURE / "images" / "a01.png")
    # Products: exact name, same stem with another extension (image .jpg, product .png), or none.
    assert samples["a01.png"].product == str(FIXTURE / "products" / "a01.png")
    assert samples["a02.jpg"].product == str(FIXTURE / "products" / "a02.png")
    assert samples["with space 04.png"].product is not None
    assert samples["a05.png"].product is None
    # Captions: first caption wins, alternative keys, whitespace stripped, "./" resolved.
    assert samples["a01.png"].caption == "a red ceramic mug"
    assert samples["a02.jpg"].caption == "a green glass bottle"
    assert samples["with space 04.png"].caption == "a yellow box"
    assert samples["a03.png"].caption == ""

    problems = {(p.location, p.reason.split(" (")[0].split(":")[0]) for p in index.problems}
    assert problems == {
        ("label.txt:13", "image file not found"),
        ("label.txt:14", "label '7' is not an RF1M number 1-6"),
        ("label.txt:15", "label '0' is not an RF1M number 1-6"),
        ("label.txt:16", "unknown label 'great'"),
        ("label.txt:17", "expected '<image path><tab or space><label>', found one field"),
        ("label.txt:18", "duplicate of label.txt"),
        ("label.txt:19", "image listed with different labels"),
        ("label.txt:20", "image listed with different labels"),
        ("label.txt:22", "line is not UTF-8"),
        ("captions.jsonl:3", "not valid JSON"),
        ("captions.jsonl:4", "needs a string caption/title/text field"),
        ("captions.jsonl:5", "another caption for this image at captions.jsonl"),
    }
    assert all(p.line for p in index.problems)
    assert index.notes["header lines"] == 1 and index.notes["comment lines"] == 1
    assert index.notes["product files matching no image"] == 1
    summary = index.summary()
    assert "10 samples" in summary and "12 problems" in summary and "1-based" in summary
    assert "label.txt:13" in caplog.text


def test_fixture_examples_decode(tmp_path):
    samples = by_name(read_rf1m(str(FIXTURE)))
    ex = load_example(samples["a02.jpg"], image_size=16, product_size=8)
    assert abs(int(ex["image"][..., 1].mean()) - 200) <= 3  # the green JPEG
    assert ex["has_product"] and ex["product"][..., 3].max() == 255
    assert ex["product"][..., 1].max() == 255 and ex["product"][..., 0].max() == 0


def test_split_files_and_a_label_file_as_root(tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(FIXTURE / "images", root / "images")
    (root / "train.txt").write_text("images/a01.png 1\nimages/a02.jpg 2\nimages/a03.png 3\n")
    (root / "test.txt").write_text("images/a05.png 5\nimages/a06.png 6\n")
    index = read_rf1m(str(root))
    assert index.label_files == ["train.txt", "test.txt"]
    assert sorted(s.label for s in index.subset("test.txt")) == [4, 5]
    assert len(index.subset("train.txt")) == 3
    only_test = read_rf1m(str(root / "test.txt"))
    assert only_test.label_files == ["test.txt"] and len(only_test.samples) == 2
    (root / "labels.txt").write_text("images/a01.png 1\n")  # a label file wins over split files
    assert read_rf1m(str(root)).label_files == ["labels.txt"]


def test_utf16_and_header_only_variants(tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(FIXTURE / "images", root / "images")
    (root / "label.txt").write_bytes("path,class\r\nimages/a01.png,Shape Hallucination\r\n".encode("utf-16"))
    index = read_rf1m(str(root))
    assert [s.label for s in index.samples] == [5] and index.notes["header lines"] == 1


def test_nothing_usable_raises_listing_the_first_problems(tmp_path):
    (tmp_path / "label.txt").write_text("images/gone.png 1\nimages/also_gone.png 2\nno_label_here\n")
    with pytest.raises(RF1MError, match=r"no usable samples(.|\n)*label\.txt:1: image file not found"):
        read_rf1m(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    with pytest.raises(RF1MError, match=r"no label file .*label\.txt.*found notes\.md"):
        read_rf1m(str(empty))
    with pytest.raises(RF1MError, match="does not exist"):
        read_rf1m(str(tmp_path / "nowhere"))


def test_ambiguous_bare_file_names_are_reported(tmp_path):
    for sub in ("a", "b"):
        shutil.copytree(FIXTURE / "images", tmp_path / "images" / sub)
    (tmp_path / "label.txt").write_text("a01.png 1\na/a02.jpg 2\n")
    index = read_rf1m(str(tmp_path))
    assert [s.image for s in index.samples] == [str(tmp_path / "images" / "a" / "a02.jpg")]
    assert "ambiguous: 2 files match" in index.problems[0].reason


@pytest.mark.s3
def test_reads_the_fixture_from_s3(s3_bucket):
    import fsspec

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_bucket.endpoint}, skip_instance_cache=True)
    fs.put(str(FIXTURE) + "/", f"{s3_bucket.name}/rf1m/", recursive=True)
    local = read_rf1m(str(FIXTURE))
    remote = read_rf1m(f"s3://{s3_bucket.name}/rf1m")

    def rel(s, root):
        return (
            s.image.removeprefix(root),
            s.label,
            (s.product or "").removeprefix(root),
            s.caption,
        )

    assert sorted(rel(s, f"s3://{s3_bucket.name}/rf1m") for s in remote.samples) == sorted(
        rel(s, str(FIXTURE)) for s in local.samples
    )
    assert {p.location for p in remote.problems} == {p.location for p in local.problems}
    ex = load_example(
        next(s for s in remote.samples if s.image.endswith("a01.png")), image_size=8, product_size=8
    )
    assert ex["has_product"] and ex["image"][..., 0].min() > 150


@pytest.mark.s3
def test_synthetic_set_and_label_import_on_s3(s3_bucket, tmp_path):
    import csv

    from rfnet.data import import_labels
    from rfnet.data.scenes import make_set

    root = f"s3://{s3_bucket.name}/synthetic"
    make_set("synthetic", root, n_per_class=1, image_size=48, seed=0)
    index = read_rf1m(root)
    assert len(index.samples) == 6 and not index.problems
    assert load_example(index.samples[0], image_size=16, product_size=16)["has_product"]

    sheet = tmp_path / "sheet.csv"
    with open(sheet, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "product", "caption", "human_label"])
        writer.writeheader()
        for s in index.samples[:3]:
            writer.writerow(
                {"image": s.image, "product": s.product, "caption": s.caption, "human_label": "Available"}
            )
    dest = f"s3://{s3_bucket.name}/feedback"
    assert import_labels(str(sheet), dest).imported == 3
    imported = read_rf1m(dest)
    assert [s.label for s in imported.samples] == [0, 0, 0] and all(s.product for s in imported.samples)
