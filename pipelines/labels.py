"""The six classes an inspector sorts generated images into, in the order of the RF1M integer labels.

They are part of the output contract (the attempts table's ``prob_<label>`` columns), so they live
with the platform; RFNet, its data readers and the reports all take them from here.

Index ``i`` (0-5) is RF1M label ``i + 1``: 1 Available, 2 Unsuitable, 3 Space Mismatch, 4 Size
Mismatch, 5 Indistinctiveness, 6 Shape Hallucination. ``LABELS`` holds the machine names used in
tables and column names (``prob_<label>``); ``DISPLAY_NAMES`` the names people read.

:func:`parse_label` is the one place that turns what a file or a person wrote into an index, so the
RF1M reader, the labelling import and the evaluation all accept the same spellings.
"""

from __future__ import annotations

import numbers
import re

LABELS: tuple[str, ...] = (
    "available",
    "unsuitable",
    "space_mismatch",
    "size_mismatch",
    "indistinctiveness",
    "shape_hallucination",
)
DISPLAY_NAMES: tuple[str, ...] = (
    "Available",
    "Unsuitable",
    "Space Mismatch",
    "Size Mismatch",
    "Indistinctiveness",
    "Shape Hallucination",
)
NUM_CLASSES = len(LABELS)
AVAILABLE = LABELS.index("available")

# Spelling-insensitive key: lower case, spaces / underscores / hyphens removed.
_SEPARATORS = re.compile(r"[\s_\-]+")
_BY_KEY = {_SEPARATORS.sub("", name.lower()): i for i, name in enumerate(LABELS)}


def _key(text: str) -> str:
    return _SEPARATORS.sub("", text.strip().lower())


def parse_label(value: object) -> int:
    """Index 0-5 of a class given as an RF1M integer (1-6, as ``int`` or text) or a class name.

    Names are matched ignoring case, spaces, underscores and hyphens, so ``"Space Mismatch"``,
    ``"space_mismatch"``, ``"SPACE-MISMATCH"`` and ``"spacemismatch"`` all give 2. Integers are the
    RF1M numbering (1-based): ``parse_label(1) == parse_label("1") == 0``. Anything else (0, 7, a
    float, a bool, an unknown name) raises ``ValueError`` naming the value and what is accepted;
    nothing is guessed.
    """
    if isinstance(value, bool):
        raise ValueError(_message(value))
    if isinstance(value, numbers.Integral):
        number = int(value)
        if 1 <= number <= NUM_CLASSES:
            return number - 1
        raise ValueError(_message(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            number = int(text)
            if 1 <= number <= NUM_CLASSES:
                return number - 1
            raise ValueError(_message(value))
        index = _BY_KEY.get(_key(text))
        if index is not None:
            return index
    raise ValueError(_message(value))


def label_name(index: int) -> str:
    """Machine name of class ``index`` (0-5); ``ValueError`` for anything else."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < NUM_CLASSES:
        raise ValueError(f"class index must be an integer 0-{NUM_CLASSES - 1}, got {index!r}")
    return LABELS[int(index)]


def _message(value: object) -> str:
    numbered = ", ".join(f"{i + 1} {name}" for i, name in enumerate(DISPLAY_NAMES))
    return (
        f"unknown label {value!r}: use an RF1M number 1-{NUM_CLASSES} ({numbered}) "
        "or a class name (case, spaces, underscores and hyphens are ignored)"
    )
