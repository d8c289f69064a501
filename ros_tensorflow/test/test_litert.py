"""LiteRT serving: conversion, per-size interpreters, coalescing and fallback, on real TensorFlow and LiteRT."""

import os
import subprocess

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from ros_processes import wait_for
from sklearn.datasets import load_digits

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.litert import LiteRtModel
from ros_tensorflow.with_tf.conversion import ConverterProcess, to_tflite
from ros_tensorflow.with_tf.model import ModelWrapper, build_classifier

X, Y = make_synthetic(n_samples=400, seed=21)


@pytest.fixture(scope="module")
def converter():
    """One converter process for the module, as a node has one: starting one imports TensorFlow (seconds)."""
    process = ConverterProcess()
    yield process
    process.close()


@pytest.fixture
def litert_wrapper(converter):
    def make(model=None):
        wrapper = ModelWrapper(model, serving_backend="litert", converter=converter)
        assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120), wrapper.litert.failed
        return wrapper

    return make


@pytest.mark.parametrize("k", [1, 3, 100, 300])
def test_litert_answers_as_the_keras_model_for_any_batch_size(k, litert_wrapper):
    wrapper = litert_wrapper()
    wrapper.train(X, Y, epochs=2)
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120)
    assert wrapper.serving == f"litert, commit {wrapper.commit_count}"
    served_before = wrapper.served_by_litert
    x = X[:k] if k <= len(X) else X
    np.testing.assert_allclose(wrapper.predict(x), wrapper.model(x.astype(np.float32)).numpy(), atol=1e-5)
    assert wrapper.served_by_litert == served_before + len(x)


def test_an_evaluation_uses_the_served_litert_model_which_a_later_commit_does_not_change(litert_wrapper):
    wrapper = litert_wrapper()
    wrapper.train(X, Y, epochs=1)
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120)
    trained = wrapper.model(X.astype(np.float32)).numpy()
    predict, served_before = wrapper.served_predictor(), wrapper.served_by_litert
    wrapper.train(X, 1 - Y, epochs=2)  # the evaluation's model stays the one served when it started
    np.testing.assert_allclose(predict(X), trained, atol=1e-5)  # float64 in, as datasets give them
    assert wrapper.served_by_litert == served_before, "not counted as served predictions"


def test_one_interpreter_per_power_of_two_allocated_up_front():
    model = build_classifier()
    litert = LiteRtModel(to_tflite(model))
    before = dict(litert._interpreters)
    assert sorted(before) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    for k in (1, 5, 2, 77, 256, 3):
        np.testing.assert_allclose(
            litert.predict(X[:k].astype(np.float32)), model(X[:k].astype(np.float32)).numpy(), atol=1e-5
        )
    assert litert._interpreters == before, "no interpreter was built or replaced for a new batch size"


def test_commits_coalesce_and_the_newest_is_served(litert_wrapper):
    wrapper = litert_wrapper()
    for _ in range(30):
        wrapper.commit()
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120)
    assert wrapper.litert.conversions < 30, "every commit was converted, none coalesced"
    assert wrapper.commit_count == 31 and wrapper.litert.serving_commit == 31


def test_epoch_commits_wait_after_a_conversion_and_the_commit_ending_a_goal_does_not(litert_wrapper):
    wrapper = litert_wrapper()
    wrapper.litert.PAUSE_AFTER_CONVERSION = 1000  # an epoch's commit waits for minutes after a conversion
    wrapper.commit()
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120)
    wrapper.commit(epoch_end=True)
    assert not wrapper.litert.wait_until_serving(wrapper.commit_count, 2), "an epoch's commit was converted at once"
    assert wrapper.serving == f"tensorflow, commit {wrapper.commit_count} (litert converting)"
    wrapper.commit()  # the goal's end: replaces the waiting epoch commit, converted at once
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120)


def test_until_a_commit_is_converted_tensorflow_answers_with_the_newest_weights(litert_wrapper):
    wrapper = litert_wrapper()
    wrapper.model.set_weights([w * 2 for w in wrapper.model.get_weights()])
    wrapper.commit()  # the conversion of this commit runs in the background now
    output = wrapper.predict(X[:5])
    np.testing.assert_allclose(output, wrapper.model(X[:5].astype(np.float32)).numpy(), atol=1e-5)


def unconvertible_model():
    """Keras's own erfinv op: serialisable, but TFLite has no kernel for it."""
    inputs = keras.Input((10,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.ops.erfinv(inputs)))


def test_a_model_that_does_not_convert_stays_with_tensorflow_and_still_answers(caplog, converter):
    model = unconvertible_model()
    wrapper = ModelWrapper(model, serving_backend="litert", converter=converter)
    assert not wrapper.litert.wait_until_serving(wrapper.commit_count, 120)
    assert wrapper.litert.failed.startswith("ConverterError") and "Erfinv" in wrapper.litert.failed
    assert wrapper.serving == "tensorflow, commit 1"
    x = np.clip(X[:4], -0.9, 0.9)
    np.testing.assert_allclose(wrapper.predict(x), model(x.astype(np.float32)).numpy(), atol=1e-5)
    assert "cannot be served by LiteRT" in caplog.text


def test_the_converter_process_runs_at_the_lowest_priority_and_restarts_after_a_crash(converter):
    model = build_classifier()
    converter.convert(model.to_json(), model.get_weights())
    assert os.getpriority(os.PRIO_PROCESS, converter._process.pid) == 19
    converter._process.kill()
    converter._process.wait()
    flatbuffer, seconds = converter.convert(model.to_json(), model.get_weights())
    assert seconds > 0
    np.testing.assert_allclose(LiteRtModel(flatbuffer).predict(X[:3].astype(np.float32)), model(X[:3]), atol=1e-5)


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic"])
def test_exported_flatbuffers_run_in_litert_alone(quantization):
    model = build_classifier(hidden_units=1024)  # dynamic range quantizes tensors of over 1024 weights
    flatbuffer = to_tflite(model, quantization)
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], X[:1].astype(np.float32))
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    tolerance = {"none": 1e-5, "float16": 1e-2, "dynamic": 5e-2}[quantization]
    np.testing.assert_allclose(output, model(X[:1].astype(np.float32)).numpy(), atol=tolerance)
    if quantization != "none":
        assert len(flatbuffer) < 0.6 * len(to_tflite(model)), "quantized weights should be smaller"


@pytest.mark.parametrize("k", [1, 100])
def test_litert_answers_as_the_keras_cnn_for_images(k, converter):
    wrapper = ModelWrapper(input_shape=[24, 24, 3], output_dim=4, serving_backend="litert", converter=converter)
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120), wrapper.litert.failed
    x = np.random.default_rng(k).random((k, 24, 24, 3))
    np.testing.assert_allclose(wrapper.predict(x), wrapper.model(x.astype(np.float32)).numpy(), atol=1e-5)


class _Recording:
    """A real interpreter's wrapper that records the batch size of each call."""

    def __init__(self, wrapper, size, sizes):
        self._wrapper, self._size, self._sizes = wrapper, size, sizes

    def Invoke(self):  # noqa: N802 - the wrapper's name
        self._sizes.append(self._size)
        self._wrapper.Invoke()

    def __getattr__(self, name):
        return getattr(self._wrapper, name)


def test_a_batch_is_split_rather_than_padded_by_more_than_an_eighth():
    """A CNN computes the padding's zeros too: 5 frames are one call of 4 and one of 1, not a call of 8."""
    model = build_classifier()
    litert, sizes = LiteRtModel(to_tflite(model)), []
    litert._interpreters = {
        size: (interpreter, _Recording(wrapper, size, sizes), *indices)
        for size, (interpreter, wrapper, *indices) in litert._interpreters.items()
    }
    for k, calls in ((5, [4, 1]), (15, [16]), (100, [64, 32, 4]), (256, [256]), (300, [256, 32, 8, 4])):
        sizes.clear()
        x = X[:k] if k <= len(X) else np.concatenate([X] * (k // len(X) + 1))[:k]
        np.testing.assert_allclose(litert.predict(x.astype(np.float32)), model(x.astype(np.float32)).numpy(), atol=1e-5)
        assert sizes == calls, k


class _FirstChildHangs(ConverterProcess):
    """Its first child never answers (a converter stuck or about to be killed); later ones are real."""

    def _start(self):
        if self._process is None:
            return subprocess.Popen(["sleep", "600"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return super()._start()


def test_a_converter_killed_mid_conversion_is_started_again_and_the_commit_converted(caplog):
    converter = _FirstChildHangs()
    wrapper = ModelWrapper(serving_backend="litert", converter=converter)
    wait_for(lambda: converter._process is not None, 60, "the first converter child")
    converter._process.kill()  # SIGKILL, as the kernel's OOM killer or a user would
    assert wrapper.litert.wait_until_serving(wrapper.commit_count, 120), wrapper.litert.failed
    assert "the converter process ended" in caplog.text and "converting commit 1 again in a new one" in caplog.text
    np.testing.assert_allclose(wrapper.predict(X[:5]), wrapper.model(X[:5].astype(np.float32)).numpy(), atol=1e-5)
    wrapper.close()
    converter.close()


def test_a_full_integer_model_of_real_digits_keeps_the_float_models_accuracy_within_two_points():
    """The form the Edge TPU and most NPUs need: int8 weights, activations, input and output, calibrated on
    training samples; LiteRtModel quantizes the input and dequantizes the output, so callers see probabilities."""
    digits = load_digits()
    x = (digits.images / 16.0)[:, :, :, np.newaxis].astype(np.float32)
    y = digits.target
    model = build_classifier((8, 8, 1), 10)
    model.fit(x[:1400], y[:1400], epochs=15, batch_size=32, verbose=0)
    float_accuracy = (model.predict(x[1400:], verbose=0).argmax(axis=1) == y[1400:]).mean()
    flatbuffer = to_tflite(model, "int8", x[:300])
    litert = LiteRtModel(flatbuffer)
    interpreter = Interpreter(model_content=flatbuffer)
    assert (
        interpreter.get_input_details()[0]["dtype"] == np.int8
        and interpreter.get_output_details()[0]["dtype"] == np.int8
    )
    output = litert.predict(x[1400:])
    int8_accuracy = (output.argmax(axis=1) == y[1400:]).mean()
    print(f"digits: float {float_accuracy:.3f}, int8 {int8_accuracy:.3f}, int8 {len(flatbuffer)} bytes")
    assert float_accuracy > 0.9 and int8_accuracy >= float_accuracy - 0.02
    np.testing.assert_allclose(output.sum(axis=1), 1.0, atol=0.05)
    with pytest.raises(ValueError, match="needs representative samples"):
        to_tflite(model, "int8")


def test_a_model_whose_batch_size_is_fixed_gets_one_interpreter_and_answers_any_batch():
    inputs = keras.Input((10,), batch_size=1)
    fixed = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Reshape((10,))(inputs)))
    litert = LiteRtModel(to_tflite(fixed))
    assert litert.input_shape == (10,) and litert.output_dim == 2
    np.testing.assert_allclose(
        litert.predict(X[:5].astype(np.float32)), fixed.predict(X[:5], batch_size=1, verbose=0), atol=1e-5
    )
