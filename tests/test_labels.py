"""The label vocabulary every reader and writer shares."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.labels import AVAILABLE, DISPLAY_NAMES, LABELS, label_name, parse_label


def test_rf1m_numbers_map_to_indices_in_label_order():
    assert [parse_label(n) for n in range(1, 7)] == list(range(6))
    assert [parse_label(str(n)) for n in range(1, 7)] == list(range(6))
    assert parse_label(np.int64(3)) == 2
    assert parse_label(" 6 ") == 5
    assert LABELS[AVAILABLE] == "available"


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("available", 0),
        ("Available", 0),
        ("UNSUITABLE", 1),
        ("Space Mismatch", 2),
        ("space_mismatch", 2),
        ("space-mismatch", 2),
        ("SpaceMismatch", 2),
        ("size  mismatch", 3),
        ("Indistinctiveness", 4),
        (" shape_Hallucination\t", 5),
    ],
)
def test_names_are_spelling_insensitive(text, index):
    assert parse_label(text) == index


def test_display_names_and_machine_names_round_trip():
    for i, (name, display) in enumerate(zip(LABELS, DISPLAY_NAMES, strict=True)):
        assert parse_label(name) == parse_label(display) == i
        assert label_name(i) == name


@pytest.mark.parametrize(
    "bad", [0, 7, -1, "0", "7", "1.0", 1.0, True, None, "", "avail", "mismatch", "label"]
)
def test_anything_else_is_rejected_naming_the_value(bad):
    with pytest.raises(ValueError, match="unknown label") as info:
        parse_label(bad)
    assert repr(bad) in str(info.value)


def test_label_name_rejects_out_of_range():
    with pytest.raises(ValueError, match="0-5"):
        label_name(6)
