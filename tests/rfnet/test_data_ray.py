"""Decoded examples through Ray Data, and into a Ray Train worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.data import Sample, load_example, read_rf1m, to_ray_dataset
from rfnet.data.scenes import make_set

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def synthetic_samples(tmp_path_factory) -> list[Sample]:
    root = make_set("synthetic", str(tmp_path_factory.mktemp("syn")), n_per_class=3, image_size=64, seed=0)
    return read_rf1m(root).samples


def collect(ds) -> dict[str, dict]:
    return {row["path"]: row for row in ds.iter_rows()}


def test_ray_dataset_matches_load_example(ray_cluster, synthetic_samples):
    ds = to_ray_dataset(synthetic_samples, image_size=48, product_size=24, num_blocks=4, batch_size=5)
    rows = collect(ds)
    assert set(rows) == {s.image for s in synthetic_samples}
    for sample in synthetic_samples[:6]:
        expected = load_example(sample, image_size=48, product_size=24)
        row = rows[sample.image]
        np.testing.assert_array_equal(row["image"], expected["image"])
        np.testing.assert_array_equal(row["product"], expected["product"])
        assert row["label"] == sample.label and row["caption"] == sample.caption
        assert bool(row["has_product"]) and row["error"] == ""


def test_unreadable_files_are_skipped_kept_or_raised(ray_cluster, synthetic_samples, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = [
        Sample(str(broken), 2, source="label.txt:7"),
        Sample(str(tmp_path / "gone.png"), 1, source="label.txt:8"),
    ]
    samples = synthetic_samples[:4] + bad
    skipped = collect(to_ray_dataset(samples, image_size=32, product_size=16, num_blocks=2))
    assert set(skipped) == {s.image for s in synthetic_samples[:4]}

    kept = collect(to_ray_dataset(samples, image_size=32, product_size=16, on_error="keep"))
    assert len(kept) == 6
    for sample in bad:
        row = kept[sample.image]
        assert row["label"] == -1 and sample.image in row["error"] and not row["image"].any()

    with pytest.raises(Exception, match=r"broken\.png"):
        to_ray_dataset(samples, image_size=32, product_size=16, on_error="raise").materialize()


@pytest.mark.slow  # Ray Train start-up: 25-40 s on a shared 2-core CPU
def test_ray_train_workers_read_their_shards(ray_cluster, synthetic_samples, tmp_path):
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out_dir = tmp_path / "seen"
    out_dir.mkdir()

    def loop(config):
        shard = ray.train.get_dataset_shard("train")
        seen = []
        for batch in shard.iter_batches(batch_size=4, batch_format="numpy"):
            assert batch["image"].shape[1:] == (32, 32, 3) and batch["product"].shape[1:] == (16, 16, 4)
            seen.extend(str(p) for p in batch["path"])
        rank = ray.train.get_context().get_world_rank()
        (Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(seen))
        ray.train.report({"seen": len(seen)})

    ds = to_ray_dataset(synthetic_samples, image_size=32, product_size=16, num_blocks=6)
    trainer = TorchTrainer(
        loop,
        train_loop_config={"out": str(out_dir)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        datasets={"train": ds},
        run_config=RunConfig(storage_path=str(tmp_path), name="shards"),
    )
    trainer.fit()
    shards = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    # Each worker reads a non-empty part; together they read every sample exactly once.
    assert all(shards) and sorted(shards[0] + shards[1]) == sorted(s.image for s in synthetic_samples)


def test_bad_arguments(synthetic_samples):
    with pytest.raises(ValueError, match="on_error"):
        to_ray_dataset(synthetic_samples, image_size=8, product_size=8, on_error="ignore")
    with pytest.raises(ValueError, match="at least one sample"):
        to_ray_dataset([], image_size=8, product_size=8)
