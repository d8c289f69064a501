"""ModelWrapper on real TensorFlow, without ROS."""

import re
import threading

import keras
import numpy as np
import pytest

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.samples import classify
from ros_tensorflow.with_tf.model import ModelWrapper, build_classifier, shuffled_batches


def run_in_thread(function):
    """function() on a fresh thread, as rospy runs callbacks; returns its value or raises its exception."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised on the calling thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def mlp_forward(weights, x):
    """The default classifier in numpy, to check which weights a prediction used."""
    w1, b1, w2, b2 = weights
    logits = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_train_and_predict_from_another_thread_learn_the_synthetic_data():
    wrapper = ModelWrapper()
    x, y = make_synthetic(n_samples=800, seed=1)
    run_in_thread(lambda: wrapper.train(x, y, epochs=3, batch_size=32))
    x_test, y_test = make_synthetic(n_samples=200, seed=2)
    classes, confidences = classify(run_in_thread(lambda: wrapper.predict(x_test)))
    assert (classes == y_test).mean() > 0.9
    assert np.all((confidences >= 0.5) & (confidences <= 1.0))


def test_each_epoch_of_the_training_batches_has_every_sample_once_in_a_new_order():
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1) * 10, np.arange(10)
    batches = iter(shuffled_batches(x, y, batch_size=4))
    epochs = []
    for _ in range(5):
        epoch = [next(batches) for _ in range(3)]  # 4 + 4 + 2: one epoch's batches, its last one short
        assert [len(batch_y) for _, batch_y in epoch] == [4, 4, 2]
        for batch_x, batch_y in epoch:
            np.testing.assert_array_equal(batch_x.numpy()[:, 0], batch_y.numpy() * 10)  # each sample with its label
        epochs.append(tuple(np.concatenate([batch_y.numpy() for _, batch_y in epoch])))
    assert all(sorted(order) == list(range(10)) for order in epochs)
    assert len(set(epochs)) > 1  # all five alike: 1 in (10!)^4


@pytest.mark.parametrize("k", [1, 5, 300])
def test_predict_shapes_and_no_retrace_across_batch_sizes(k):
    wrapper = ModelWrapper(input_dim=4, output_dim=3)
    traces = wrapper.trace_count
    output = wrapper.predict(np.zeros(4 * k))
    assert output.shape == (k, 3)
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
    assert wrapper.predict(np.ones((k, 4))).shape == (k, 3)
    assert wrapper.trace_count == traces


@pytest.mark.parametrize("serving_backend", ["tensorflow", "litert"])
def test_predictions_during_training_use_one_committed_set_of_weights(serving_backend):
    wrapper = ModelWrapper(serving_backend=serving_backend)
    x, y = make_synthetic(n_samples=2000, seed=3)
    probe = x[:8]
    committed = [wrapper.model.get_weights()]
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: committed.append(wrapper.model.get_weights())
    )
    training = threading.Thread(target=lambda: wrapper.train(x, y, epochs=6, batch_size=8, callbacks=[snapshot]))
    outputs = []

    def predict_until_trained():
        while training.is_alive():
            outputs.append(wrapper.predict(probe))

    training.start()
    predictors = [threading.Thread(target=predict_until_trained) for _ in range(3)]
    for thread in predictors:
        thread.start()
    for thread in [training, *predictors]:
        thread.join(timeout=300)

    expected = [mlp_forward(weights, probe) for weights in committed]
    used = set()
    for output in outputs:
        matches = [i for i, want in enumerate(expected) if np.allclose(output, want, atol=1e-5)]
        assert matches, "a prediction matched no committed set of weights"
        used.add(matches[0])
    assert len(used) > 1, "predictions did not see the weights change during training"
    np.testing.assert_allclose(wrapper.predict(probe), expected[-1], atol=1e-5)


def test_bad_input_to_predict_and_train_raises():
    wrapper = ModelWrapper()
    with pytest.raises(ValueError):
        wrapper.predict([1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        wrapper.train(np.zeros((4, 3)), np.zeros(4), epochs=1)
    with pytest.raises(ValueError, match=re.escape("expected labels of shape (4,)")):
        wrapper.train(np.zeros((4, 10)), np.zeros(3), epochs=1)


def test_an_output_that_overflows_is_an_error_not_a_nan_answer():
    wrapper = ModelWrapper()
    wrapper.model.set_weights([np.ones_like(w) for w in wrapper.model.get_weights()])
    wrapper.commit()
    with pytest.raises(ValueError, match=re.escape("output is NaN or Inf for samples [1]")):
        wrapper.predict([[0.5] * 10, [3e38] * 10])  # each value fits float32; their sum does not


def test_train_refuses_a_validation_split_the_data_cannot_fill():
    with pytest.raises(ValueError, match="leaves 0 to train on"):
        ModelWrapper().train(np.zeros((1000, 10)), np.zeros(1000), epochs=1, validation_split=0.9995)


def test_an_uncompiled_model_is_compiled_to_train():
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    wrapper = ModelWrapper(model)
    assert len(wrapper.train(*make_synthetic(n_samples=60, seed=5), epochs=2).history["loss"]) == 2


def test_a_fresh_model_for_images_is_a_cnn_that_learns_and_takes_flat_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(0.2, 0.05, (200, 16, 16, 1))
    x[y == 1, 4:12, 4:12, 0] += 0.6  # class 1: a bright square in the middle
    wrapper = ModelWrapper(input_shape=[16, 16, 1], output_dim=2)  # Adam at 0.003
    assert [type(layer).__name__ for layer in wrapper.model.layers][:2] == ["Conv2D", "MaxPooling2D"]
    wrapper.train(x, y, epochs=8, batch_size=16)
    classes, _ = classify(wrapper.predict(x.ravel()))  # flat, row-major, as Predict.srv carries it
    assert (classes == y).mean() > 0.9


@pytest.mark.parametrize("shape, architecture, reason", [([10], "cnn", "needs a sample shape"), ([4], "rnn", "one of")])
def test_an_architecture_that_does_not_fit_is_refused(shape, architecture, reason):
    with pytest.raises(ValueError, match=reason):
        build_classifier(shape, architecture=architecture)
