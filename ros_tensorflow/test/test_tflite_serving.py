"""The serving node's model holder, without a master: .tflite files, models arriving as messages, refusals."""

import hashlib
import json
import types

import keras
import numpy as np
import pytest

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, TfliteKeeper
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import build_classifier

PROBE = make_synthetic(n_samples=4, seed=8)[0]


def _two_outputs():
    inputs = keras.Input((10,))
    return keras.Model(inputs, [keras.layers.Dense(2, activation="softmax")(inputs), keras.layers.Dense(3)(inputs)])


NOT_CLASSIFIERS = {  # models the serving node must judge as the training node does: refused, not served as classes
    "two outputs": _two_outputs,
    "regression": lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)]),
    "sigmoid": lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation="sigmoid")]),
    "logits": lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)]),
}


def message(flatbuffer, version=1, input_shape=(10,), output_dim=2, sha256=None, class_names=(), task=""):
    """What a ros_tensorflow_msgs/Model carries."""
    return types.SimpleNamespace(
        version=version,
        source="/trainer",
        format="tflite",
        data=flatbuffer,
        sha256=sha256 or hashlib.sha256(flatbuffer).hexdigest(),
        input_shape=list(input_shape),
        output_dim=output_dim,
        class_names=list(class_names),
        loss=0.1,
        acc=0.9,
        val_loss=float("nan"),
        val_acc=float("nan"),
        signature="",
        key_id="",
        sequence=0,
        task=task,
    )


def test_no_file_is_no_model_and_says_why(tmp_path):
    keeper = TfliteKeeper(tmp_path / "model.tflite")
    assert keeper.model is None and keeper.load_error == f"no model at {tmp_path / 'model.tflite'}"
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    assert "cannot serve the model" in TfliteKeeper(tmp_path / "bad.tflite").load_error


def test_an_accepted_model_is_served_and_saved_and_a_restart_serves_it(tmp_path):
    model = build_classifier()
    keeper = TfliteKeeper(tmp_path / "model.tflite")
    served = keeper.accept(message(to_tflite(model), version=4, class_names=["cup", "ball"]))
    assert keeper.model is served and keeper.load_error is None
    np.testing.assert_allclose(served.predict_samples(PROBE), model.predict(PROBE, verbose=0), atol=1e-5)
    restarted = TfliteKeeper(tmp_path / "model.tflite")
    assert (restarted.model.version, restarted.model.source, restarted.model.class_names) == (
        4,
        "/trainer",
        ["cup", "ball"],
    )
    assert json.loads((tmp_path / "model.info.json").read_text())["acc"] == 0.9


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"sha256": "0" * 64}, "does not match its sha256"),
        ({"format": "onnx"}, "format 'onnx', expected 'tflite'"),
        ({"data": b"\x00" * 64}, "LiteRT cannot load it"),
        ({"data": "two outputs"}, "it says input_shape [10] and output_dim 2, its data takes [10] and gives 0"),
        (
            {"data": "regression"},
            "the node cannot serve it: one output value per sample: a classifier needs one output",
        ),
        ({"data": "sigmoid"}, "the node cannot serve it: one output value per sample"),
        ({"data": "logits"}, "the node cannot serve it: its outputs are not class probabilities"),
        ({"output_dim": 3}, "it says input_shape [10] and output_dim 3"),
    ],
)
def test_a_bad_model_is_refused_counted_and_changes_nothing(tmp_path, change, reason):
    keeper = TfliteKeeper(tmp_path / "model.tflite")
    before = keeper.accept(message(to_tflite(build_classifier()), version=1))
    saved = (tmp_path / "model.tflite").read_bytes()
    bad = message(to_tflite(build_classifier()), version=2)
    if "data" in change:
        data = change["data"]
        bad = message(data if isinstance(data, bytes) else to_tflite(NOT_CLASSIFIERS[data]()), version=2)
    else:
        vars(bad).update(change)
    with pytest.raises(ModelRefused, match=reason.replace("[", r"\[").replace("]", r"\]")):
        keeper.accept(bad)
    assert keeper.model is before and keeper.refused == 1 and reason in keeper.last_refusal
    assert (tmp_path / "model.tflite").read_bytes() == saved


def test_a_pinned_shape_refuses_models_of_another(tmp_path):
    keeper = TfliteKeeper(tmp_path / "model.tflite", pinned_shape=[10])
    with pytest.raises(ModelRefused, match=r"takes samples of shape \[4\], ~input_shape pins \[10\]"):
        keeper.accept(message(to_tflite(build_classifier(input_shape=4)), input_shape=(4,)))
    assert keeper.model is None


def test_a_file_that_cannot_be_served_is_refused_from_disk_as_from_the_topic(tmp_path):
    (tmp_path / "model.tflite").write_bytes(to_tflite(NOT_CLASSIFIERS["regression"]()))
    keeper = TfliteKeeper(tmp_path / "model.tflite")
    assert keeper.model is None and "one output value per sample" in keeper.load_error


def test_an_unusable_file_is_kept_aside_and_the_model_served_before_is_the_fallback(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"random bytes, not a model")
    keeper = TfliteKeeper(path)
    assert keeper.model is None
    first, second = to_tflite(build_classifier()), to_tflite(build_classifier())
    keeper.accept(message(first, version=1, class_names=["a", "b"]))
    kept_aside = sorted(tmp_path.glob("model.unusable-*.tflite"))
    assert len(kept_aside) == 1 and kept_aside[0].read_bytes() == b"random bytes, not a model"
    keeper.accept(message(second, version=2))
    previous = tmp_path / "model.previous.tflite"
    assert previous.read_bytes() == first and path.read_bytes() == second
    assert json.loads((tmp_path / "model.previous.info.json").read_text())["version"] == 1
    assert (tmp_path / "model.previous.classes.txt").read_text() == "a\nb\n"
    path.write_bytes(b"\x00" * 64)  # a bad file on disk: the robot still has a model at start-up
    restarted = TfliteKeeper(path)
    assert restarted.model.version == 1 and restarted.model.class_names == ["a", "b"]
    assert restarted.model.flatbuffer == first and restarted.load_error is None
    restarted.accept(message(to_tflite(build_classifier()), version=3))  # the bad file is kept, the fallback stays
    assert previous.read_bytes() == first and len(list(tmp_path.glob("model.unusable-*.tflite"))) >= 1
