"""Where the caches that make a warm start live: one root, one place that wires them.

``RELIABLE_AD_CACHE`` (default ``~/.cache/reliable-ad``; on KubeRay the ``reliable-ad-cache`` volume,
``cluster/cache-pvc.yaml``) holds

- ``s3/<sha256(uri)[:16]>/``: model sources mirrored from ``s3://`` prefixes
  (:func:`pipelines.models.fetch_s3_prefix`). A mirror is reused while the prefix's listing (every
  file's ETag and size) is the one recorded in its ``.complete`` marker; a changed listing fetches it
  again (file by file, atomically, so a process loading the mirror never reads a half-written file).
- ``compile/<environment key>/<settings key>/``: ``TORCHINDUCTOR_CACHE_DIR`` for ``torch.compile``
  (inductor's FX graph cache, the AOTAutograd cache and the Triton kernels). The *environment key*
  is the torch version and the device: CPU, or the CUDA version, the GPU architecture (``sm90``) and
  the Triton version. The *settings key* hashes what shapes the compiled graphs: model ids and
  revisions, LoRA, dtype, resolution, batch size, ``channels_last``, ``fuse_qkv``. A change of any of
  them starts a new, cold directory; inductor's own keys (the graph, every inductor setting, the
  device's properties) guard each entry inside, so a stale entry is never used, only left behind.
  Nothing invalidates on its own: delete ``compile/`` directories of torch versions or models no
  longer used.

Hub models go to huggingface_hub's own cache (``HF_HOME``, default ``~/.cache/huggingface``), which
the cluster volume also holds. ``TORCHINDUCTOR_CACHE_DIR`` set in the environment (to anything but
torch's per-user temporary default) wins over the directory chosen here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def root() -> Path:
    """The cache root: ``RELIABLE_AD_CACHE`` or ``~/.cache/reliable-ad``."""
    return Path(os.environ.get("RELIABLE_AD_CACHE") or Path.home() / ".cache" / "reliable-ad")


def environment_key(device: torch.device) -> str:
    """``torch-<version>-cpu`` or ``torch-<version>-cuda<version>-sm<arch>-triton<version>``."""
    key = f"torch-{torch.__version__.replace('+', '_')}"
    if device.type != "cuda":
        return f"{key}-{device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return f"{key}-cuda{torch.version.cuda}-sm{major}{minor}-triton{triton_version}"


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CompileCache:
    """Where ``torch.compile`` keeps its artifacts for this process, and what was there at start."""

    directory: Path
    entries_before: int  # cached graphs found when the process started: 0 means a cold start

    @property
    def warm(self) -> bool:
        return self.entries_before > 0

    def report(self) -> dict[str, int]:
        """Inductor's FX graph cache hits and misses in this process so far."""
        from torch._dynamo.utils import counters

        inductor = counters["inductor"]
        return {"hits": int(inductor["fxgraph_cache_hit"]), "misses": int(inductor["fxgraph_cache_miss"])}


def configure_compile_cache(device: torch.device, settings: dict[str, Any]) -> CompileCache:
    """Point ``torch.compile``'s caches at the persistent directory for ``device`` and ``settings``
    (call before compiling) and log where it is and whether it is warm."""
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        directory = Path(chosen)
    else:
        directory = root() / "compile" / environment_key(device) / settings_key(settings)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    # On by default in current torch; set so that an environment that turned them off is overridden
    # here and in inductor's compile subprocesses.
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    inductor_config.fx_graph_cache = True
    directory.mkdir(parents=True, exist_ok=True)
    graphs = directory / "fxgraph"
    cache = CompileCache(
        directory, sum(1 for p in graphs.rglob("*") if p.is_file()) if graphs.is_dir() else 0
    )
    logger.info(
        "compile cache %s: %s",
        directory,
        f"warm ({cache.entries_before} cached graphs)"
        if cache.warm
        else "cold (first compile with these settings)",
    )
    return cache
