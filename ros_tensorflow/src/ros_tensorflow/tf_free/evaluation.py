"""How good a model is on a dataset: a classifier's loss, accuracy, per-class precision, recall, F1 and confusion
matrix, a regression model's MAE, RMSE and R2 per output (scikit-learn's metrics), and the report written beside it.
No ROS, no TensorFlow: `predict` is given."""

import dataclasses
import json
import math
import os

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
)

from ros_tensorflow.tf_free.files import write_file
from ros_tensorflow.tf_free.plots import confusion_figure, png_and_rgb, predicted_vs_true_figure

CHUNK = 256  # samples per model call: a cancel or a progress report waits for at most one


@dataclasses.dataclass
class Evaluation:
    samples: int
    loss: float
    accuracy: float
    class_names: list
    precision: list
    recall: list
    f1: list
    support: list
    confusion: list  # n lists of n counts; rows the true class
    version: int = 0


@dataclasses.dataclass
class RegressionEvaluation:
    samples: int
    loss: float  # mean squared error
    mae: float  # over all outputs
    rmse: float
    r2: float  # averaged over the outputs
    output_mae: list  # per output
    output_r2: list
    version: int = 0
    predicted: list = dataclasses.field(default_factory=list, repr=False)  # for the picture, not the report
    true: list = dataclasses.field(default_factory=list, repr=False)


def _predictions(predict, x, should_stop, on_progress):
    """predict(x) in CHUNKs, float64; None once should_stop() is true (asked before each chunk)."""
    outputs = []
    for start in range(0, len(x), CHUNK):
        if should_stop():
            return None
        outputs.append(np.asarray(predict(x[start : start + CHUNK]), np.float64))
        on_progress(min(start + CHUNK, len(x)), len(x))
    return np.concatenate(outputs)


def evaluate(predict, x, y, class_names, version=0, should_stop=lambda: False, on_progress=lambda done, total: None):
    """The Evaluation of predict (x -> class probabilities, shape (k, classes)) on samples x with labels y;
    None once should_stop() is true (asked before each chunk)."""
    probabilities = _predictions(predict, x, should_stop, on_progress)
    if probabilities is None:
        return None
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 +- 1e-7
    labels = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0.0)
    return Evaluation(
        samples=len(x),
        loss=float(log_loss(y, probabilities, labels=labels)),
        accuracy=float(accuracy_score(y, predicted)),
        class_names=list(class_names),
        precision=[float(value) for value in precision],
        recall=[float(value) for value in recall],
        f1=[float(value) for value in f1],
        support=[int(count) for count in support],  # scikit-learn gives floats where no prediction is right
        confusion=confusion_matrix(y, predicted, labels=labels).astype(int).tolist(),
        version=version,
    )


def evaluate_regression(predict, x, y, version=0, should_stop=lambda: False, on_progress=lambda done, total: None):
    """The RegressionEvaluation of predict (x -> values, shape (k, outputs)) on samples x with targets y (k,
    outputs); None once should_stop() is true."""
    predicted = _predictions(predict, x, should_stop, on_progress)
    if predicted is None:
        return None
    y = np.asarray(y, np.float64).reshape(predicted.shape)
    single = len(y) < 2  # R2 is undefined for one sample
    output_r2 = [math.nan] * y.shape[1] if single else r2_score(y, predicted, multioutput="raw_values").tolist()
    return RegressionEvaluation(
        samples=len(x),
        loss=float(mean_squared_error(y, predicted)),
        mae=float(mean_absolute_error(y, predicted)),
        rmse=float(np.sqrt(mean_squared_error(y, predicted))),
        r2=float(np.mean(output_r2)),
        output_mae=mean_absolute_error(y, predicted, multioutput="raw_values").tolist(),
        output_r2=[float(value) for value in output_r2],
        version=version,
        predicted=predicted,
        true=y,
    )


def class_names_for(names, output_dim):
    """One name per class: the model's or ~class_names where given, else 'class <i>'."""
    return [names[i] if i < len(names) and names[i] else f"class {i}" for i in range(output_dim)]


def _no_nan(value):
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_report(evaluation, report_dir, dataset):
    """report.json and the picture (confusion.png of a classifier, predicted_vs_true.png of a regression model)
    into report_dir, each written atomically; returns the picture as an RGB array (for a sensor_msgs/Image)."""
    fields = {field.name: getattr(evaluation, field.name) for field in dataclasses.fields(evaluation) if field.repr}
    report = {k: _no_nan(v) for k, v in {"dataset": dataset, **fields}.items()}
    model = f"version {evaluation.version}" if evaluation.version else "a model that is no version yet"
    if isinstance(evaluation, RegressionEvaluation):
        title = f"{model} on {dataset!r}: MAE {evaluation.mae:.4g}, R2 {evaluation.r2:.3f}"
        figure = predicted_vs_true_figure(evaluation.predicted, evaluation.true, evaluation.output_mae, title)
        picture = "predicted_vs_true.png"
    else:
        title = f"{model} on {dataset!r}: accuracy {evaluation.accuracy:.4f}"
        figure, picture = confusion_figure(evaluation.confusion, evaluation.class_names, title), "confusion.png"
    png, rgb = png_and_rgb(figure)
    write_file(os.path.join(report_dir, picture), png)
    write_file(os.path.join(report_dir, "report.json"), json.dumps(report, indent=1).encode())
    return rgb
