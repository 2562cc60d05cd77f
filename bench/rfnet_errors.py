"""Where an RFNet's mistakes are: per-image predictions broken down by how each image was made.

    python -m bench.rfnet_errors --predictions EVAL/predictions.parquet --meta DATA/meta.jsonl \\
        [--by size_mode,space_mode] [--json OUT.json]

``predictions.parquet`` is what ``reliable-ad evaluate`` writes (one row per scored image);
``meta.jsonl`` holds one JSON object per image with an ``image`` key (the same path, relative to
the set's root) and any fields describing it, as the painter of a test set knows them (the scene
sets of ``rfnet.data.scenes`` write them: ``studio`` and ``lifestyle`` to ``meta.jsonl`` with scene,
product and the defect's variant, ``synthetic`` to ``synthetic.jsonl``). For each field of ``--by``
(default: every field of strings, integers or booleans with 2 to 20 distinct values, ``image``
and ``label`` aside) and each true class, the images are
grouped by the field's value: how many, the share classified right, and what the wrong ones were
taken for. A group whose value is null (the field does not apply to that class) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
from typing import Any

import pyarrow.parquet as pq

SKIP = ("image", "label")
MAX_VALUES = 20  # a field with more distinct values (a caption, a seed per image) is not a grouping


def read_meta(path: str) -> dict[str, dict[str, Any]]:
    """``image -> record`` from a JSON-lines file; every line must be an object with ``image``."""
    out: dict[str, dict[str, Any]] = {}
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "image" not in record:
                raise ValueError(f"{path}:{number}: expected a JSON object with an 'image' key")
            out[str(record["image"])] = record
    return out


def groupable_fields(records: list[dict[str, Any]], max_values: int = MAX_VALUES) -> list[str]:
    """The fields worth grouping by: strings, integers or booleans (never floats, lists or objects)
    taking from 2 to ``max_values`` distinct values, ``image`` and ``label`` aside."""
    values: dict[str, set] = defaultdict(set)
    bad: set[str] = set(SKIP)
    for record in records:
        for key, value in record.items():
            if value is None:
                continue
            if isinstance(value, float | list | dict):
                bad.add(key)
            else:
                values[key].add(value)
    return sorted(k for k, v in values.items() if k not in bad and 2 <= len(v) <= max_values)


def breakdown(
    predictions: list[dict[str, Any]], meta: dict[str, dict[str, Any]], fields: list[str] | None = None
) -> dict[str, Any]:
    """``{"matched", "unmatched", "groups": [{field, true_label, value, n, correct, taken_for}]}``
    for predictions rows (``image``, ``true_label``, ``label``) joined to ``meta`` by image."""
    rows = [(r, meta[r["image"]]) for r in predictions if r["image"] in meta]
    if fields is None:
        fields = groupable_fields([m for _, m in rows])
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r, m in rows:
        for field in fields:
            value = m.get(field)
            if value is not None:
                groups[(field, r["true_label"], str(value))].append(r)
    out = []
    for (field, true_label, value), members in sorted(groups.items()):
        wrong = Counter(r["label"] for r in members if r["label"] != r["true_label"])
        out.append(
            {
                "field": field,
                "true_label": true_label,
                "value": value,
                "n": len(members),
                "correct": sum(r["label"] == r["true_label"] for r in members) / len(members),
                "taken_for": dict(wrong.most_common()),
            }
        )
    return {"matched": len(rows), "unmatched": len(predictions) - len(rows), "groups": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", required=True, help="predictions.parquet from reliable-ad evaluate")
    parser.add_argument("--meta", required=True, help="meta.jsonl: one object per image, with an 'image' key")
    parser.add_argument("--by", help="comma-separated fields to group by (default: all)")
    parser.add_argument("--json", help="also write the breakdown here")
    args = parser.parse_args(argv)
    for path in (args.predictions, args.meta):
        if not os.path.isfile(path):
            raise SystemExit(f"{path} does not exist or is not a file")
    predictions = pq.read_table(args.predictions, columns=["image", "true_label", "label"]).to_pylist()
    meta = read_meta(args.meta)
    fields = [f for f in args.by.split(",") if f] if args.by else None
    known = {key for record in meta.values() for key in record}
    if fields and (unknown := [f for f in fields if f not in known]):
        raise SystemExit(
            f"--by {','.join(unknown)}: no record of {args.meta} has that field; "
            f"its fields: {', '.join(sorted(known - set(SKIP)))}"
        )
    result = breakdown(predictions, meta, fields)
    if result["matched"] == 0:
        raise SystemExit(
            f"no image of {args.predictions} is in {args.meta} (paths relative to the set's root?)"
        )
    print(f"{result['matched']} images matched, {result['unmatched']} without a meta record")
    for g in result["groups"]:
        taken = ", ".join(f"{k} {v}" for k, v in g["taken_for"].items())
        print(
            f"{g['field']:>16s}  {g['true_label']:<20s} {g['value']:<32s} n={g['n']:<4d} "
            f"right {g['correct']:.2f}  {taken}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
