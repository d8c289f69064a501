"""Evaluation: the core on a real Keras model and scikit-learn's metrics; the `evaluate` action on a launched node
with a real actionlib client."""

import io
import json
import pathlib
import subprocess
import threading

import actionlib
import numpy as np
import PIL.Image
import pytest
import rospy
from conftest import wait_for
from ros_processes import action_client
from ros_tensorflow_msgs.msg import EvaluateAction, EvaluateActionResult, EvaluateGoal, EvaluateResult, TrainGoal
from ros_tensorflow_msgs.srv import Predict
from sensor_msgs.msg import Image
from sklearn.metrics import classification_report

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.evaluation import CHUNK, class_names_for, evaluate, write_report
from ros_tensorflow.tf_free.plots import confusion_figure, curves_figure, png_and_rgb
from ros_tensorflow.with_tf.model import ModelWrapper

X, Y = make_synthetic(n_samples=600, seed=3)


@pytest.fixture(scope="module")
def trained():
    wrapper = ModelWrapper()
    wrapper.train(X, Y, epochs=5)
    return wrapper


def test_the_metrics_are_scikit_learns_of_the_served_model(trained):
    progress = []
    evaluation = evaluate(
        trained.served_predictor(), X, Y, ["left", "right"], 4, on_progress=lambda *p: progress.append(p)
    )
    predicted = trained.predict(X).argmax(axis=1)
    report = classification_report(Y, predicted, output_dict=True, zero_division=0.0)
    assert evaluation.samples == 600 and evaluation.version == 4
    assert evaluation.accuracy == pytest.approx(np.mean(predicted == Y)) and evaluation.accuracy > 0.8
    for i in range(2):
        assert evaluation.precision[i] == pytest.approx(report[str(i)]["precision"])
        assert evaluation.recall[i] == pytest.approx(report[str(i)]["recall"])
        assert evaluation.f1[i] == pytest.approx(report[str(i)]["f1-score"])
        assert evaluation.support[i] == np.sum(Y == i)
    confusion = np.array(evaluation.confusion)
    assert confusion.sum() == 600 and np.trace(confusion) == np.sum(predicted == Y)
    assert confusion[1, 0] == np.sum((Y == 1) & (predicted == 0))  # rows: the true class
    keras_loss = trained.model.evaluate(X, Y, verbose=0)[0]
    assert evaluation.loss == pytest.approx(keras_loss, rel=1e-3)
    assert progress == [(256, 600), (512, 600), (600, 600)]


def test_the_served_predictor_keeps_the_weights_it_started_with(trained):
    predict = trained.served_predictor()
    before = predict(X[:8])
    wrapper = ModelWrapper()
    wrapper.model.set_weights(trained.model.get_weights())
    wrapper.commit()
    frozen = wrapper.served_predictor()
    wrapper.train(X, Y, epochs=1, batch_size=600)  # changes what is served, not a predictor made before
    np.testing.assert_allclose(frozen(X[:8]), before, atol=1e-6)
    assert not np.allclose(wrapper.predict(X[:8]), before, atol=1e-6)


def test_a_cancel_stops_before_the_next_chunk(trained):
    calls = []

    def predict(x):
        calls.append(len(x))
        return trained.predict_samples(x)

    assert evaluate(predict, X, Y, ["a", "b"], should_stop=lambda: len(calls) == 2) is None
    assert calls == [CHUNK, CHUNK]


def test_a_class_with_no_samples_gets_zero_not_an_error():
    def always_class_0(x):
        return np.tile([0.9, 0.05, 0.05], (len(x), 1))

    evaluation = evaluate(always_class_0, X[:10], np.array([0] * 5 + [1] * 5), class_names_for([], 3))
    assert evaluation.class_names == ["class 0", "class 1", "class 2"]
    assert evaluation.support == [5, 5, 0] and evaluation.recall == [1.0, 0.0, 0.0]
    assert evaluation.confusion == [[5, 0, 0], [5, 0, 0], [0, 0, 0]]


def test_the_report_and_picture_are_written_whole(trained, tmp_path):
    evaluation = evaluate(trained.served_predictor(), X, Y, ["cup", "ball"])
    rgb = write_report(evaluation, tmp_path, "synthetic")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dataset"] == "synthetic" and report["confusion"] == evaluation.confusion
    assert report["class_names"] == ["cup", "ball"] and report["accuracy"] == evaluation.accuracy
    with PIL.Image.open(tmp_path / "confusion.png") as png:
        assert png.size == (rgb.shape[1], rgb.shape[0]) and png.size[0] > 300
    assert rgb.dtype == np.uint8 and rgb.std() > 10  # drawn, not blank
    assert sorted(path.name for path in tmp_path.iterdir()) == ["confusion.png", "report.json"]  # no temporaries


def test_the_pictures_say_what_was_evaluated_and_which_epoch_was_kept():
    confusion = confusion_figure([[40, 2], [3, 55]], ["cup", "ball"], "version 3 on 'trusted.npz': accuracy 0.9500")
    assert confusion.axes[0].get_title() == "version 3 on 'trusted.npz': accuracy 0.9500\nconfusion matrix, 100 samples"
    history = [{"loss": 1 / (i + 1), "acc": 0.9 + i / 100, "val_loss": 1 / (i + 2), "val_acc": 0.99} for i in range(5)]
    curves = curves_figure(history, version=3, best_epoch=2)
    png_and_rgb(curves)  # drawn: the tick positions are those shown
    loss, accuracy = curves.axes[:2]
    assert curves.get_suptitle() == "version 3" and accuracy.get_ylim() == (0, 1.02)
    assert all(float(tick).is_integer() for tick in loss.get_xticks())
    kept = [line for line in loss.get_lines() if line.get_label() == "weights kept (epoch 2)"]
    assert len(kept) == 1 and list(kept[0].get_xdata()) == [2, 2]


# The action, on the node as users launch it.


def evaluate_client():
    return action_client("evaluate", EvaluateAction)


def test_evaluate_reports_the_served_model_with_its_picture(node, tmp_path):
    _, train = node
    curves = []
    rospy.Subscriber("/ros_tensorflow/training/curves", Image, curves.append)
    train.send_goal_and_wait(TrainGoal(epochs=5, validation_split=0.2))
    assert train.get_result().best_epoch in range(5)  # ~keep_best_epoch is on by default
    wait_for(lambda: curves, 30, "the latched training curves")
    curves_png = tmp_path / "data" / "versions" / "1" / "curves.png"  # the goal's version, written before the picture
    with PIL.Image.open(curves_png) as png:
        assert (curves[0].width, curves[0].height) == png.size and png.size[0] > 600
    pictures = []
    rospy.Subscriber("/ros_tensorflow/evaluation/confusion_matrix", Image, pictures.append)
    client, feedback = evaluate_client(), []
    client.send_goal(EvaluateGoal(dataset="synthetic"), feedback_cb=feedback.append)
    predict = rospy.ServiceProxy("/predict", Predict)
    predict([0.5] * 10)  # predictions are answered while it runs
    assert client.wait_for_result(rospy.Duration(60))
    result = client.get_result()
    assert client.get_state() == actionlib.GoalStatus.SUCCEEDED, result.message
    assert result.samples == 1000 and result.accuracy > 0.8 and 0 < result.loss < 1
    assert result.class_names == ["class 0", "class 1"] and sum(result.support) == 1000
    assert len(result.confusion) == 4 and sum(result.confusion) == 1000
    assert result.confusion[0] + result.confusion[3] == round(result.accuracy * 1000)
    assert len(result.precision) == len(result.recall) == len(result.f1) == 2
    assert feedback[-1].samples_done == feedback[-1].samples_total == 1000
    report_dir = pathlib.Path(result.report_dir)
    assert report_dir.parent == tmp_path / "data" / "evaluations"
    assert json.loads((report_dir / "report.json").read_text())["accuracy"] == result.accuracy
    wait_for(lambda: pictures, 10, "the latched confusion matrix picture")
    with PIL.Image.open(report_dir / "confusion.png") as png:
        assert (pictures[0].width, pictures[0].height) == png.size and pictures[0].encoding == "rgb8"
    # the README's way without a client library
    results = []
    rospy.Subscriber("/evaluate/result", EvaluateActionResult, results.append)
    goal = "{goal: {dataset: synthetic}}"
    subprocess.run(
        ["rostopic", "pub", "--once", "/evaluate/goal", "ros_tensorflow_msgs/EvaluateActionGoal", goal], check=True
    )
    wait_for(
        lambda: [r for r in results if r.result.samples == 1000], 60, "the result of a goal sent with rostopic pub"
    )


def test_bad_evaluate_goals_are_aborted_with_their_reason_and_the_node_still_serves(node, tmp_path):
    rng = np.random.default_rng(0)  # samples of another shape: 12 values, the model takes 10
    np.savez(tmp_path / "data" / "shapes.npz", x=rng.normal(size=(20, 12)), y=rng.integers(0, 2, 20))
    client = evaluate_client()
    for goal, reason in [
        (EvaluateGoal(dataset="no_such.npz"), "cannot evaluate on 'no_such.npz': dataset file"),
        (EvaluateGoal(dataset="shapes.npz"), "expected an array of shape (k, 10)"),
        (EvaluateGoal(version=7), "version 7 cannot be evaluated: there is no version 7 (kept: none)"),
    ]:
        client.send_goal(goal)
        assert client.wait_for_result(rospy.Duration(60))
        assert client.get_state() == actionlib.GoalStatus.ABORTED
        assert reason in client.get_result().message, client.get_result().message
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).classes


def test_a_model_that_is_always_wrong_gives_counts_a_result_message_can_carry():
    # scikit-learn returns the support as floats when no prediction is right: the Evaluate result refused them
    evaluation = evaluate(lambda x: np.tile([0.1, 0.9], (len(x), 1)), X[:4], np.zeros(4, int), ["a", "b"])
    assert evaluation.accuracy == 0 and evaluation.support == [4, 0] and evaluation.confusion == [[0, 4], [0, 0]]
    assert all(type(count) is int for count in evaluation.support + evaluation.confusion[0])
    result = EvaluateResult(support=evaluation.support, confusion=[c for row in evaluation.confusion for c in row])
    result.serialize(io.BytesIO())


def test_evaluate_runs_beside_a_training_goal_and_cancels_like_it(node, tmp_path):
    _, train = node
    x, y = make_synthetic(n_samples=100_000, seed=1)
    np.savez(tmp_path / "data" / "large.npz", x=x, y=y)
    training = threading.Event()
    train.send_goal(TrainGoal(epochs=10000), feedback_cb=lambda _: training.set())
    assert training.wait(60)
    client = evaluate_client()
    client.send_goal_and_wait(EvaluateGoal(dataset="synthetic"), rospy.Duration(60))
    assert client.get_state() == actionlib.GoalStatus.SUCCEEDED and client.get_result().samples == 1000
    assert train.get_state() == actionlib.GoalStatus.ACTIVE  # the training went on meanwhile
    train.cancel_goal()
    assert train.wait_for_result(rospy.Duration(60))

    started = threading.Event()
    client.send_goal(EvaluateGoal(dataset="large.npz"), feedback_cb=lambda _: started.set())
    assert started.wait(60)
    client.cancel_goal()
    assert client.wait_for_result(rospy.Duration(60))
    assert client.get_state() == actionlib.GoalStatus.PREEMPTED and client.get_result().message == "cancelled"
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).classes
