"""The benchmarks run and report what docs/performance.md reads from them.

The shared utilities are checked directly (re-batching keeps every row once, the memory sampler
sees child processes, the bench catalog is valid); the two benchmark scripts run end to end as
subprocesses, as ``make bench`` and a GPU box would run them (``--smoke`` for the GPU script), each
with its own local Ray, so the shared test cluster is stopped first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.common import FileCountSampler, RssSampler, write_bench_catalog
from bench.cpu_pipeline import rebatch, to_batch

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_rebatch_keeps_every_row_once_with_its_columns():
    rows = [{"sku_id": f"S{i}", "seed": 1000 + i, "prompt": f"p{i}"} for i in range(16)]
    sizes = [3, 5, 1, 7]
    batches, start = [], 0
    for n in sizes:
        batches.append(to_batch(rows[start : start + n]))
        start += n
    out = list(rebatch(batches, 4))
    assert [len(b["sku_id"]) for b in out] == [4, 4, 4, 4]
    seen = {}
    for b in out:
        for sku, seed, prompt in zip(b["sku_id"], b["seed"], b["prompt"], strict=True):
            assert sku not in seen
            seen[sku] = (int(seed), str(prompt))
    assert seen == {r["sku_id"]: (r["seed"], r["prompt"]) for r in rows}
    # A remainder comes out as a last, smaller batch.
    assert [len(b["sku_id"]) for b in rebatch([to_batch(rows[:10])], 4)] == [4, 4, 2]


def test_rss_sampler_counts_child_processes():
    mib = 300
    child = subprocess.Popen(
        [sys.executable, "-c", f"import time; x = bytearray({mib} * 2**20); time.sleep(30)"],
    )
    try:
        deadline = time.monotonic() + 20
        sampler = RssSampler()
        while time.monotonic() < deadline:
            total = sampler.sample()
            if sampler.peak_by_role.get("other", 0) >= mib * 2**20:
                break
            time.sleep(0.2)
        assert sampler.peak_by_role["other"] >= mib * 2**20
        assert total >= sampler.peak_by_role["driver"] + mib * 2**20
    finally:
        child.kill()
        child.wait()


def test_bench_catalog_cycles_products_with_unique_valid_rows(tmp_path):
    from pipelines.catalog import read_catalog

    path = write_bench_catalog(tmp_path, items=30, distinct=4)
    catalog = read_catalog(str(path))
    assert catalog.errors == []
    assert len(catalog.items) == 30
    assert len({it.sku_id for it in catalog.items}) == 30
    assert 1 < len({it.image for it in catalog.items}) <= 5


def test_stand_in_stages_keep_the_stage_contracts(tmp_path):
    from bench.stand_ins import PAPER_ACCEPT_RATE, CanvasStage, HashScorer
    from pipelines.attempts import plan_attempt
    from pipelines.catalog import read_catalog
    from pipelines.config import GenerateConfig, load_config
    from pipelines.labels import LABELS
    from pipelines.prepare import composite_on, prepare_batch
    from pipelines.wave import work_rows

    catalog = write_bench_catalog(tmp_path, items=6, distinct=3)
    cfg = load_config(
        GenerateConfig, preset="tiny", overrides={"catalog": str(catalog), "prepare.resolution": 64}
    )
    items = read_catalog(str(catalog)).items
    batch = prepare_batch(to_batch(work_rows([(it, plan_attempt(it, 1, cfg)) for it in items])), cfg)
    product = batch["product"].copy()
    out = CanvasStage(cfg)(batch)
    assert "mask_image" not in out and "control_image" not in out and (out["generate_s"] >= 0).all()
    white = np.full((64, 64, 3), 255, np.uint8)
    for i in range(len(items)):
        assert np.array_equal(out["image"][i], composite_on(product[i], white))

    n = 4000
    scored = HashScorer(threshold=1 - PAPER_ACCEPT_RATE)(
        {"sku_id": np.array([f"S{i}" for i in range(n)], dtype=object), "attempt": np.ones(n, np.int64),
         "error": np.array([""] * n, dtype=object)}
    )  # fmt: skip
    assert abs(scored["accepted"].mean() - PAPER_ACCEPT_RATE) < 0.03
    labels = set(scored["label"])
    assert labels <= set(LABELS) and len(labels) == len(LABELS)  # available and every defect
    assert all(
        (lab == "available") == acc for lab, acc in zip(scored["label"], scored["accepted"], strict=True)
    )


def scale_run(tmp_path, stages: str, items: int, chunk_size: int) -> dict:
    """``bench.cpu_scale`` on ``items`` items; checks every item got a result with retries on the way."""
    out = tmp_path / "scale.json"
    proc = run_module(
        "bench.cpu_scale", "--stages", stages, "--items", str(items), "--distinct", "4",
        "--set", f"run.chunk_size={chunk_size}", "--work-dir", str(tmp_path / "w"), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][str(items)]
    assert sum(run["counts"].values()) == items and run["counts"]["error"] == 0
    assert run["counts"]["exhausted"] > 0 and run["attempts_total"] > items  # retries happened
    return run


@pytest.mark.slow
@pytest.mark.ray
def test_scale_bench_measures_the_driver_with_stand_in_stages(tmp_path, shared_ray):
    shared_ray.stop()  # the script starts its own local Ray
    run = scale_run(tmp_path, "stand-in", 300, 64)
    assert run["waves"] >= 5 and run["generation_actor_starts"] == 1
    assert 0 < run["driver_rss_mib_peak"] <= run["peak_rss_mib"]
    assert 0 < run["items_in_flight_peak"] < 300  # the driver never held the whole catalog


def test_driver_only_scale_bench_runs_the_driver_without_ray(tmp_path):
    # Waves in process (no Ray): the driver's own work (catalog stream, planning, deciding, tables,
    # summary, report, manifest) over a catalog twenty times a chunk, with items in flight bounded.
    run = scale_run(tmp_path, "driver-only", 2000, 100)
    assert run["waves"] >= 20 and run["peak_processes"] == 1  # no Ray process
    assert 0 < run["items_in_flight_peak"] < 1000


def test_jpeg_round_trip_compresses_rgb_images_in_place_of_the_originals():
    import torch

    from bench.rfnet_descriptor_cv import jpeg_round_trip

    yy, xx = np.mgrid[0:64, 0:64]
    ramp = np.stack([xx * 3, yy * 3, 255 - (xx + yy) * 1.5], -1) + 40 * np.sin(xx / 3.0)[..., None]
    images = torch.from_numpy(ramp.clip(0, 255).astype(np.uint8)[None])
    low, high = jpeg_round_trip(images, 10), jpeg_round_trip(images, 100)
    assert low.shape == images.shape and low.dtype == torch.uint8
    err = lambda a: (a.float() - images.float()).abs().mean().item()  # noqa: E731
    assert err(high) < 1 < 4 < err(low)
    # Channels stay in RGB order: a pure red image stays red.
    red = torch.zeros(1, 16, 16, 3, dtype=torch.uint8)
    red[..., 0] = 255
    assert (
        jpeg_round_trip(red, 90)[0, 8, 8].tolist()[0]
        > 240
        > 15
        > max(jpeg_round_trip(red, 90)[0, 8, 8, 1:].tolist())
    )


def test_descriptor_cross_validation_measures_and_separates(tmp_path):
    from bench.rfnet_descriptor_cv import cross_validate, descriptors
    from rfnet.checkpoint import load_rfnet
    from rfnet.data.scenes import make_set

    root = make_set("synthetic", str(tmp_path / "set"), n_per_class=3, image_size=64, seed=5)
    model = load_rfnet("tiny", device="cpu", dtype="float32").model
    x, y = descriptors(model, root, threads=1)
    assert x.shape[0] == y.shape[0] == 18 and x.shape[1] > 40 and np.isfinite(x).all()
    assert sorted(np.bincount(y)) == [3] * 6
    # The same images through JPEG: other pixels, so other measurements, of the same images.
    xj, yj = descriptors(model, root, threads=1, jpeg=30)
    assert (yj == y).all() and np.isfinite(xj).all() and not np.allclose(xj, x)
    # Products as JPEG photos on white, keyed out again as RFNet reads them: the product search
    # finds the boxes it finds with the cut-outs in most images (a light product on white loses
    # some of its pixels to the background).
    xw, yw = descriptors(model, root, threads=1, products_on_white=95)
    assert (yw == y).all() and np.isfinite(xw).all()
    box_change = np.abs(xw[:, :4] - x[:, :4]).max(axis=1)  # the located box, x0 y0 x1 y1
    assert np.median(box_change) < 0.03, box_change

    # Measurements that name the class are learned from the other folds: held-out predictions right.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    informative = np.eye(6)[labels] * 3 + rng.normal(0, 0.3, (120, 6))
    features = np.concatenate([informative, rng.normal(size=(120, 10))], 1)
    for classifier in ("mlp", "trees"):
        pred = cross_validate(features, labels, folds=4, seed=0, classifier=classifier)
        assert (pred == labels).mean() > 0.9, classifier
    with pytest.raises(ValueError, match="unknown classifier"):
        cross_validate(features, labels, folds=4, seed=0, classifier="forest")


REQUIRED_GPU_FIELDS = {
    "device",
    "machine",
    "command",
    "plan",
    "placement",
    "peak_matmul",
    "flops_per_image",
    "variants",
    "stage",
    "pipeline",
    "goals",
    "loadavg_before",
    "loadavg_after",
    "elapsed_s",
}


def test_steady_rate_needs_a_stream_not_a_burst(tmp_path):
    sampler = FileCountSampler(str(tmp_path))
    sampler.series = [(float(t), n) for t, n in enumerate([0, 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])]
    assert sampler.steady_rate(100) == pytest.approx(10.0)
    # everything written in two bursts at the end (an inspection batch as large as the run)
    sampler.series = [(0.0, 0), (30.0, 0), (60.0, 0), (60.5, 60), (61.0, 100)]
    assert sampler.steady_rate(100) is None


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_generate_smoke_reports_every_field(tmp_path, shared_ray):
    shared_ray.stop()  # the script starts its own local Ray
    out = tmp_path / "gpu.json"
    proc = run_module("bench.gpu_generate", "--smoke", "--out", str(out), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= REQUIRED_GPU_FIELDS
    assert result["smoke"] is True and result["device"] == "cpu"
    assert result["machine"]["cpu_model"] and result["machine"]["logical_cpus"] >= 1
    assert result["peak_matmul"]["tflops"] > 0
    assert result["flops_per_image"]["measured"] > 0 and result["flops_per_image"]["source"] == "measured"

    rows = {r["name"]: r for r in result["variants"]["rows"]}
    assert result["variants"]["skipped"] == []
    assert "reference" in rows and rows["reference"]["dtype"] == "float32"
    assert rows["reference"]["speedup_vs_reference"] == 1.0
    assert len(rows) >= 3
    peak_flops = result["peak_matmul"]["tflops"] * 1e12
    for r in rows.values():
        assert r["images_per_s"] > 0 and r["finite"]
        # MFU against the measured matmul peak. On one CPU thread a tiny UNet's convolutions run at
        # ~0.9 of a 1024x1024 matmul, so a peak measured while the machine is busy can put it above 1:
        # what must hold is the definition and a sane range.
        assert r["mfu"] == pytest.approx(r["images_per_s"] * result["flops_per_image"]["used"] / peak_flops)
        assert 0 < r["mfu"] < 1.5

    breakdown = result["variants"]["breakdown"]
    assert sum(breakdown["share_per_image"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(breakdown["step_kernel_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert breakdown["step_kernel_share"]["convolution"] > 0

    stage = result["stage"]
    assert stage["images"] > 0 and stage["images_per_s"] > 0 and stage["errors"] == 0
    assert 0 < stage["inspect"]["share_of_gpu_time"] < 1

    pipe = result["pipeline"]
    items = result["plan"]["pipeline_items"]
    assert pipe["images"] == items and sum(pipe["counts"].values()) == items
    assert pipe["images_per_s_steady"] > 0 and pipe["images_per_s_end_to_end"] > 0
    assert 0 < pipe["inspect_share_of_busy"] < 1
    assert set(result["goals"]) == {
        "pipeline_images_per_s",
        "pipeline_speedup_vs_reference",
        "inspect_share_of_gpu_time",
        "pipeline_vs_stage",
    }
    for goal in result["goals"].values():
        assert goal["value"] is not None and isinstance(goal["met"], bool)
    assert "img/s" in proc.stdout and "reference" in proc.stdout


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_generate_pipeline_only_measures_the_pipeline_alone(tmp_path, shared_ray):
    from bench.gpu_generate import parse_args

    assert parse_args(["--pipeline-only"]).out.endswith("gpu_pipeline.json")  # not the full run's file
    shared_ray.stop()
    out = tmp_path / "pipe.json"
    proc = run_module("bench.gpu_generate", "--smoke", "--pipeline-only", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["variants"]["rows"] == [] and result["stage"] is None
    assert (
        result["pipeline"]["images"] == result["plan"]["pipeline_items"]
        and result["pipeline"]["images_per_s_steady"] > 0
    )
    assert result["goals"]["pipeline_vs_stage"]["value"] is None  # no stage in this run: no ratio to it
    assert result["goals"]["pipeline_images_per_s"]["value"] > 0


@pytest.mark.slow
@pytest.mark.ray
def test_cpu_pipeline_compares_both_paths_on_the_same_images(tmp_path, shared_ray):
    shared_ray.stop()  # the script starts its own local Ray
    out = tmp_path / "cpu.json"
    proc = run_module(
        "bench.cpu_pipeline",
        "--items",
        "12",
        "--repeats",
        "1",
        "--profile-items",
        "4",
        "--distinct",
        "4",
        "--set",
        "generation.num_inference_steps=1",
        "--set",
        "prepare.resolution=64",
        "--work-dir",
        str(tmp_path / "w"),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    direct, ray_path = result["direct"], result["ray"]
    assert direct["images"] == ray_path["images"] == 12
    assert direct["errors"] == 0 and ray_path["errors"] == 0
    assert sum(ray_path["runs"][0]["counts"].values()) == 12
    assert np.isclose(result["ratio"], ray_path["images_per_s"] / direct["images_per_s"], rtol=1e-2)
    for path in (direct, ray_path):
        assert path["peak_rss_mib"] > 0 and path["wall_s"] > 0
    # The Ray path's processes (workers, Ray's services) are part of its memory.
    assert ray_path["peak_rss_mib_by_role"].get("ray_workers", 0) > 0
    assert result["workload"]["max_attempts"] == 1
    assert result["settings"]["torch_threads"] == 1
    assert len(result["loadavg_before"]) == 3
    assert direct["cpu_s_per_image"] > 0 and ray_path["cpu_s_per_image"] > 0
    assert set(result["profile"]["generate_components_s"]) >= {"unet", "controlnet", "vae_decode", "other"}
    # Both paths wrote one PNG per image.
    for name in ("direct-0", "ray-0"):
        assert len(list((tmp_path / "w" / name / "images").rglob("*.png"))) == 12


def test_rfnet_ablations_are_valid_small_configs():
    from bench.rfnet_quality import ABLATIONS
    from pipelines.config import load_config, parse_assignment
    from rfnet.config import TrainRFNetConfig

    for name, assignments in ABLATIONS.items():
        overrides = dict(parse_assignment(a) for a in assignments)
        cfg = load_config(TrainRFNetConfig, preset="small", overrides=overrides).model
        assert cfg.use_product == (name == "all")
        parts = (
            cfg.descriptor_scene,
            cfg.descriptor_integrity,
            cfg.descriptor_support,
            cfg.descriptor_attached,
            cfg.descriptor_grain,
            cfg.descriptor_continuity,
        )
        assert cfg.use_descriptor == all(parts) == any(parts) == (name == "all")
        assert bool(cfg.descriptor_trees) == (name == "all")
        assert cfg.use_caption == (name != "image_only")


def test_product_search_bench_reports_every_class(tmp_path):
    from rfnet.data.scenes import make_set

    data = make_set("lifestyle", str(tmp_path / "set"), n_per_class=1, image_size=96, seed=5)
    out = tmp_path / "search.json"
    args = ["--per-class", "1", "--threads", "1", "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "bench.rfnet_search", data, *args],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(out.read_text())
    assert result["images"] == 6 and len(result["off_share_per_class"]) == 6
    assert 0.0 <= result["off_share"] <= 1.0
    assert result["exhaustive_ms_per_img"] > result["ms_per_img"] > 0


def test_dispatched_ops_counts_operations_not_views():
    import torch

    from bench.rfnet_scoring import dispatched_ops

    x = torch.ones(4, 4)
    assert dispatched_ops(lambda: (x + 1).view(16)[2:].sum()) == 2  # add and sum; the view and slice are free
    assert dispatched_ops(lambda: [x * k for k in range(5)]) == 5


def test_gpu_train_check_reads_each_step_and_the_gpu_memory(tmp_path, monkeypatch):
    from bench.gpu_rfnet_train import GpuMemory, run_step

    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 1234\necho 77\n")  # one line per card: the largest counts
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with GpuMemory(interval_s=0.05) as memory:
        time.sleep(0.2)
    assert memory.peak_mib == 1234
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with GpuMemory(interval_s=0.05) as memory:
        pass
    assert memory.peak_mib is None

    script = (
        "print('resumed from epoch 2 (best val macro F1 0.5)');"
        "print('epoch 3/4: train loss 0.4, val loss 0.5, val macro F1 0.6 (best 0.6 @ 3), 1.5 s');"
        "print('epoch 4/4: train loss 0.3, val loss 0.4, val macro F1 0.7 (best 0.7 @ 4), 0.8 s');"
        'print(\'{"val_macro_f1": 0.7, "epochs": 4}\')'
    )
    step = run_step("resume", [sys.executable, "-c", script], str(tmp_path))
    assert step["rc"] == 0 and step["summary"] == {"val_macro_f1": 0.7, "epochs": 4}
    assert step["resumed_from_epoch"] == 2 and step["epoch_s"] == {3: 1.5, 4: 0.8}
    failed = run_step(
        "fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], str(tmp_path)
    )
    assert failed["rc"] == 3 and failed["summary"] is None and "boom" in failed["log_tail"]


def test_error_breakdown_joins_predictions_to_how_each_lifestyle_image_was_drawn(tmp_path, capsys):
    import numpy as np
    import pyarrow.parquet as pq

    from bench.rfnet_errors import breakdown, groupable_fields, main, read_meta
    from pipelines.labels import DISPLAY_NAMES, LABELS
    from rfnet.data import read_rf1m
    from rfnet.data.scenes import make_set
    from rfnet.evaluate import prediction_table

    data = make_set("lifestyle", str(tmp_path / "set"), n_per_class=2, image_size=64, seed=3)
    meta = read_meta(f"{data}/meta.jsonl")
    samples = read_rf1m(data).samples
    images = [s.image.removeprefix(data + "/") for s in samples]
    assert sorted(meta) == sorted(images)
    for s, image in zip(samples, images, strict=True):
        record = meta[image]
        assert record["label"] == DISPLAY_NAMES[s.label]
        assert (record["size_mode"] is not None) == (LABELS[s.label] == "size_mismatch")
        assert (record["space_mode"] is not None) == (LABELS[s.label] == "space_mismatch")
        assert record["product_height_m"] > 0 and record["scene"] and record["camera"]

    # A model that calls everything Available: every Size Mismatch image is taken for Available.
    labels = np.array([s.label for s in samples])
    probs = np.full((len(samples), 6), 0.1)
    probs[:, 0] = 0.5
    rows = prediction_table(images, labels, probs, 0.5).to_pylist()
    result = breakdown(rows, meta, ["size_mode"])
    assert result["matched"] == 12 and result["unmatched"] == 0
    assert {g["true_label"] for g in result["groups"]} == {"size_mismatch"}
    assert sum(g["n"] for g in result["groups"]) == 2
    assert all(g["correct"] == 0 and g["taken_for"] == {"available": g["n"]} for g in result["groups"])
    # By default: fields with a few distinct strings or integers; no floats, lists or constants.
    assert {"camera", "scene", "product"} <= {g["field"] for g in breakdown(rows, meta)["groups"]}
    fields = groupable_fields(list(meta.values()))
    assert {"camera", "scene", "product"} <= set(fields)
    assert not {"product_height_m", "product_px", "scene_scale", "image", "label"} & set(fields)
    synthetic = [
        {
            "image": "a",
            "label": "x",
            "variant": "v1",
            "product_box": [0, 0, 1, 1],
            "caption": "c1",
            "seed": 3,
        },
        {
            "image": "b",
            "label": "y",
            "variant": "v2",
            "product_box": [0, 0, 1, 1],
            "caption": "c2",
            "seed": 3,
        },
    ]
    assert groupable_fields(synthetic) == ["caption", "variant"]
    assert groupable_fields(synthetic, max_values=1) == []
    by_camera = breakdown(rows, meta, ["camera"])["groups"]
    assert sum(g["n"] for g in by_camera) == 12
    assert all(g["correct"] == (1.0 if g["true_label"] == "available" else 0.0) for g in by_camera)

    pq.write_table(prediction_table(images, labels, probs, 0.5), tmp_path / "predictions.parquet")
    out = tmp_path / "breakdown.json"
    args = ["--predictions", str(tmp_path / "predictions.parquet"), "--meta", f"{data}/meta.jsonl"]
    assert main([*args, "--by", "camera,space_mode", "--json", str(out)]) == 0
    assert "12 images matched" in capsys.readouterr().out
    with pytest.raises(
        SystemExit, match=r"--by space: no record of .*meta.jsonl has that field; .*space_mode"
    ):
        main([*args, "--by", "space"])
    with pytest.raises(SystemExit, match=r"missing.parquet does not exist"):
        main(["--predictions", str(tmp_path / "missing.parquet"), "--meta", f"{data}/meta.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png"}\n{"image": "b.png"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_meta(str(bad))
    bad.write_text('["a.png"]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        read_meta(str(bad))
    assert {g["field"] for g in json.loads(out.read_text())["groups"]} == {"camera", "space_mode"}
