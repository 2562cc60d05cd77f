"""Both trainers survive a lost worker: a Ray Train worker process killed (SIGKILL) mid-run is
replaced, the worker group resumes from the last checkpoint, and the run ends where an uninterrupted
one would (every epoch / step once, the full count). Tiny presets on the shared local Ray cluster."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipelines.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def registered_checkpoint(run_dir: Path) -> str | None:
    """The latest checkpoint Ray Train's controller has registered for the run in ``run_dir`` (its
    checkpoint manager snapshot), or None. A checkpoint directory alone is not enough: a worker
    lost between writing it and the controller taking the report leaves an unregistered one."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):  # not there yet, or being replaced
        return None
    latest = snapshot.get("latest_checkpoint_result") or {}
    return latest.get("checkpoint_dir_name")


@contextlib.contextmanager
def kill_a_worker_after_checkpoint(run_dirs: str, timeout_s: float = 600.0):
    """While the body trains: as soon as Ray Train has registered a checkpoint of a run under the
    glob ``run_dirs``, kill a Ray Train worker process with SIGKILL (as the OOM killer or a lost node
    would). Yields a dict that gets ``pid`` and ``checkpoint`` (the registered one at the kill)."""
    import ray
    from ray.util.state import list_actors

    killed: dict = {}
    stop = threading.Event()
    # The connected cluster's address, explicitly: the default looks up the last `ray start`ed one.
    address = ray.get_runtime_context().gcs_address
    wanted = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]

    def watch() -> None:
        pid, deadline = None, time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            if pid is None:
                alive = list_actors(address=address, filters=wanted)
                pid = alive[0].pid if alive else None
                stop.wait(0.2)
                continue
            found = [c for d in glob.glob(run_dirs) if (c := registered_checkpoint(Path(d)))]
            if found:
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, checkpoint=found[0])
                return
            stop.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join()


def test_rfnet_training_resumes_after_a_lost_worker(ray_cluster, tmp_path):
    from rfnet.config import TrainRFNetConfig
    from rfnet.data.scenes import make_set
    from rfnet.train import STATE_FILE, train_rfnet

    data = make_set("synthetic", str(tmp_path / "set"), n_per_class=5, image_size=64, seed=0)
    out = tmp_path / "run"
    epochs = 4
    cfg = load_config(
        TrainRFNetConfig,
        preset="tiny",
        overrides={"data.root": data, "out": str(out), "optim.epochs": epochs, "tensorboard": False}
        | {"workers.max_failures": 1},
    )
    with kill_a_worker_after_checkpoint(str(out / "ray_train" / "*")) as killed:
        result = train_rfnet(cfg)
    assert killed.get("pid"), "no worker was killed"
    (run_dir,) = glob.glob(str(out / "ray_train" / "rfnet-*"))
    state = json.loads((Path(run_dir) / registered_checkpoint(Path(run_dir)) / STATE_FILE).read_text())
    assert result.epochs == state["epoch"] == epochs
    assert [h["epoch"] for h in state["history"]] == list(range(1, epochs + 1))  # each epoch once
    assert state["step"] == epochs * (result.n_train // cfg.optim.batch_size)
    assert len(state["resumed_at"]) == 1 and 1 <= state["resumed_at"][0] < epochs  # from a checkpoint
    meta = json.loads((out / "meta.json").read_text())["train"]
    assert [h["epoch"] for h in meta["history"]] == list(range(1, meta["best_epoch"] + 1))


def test_rfft_training_resumes_after_a_lost_worker(ray_cluster, tmp_path):
    from jobs.rfft import main
    from rfft.config import RFFTConfig

    out = tmp_path / "run"
    steps = 4
    cfg = load_config(
        RFFTConfig,
        preset="tiny",
        overrides={
            "out": str(out),
            "steps": steps,
            "checkpoint_every": 1,
            "data.num_procedural": 6,
            "data.num_eval_products": 2,
            "eval.batch_size": 2,
            "eval.every": 2,
            "scaling.cpus_per_worker": 1.0,
            "scaling.max_failures": 1,
        },
    )
    with kill_a_worker_after_checkpoint(str(out / "checkpoints")) as killed:
        assert main(cfg) == 0
    assert killed.get("pid"), "no worker was killed"
    assert killed["checkpoint"] != f"checkpoint-{steps:06d}"  # killed before the run was done
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_completed"] == steps
    assert [s["step"] for s in metrics["steps"]] == list(range(1, steps + 1))  # each step once
    assert [e["step"] for e in metrics["evals"]] == [0, 2, 4]  # the step-0 baseline not redone
    assert len(metrics["resumed_at"]) == 1 and 1 <= metrics["resumed_at"][0] < steps  # from a checkpoint
