"""RFNet's data: labelled samples, the RF1M reader, a synthetic defect set, Ray loading, feedback.

Light to import (numpy, PIL, OpenCV, pyarrow); Ray is imported only by :func:`to_ray_dataset`.
See docs/data.md for the accepted RF1M layout, the tolerance rules and the labelling loop.
"""

from rfnet.data.feedback import ImportReport, export_for_labelling, import_labels
from rfnet.data.ray_loading import to_ray_dataset
from rfnet.data.rf1m import Problem, RF1MError, RF1MIndex, read_rf1m
from rfnet.data.samples import UNLABELLED, ExampleError, Sample, load_example, split_samples
from rfnet.data.synthetic import make_synthetic_set, render_sample
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
    "import_labels",
    "load_example",
    "make_synthetic_set",
    "read_rf1m",
    "render_sample",
    "split_samples",
    "to_ray_dataset",
]
