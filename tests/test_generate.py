"""End to end: `reliable-ad generate` on the tiny preset, the output contract row by row, recurrent
generation with a scripted inspector, determinism, reruns and refresh. One shared local Ray."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

from jobs.cli import main as cli
from pipelines.config import GenerateConfig, load_config
from pipelines.labels import LABELS
from pipelines.naming import encode_sku
from pipelines.runner import run_catalog
from rfnet.data.sample import write_sample_catalog

pytestmark = [pytest.mark.ray]

FAST = ["--set", "generation.num_inference_steps=2", "--set", "run.progress_interval_s=5"]


def read_dir(path: Path):
    files = sorted(path.glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def sample_catalog(tmp_path_factory):
    return write_sample_catalog(tmp_path_factory.mktemp("catalog"), items=5, with_bad_rows=True)


def test_generate_output_contract(ray_cluster, sample_catalog, tmp_path):
    out = tmp_path / "out"
    rc = cli(
        [
            "generate",
            "--preset",
            "tiny",
            "--catalog",
            str(sample_catalog),
            "--out",
            str(out),
            "--max-attempts",
            "2",
            *FAST,
        ]
    )
    assert rc == 0
    catalog_rows = [line for line in sample_catalog.read_text().splitlines() if line.strip()]
    results = read_dir(out / "results")
    attempts = read_dir(out / "attempts")
    # every catalog row exactly once in results/
    assert sorted(r["row"] for r in results) == list(range(1, len(catalog_rows) + 1))
    by_sku = {r["sku_id"]: r for r in results if r["sku_id"] is not None}
    expected_errors = {
        "BAD-missing-file": "image not found",
        "BAD-corrupt": "corrupt",
        "BAD-transparent": "fully transparent",
        " BAD-whitespace": "leading or trailing whitespace",
        "BAD-scale": "image_scale must be in (0, 1]",
        "BAD-scheme": "unsupported URI scheme 'http'",
    }
    for sku, reason in expected_errors.items():
        assert by_sku[sku]["status"] == "error" and reason in by_sku[sku]["error"], (sku, by_sku[sku])
    dup = [r for r in results if r["sku_id"] == "SKU-0000"]
    assert sorted(r["status"] == "error" for r in dup) == [False, True]
    assert any(r["sku_id"] is None and "missing required field 'sku_id'" in r["error"] for r in results)
    assert any("not valid JSON" in r["error"] for r in results)

    good = [r for r in results if r["status"] != "error"]
    assert {r["sku_id"] for r in good} == {f"SKU-{i:04d}" for i in range(5)} | {"商品-αβ/01"}
    keys = Counter((a["sku_id"], a["attempt"]) for a in attempts)
    assert max(keys.values()) == 1  # no attempt recorded twice
    cfg = load_config(GenerateConfig, preset="tiny")
    for r in good:
        mine = sorted((a for a in attempts if a["sku_id"] == r["sku_id"]), key=lambda a: a["attempt"])
        assert [a["attempt"] for a in mine] == list(range(1, r["attempts"] + 1)) and r["attempts"] <= 2
        assert r["status"] in ("accepted", "exhausted")
        if r["status"] == "accepted":
            assert mine[-1]["accepted"] and not any(a["accepted"] for a in mine[:-1])
            assert r["image"] == mine[-1]["image"] and mine[-1]["p_available"] >= cfg.inspect.threshold
        else:
            assert r["attempts"] == 2 and not any(a["accepted"] for a in mine)
            best = max(mine, key=lambda a: a["p_available"])
            assert r["image"] == best["image"] and r["label"] == best["label"]
        for a in mine:
            assert a["label"] in LABELS and 0.0 <= a["p_available"] <= 1.0
            assert abs(sum(a[f"prob_{name}"] for name in LABELS) - 1.0) < 1e-4
            assert a["base_model"] == "random:tiny" and a["config_hash"] and a["seed"] > 0
            assert a["image"] == str(out / "images" / encode_sku(r["sku_id"]) / f"{a['attempt']}.png")
            assert Path(a["image"]).is_file()
        # the product is unchanged in every generated image
        product = np.asarray(Image.open(out / "products" / f"{encode_sku(r['sku_id'])}.png"))
        first = np.asarray(Image.open(mine[0]["image"]))
        opaque = product[..., 3] == 255
        if mine[0]["image_scale"] == mine[-1]["image_scale"]:
            assert np.array_equal(first[opaque], product[..., :3][opaque])

    run = json.loads((out / "run.json").read_text())
    statuses = Counter(r["status"] for r in results)
    assert run["counts"] == {s: statuses.get(s, 0) for s in ("accepted", "exhausted", "generated", "error")}
    assert run["items"] == len(catalog_rows) and run["attempts_total"] == len(attempts)
    inspected = statuses["accepted"] + statuses["exhausted"]
    assert run["available_rate"] == pytest.approx(statuses["accepted"] / inspected)
    assert run["available_rate_by_attempt"]["2"] == pytest.approx(run["available_rate"])
    assert 0 < run["generation_busy_fraction"] <= 1
    html = (out / "report.html").read_text()
    assert "Contact sheet" in html and "SKU-0002" in html and "<svg" in html

    # a rerun on the finished store does no work and changes nothing
    before = sorted(p.name for p in (out / "attempts").iterdir())
    assert (
        cli(
            [
                "generate",
                "--preset",
                "tiny",
                "--catalog",
                str(sample_catalog),
                "--out",
                str(out),
                "--max-attempts",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "attempts").iterdir()) == before
    assert len(read_dir(out / "results")) == len(results)

    # a different output-relevant config on the same store is refused, loudly
    rc = cli(
        ["generate", "--preset", "tiny", "--catalog", str(sample_catalog), "--out", str(out), "--seed", "5"]
    )
    assert rc == 2

    # report rebuilds from the tables
    (out / "report.html").unlink()
    assert cli(["report", "--out", str(out)]) == 0 and (out / "report.html").is_file()

    # the human-feedback loop: export attempts for labelling, label them, import as RF1M training data
    sheet = tmp_path / "sheet.csv"
    assert cli(["report", "--out", str(out), "--export-labels", str(sheet)]) == 0
    import csv

    with sheet.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(1 for a in attempts if a["image"])  # failed attempts have nothing to label
    for i, row in enumerate(rows):
        row["human_label"] = "Available" if i % 2 == 0 else "size mismatch"
    with sheet.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dataset = tmp_path / "labelled"
    assert cli(["report", "--import-labels", str(sheet), "--dataset", str(dataset)]) == 0
    from rfnet.data import read_rf1m

    index = read_rf1m(str(dataset))
    assert len(index.samples) == len(rows) and not index.problems
    assert Counter(s.label for s in index.samples) == {0: (len(rows) + 1) // 2, 3: len(rows) // 2}
    assert all(s.product for s in index.samples)


def _images(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "images").rglob("*.png"))}


def test_same_seed_same_bytes(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "cat", items=3)
    args = ["generate", "--preset", "tiny", "--catalog", str(catalog), "--no-inspect", *FAST]
    assert cli([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli([*args, "--out", str(tmp_path / "b")]) == 0
    assert cli([*args, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    a, b, c = (_images(tmp_path / d) for d in "abc")
    assert len(a) == 4 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    results = read_dir(tmp_path / "a" / "results")
    assert {r["status"] for r in results} == {"generated"} and all(r["attempts"] == 1 for r in results)


# ---- recurrent generation with a scripted inspector ---------------------------------------------------


class ScriptedInspector:
    """Inspector whose verdict per (sku, attempt) comes from a JSON script:
    ``{sku: [p_available | "error: reason", ...]}``; accepted when p >= threshold."""

    def __init__(self, source, device="auto", dtype="auto", threshold=None):
        self.script = json.loads(Path(source).read_text())
        self.threshold = 0.5 if threshold is None else threshold

    def __call__(self, batch):
        n = len(batch["sku_id"])
        errors = [str(e) for e in batch["error"]]
        p = np.full(n, np.nan, np.float32)
        for i in range(n):
            if errors[i]:
                continue
            verdict = self.script[str(batch["sku_id"][i])][int(batch["attempt"][i]) - 1]
            if verdict == "crash":
                raise RuntimeError(f"scripted crash at {batch['sku_id'][i]}")
            if isinstance(verdict, str):
                errors[i] = verdict
            else:
                p[i] = verdict
        ok = ~np.isnan(p)
        rest = np.where(ok, (1 - p) / (len(LABELS) - 1), np.nan).astype(np.float32)
        for k, name in enumerate(LABELS):
            batch[f"prob_{name}"] = p if k == 0 else rest
        batch["p_available"] = p
        batch["label"] = np.array(
            ["available" if ok[i] and p[i] >= 0.5 else ("size_mismatch" if ok[i] else "") for i in range(n)],
            dtype=object,
        )
        batch["accepted"] = ok & (np.nan_to_num(p) >= self.threshold)
        batch["error"] = np.array(errors, dtype=object)
        batch["threshold"] = np.full(n, self.threshold, np.float32)
        return batch


def scripted_config(tmp_path, catalog, script, **overrides):
    """The tiny preset with the scripted inspector reading ``script`` (written to ``script.json``)."""
    script_path = tmp_path / "script.json"
    script_path.write_text(json.dumps(script))
    values = {
        "catalog": str(catalog),
        "out": str(tmp_path / "out"),
        "inspect.rfnet": str(script_path),
        "inspect.threshold": 0.5,
        "generation.num_inference_steps": 2,
        **overrides,
    }
    return load_config(GenerateConfig, preset="tiny", overrides=values)


def test_scripted_recurrent_generation(ray_cluster, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    catalog = write_sample_catalog(tmp_path / "cat", items=5)
    script = {
        "SKU-0000": [0.9],  # accepted at once
        "SKU-0001": [0.1, 0.7],  # accepted at attempt 2
        "SKU-0002": [0.2, 0.4, 0.3],  # exhausted: best is attempt 2
        "SKU-0003": ["error: inspector crashed", 0.6],  # a failed attempt, then accepted
        "SKU-0004": ["error: a", "error: b", "error: c"],  # every attempt fails
        "商品-αβ/01": [0.3, 0.3, 0.95],  # accepted at the last attempt
    }
    # several waves: rejects ride along with new items
    cfg = scripted_config(tmp_path, catalog, script, **{"retry.max_attempts": 3, "run.chunk_size": 2})
    summary = run_catalog(cfg, inspect_stage=ScriptedInspector)
    results = {r["sku_id"]: r for r in read_dir(tmp_path / "out" / "results")}
    attempts = read_dir(tmp_path / "out" / "attempts")
    expect = {
        "SKU-0000": ("accepted", 1, 1),
        "SKU-0001": ("accepted", 2, 2),
        "SKU-0002": ("exhausted", 3, 2),
        "SKU-0003": ("accepted", 2, 2),
        "SKU-0004": ("error", 3, None),
        "商品-αβ/01": ("accepted", 3, 3),
    }
    assert results.keys() == expect.keys()
    for sku, (status, n, chosen) in expect.items():
        r = results[sku]
        assert (r["status"], r["attempts"]) == (status, n), sku
        mine = sorted((a for a in attempts if a["sku_id"] == sku), key=lambda a: a["attempt"])
        assert [a["attempt"] for a in mine] == list(range(1, n + 1))
        if chosen is None:
            assert r["image"] == "" and "all 3 attempts failed" in r["error"] and "error: c" in r["error"]
        else:
            assert r["image"].endswith(f"/{encode_sku(sku)}/{chosen}.png")
    assert summary.counts == {"accepted": 4, "exhausted": 1, "generated": 0, "error": 1}
    assert summary.run_json["available_rate_by_attempt"] == pytest.approx({"1": 0.2, "2": 0.6, "3": 0.8})
    assert len(summary.run_json["waves"]) >= 3
    # however many waves: the models were built once
    assert summary.run_json["generation_actor_starts"] == summary.run_json["inspection_actor_starts"] == 1

    # the same seed reproduces every attempt's plan and the same accepted images (up to the
    # floating-point rounding of other batch-mates: which rows share a batch depends on timing)
    cfg2 = cfg.model_copy(update={"out": str(tmp_path / "out2")})
    run_catalog(cfg2, inspect_stage=ScriptedInspector)
    again = {r["sku_id"]: r for r in read_dir(tmp_path / "out2" / "results")}
    plan = ("seed", "prompt", "negative_prompt", "template", "color", "image_scale", "steer")
    first = {(a["sku_id"], a["attempt"]): [a[k] for k in plan] for a in attempts}
    assert {
        (a["sku_id"], a["attempt"]): [a[k] for k in plan] for a in read_dir(tmp_path / "out2" / "attempts")
    } == first
    for sku, r in results.items():
        if r["status"] == "accepted":
            image, image2 = (np.asarray(Image.open(x), dtype=int) for x in (r["image"], again[sku]["image"]))
            assert np.abs(image - image2).max() <= 1, sku


def test_generation_workers_start_once_per_run_however_many_retry_waves(ray_cluster, tmp_path):
    """Eight items rejected three times each, one new item per wave: at least four waves of retries
    run on the same two generation workers (and one inspection worker), each built once."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    catalog = write_sample_catalog(tmp_path / "cat", items=7)
    skus = [json.loads(line)["sku_id"] for line in catalog.read_text().splitlines()]
    script = {sku: [0.1, 0.2, 0.3, 0.9] for sku in skus}
    overrides = {"retry.max_attempts": 4, "generation.num_inference_steps": 1, "run.chunk_size": 1}
    cfg = scripted_config(
        tmp_path, catalog, script, **overrides, **{"generation.concurrency": 2, "generation.batch_size": 2}
    )
    summary = run_catalog(cfg, inspect_stage=ScriptedInspector)
    run = summary.run_json
    assert summary.counts["accepted"] == len(skus)
    attempts = read_dir(tmp_path / "out" / "attempts")
    assert Counter(a["attempt"] for a in attempts) == {k: len(skus) for k in (1, 2, 3, 4)}
    assert sum(1 for w in run["waves"] if w["retries"]) >= 3
    assert run["generation_actor_starts"] == cfg.generation.concurrency
    assert run["inspection_actor_starts"] == cfg.inspect.concurrency
    assert 0 < run["generation_busy_fraction"] <= 1 and run["generation_setup_s"] > 0
    # the history keeps this run's own copy
    assert json.loads((tmp_path / "out" / "runs" / summary.run_id / "run.json").read_text()) == json.loads(
        (tmp_path / "out" / "run.json").read_text()
    )
    assert (tmp_path / "out" / "runs" / summary.run_id / "report.html").is_file()


def test_run_that_died_mid_way_resumes_without_losing_recorded_rows(ray_cluster, tmp_path):
    """A driver that dies after some waves wrote their parts, rerun: the resumed driver counts waves
    and parts from 1 again and must not overwrite what the first one wrote."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    catalog = write_sample_catalog(tmp_path / "cat", items=5)
    skus = [json.loads(line)["sku_id"] for line in catalog.read_text().splitlines()]
    script = {sku: [0.9] for sku in skus}
    script["SKU-0001"] = [0.1, 0.8]  # rejected in wave 1, accepted in wave 2
    script["SKU-0003"] = ["crash"]  # new in wave 2: the first run dies there
    cfg = scripted_config(tmp_path, catalog, script, **{"retry.max_attempts": 2, "run.chunk_size": 2})
    script_path = tmp_path / "script.json"
    with pytest.raises(Exception, match="scripted crash"):
        run_catalog(cfg, inspect_stage=ScriptedInspector)
    first = {(a["sku_id"], a["attempt"]): a["created_at"] for a in read_dir(tmp_path / "out" / "attempts")}
    assert ("SKU-0000", 1) in first and ("SKU-0001", 1) in first

    script["SKU-0003"] = [0.9]
    script_path.write_text(json.dumps(script))
    summary = run_catalog(cfg, inspect_stage=ScriptedInspector)
    results = read_dir(tmp_path / "out" / "results")
    attempts = read_dir(tmp_path / "out" / "attempts")
    assert sorted(r["sku_id"] for r in results) == sorted(skus)
    keys = [(a["sku_id"], a["attempt"]) for a in attempts]
    assert len(keys) == len(set(keys))
    for key, created in first.items():  # recorded before the crash: still there, not regenerated
        assert {a["created_at"] for a in attempts if (a["sku_id"], a["attempt"]) == key} == {created}
    assert summary.run_json["resumed"] is True
    assert summary.counts["accepted"] == len(skus)


def test_refresh_processes_only_changes(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "cat", items=3)
    out = tmp_path / "out"
    args = ["--preset", "tiny", "--catalog", str(catalog), "--out", str(out), "--no-inspect", *FAST]
    assert cli(["refresh", *args]) == 0
    first = read_dir(out / "results")
    assert len(first) == 4
    assert cli(["refresh", *args]) == 0  # nothing changed: no work
    assert len(read_dir(out / "results")) == 4
    run = json.loads((out / "run.json").read_text())
    assert run["skipped_unchanged"] == 4 and run["items"] == 0
    # change one image, drop one item
    img = catalog.parent / "images" / "SKU-0002.png"
    arr = np.asarray(Image.open(img)).copy()
    arr[..., 0] = 255 - arr[..., 0]
    Image.fromarray(arr).save(img)
    lines = [ln for ln in catalog.read_text().splitlines() if "SKU-0000" not in ln or "商品" in ln]
    catalog.write_text("\n".join(lines) + "\n")
    assert cli(["refresh", *args]) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["items"], run["skipped_unchanged"], run["removed"]) == (1, 2, 1)
    manifest = {r["sku_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert manifest["SKU-0000"]["removed"] and not manifest["SKU-0002"]["removed"]
    assert manifest["SKU-0002"]["run_id"] == run["run_id"]
    assert not (out / "lease.json").exists()
