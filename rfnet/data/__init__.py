"""RFNet's data: labelled samples, the RF1M reader, a synthetic defect set, Ray loading, feedback.

Light to import (numpy, PIL, OpenCV, pyarrow); Ray is imported only by :func:`to_ray_dataset`.
See docs/data.md for the accepted RF1M layout, the tolerance rules and the labelling loop.
"""

from rfnet.data.feedback import ImportReport, export_for_labelling, import_labels
from rfnet.data.ray_loading import to_ray_dataset
from rfnet.data.rf1m import Problem, RF1MError, RF1MIndex, read_rf1m
from rfnet.data.samples import (
    UNLABELLED,
    ExampleError,
    Sample,
    holdout_split,
    load_example,
    set_identity,
    shared_images,
    split_samples,
)
from rfnet.data.transforms import canonical_product

# The synthetic generator is also a command (`python -m rfnet.data.synthetic`): importing it here
# would load the module twice under that command (runpy warns), so it is loaded on first use.
_LAZY = {"make_synthetic_set": "rfnet.data.synthetic", "render_sample": "rfnet.data.synthetic"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNLABELLED",
    "ExampleError",
    "ImportReport",
    "Problem",
    "RF1MError",
    "RF1MIndex",
    "Sample",
    "canonical_product",
    "export_for_labelling",
    "holdout_split",
    "import_labels",
    "load_example",
    "make_synthetic_set",
    "read_rf1m",
    "render_sample",
    "set_identity",
    "shared_images",
    "split_samples",
    "to_ray_dataset",
]
