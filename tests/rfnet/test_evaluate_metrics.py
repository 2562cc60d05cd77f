"""The metric functions of rfnet.metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rfnet import metrics


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_confusion_matrix_rejects_out_of_range_and_floats():
    with pytest.raises(ValueError, match="class indices"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        metrics.confusion_matrix([0.0, 1.0], [0, 1], 3)


def test_per_class_precision_recall_f1_by_hand():
    # true:  A A A B B C ; pred: A A B B C C
    cm = metrics.confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    m = metrics.per_class_metrics(cm)
    # A: tp 2, predicted 2, support 3 -> P 1, R 2/3, F1 0.8
    # B: tp 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    # C: tp 1, predicted 2, support 1 -> P 1/2, R 1, F1 2/3
    np.testing.assert_allclose(m.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(m.recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(m.f1, [0.8, 0.5, 2 / 3])
    assert m.support.tolist() == [3, 2, 1]
    assert metrics.macro_f1(cm) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_ignores_classes_neither_present_nor_predicted_and_never_nan():
    cm = metrics.confusion_matrix([0, 1], [0, 1], 6)
    assert metrics.macro_f1(cm) == 1.0
    # A class predicted but absent counts (with F1 0): predicting junk must cost.
    cm = metrics.confusion_matrix([0, 0], [0, 5], 6)
    assert metrics.macro_f1(cm) == pytest.approx((2 / 3 + 0.0) / 2)
    assert metrics.macro_f1(np.zeros((6, 6), int)) == 0.0


def test_binary_prf_by_hand_and_zero_division():
    p, r, f = metrics.binary_prf([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (p, r) == pytest.approx((2 / 3, 2 / 3))
    assert f == pytest.approx(2 / 3)
    assert metrics.binary_prf([0, 0], [0, 0]) == (0.0, 0.0, 0.0)


def test_average_precision_matches_hand_computation():
    # Ranked: 0.9(+) 0.8(-) 0.7(+) 0.1(-): recall steps 1/2 at P=1, 1 at P=2/3.
    ap = metrics.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0])
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert metrics.average_precision([0.3, 0.2], [1, 1]) == pytest.approx(1.0)
    assert metrics.average_precision([0.3, 0.2], [0, 0]) == 0.0


def test_average_precision_treats_ties_together():
    # All scores equal: one threshold, precision = prevalence, AP = prevalence.
    assert metrics.average_precision([0.5] * 4, [1, 0, 0, 0]) == pytest.approx(0.25)


def test_choose_threshold_picks_lowest_reaching_target():
    scores = [0.95, 0.9, 0.8, 0.7, 0.6, 0.4]
    positive = [1, 1, 0, 1, 0, 1]
    # precision at t=0.95:1, 0.9:1, 0.8:2/3, 0.7:3/4, 0.6:3/5, 0.4:4/6
    c = metrics.choose_threshold(scores, positive, 0.75)
    assert c.reached and c.threshold == pytest.approx(0.7)
    assert (c.precision, c.recall) == pytest.approx((0.75, 0.75))
    assert c.accept_rate == pytest.approx(4 / 6)
    c = metrics.choose_threshold(scores, positive, 0.6)
    assert c.threshold == pytest.approx(0.4)


def test_choose_threshold_reports_unreachable_target():
    c = metrics.choose_threshold([0.9, 0.8], [0, 1], 0.99)
    assert not c.reached and c.threshold is None
    assert c.precision == pytest.approx(0.5)  # the most precise rule: accept both
    with pytest.raises(ValueError, match="target_precision"):
        metrics.choose_threshold([0.5], [1], 0.0)
