"""Labelled scene sets: procedural advertising images of the six RFNet classes, in the RF1M layout.

Each *family* paints its own scenes, products and defects around a product pasted unchanged, and
every sample is a pure function of ``(seed, label, index)`` (a set is reproducible per seed, and
growing ``n_per_class`` keeps the earlier samples). :data:`SETS` names them:

- ``synthetic`` (:mod:`~rfnet.data.scenes.synthetic`): walls over floors or table tops; the set
  the shipped ``builtin:small`` weights were trained on. Takes real cut-outs (``products_dir``).
- ``alt`` (:mod:`~rfnet.data.scenes.alt`): a second generator, written independently, in another
  style.
- ``studio`` (:mod:`~rfnet.data.scenes.studio`): studio photography in perspective (tables,
  podiums, shelves, floors), written from the class definitions alone. Takes real cut-outs.
- ``lifestyle`` (:mod:`~rfnet.data.scenes.lifestyle`): kitchens, bathrooms, desks, outdoor and
  cafe scenes through a pinhole camera, written the same way.
- ``toy`` (:mod:`~rfnet.data.scenes.toy`): rooms painted around a product laid out exactly as the
  generation pipeline lays it out, with the prompt that describes each scene; the ``toy``
  generator is trained on them (docs/toy.md).

Use::

    from rfnet.data.scenes import SETS, make_set, render_sample

    make_set("studio", "out/studio", n_per_class=100, image_size=128, seed=7)
    sample = render_sample("lifestyle", label=2, index=0, image_size=128, seed=7)
    sample.image, sample.product, sample.caption, sample.scene  # one Painted sample

    python -m rfnet.data.scenes --set studio --out out/studio --n-per-class 100 --seed 7

A set holds ``images/<name>.png``, ``products/<name>.png`` (the RGBA product file), ``captions.jsonl``,
``label.txt`` and the family's meta file (docs/data.md). :func:`draw_product` is the ``synthetic``
family's product drawer, which the sample catalog and RFFT's procedural products use too.

Adding a family (the extension point)
-------------------------------------
1. Write a module here with a subclass of :class:`~rfnet.data.scenes.painter.Painter` whose
   ``paint(label, index)`` draws sample ``index`` of class ``label`` (0-5, ``pipelines.labels``
   order) from a generator seeded with ``(self.seed, label, index, <a salt of the family>)`` and
   returns a :class:`~rfnet.data.scenes.painter.Painted`: the file name, the image, the product
   file, the caption, the label, and ``scene``, a JSON-serialisable dict of the scene's parameters
   (surface, colours, objects, the defect's variant...; for scenes made from a text prompt, the
   values the prompt set). Describing the scene costs no pixels:
   record the values the painter drew, never draw extra random numbers for the description, so
   the image does not depend on what is recorded. The writer puts ``scene`` in the meta file
   (``meta.jsonl`` unless the class says otherwise), one record per image after ``image`` and
   ``label``.
2. Set the class attributes where the defaults do not fit: ``meta_file``, ``meta_labels``,
   ``png_params``, ``takes_products`` (and load the cut-outs with :func:`load_product_pool`).
3. Name the set (the class attribute ``name``) and add the class to :data:`SETS` below:
   :func:`make_set`, :func:`render_sample`, the command line, ``bench.rfnet_quality --sets`` and
   ``rfnet.pretrain --generator`` then know it.

Shared helpers: :mod:`~rfnet.data.scenes.drawing` (alpha compositing), :mod:`~rfnet.data.scenes.products`
(drawn and real products). Families keep their own textures, shadows and resampling: each set must
stay byte for byte what its quality figures were measured on (``tests/rfnet/test_scenes.py`` pins
a digest of a small set of each).
"""

from __future__ import annotations

from pipelines.labels import NUM_CLASSES
from rfnet.data.scenes.alt import AltPainter
from rfnet.data.scenes.lifestyle import LifestylePainter
from rfnet.data.scenes.painter import IMAGE_FORMATS, Painted, Painter, write_set
from rfnet.data.scenes.products import Product, draw_product, load_product_pool
from rfnet.data.scenes.studio import StudioPainter
from rfnet.data.scenes.synthetic import SyntheticPainter
from rfnet.data.scenes.toy import ToyPainter

#: set name -> the family's painter
SETS: dict[str, type[Painter]] = {
    painter.name: painter
    for painter in (SyntheticPainter, AltPainter, StudioPainter, LifestylePainter, ToyPainter)
}
MIN_IMAGE_SIZE = 32  # defects are not drawable smaller


def make_painter(name: str, *, image_size: int, seed: int, products_dir: str | None = None) -> Painter:
    """The painter of set ``name`` for one image size, seed and (for families that take them) folder
    of real RGBA cut-outs; its ``paint(label, index)`` draws one sample."""
    if name not in SETS:
        raise ValueError(f"unknown scene set {name!r}; choose from {', '.join(SETS)}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be >= {MIN_IMAGE_SIZE} pixels (defects are not drawable smaller), got {image_size!r}"
        )
    return SETS[name](image_size=image_size, seed=seed, products_dir=products_dir)


def make_set(
    name: str,
    out: str,
    *,
    n_per_class: int,
    image_size: int,
    seed: int,
    products_dir: str | None = None,
    image_format: str = "png",
) -> str:
    """Write set ``name`` with ``n_per_class`` images of each class to ``out`` (a local directory or
    an ``s3://`` prefix) in the RF1M layout; returns ``out`` (absolute, for a local directory).

    ``products_dir``: a folder of real RGBA cut-outs to paint around instead of drawn products
    (``synthetic`` and ``studio`` only). ``image_format``: ``"png"`` (lossless, the default) or
    ``"jpg"`` (smaller; products stay PNG, matched by stem).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format must be one of {', '.join(map(repr, IMAGE_FORMATS))}, got {image_format!r}"
        )
    paint = make_painter(name, image_size=image_size, seed=seed, products_dir=products_dir)
    return write_set(paint, out, n_per_class=n_per_class, image_format=image_format)


def render_sample(
    name: str, label: int, index: int, *, image_size: int, seed: int, products_dir: str | None = None
) -> Painted:
    """Sample ``index`` of class ``label`` (0-5) of set ``name``, as :func:`make_set` writes it with
    the same ``image_size``, ``seed`` and ``products_dir``: a pure function of its arguments."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be a class index 0-{NUM_CLASSES - 1}, got {label!r}")
    return make_painter(name, image_size=image_size, seed=seed, products_dir=products_dir).paint(label, index)


__all__ = [
    "SETS",
    "Painted",
    "Painter",
    "Product",
    "draw_product",
    "load_product_pool",
    "make_painter",
    "make_set",
    "render_sample",
]
