"""GPU check: ``reliable-ad train-rfnet`` and ``reliable-ad evaluate`` end to end on one GPU.

``bench.gpu_rfnet`` times RFNet's steps in one process; this runs the commands an operator runs,
as subprocesses, on a labelled set it writes first (the ``synthetic`` set of
:func:`rfnet.data.scenes.make_set`):

- ``paper``: ``train-rfnet --preset paper --gpu --workers 1`` (Ray Train, one GPU worker, bf16
  autocast, the streamed Ray Data loader, random weights);
- ``small``: ``train-rfnet --preset small --gpu`` (memory loader, descriptor trees, fine-tuned
  from ``builtin:small``).

Each preset trains for ``--epochs`` epochs, then the same command with one more epoch must resume
from the first run's last checkpoint (model, weight average and optimizer state back on the GPU),
then ``evaluate`` scores the held-out split.

Recorded per step: exit status, wall time, the command's JSON summary, per-epoch times from its
log, and the GPU memory in use (``nvidia-smi``, sampled every 0.5 s; the peak over all processes
on the card). Steps that would not fit ``--budget-s`` are skipped and named. The quality of the
``paper`` run says nothing (random weights, a few hundred images, a few epochs); this checks
that the GPU path trains, checkpoints, resumes and evaluates.

    python -m bench.gpu_rfnet_train                    # one GPU; bench/results/rfnet_gpu_train.json
    python -m bench.gpu_rfnet_train --smoke            # tiny preset on CPU: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.common import RESULTS_DIR, PeriodicSampler, command_line, format_table, machine, write_json


def _cli() -> list[str]:
    return [sys.executable, "-m", "jobs.cli"]


class GpuMemory(PeriodicSampler):
    """Peak of ``nvidia-smi``'s memory.used (MiB, all processes on the card) while the context is
    open; None without ``nvidia-smi``."""

    thread_name = "gpu-memory"

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.peak_mib = interval_s, None
        self._nvidia_smi = shutil.which("nvidia-smi")
        self._init_periodic()

    def sample(self) -> int | None:
        if self._nvidia_smi is None:
            return None
        try:
            out = subprocess.run(
                [self._nvidia_smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            used = max(int(v) for v in out.split())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        self.peak_mib = max(used, self.peak_mib or 0)
        return used


def run_step(name: str, cmd: list[str], log_dir: str) -> dict[str, Any]:
    """Run ``cmd``; its output goes to ``LOG_DIR/NAME.log``. The last JSON line is its summary."""
    log = os.path.join(log_dir, f"{name}.log")
    t0 = time.time()
    with GpuMemory() as memory, open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    with open(log, errors="replace") as fh:
        text = fh.read()
    summary = None
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    resumed = re.findall(r"resumed from epoch (\d+)", text)
    epochs = re.findall(r"epoch (\d+)/\d+: .*?, ([\d.]+) s\s*$", text, flags=re.M)
    print(f"{name}: rc {rc}, {wall:.1f} s", flush=True)
    return {
        "command": " ".join(cmd),
        "rc": rc,
        "wall_s": round(wall, 1),
        "summary": summary,
        "resumed_from_epoch": int(resumed[-1]) if resumed else None,
        "epoch_s": {int(e): float(t) for e, t in epochs},
        "gpu_peak_mib": memory.peak_mib,
        "log": log,
        "log_tail": text[-1500:] if rc else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="out/gpu_rfnet_train")
    parser.add_argument("--out", default=str(RESULTS_DIR / "rfnet_gpu_train.json"))
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=3, help="first run; the rerun adds one")
    parser.add_argument("--presets", default="paper,small", help="comma list of paper, small")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip steps that would not fit")
    parser.add_argument("--smoke", action="store_true", help="tiny preset on CPU (checks the script)")
    args = parser.parse_args(argv)
    started = time.time()

    from rfnet.data.scenes import make_set

    shutil.rmtree(args.work, ignore_errors=True)
    logs = os.path.join(args.work, "logs")
    os.makedirs(logs)
    t0 = time.time()
    data = make_set(
        "synthetic", os.path.join(args.work, "data"), n_per_class=args.n_per_class, image_size=128, seed=7
    )
    results: dict[str, Any] = {
        "command": command_line("bench.gpu_rfnet_train"),
        "machine": machine(),
        "data": {"generator": "synthetic", "n_per_class": args.n_per_class, "seed": 7},
        "data_s": round(time.time() - t0, 1),
        "steps": {},
        "skipped": [],
    }
    train = [*_cli(), "train-rfnet", "--data", data]
    # per preset: its flags and the seconds a first run needs at least (H200), to skip what cannot finish
    flags = {
        "paper": (["--preset", "paper", "--gpu", "--workers", "1"], 150),
        "small": (["--preset", "small", "--gpu"], 60),
    }
    plan: list[tuple[str, list[str], float]] = []
    for preset in args.presets.split(","):
        extra, need_s = flags[preset]
        extra = ["--preset", "tiny"] if args.smoke else extra
        model = os.path.join(args.work, preset)
        evaluate = [*_cli(), "evaluate", "--rfnet", model, "--data", data, "--out", model + "-eval"]
        plan += [
            (f"{preset}_train", [*train, *extra, "--out", model, "--epochs", str(args.epochs)], need_s),
            (
                f"{preset}_resume",
                [*train, *extra, "--out", model, "--epochs", str(args.epochs + 1)],
                need_s / 2,
            ),
            (f"{preset}_evaluate", evaluate, 30),
        ]
    failed: set[str] = set()
    for name, cmd, need_s in plan:
        prefix = name.split("_")[0]
        if prefix in failed:
            results["skipped"].append(f"{name} (an earlier {prefix} step failed)")
            continue
        if time.time() - started + need_s > args.budget_s:
            results["skipped"].append(f"{name} (needs ~{need_s:.0f} s, budget {args.budget_s:.0f} s)")
            continue
        step = run_step(name, cmd, logs)
        results["steps"][name] = step
        if step["rc"]:
            failed.add(prefix)
        write_json(args.out, results)
    for preset in args.presets.split(","):
        resume = results["steps"].get(f"{preset}_resume")
        results[f"{preset}_resume_ok"] = bool(
            resume and resume["rc"] == 0 and resume["resumed_from_epoch"] == args.epochs
        )
    results["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, results)
    rows = []
    for name, step in results["steps"].items():
        s = step["summary"] or {}
        quality = s.get("val_macro_f1", s.get("macro_f1", ""))
        rows.append([name, step["rc"], step["wall_s"], quality, step["resumed_from_epoch"] or "",
                     step["gpu_peak_mib"] or ""])  # fmt: skip
    print(format_table(["step", "rc", "wall s", "macro F1", "resumed at", "GPU MiB"], rows))
    resumed = {k: v for k, v in results.items() if k.endswith("_resume_ok")}
    print(f"resume ok: {resumed}; skipped: {results['skipped'] or 'none'}; wrote {args.out}")
    if failed:
        raise SystemExit(f"failed: {', '.join(sorted(failed))}")


if __name__ == "__main__":
    main()
