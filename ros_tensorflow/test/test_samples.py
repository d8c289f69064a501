"""Input checks and classification (ros_tensorflow.tf_free.samples), without TensorFlow or ROS."""

import re
import subprocess
import sys

import numpy as np
import pytest

from ros_tensorflow.tf_free.samples import (
    MEMORY_BYTES,
    as_labelled_samples,
    as_samples,
    check_validation_split,
    prediction_rows,
    request_limit,
)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "expected k * 10 values"),
        ([1.0] * 7, "got 7"),
        ([1.0] * 15, "got 15"),
        ([0.0] * 9 + [float("nan")], "NaN or Inf"),
        ([0.0] * 9 + [float("inf")], "NaN or Inf"),
        (np.zeros((2, 3)), "shape (k, 10)"),
        (np.zeros((0, 10)), "shape (k, 10)"),
        ([1e39] + [0.0] * 9, "outside float32's range"),
        ([1e308] * 3 + [0.0] * 7, "outside float32's range"),
        ([0.0] * 9 + [-1e39], "outside float32's range"),
        ([float("inf"), float("-inf")] + [0.0] * 8, "NaN or Inf"),
        ([0.0] * 99 + [float("nan")], "NaN or Inf"),  # over 64 values: checked by numpy
        ([0.0] * 99 + [-1e39], "outside float32's range"),
        (["1.0"] * 10, "input values must be numbers, got strings"),
        # a plain message's values come as a tuple, checked as Python numbers: the same refusals
        ((), "expected k * 10 values"),
        ((1.0,) * 7, "got 7"),
        ((0.0,) * 9 + (float("nan"),), "NaN or Inf"),
        ((float("-inf"),) + (0.0,) * 9, "NaN or Inf"),
        ((1e39,) + (0.0,) * 9, "outside float32's range"),
        ((0.0,) * 9 + (-1e39,), "outside float32's range"),
        (("1.0",) * 10, "input values must be numbers, got strings"),
        ((None,) * 10, "input values must be numbers, got Python objects"),
    ],
)
def test_bad_input_raises_value_error_saying_what_was_expected(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        as_samples(data, 10)


@pytest.mark.parametrize(
    "data, labels, reason",
    [
        ([0.5] * 20, [0], r"expected labels of shape \(2,\), one per sample, got shape \(1,\)"),
        ([0.5] * 20, [[0], [1]], r"expected labels of shape \(2,\), one per sample, got shape \(2, 1\)"),
        ([0.5] * 20, ["0", "1"], "labels must be numbers, got strings"),
        (["0.5"] * 10, [0], "input values must be numbers, got strings"),
        ([1e39] + [0.5] * 9, [0], "outside float32's range"),
        ([0.5] * 20, [0, 2], r"labels must be in \[0, 2\), got \[2\]"),
        ([0.5] * 20, [-1, 1], "got \\[-1\\]"),
        ([0.5] * 19 + [float("nan")], [0, 1], "NaN or Inf"),
        ([0.5] * 15, [0, 1], "got 15"),
        ([0.5] * 10, [0.5], "integers"),
    ],
)
def test_bad_labelled_samples_are_rejected_whole(data, labels, reason):
    with pytest.raises(ValueError, match=reason):
        as_labelled_samples(data, labels, 10, 2)


def test_prediction_rows_give_each_sample_its_class_confidence_and_output_as_plain_python():
    output = np.array([[0.25, 0.75], [0.5, 0.125], [0.0, 1.0]], dtype=np.float32)
    rows = prediction_rows(output)
    assert rows == [(1, 0.75, [0.25, 0.75]), (0, 0.5, [0.5, 0.125]), (1, 1.0, [0.0, 1.0])]
    assert {type(row[0]) for row in rows} == {int} and {type(row[1]) for row in rows} == {float}


@pytest.mark.parametrize(
    "n_samples, split, message",
    [
        (1000, 0.9995, "validation_split 0.9995 of 1000 samples leaves 0 to train on and 1000 to validate on"),
        (1, 0.5, "leaves 0 to train on and 1 to validate on"),
        (100, 1e-17, "leaves 100 to train on and 0 to validate on"),
    ],
)
def test_a_validation_split_must_leave_samples_to_train_and_to_validate(n_samples, split, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_validation_split(n_samples, split)


def test_validation_splits_that_leave_one_sample_on_either_side_are_accepted():
    for n_samples, split in ((10, 0.01), (10, 0.85), (1000, 0.999), (1000, 0.2)):
        check_validation_split(n_samples, split)


def test_the_checks_and_the_datasets_load_without_tensorflow():
    # What nodes/train_and_predict.py imports: it makes five samples, it should not pay for TensorFlow.
    code = (
        "import sys, ros_tensorflow.tf_free.datasets, ros_tensorflow.tf_free.samples, ros_tensorflow.tf_free.settings;"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_samples_of_any_shape_come_flat_row_major_or_shaped():
    flat = np.arange(2 * 4 * 3 * 1, dtype=np.float64)
    x = as_samples(flat, (4, 3, 1))
    assert x.shape == (2, 4, 3, 1) and x[1, 0, 2, 0] == 12 + 2
    np.testing.assert_array_equal(as_samples(x, [4, 3, 1]), x)
    with pytest.raises(ValueError, match=r"expected k \* 12 values \(k >= 1 samples of shape \[4, 3, 1\]\), got 13"):
        as_samples(np.arange(13.0), (4, 3, 1))
    with pytest.raises(
        ValueError, match=r"expected an array of shape \(k, 4, 3, 1\) with k >= 1, got shape \(2, 3, 4, 1\)"
    ):
        as_samples(x.reshape(2, 3, 4, 1), (4, 3, 1))


def test_a_plain_messages_tuple_comes_as_the_dtype_asked_for_and_samples_may_come_as_tuples():
    values = tuple(float(v) for v in range(20))
    x = as_samples(values, 10, dtype=np.float32)
    assert x.dtype == np.float32 and x.shape == (2, 10) and x[1, 3] == 13
    assert as_samples(values, 10).dtype == np.float64, "float64 unless asked"
    assert as_samples(np.arange(20.0), 10, dtype=np.float32).dtype == np.float32, "numpy_msg's array likewise"
    nested = as_samples((values[:10], values[10:]), 10)  # not flat numbers: the general path takes them
    np.testing.assert_array_equal(nested, x)
    np.testing.assert_array_equal(as_samples((True, False) * 5, 10), [[1, 0] * 5])
    with pytest.raises(ValueError, match=r"3 samples in one request, more than ~max_request_samples allows \(2\)"):
        as_samples(values + values[:10], 10, max_samples=2)


def test_a_request_above_the_limit_is_refused_and_the_default_limit_follows_memory_and_sample_size():
    with pytest.raises(ValueError, match=r"5 samples in one request, more than ~max_request_samples allows \(4\)"):
        as_samples(np.zeros(50), 10, max_samples=4)
    assert as_samples(np.zeros(40), 10, max_samples=4).shape == (4, 10)
    assert request_limit(7, [96, 96, 3]) == 7
    assert request_limit(0, 10) == MEMORY_BYTES // 4096 // 80
    assert request_limit(0, [96, 96, 3]) == MEMORY_BYTES // 4096 // (8 * 96 * 96 * 3)
    assert request_limit(0, [10**9]) == 1, "never below one sample"
