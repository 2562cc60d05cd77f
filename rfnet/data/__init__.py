"""RFNet's data: labelled samples, the RF1M reader, Ray loading, feedback.

Light to import (numpy, PIL, OpenCV, pyarrow); Ray is imported only by :func:`to_ray_dataset`.
See docs/data.md for the accepted RF1M layout, the tolerance rules and the labelling loop. The
labelled scene sets (``synthetic``, ``alt``, ``studio``, ``lifestyle``) are painted by
:mod:`rfnet.data.scenes`.
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
    "read_rf1m",
    "set_identity",
    "shared_images",
    "split_samples",
    "to_ray_dataset",
]
