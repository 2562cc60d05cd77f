"""Warm start: compiled graphs persist in the cache root across processes (pipelines.cache).

The generation stage's own cold/warm start is measured by ``python -m bench.warm_start`` (minutes on
a CPU); here a small function is compiled through the same wiring in two fresh processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pipelines import cache

START = """
import json, logging, sys, torch
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from pipelines.cache import configure_compile_cache
compiled = configure_compile_cache(torch.device("cpu"), {"model": "test", "batch_size": 2})
f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
f(torch.randn(8))
print(json.dumps({"dir": str(compiled.directory), "warm": compiled.warm, **compiled.report()}))
"""


def start(root) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR")}
    env["RELIABLE_AD_CACHE"] = str(root)
    done = subprocess.run([sys.executable, "-c", START], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.slow  # two processes, one cold compile: ~30-60 s on 2 busy cores
def test_a_second_process_reuses_the_compiled_graphs(tmp_path):
    first, log = start(tmp_path)
    key = cache.environment_key(torch.device("cpu"))
    assert first["dir"].startswith(str(tmp_path / "compile" / key))
    assert (first["warm"], first["hits"]) == (False, 0) and first["misses"] >= 1
    assert f"compile cache {first['dir']}: cold" in log
    second, log = start(tmp_path)
    assert second["dir"] == first["dir"]
    assert second["warm"] and second["hits"] >= 1 and second["misses"] == 0
    assert f"compile cache {first['dir']}: warm" in log
    assert cache.settings_key({"model": "test", "batch_size": 4}) not in first["dir"]  # its own directory


def test_an_explicit_inductor_cache_dir_wins(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setenv("RELIABLE_AD_CACHE", str(tmp_path / "root"))
    chosen = cache.configure_compile_cache(torch.device("cpu"), {"a": 1})
    assert chosen.directory.parent.parent == tmp_path / "root" / "compile"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(chosen.directory)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.configure_compile_cache(torch.device("cpu"), {"a": 1}).directory == tmp_path / "mine"
