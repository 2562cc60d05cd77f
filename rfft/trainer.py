"""RFFT on Ray Train: fine-tune the ControlNet with RFNet's verdict as the reward.

The optimisation step and what is trained: :mod:`rfft.worker`.

Workers: :func:`train_loop_per_worker` runs in each Ray Train worker; every worker reports at the same
steps (a pure function of the step number and of metrics all workers share), rank 0 alone attaches
checkpoints and writes evaluation sheets. The driver (:func:`run`) exports the last checkpoint to
``OUT/controlnet`` and ``OUT/metrics.json``. A lost worker restarts the worker group
(``scaling.max_failures`` times), which resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from pipelines import storage
from pipelines.resources import require_ray_train
from rfft.config import RFFTConfig
from rfft.export import STATE_FILE, export_run
from rfft.worker import RFFTWorker

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"
CHECKPOINTS_NAME = "checkpoints"


# ----------------------------------------------------------------------------------------------------
# Metrics.


def build_metrics(state: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` from a checkpoint's state: per-step series, evaluations, before/after, guards."""
    history, evals = state["history"], state["evals"]
    before, after = (evals[0], evals[-1]) if evals else ({}, {})
    return {
        "steps_completed": state["step"],
        "config_hash": state["config_hash"],
        "stopped_early": state["stop_reason"] is not None,
        "stop_reason": state["stop_reason"],
        "resumed_at": state.get("resumed_at", []),
        "p_available_before": before.get("p_available"),
        "p_available_after": after.get("p_available"),
        "available_rate_before": before.get("available_rate"),
        "available_rate_after": after.get("available_rate"),
        "eval_step_before": before.get("step"),
        "eval_step_after": after.get("step"),
        "f_ac": [h["f_ac"] for h in history],
        "l_cc": [h["l_cc"] for h in history],
        "grad_norm": [h["grad_norm"] for h in history],
        "steps": history,
        "evals": evals,
        "guards": {
            "diversity_baseline": state["diversity_baseline"],
            "diversity_after": after.get("background_diversity"),
            "background_detail_before": before.get("background_detail"),
            "background_detail_after": after.get("background_detail"),
            "seam_error_after": after.get("seam_error"),
            "product_pixels_changed_after": after.get("product_pixels_changed"),
            "warnings": state["warnings"],
        },
        "rfnet": state["rfnet"],
        "models": state["models"],
        "placement": state["placement"],
        "world_size": state["world_size"],
        "config": state["config"],
    }


# ----------------------------------------------------------------------------------------------------
# Ray Train.


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs (``TorchTrainer(train_loop_per_worker, ...)``)."""
    import ray.train

    cfg = RFFTConfig.model_validate(loop_config["cfg"])
    context = ray.train.get_context()
    worker = RFFTWorker(cfg, rank=context.get_world_rank(), world_size=context.get_world_size())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            worker.restore(directory)
    if not worker.evals:
        worker.evaluate()  # step-0 baseline: p_available_before and the guards' reference
    if worker.finished:
        # Nothing left to train (a rerun of a finished run): the restored checkpoint is the result.
        _report(worker, checkpoint_now=False)
        return
    while not worker.finished:
        record = worker.train_step()
        step = worker.step
        if step % cfg.eval.every == 0 or step >= cfg.steps:
            worker.evaluate()
        if step % cfg.log_every == 0 or worker.finished:
            logger.info(
                "step %d/%d f_ac %.4f l_cc %.3g p_available %.4f grad_norm %.3g (%.2f s)",
                step, cfg.steps, record["f_ac"], record["l_cc"], record["p_available"], record["grad_norm"],
                record["time_s"],
            )  # fmt: skip
        if step % cfg.checkpoint_every == 0 or worker.finished:
            _report(worker, checkpoint_now=True)
        elif step % cfg.log_every == 0:
            _report(worker, checkpoint_now=False)


def _report(worker: RFFTWorker, *, checkpoint_now: bool) -> None:
    """Every worker calls this at the same steps; rank 0 attaches the checkpoint."""
    import ray.train

    record = worker.history[-1] if worker.history else {}
    metrics = {
        "step": worker.step,
        **{k: record[k] for k in ("f_ac", "l_cc", "grad_norm", "p_available") if k in record},
    }
    if worker.evals:
        metrics["eval_p_available"] = worker.evals[-1]["p_available"]
    if checkpoint_now and worker.rank == 0:
        with tempfile.TemporaryDirectory() as directory:
            worker.save(directory)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint-{worker.step:06d}",
            )
    else:
        ray.train.report(metrics)


def absolute_local_paths(cfg: RFFTConfig) -> RFFTConfig:
    """``cfg`` with relative local paths (RFNet, catalog, models) made absolute.

    Ray Train workers do not run in the driver's working directory, so ``--rfnet out/rfnet-tiny``
    must reach them as an absolute path. Names that are not existing local paths (``tiny``, hub ids,
    ``s3://`` prefixes) are left as they are.
    """
    data = cfg.to_dict()
    sections = (
        (data, "rfnet"),
        (data["data"], "catalog"),
        (data["models"], "base"),
        (data["models"], "controlnet"),
    )
    for section, key in sections:
        value = section.get(key)
        named = value in ("tiny", "sd15") or str(value).startswith("random:")
        if value and not named and not storage.is_remote(value) and Path(value).exists():
            section[key] = storage.normalize(value)
    return RFFTConfig.model_validate(data)


def check_catalog(cfg: RFFTConfig) -> None:
    """Fail before Ray starts if the catalog is unreadable or has too few usable rows."""
    from pipelines.catalog import read_catalog
    from pipelines.config import ConfigError

    if cfg.data.catalog is None:
        return
    try:
        catalog = read_catalog(cfg.data.catalog)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.catalog={cfg.data.catalog!r} cannot be read: {exc}") from None
    usable = (
        len(catalog.items)
        if cfg.data.max_products is None
        else min(len(catalog.items), cfg.data.max_products)
    )
    if usable <= cfg.data.num_eval_products:
        raise ConfigError(
            f"data.catalog={cfg.data.catalog!r} has {len(catalog.items)} valid rows ({len(catalog.errors)} rejected); "
            f"RFFT needs more than data.num_eval_products={cfg.data.num_eval_products} (the held-out set) "
            "to leave products to train on"
        )


def check_run_config(cfg: RFFTConfig) -> None:
    """Refuse to resume ``OUT`` with a config that changes what is learned; record the config.

    Only a run with a checkpoint counts: if an earlier attempt stopped before its first checkpoint
    (a typo in ``--rfnet``, say), the new config simply replaces the recorded one.
    """
    from pipelines.config import ConfigError

    out = storage.normalize(cfg.out)
    uri = storage.join(out, RUN_CONFIG_FILE)
    if storage.exists(uri) and has_checkpoints(out):
        saved = json.loads(storage.read_bytes(uri))
        if saved["config_hash"] != cfg.config_hash():
            changed = _diff_keys(saved["config"], cfg.to_dict(), RFFTConfig.HASH_EXCLUDE)
            raise ConfigError(
                f"{cfg.out} holds an RFFT run with a different config (hash {saved['config_hash']} vs "
                f"{cfg.config_hash()}; changed: {', '.join(changed) or 'unknown'}). Rerun with the same "
                "config to resume it (steps may grow), or choose a new --out."
            )
        return
    storage.write_text(uri, json.dumps({"config_hash": cfg.config_hash(), "config": cfg.to_dict()}, indent=1))


def has_checkpoints(out: str) -> bool:
    """Whether ``OUT/checkpoints/`` holds a checkpoint of an earlier run."""
    fs, path = storage.filesystem(storage.join(out, CHECKPOINTS_NAME))
    return bool(fs.glob(f"{path}/checkpoint-*"))


def _diff_keys(a: dict, b: dict, exclude: tuple[str, ...], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        dotted = f"{prefix}{key}"
        if dotted in exclude:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_diff_keys(va, vb, exclude, dotted + "."))
        elif va != vb:
            out.append(dotted)
    return out


def run(cfg: RFFTConfig) -> dict[str, Any]:
    """Train on Ray Train and export; returns the metrics written to ``OUT/metrics.json``.

    A rerun with the same ``--out`` and config resumes from the last checkpoint under
    ``OUT/checkpoints/`` (Ray Train restores it); a larger ``--steps`` continues a finished run.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg.check_ready()
    cfg = absolute_local_paths(cfg)
    check_catalog(cfg)
    from pipelines.raystart import ensure_ray

    ensure_ray(cfg.scaling.ray_address)
    # Workers no node can ever hold fail the job here instead of leaving Ray Train pending.
    require_ray_train(
        "scaling",
        cfg.scaling,
        workers_field="workers",
        gpu_fix="--preset tiny (tiny models on CPUs), or --set scaling.use_gpu=false (these models on CPUs: slow)",
    )
    check_run_config(cfg)  # writes OUT/run_config.json: only for a run that can start
    out = storage.normalize(cfg.out)
    storage_filesystem = None
    if storage.is_remote(out):
        import pyarrow.fs

        fs, _ = storage.filesystem(out)
        storage_filesystem = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS_NAME,
            storage_path=out.removeprefix("s3://") if storage_filesystem else out,
            storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"RFFT finished without a checkpoint under {out}/{CHECKPOINTS_NAME}")
    with result.checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / STATE_FILE).read_text())
        metrics = build_metrics(state)
        export_run(directory, out, metrics)
    _log_summary(metrics)
    return metrics


def _log_summary(metrics: dict[str, Any]) -> None:
    def fmt(value) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    logger.info(
        "RFFT done at step %d: held-out p_available %s -> %s, available rate %s -> %s, "
        "background diversity %s -> %s%s",
        metrics["steps_completed"],
        fmt(metrics["p_available_before"]),
        fmt(metrics["p_available_after"]),
        fmt(metrics["available_rate_before"]),
        fmt(metrics["available_rate_after"]),
        fmt(metrics["guards"]["diversity_baseline"]),
        fmt(metrics["guards"]["diversity_after"]),
        f" (stopped early: {metrics['stop_reason']})" if metrics["stopped_early"] else "",
    )
