"""The scores against values worked out by hand."""

import math

import numpy as np
import pytest

from pimc_ray.evaluation.metrics import (
    class_accuracy,
    class_iou,
    confusion_matrix,
    mean_iou,
    overall_accuracy,
    rmse_per_channel,
)

# 3 classes; truth and predictions of 8 samples:
#   true 0: predicted 0, 0, 1      true 1: predicted 1, 1, 2      true 2: predicted 2, 0
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 2, 0])


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]


def test_accuracy_iou_and_mean_iou_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert overall_accuracy(cm) == pytest.approx(5 / 8)
    # class 0: TP 2, FP 1 (a 2 predicted 0), FN 1 -> 2/4; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2: TP 1, FP 1, FN 1
    assert class_iou(cm).tolist() == pytest.approx([0.5, 0.5, 1 / 3])
    assert mean_iou(cm) == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert class_accuracy(cm).tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2])


def test_absent_classes_are_left_out_of_the_mean_iou():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 4)  # classes 2 and 3 never occur
    iou = class_iou(cm)
    assert iou[:2].tolist() == pytest.approx([0.5, 0.5]) and np.isnan(iou[2:]).all()
    assert mean_iou(cm) == pytest.approx(0.5)
    assert math.isnan(class_accuracy(cm)[3])


def test_rmse_is_per_channel_over_pixels_and_steps():
    target = np.zeros((2, 3, 2))
    prediction = np.zeros((2, 3, 2))
    prediction[:, 0] = 1.0  # channel 0 off by 1 everywhere
    prediction[0, 1, 0] = 2.0  # channel 1 off by 2 at one of four values: sqrt(4 / 4) = 1
    prediction[:, 2] = [[3.0, -3.0], [0.0, 0.0]]  # channel 2: sqrt((9 + 9) / 4)
    assert rmse_per_channel(prediction, target).tolist() == pytest.approx([1.0, 1.0, math.sqrt(4.5)])


def test_ids_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
