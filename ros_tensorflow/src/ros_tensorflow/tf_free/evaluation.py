"""How good a model is on a labelled dataset: loss, accuracy, per-class precision, recall, F1 and the confusion
matrix (scikit-learn's metrics), and the report written beside it. No ROS, no TensorFlow: `predict` is given."""

import dataclasses
import json
import math
import os

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

from ros_tensorflow.tf_free.files import write_file
from ros_tensorflow.tf_free.plots import confusion_figure, png_and_rgb

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


def evaluate(predict, x, y, class_names, version=0, should_stop=lambda: False, on_progress=lambda done, total: None):
    """The Evaluation of predict (x -> class probabilities, shape (k, classes)) on samples x with labels y;
    None once should_stop() is true (asked before each chunk)."""
    outputs = []
    for start in range(0, len(x), CHUNK):
        if should_stop():
            return None
        outputs.append(np.asarray(predict(x[start : start + CHUNK]), np.float64))
        on_progress(min(start + CHUNK, len(x)), len(x))
    probabilities = np.concatenate(outputs)
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


def class_names_for(names, output_dim):
    """One name per class: the model's or ~class_names where given, else 'class <i>'."""
    return [names[i] if i < len(names) and names[i] else f"class {i}" for i in range(output_dim)]


def write_report(evaluation, report_dir, dataset):
    """report.json and confusion.png into report_dir, each written atomically; returns the picture as an RGB
    array (for a sensor_msgs/Image)."""
    report = {"dataset": dataset, **dataclasses.asdict(evaluation)}
    report = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in report.items()}
    model = f"version {evaluation.version}" if evaluation.version else "a model that is no version yet"
    title = f"{model} on {dataset!r}: accuracy {evaluation.accuracy:.4f}"
    png, rgb = png_and_rgb(confusion_figure(evaluation.confusion, evaluation.class_names, title))
    write_file(os.path.join(report_dir, "confusion.png"), png)
    write_file(os.path.join(report_dir, "report.json"), json.dumps(report, indent=1).encode())
    return rgb
