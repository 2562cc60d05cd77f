"""The human-feedback loop: export generated attempts for labelling, import the labels as RF1M data.

1. :func:`export_for_labelling` reads a run's ``OUT/attempts/*.parquet`` and writes a CSV (and the
   same rows as Parquet) with one row per attempt: ``image``, ``product``, ``caption``, ``sku_id``,
   ``attempt``, ``predicted_label``, ``p_available`` and an empty ``human_label`` column.
2. People fill ``human_label`` with an RF1M number 1-6 or a class name (any case; spaces,
   underscores and hyphens ignored), in a spreadsheet or any tool; rows left empty are skipped.
3. :func:`import_labels` copies each labelled image and its product into an RF1M-layout dataset
   (``label.txt``, ``images/``, ``products/``, ``captions.jsonl``), appending to an existing one.
   Files are named by the SHA-256 of the image's bytes, so re-importing the same image never
   duplicates it; a new label for an image already there replaces its old label (counted as
   relabelled). ``feedback.jsonl`` records where each imported image came from.
4. ``reliable-ad train-rfnet --data DEST`` retrains on the operators' own judgements.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.labels import LABELS, parse_label
from rfnet.data.rf1m import LABEL_FILES, SPLIT_FILES, LineError, Problem, clean_path, split_line, text_lines
from rfnet.data.transforms import decode_rgb, decode_rgba

logger = logging.getLogger(__name__)

EXPORT_COLUMNS = (
    "image",
    "product",
    "caption",
    "sku_id",
    "attempt",
    "predicted_label",
    "p_available",
    "human_label",
)
ONLY = ("all", "rejected", "accepted")
REQUIRED_ATTEMPT_COLUMNS = ("sku_id", "attempt", "image")
REQUIRED_LABEL_COLUMNS = ("image", "human_label")
FEEDBACK_FILE = "feedback.jsonl"


# ----------------------------------------------------------------------------------------------------
# Export.


def _absolute(uri: str, base: str) -> str:
    """``uri`` as stored, or resolved against ``base`` when it is a relative path."""
    if not uri or "://" in uri or uri.startswith("/"):
        return uri
    return storage.join(base, uri)


def _destinations(dest: str) -> tuple[str, str]:
    lower = dest.lower()
    if lower.endswith(".csv"):
        return dest, dest[:-4] + ".parquet"
    if lower.endswith(".parquet"):
        return dest[:-8] + ".csv", dest
    return storage.join(dest, "labelling.csv"), storage.join(dest, "labelling.parquet")


def export_for_labelling(out: str, dest: str, *, only: str = "all") -> str:
    """Write the attempts of the run at ``out`` as a labelling sheet; returns the CSV's path.

    ``dest``: a ``.csv`` path (the Parquet copy goes beside it), a ``.parquet`` path (the CSV goes
    beside it) or a directory (``labelling.csv`` and ``labelling.parquet`` inside). ``only``:
    ``"all"`` attempts, ``"rejected"`` (inspected and not accepted) or ``"accepted"``. Rows are
    sorted by ``sku_id`` then ``attempt``; relative ``image``/``product`` paths in the table are
    made absolute against ``out``. The CSV is UTF-8 with a BOM so spreadsheet programs open
    non-Latin text correctly; ``p_available`` is empty when the attempt was not inspected.
    """
    if only not in ONLY:
        raise ValueError(f"only must be one of {ONLY}, got {only!r}")
    out = storage.normalize(out)
    attempts_dir = storage.join(out, "attempts")
    table = storage.read_parquet_dir(attempts_dir)
    if table is None:
        raise FileNotFoundError(
            f"no attempts table under {attempts_dir} (expected attempts/*.parquet); "
            "pass the --out directory of a `reliable-ad generate` run"
        )
    missing = [c for c in REQUIRED_ATTEMPT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"attempts table at {attempts_dir} lacks columns {missing}; it has {table.column_names}"
        )
    # Attempts that produced no image (failed generation or write) have nothing to label.
    rows = [r for r in table.to_pylist() if r["image"]]
    if only != "all":
        if "accepted" not in table.column_names:
            raise ValueError(
                f"only={only!r} needs an 'accepted' column in {attempts_dir}; it has {table.column_names}"
            )
        inspected = [r for r in rows if _predicted(r)]
        rows = [r for r in inspected if bool(r.get("accepted")) == (only == "accepted")]
    rows.sort(key=lambda r: (str(r["sku_id"]), int(r["attempt"])))
    records = []
    for r in rows:
        p = r.get("p_available")
        records.append(
            {
                "image": _absolute(str(r["image"] or ""), out),
                "product": _absolute(str(r.get("product") or ""), out),
                "caption": str(r.get("caption") or ""),
                "sku_id": str(r["sku_id"]),
                "attempt": int(r["attempt"]),
                "predicted_label": _predicted(r),
                "p_available": None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p),
                "human_label": "",
            }
        )
    csv_path, parquet_path = _destinations(dest)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(
            {k: "" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for k, v in rec.items()}
        )
    storage.write_bytes(csv_path, buf.getvalue().encode("utf-8-sig"))
    schema = pa.schema(
        [
            ("image", pa.string()),
            ("product", pa.string()),
            ("caption", pa.string()),
            ("sku_id", pa.string()),
            ("attempt", pa.int64()),
            ("predicted_label", pa.string()),
            ("p_available", pa.float64()),
            ("human_label", pa.string()),
        ]
    )
    storage.write_parquet(parquet_path, pa.Table.from_pylist(records, schema=schema))
    logger.info("exported %d attempts (%s) from %s for labelling to %s", len(records), only, out, csv_path)
    return csv_path


def _predicted(row: dict) -> str:
    label = row.get("label")
    return str(label) if label else ""


# ----------------------------------------------------------------------------------------------------
# Import.


@dataclass
class ImportReport:
    """What :func:`import_labels` did. Row numbers count the header as row 1, as spreadsheets do."""

    labels_file: str
    dest_root: str
    rows: int = 0  # data rows read
    imported: int = 0  # new images added to the dataset
    relabelled: int = 0  # images already in the dataset whose label changed
    already_present: int = 0  # images already in the dataset with the same label
    skipped_unlabelled: int = 0  # rows with an empty human_label
    invalid: list[Problem] = field(default_factory=list)  # unknown labels, conflicting rows
    unreadable: list[Problem] = field(default_factory=list)  # images or products that could not be read

    def summary(self) -> str:
        lines = [
            f"imported labels from {self.labels_file} into {self.dest_root}: {self.rows} rows; "
            f"{self.imported} new images, {self.relabelled} relabelled, {self.already_present} already present, "
            f"{self.skipped_unlabelled} unlabelled (skipped), {len(self.invalid)} invalid, "
            f"{len(self.unreadable)} unreadable."
        ]
        lines.extend(f"  {p}" for p in [*self.invalid, *self.unreadable][:10])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _read_label_rows(labels_file: str) -> list[dict[str, str]]:
    data = storage.read_bytes(labels_file)
    if labels_file.lower().endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        rows = table.to_pylist()
        return [{str(k).strip().lower(): ("" if v is None else str(v)) for k, v in r.items()} for r in rows]
    lines = text_lines(data)
    bad = [n for n, text, _ in lines if text is None]
    if bad:
        raise ValueError(f"{labels_file} is not UTF-8 text (first bad line: {bad[0]}); save it as UTF-8 CSV")
    text = "\n".join(t for _, t, _ in lines if t is not None)
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if reader.fieldnames is None:
        return []
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]


@dataclass
class _Labelled:
    row: int
    image: str
    product: str
    caption: str
    label: int
    record: dict[str, str]


def _feedback_record(rel: str, item: _Labelled, labels_file: str, relabelled_from: str | None = None) -> str:
    record = {
        "image": rel,
        "label": LABELS[item.label],
        "source_image": item.image,
        "source_product": item.product,
        "sku_id": item.record.get("sku_id", ""),
        "attempt": item.record.get("attempt", ""),
        "predicted_label": item.record.get("predicted_label", ""),
        "labels_file": labels_file,
        "row": item.row,
    }
    if relabelled_from is not None:
        record["relabelled_from"] = relabelled_from
    return json.dumps(record, ensure_ascii=False)


def _label_file_for(dest_root: str) -> str:
    """The label file to append to: an existing RF1M label file, else ``label.txt``."""
    names = {posixpath.basename(p).lower(): posixpath.basename(p) for p in storage.list_files(dest_root)}
    for name in LABEL_FILES:
        if name in names:
            return names[name]
    splits = [names[n] for n in SPLIT_FILES if n in names]
    if splits:
        raise ValueError(
            f"{dest_root} is split into {splits}; import labels into a separate directory (its own "
            "label.txt), or merge the split files into label.txt first"
        )
    return "label.txt"


def import_labels(labels_file: str, dest_root: str) -> ImportReport:
    """Add the labelled rows of ``labels_file`` (CSV or Parquet from :func:`export_for_labelling`)
    to the RF1M-layout dataset at ``dest_root`` (created if needed; local or ``s3://``).

    Needs the columns ``image`` and ``human_label``; uses ``product``, ``caption``, ``sku_id``,
    ``attempt`` and ``predicted_label`` when present. CSV delimiters ``,`` ``;`` or tab and a BOM
    are accepted (spreadsheet exports). Empty ``human_label``: skipped and counted. Unknown labels,
    and one image given two different labels in the file, are reported with their row numbers and
    not imported. Unreadable images are reported; an unreadable product drops only the product.
    Writes images and products first, ``label.txt`` last, so an interrupted import leaves the
    dataset as it was (rerunning it completes it).
    """
    dest_root = storage.normalize(dest_root)
    report = ImportReport(labels_file, dest_root)
    rows = _read_label_rows(labels_file)
    if rows:
        missing = [c for c in REQUIRED_LABEL_COLUMNS if c not in rows[0]]
        if missing:
            raise ValueError(
                f"{labels_file} lacks columns {missing}; it has {sorted(rows[0])}. "
                "Use the sheet written by export_for_labelling (or any file with image and human_label)."
            )
    base = storage.parent(storage.normalize(labels_file))
    name = posixpath.basename(labels_file)
    report.rows = len(rows)

    wanted: dict[str, _Labelled] = {}
    conflicts: set[str] = set()
    for number, row in enumerate(rows, start=2):
        value = row.get("human_label", "").strip()
        if not value:
            report.skipped_unlabelled += 1
            continue
        location = f"{name}:row {number}"
        image = _absolute(row.get("image", "").strip(), base)
        try:
            label = parse_label(value)
        except ValueError as exc:
            report.invalid.append(Problem(location, f"human_label={value!r} image={image}", str(exc)))
            continue
        if not image:
            report.invalid.append(Problem(location, f"human_label={value!r}", "empty image column"))
            continue
        previous = wanted.get(image)
        if previous is not None and previous.label != label:
            report.invalid.append(
                Problem(
                    location,
                    f"human_label={value!r} image={image}",
                    f"row {previous.row} gives this image {LABELS[previous.label]}; neither row imported",
                )
            )
            conflicts.add(image)
            continue
        wanted[image] = _Labelled(
            number,
            image,
            _absolute(row.get("product", "").strip(), base),
            row.get("caption", "").strip(),
            label,
            row,
        )
    for image in conflicts:
        wanted.pop(image, None)

    label_file = _label_file_for(dest_root)
    label_uri = storage.join(dest_root, label_file)
    existing_lines: list[str] = []
    existing: dict[str, int] = {}  # image path -> index into existing_lines
    if storage.exists(label_uri):
        for _, text, _ in text_lines(storage.read_bytes(label_uri)):
            if text is None:
                raise ValueError(f"{label_uri} is not UTF-8 text; fix it before importing into it")
            existing_lines.append(text)
            stripped = text.strip()
            if stripped and not stripped.startswith("#"):
                try:
                    path, _, _ = split_line(stripped)
                except LineError:
                    continue
                existing[clean_path(path)] = len(existing_lines) - 1
        while existing_lines and not existing_lines[-1].strip():
            existing_lines.pop()

    captions_uri = storage.join(dest_root, "captions.jsonl")
    captions_text = (
        storage.read_bytes(captions_uri).decode("utf-8-sig") if storage.exists(captions_uri) else ""
    )
    captioned = set()
    for line in captions_text.splitlines():
        try:
            captioned.add(clean_path(str(json.loads(line).get("image", ""))))
        except (json.JSONDecodeError, AttributeError):
            continue
    feedback_uri = storage.join(dest_root, FEEDBACK_FILE)
    feedback_text = storage.read_bytes(feedback_uri).decode("utf-8") if storage.exists(feedback_uri) else ""

    added: dict[str, _Labelled] = {}
    new_lines: list[str] = []
    new_captions: list[str] = []
    new_feedback: list[str] = []
    for item in sorted(wanted.values(), key=lambda x: x.row):
        location = f"{name}:row {item.row}"
        try:
            data = storage.read_bytes(item.image)
            decode_rgb(data)
        except (OSError, ValueError, SyntaxError) as exc:
            report.unreadable.append(Problem(location, item.image, f"cannot read image: {exc}"))
            continue
        digest = hashlib.sha256(data).hexdigest()[:24]
        ext = posixpath.splitext(item.image)[1].lower() or ".png"
        rel = f"images/{digest}{ext}"
        line = f"{rel}\t{item.label + 1}"
        if rel in added:
            first = added[rel]
            if first.label == item.label:
                report.already_present += 1
            else:
                report.invalid.append(
                    Problem(
                        location,
                        item.image,
                        f"same image bytes as row {first.row}, which says {LABELS[first.label]}; kept that",
                    )
                )
            continue
        if rel in existing:
            index = existing[rel]
            old_label = split_line(existing_lines[index].strip())[1]
            if old_label == item.label:
                report.already_present += 1
                continue
            existing_lines[index] = line
            report.relabelled += 1
            new_feedback.append(_feedback_record(rel, item, labels_file, relabelled_from=LABELS[old_label]))
            continue
        storage.write_bytes(storage.join(dest_root, rel), data)
        if item.product:
            try:
                product = storage.read_bytes(item.product)
                decode_rgba(product)
            except (OSError, ValueError, SyntaxError) as exc:
                report.unreadable.append(
                    Problem(location, item.product, f"cannot read product (image imported without it): {exc}")
                )
            else:
                product_ext = posixpath.splitext(item.product)[1].lower() or ".png"
                storage.write_bytes(storage.join(dest_root, f"products/{digest}{product_ext}"), product)
        if item.caption and rel not in captioned:
            new_captions.append(json.dumps({"image": rel, "caption": item.caption}, ensure_ascii=False))
            captioned.add(rel)
        new_feedback.append(_feedback_record(rel, item, labels_file))
        added[rel] = item
        new_lines.append(line)
        report.imported += 1

    if new_captions:
        body = captions_text if not captions_text or captions_text.endswith("\n") else captions_text + "\n"
        storage.write_text(captions_uri, body + "\n".join(new_captions) + "\n")
    if new_feedback:
        body = feedback_text if not feedback_text or feedback_text.endswith("\n") else feedback_text + "\n"
        storage.write_text(feedback_uri, body + "\n".join(new_feedback) + "\n")
    if new_lines or report.relabelled:
        storage.write_text(label_uri, "".join(f"{line}\n" for line in [*existing_lines, *new_lines]))
    log = logger.warning if report.invalid or report.unreadable else logger.info
    log("%s", report.summary())
    return report
