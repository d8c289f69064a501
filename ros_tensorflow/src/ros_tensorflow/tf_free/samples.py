"""Samples in, predictions out, as plain numpy: the checks every entry point shares, without TensorFlow.

Clients, dataset loaders and the ROS layer use these without loading TensorFlow.
"""

import math
import os

import numpy as np

from ros_tensorflow.tf_free.tasks import CLASSIFICATION, REGRESSION

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64 = np.dtype(np.float64)  # a native array's dtype is this very object: `is` is the cheapest check of it
FLOAT32 = np.dtype(np.float32)
MEMORY_BYTES = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
FEW_VALUES = 64  # an input of at most this many values is checked as Python numbers, cheaper there than numpy


_KIND_NAMES = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "times"}


def numeric_array(data, what):
    """data as an array; ValueError for strings, objects and the like, which numpy would otherwise parse."""
    array = np.asarray(data)
    if array.size and array.dtype.kind not in "biuf":
        found = _KIND_NAMES.get(array.dtype.kind, "non-numbers")
        raise ValueError(f"{what} must be numbers, got {found} (dtype {array.dtype})")
    return array


def shape_of(input_shape):
    """A sample's shape as a tuple: an int n (input_dim) means (n,)."""
    if isinstance(input_shape, (int, np.integer)):
        return (int(input_shape),)
    return tuple(int(size) for size in input_shape)


def describe_shape(shape):
    return f"input_dim {shape[0]}" if len(shape) == 1 else f"shape {list(shape)}"


def request_limit(max_request_samples, input_shape):
    """~max_request_samples, or for 0 as many samples as fill 1/4096 of this machine's memory in float64: what
    one request makes the node allocate (its answer, ~queue_size of them waiting) stays a small share of it."""
    return max_request_samples or _samples_filling(MEMORY_BYTES // 4096, input_shape)


def stored_samples_limit(max_stored_samples, input_shape):
    """~max_stored_samples, or for 0 as many samples as fill 1/8 of this machine's memory in float64: a goal on
    `recorded` loads them all, so a flood of samples fills neither the disk nor, at training, the memory."""
    return max_stored_samples or _samples_filling(MEMORY_BYTES // 8, input_shape)


def _samples_filling(size_bytes, input_shape):
    """How many samples of input_shape fill size_bytes as float64 (at least one)."""
    return max(1, size_bytes // (8 * math.prod(shape_of(input_shape))))


def as_samples(data, input_shape, max_samples=0, dtype=np.float64):
    """Flat (row-major) or (k, *input_shape) input as a (k, *input_shape) array of dtype (float64, or the model's
    float32: a stream converts once) with 1 <= k <= max_samples (0: any k); ValueError says what was expected.
    input_shape: an int (input_dim) or a shape.

    Values must be finite in float32, the model's dtype: 1e39 is finite in float64
    but Inf to the model, and would come back as NaN answers.
    """
    # a model's input_shape is a tuple of ints already: shape_of's conversion would run for every message of a
    # stream, whose latency is mostly such small costs (README: Benchmark)
    shape = input_shape if type(input_shape) is tuple else shape_of(input_shape)
    size = math.prod(shape)
    x = _few_values_array(data, dtype) if type(data) is tuple and len(data) <= FEW_VALUES else None
    checked = x is not None
    if not checked:
        x = data
        if type(x) is not np.ndarray or x.dtype is not FLOAT64:  # a numpy_msg's data is already one
            x = np.asarray(numeric_array(x, "input values"), dtype=np.float64)
    if x.ndim == 1:
        if x.size == 0 or x.size % size:
            raise ValueError(f"expected k * {size} values (k >= 1 samples of {describe_shape(shape)}), got {x.size}")
        flat, x = x, x.reshape(-1, *shape)
    elif x.shape[0] == 0 or x.shape[1:] != shape:
        raise ValueError(
            f"expected an array of shape (k, {', '.join(map(str, shape))}) with k >= 1, got shape {x.shape}"
        )
    else:
        flat = x.ravel()
    if max_samples and len(x) > max_samples:
        raise ValueError(f"{len(x)} samples in one request, more than ~max_request_samples allows ({max_samples})")
    if checked:
        return x
    if not in_float_range(flat):
        if not np.isfinite(x).all():
            raise ValueError("data contains NaN or Inf")
        raise ValueError(f"data contains values outside float32's range (|v| <= {FLOAT32_MAX:.4g}), the model's dtype")
    return x.astype(dtype, copy=False)


def as_float32(x):
    """x as float32, the model's dtype: a stream's samples are already (as_samples), and numpy's astype costs a
    message at 200 Hz 4 us even when it copies nothing."""
    return x if x.dtype is FLOAT32 else x.astype(np.float32)


def _few_values_array(values, dtype):
    """A plain message's few values (a tuple of floats: a stream's lone sample) as a 1-D array of dtype, checked
    as Python numbers: two numpy calls fewer than from numpy_msg's array (README: Benchmark). None unless they are
    numbers within float32's range: as_samples' general path then says what is wrong with them."""
    try:
        if _values_in_range(values, FLOAT32_MAX):
            return np.array(values, dtype)
    except (TypeError, ValueError):  # not flat numbers (samples as tuples, strings, None) or none at all
        pass
    return None


def in_float_range(flat, largest=FLOAT32_MAX):
    """Every value of a non-empty 1-D array finite within +-largest (float32's, or float16's: a value beyond it
    becomes Inf in the model). A stream's few values in plain Python: numpy's calls cost more there, and the node's
    latency is mostly such calls (README: Benchmark)."""
    if flat.size <= FEW_VALUES:
        return _values_in_range(flat.tolist(), largest)
    return np.abs(flat).max() <= largest  # NaN is the max of an array with one, and fails this too


def _values_in_range(values, largest):
    """A finite sum has no NaN or Inf; one that overflows is refused, rightly, since a value must then be beyond
    float32's range."""
    return math.isfinite(sum(values)) and -largest <= min(values) and max(values) <= largest


def as_labelled_samples(data, labels, input_shape, output_dim, max_samples=0):
    """(x, y) checked as a whole: ValueError says what is wrong, so nothing partial is used."""
    x = as_samples(data, input_shape, max_samples)
    y = numeric_array(labels, "labels")
    if y.shape != (len(x),):
        raise ValueError(f"expected labels of shape ({len(x)},), one per sample, got shape {y.shape}")
    if y.size and not np.all(y == np.round(y)):
        raise ValueError("labels must be integers")
    if np.any((y < 0) | (y >= output_dim)):
        raise ValueError(
            f"labels must be in [0, {output_dim}), got {sorted(set(y[(y < 0) | (y >= output_dim)].tolist()))}"
        )
    return x, y.astype(np.int64)


def as_target_samples(data, targets, input_shape, output_dim, max_samples=0, field="targets"):
    """(x, y) of a regression model, y of shape (k, output_dim) float64, checked as a whole: targets may come flat
    (k * output_dim, row-major, as in a message), or as (k,) for one output; ValueError names field."""
    x = as_samples(data, input_shape, max_samples)
    y = numeric_array(targets, field).astype(np.float64)
    if y.size != len(x) * output_dim or (y.ndim > 1 and y.shape != (len(x), output_dim)):
        raise ValueError(
            f"expected {field} of {len(x)} samples x {output_dim} outputs = {len(x) * output_dim} values, got"
            f" {y.size} (shape {list(y.shape)})"
        )
    if not np.isfinite(y).all() or np.abs(y).max() > FLOAT32_MAX:
        raise ValueError(f"{field} contain NaN, Inf or values outside float32's range")
    return x, y.reshape(len(x), output_dim)


def check_validation_split(n_samples, validation_split):
    """ValueError unless the split leaves samples both to train and to validate (as Keras splits them)."""
    if validation_split <= 0:
        return
    n_train = int(np.floor(n_samples * (1.0 - validation_split)))
    if n_train == 0 or n_train == n_samples:
        raise ValueError(
            f"validation_split {validation_split:g} of {n_samples} samples leaves {n_train} to train on and"
            f" {n_samples - n_train} to validate on: both need at least one"
        )


def check_output(output):
    """The model's output, unless a sample's is NaN or Inf (values that fit float32 but overflow inside the model):
    ValueError then, for the node never answers NaN."""
    if not np.isfinite(output).all():
        _refuse_non_finite(output.tolist())
    return output


def _refuse_non_finite(rows):
    bad = [i for i, row in enumerate(rows) if not math.isfinite(sum(row))]
    raise ValueError(f"the model's output is NaN or Inf for samples {bad}: their values overflow in float32")


NOT_A_CLASSIFIER = (
    "one output value per sample: a classifier needs one output per class, 2 or more (e.g. a softmax); for a"
    " regression model set ~task regression"
)


def probe_samples(input_shape):
    """What a model is tried on before it is served: zeros and values in [0, 1] (the range of image inputs)."""
    shape = shape_of(input_shape)
    return np.concatenate([np.zeros((1, *shape)), np.random.default_rng(0).random((3, *shape))]).astype(np.float32)


def probabilities_error(output):
    """Why a classifier's output rows are not class probabilities (a model without its softmax: logits), or None.
    The tolerance allows for an int8 softmax's dequantized steps (1/256 each)."""
    output = np.asarray(output, np.float64)
    tolerance = 0.01 + output.shape[1] / 512
    sums = output.sum(axis=1)
    if output.min() >= -tolerance and output.max() <= 1 + tolerance and np.abs(sums - 1).max() <= tolerance:
        return None
    return (
        f"its outputs are not class probabilities (values from {output.min():.3g} to {output.max():.3g}, rows"
        f" summing to {sums.min():.3g} to {sums.max():.3g}): a model without its softmax (logits). The node serves"
        " classifiers whose outputs are probabilities: end the model with a softmax (keras.layers.Softmax()) and"
        " export it again; for a regression model set ~task regression"
    )


def classify(output):
    """Per-sample class (argmax) and its output value, for an output of shape (k, output_dim)."""
    classes = np.argmax(output, axis=1)
    return classes, output[np.arange(len(output)), classes]


def output_rows(task, output):
    """prediction_rows of a classifier's output; of a regression model's, (-1, NaN, values) per sample: no class."""
    if task != REGRESSION:
        return prediction_rows(output)
    rows = output.tolist()
    for row in rows:
        if not math.isfinite(sum(row)):
            _refuse_non_finite(rows)
    return [(-1, math.nan, row) for row in rows]


def prediction_rows(output):
    """(class, confidence, output row) per sample, as plain Python values; ValueError as check_output's.

    Plain Python on the rows: for the few samples of a stream message or a service call, each
    numpy call costs more than classifying in Python (measured: 2.6 against 0.6 us for one sample).
    Ties go to the first class, as with numpy's argmax. A row's sum in float64 is finite exactly when each of its
    float32 values is.
    """
    rows = []
    for row in output.tolist():
        if not math.isfinite(sum(row)):
            _refuse_non_finite(output.tolist())
        best = max(row)
        rows.append((row.index(best), best, row))
    return rows


def task_of_output(task, output_dim, output):
    """The task of a model whose own is task ('': it does not say) from its probe output: a classifier's must be
    probabilities; a model that does not say is a classifier if its outputs are; ValueError says why not."""
    if task == REGRESSION:
        return REGRESSION
    not_probabilities = NOT_A_CLASSIFIER if output_dim < 2 else probabilities_error(output)
    if not_probabilities:
        raise ValueError(not_probabilities)
    return CLASSIFICATION
