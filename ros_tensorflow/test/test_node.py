"""The node as users call it: a real master, roslaunch, actionlib and rospy clients."""

import math
import subprocess

import numpy as np
import pytest
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import LaunchedNode, action_client, node_sends_to
from ros_tensorflow_msgs.msg import Tensor, TrainAction, TrainActionFeedback, TrainActionResult, TrainGoal
from ros_tensorflow_msgs.srv import Predict, PredictTensors

from ros_tensorflow.tf_free.datasets import make_synthetic

TIMEOUT = rospy.Duration(120)


def epoch_feedbacks(into):
    return lambda feedback: into.append(feedback) if feedback.batch == feedback.batches_per_epoch else None


def test_train_three_epochs_sends_three_epoch_feedbacks_then_succeeds(node):
    _, client = node
    feedbacks = []
    client.send_goal(TrainGoal(epochs=3), feedback_cb=epoch_feedbacks(feedbacks))
    assert client.wait_for_result(TIMEOUT)
    assert client.get_state() == GoalStatus.SUCCEEDED
    result = client.get_result()
    assert [f.i_epoch for f in feedbacks] == [0, 1, 2]
    losses = [f.loss for f in feedbacks]
    assert losses[0] > losses[1] > losses[2] > 0
    assert result.epochs_completed == 3
    assert result.loss == pytest.approx(losses[-1]) and 0.9 <= result.acc <= 1.0
    assert math.isnan(result.val_loss) and math.isnan(result.val_acc)
    assert result.message == "finished 3 epochs"


def test_validation_split_fills_val_metrics(node):
    _, client = node
    feedbacks = []
    client.send_goal(TrainGoal(epochs=2, batch_size=16, validation_split=0.25), feedback_cb=epoch_feedbacks(feedbacks))
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    result = client.get_result()
    assert len(feedbacks) == 2 and all(f.batches_per_epoch == 47 for f in feedbacks)  # ceil(750 / 16)
    assert result.val_loss > 0 and 0 <= result.val_acc <= 1


def test_batch_progress_feedback_between_epochs(node):
    _, client = node
    progress = []
    client.send_goal(
        TrainGoal(epochs=2, batch_size=1),
        feedback_cb=lambda f: progress.append(f) if f.batch < f.batches_per_epoch else None,
    )
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    assert progress, "no batch progress feedback"
    assert all(f.batches_per_epoch == 1000 and 0 < f.batch < 1000 for f in progress)
    assert progress[0].i_epoch == -1 and math.isnan(progress[0].loss)


def test_cancel_after_first_epoch_ends_preempted_with_that_epoch(node):
    _, client = node
    feedbacks = []
    client.send_goal(TrainGoal(epochs=50, batch_size=1), feedback_cb=epoch_feedbacks(feedbacks))
    wait_for(lambda: feedbacks, 120, "the first epoch")
    client.cancel_goal()
    assert client.wait_for_result(rospy.Duration(10))
    assert client.get_state() == GoalStatus.PREEMPTED
    result = client.get_result()
    assert result.epochs_completed == 1
    assert result.loss == pytest.approx(feedbacks[0].loss)
    assert result.message == "cancelled after 1 epoch"


def test_new_goal_preempts_the_running_one(node):
    _, client = node
    first = action_client("train", TrainAction)
    first_feedbacks = []
    first.send_goal(TrainGoal(epochs=50, batch_size=1), feedback_cb=first_feedbacks.append)
    wait_for(lambda: first_feedbacks, 120, "the first goal to train")
    client.send_goal(TrainGoal(epochs=1))
    assert first.wait_for_result(TIMEOUT) and first.get_state() == GoalStatus.PREEMPTED
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    assert client.get_result().epochs_completed == 1


@pytest.fixture
def predict(node):
    rospy.wait_for_service("predict", timeout=60)
    return rospy.ServiceProxy("predict", Predict, persistent=False)


@pytest.mark.parametrize("k", [1, 5])
def test_predict_answers_one_class_per_sample(node, predict, k):
    _, client = node
    client.send_goal(TrainGoal(epochs=3))
    assert client.wait_for_result(TIMEOUT)
    x, y = make_synthetic(n_samples=k, seed=k)
    answer = predict(x.ravel().tolist())
    output = np.array(answer.output).reshape(k, 2)
    assert list(answer.classes) == np.argmax(output, axis=1).tolist() == y.tolist()
    np.testing.assert_allclose(answer.confidences, output.max(axis=1))
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
    assert answer.i_class == answer.classes[0] and answer.confidence == answer.confidences[0]


def run(command, timeout=120):
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tutorial_rosservice_call_predict(node):
    out = run('rosservice call /predict "data: [0.,0.,0.,0.,0.,0.,0.,0.,0.,0.]"')
    assert "i_class: " in out and "confidence: " in out and "classes: [" in out


def test_tutorial_rostopic_pub_goal_then_cancel(node):
    results, feedbacks = [], []
    subscribers = [
        rospy.Subscriber("/train/result", TrainActionResult, results.append),
        rospy.Subscriber("/train/feedback", TrainActionFeedback, feedbacks.append),
    ]
    wait_for(lambda: node_sends_to(*subscribers), 30, "the action topics")
    run("rostopic pub -1 /train/goal ros_tensorflow_msgs/TrainActionGoal '{goal: {epochs: 2}}'")
    wait_for(lambda: results, 120, "the result of the published goal")
    assert results[0].status.status == GoalStatus.SUCCEEDED and results[0].result.epochs_completed == 2

    run("rostopic pub -1 /train/goal ros_tensorflow_msgs/TrainActionGoal '{goal: {epochs: 50, batch_size: 1}}'")
    wait_for(lambda: len(feedbacks) > 2, 120, "feedback of the long goal")
    run("rostopic pub -1 /train/cancel actionlib_msgs/GoalID '{}'")
    wait_for(lambda: len(results) == 2, 30, "the cancelled goal's result")
    assert results[1].status.status == GoalStatus.PREEMPTED
    assert results[1].result.epochs_completed < 50
    for subscriber in subscribers:
        subscriber.unregister()


@pytest.mark.parametrize(
    "args, reason",
    [
        ({"input_dim": 0}, "parameter /ros_tensorflow/input_dim must be int > 0, got 0"),
        ({"loop_rate": -1}, "parameter /ros_tensorflow/loop_rate must be finite >= 0, got -1.0"),
        ({"data_dir": "/proc/ros_tensorflow"}, "parameter ~data_dir: /proc/ros_tensorflow is not usable"),
        ({"config": "publish_queue_size: -1"}, "parameter /ros_tensorflow/publish_queue_size must be int >= 0, got -1"),
        ({"config": "serving_backend: onnx"}, "/ros_tensorflow/serving_backend must be one of: litert, tensorflow"),
        ({"config": "device: /GPU:7"}, "parameter /ros_tensorflow/device: device /GPU:7 does not exist here"),
    ],
)
def test_a_bad_parameter_stops_the_node_with_a_message_naming_it(ros_master, tmp_path, args, reason):
    if "config" in args:  # the YAML text of a config file
        (tmp_path / "config.yaml").write_text(args["config"])
        args = {**args, "config": tmp_path / "config.yaml"}
    node = LaunchedNode(tmp_path, **args)
    try:
        wait_for(lambda: "process has died" in node.log_path.read_text(), 120, "the node to exit")
        assert reason in node.log_path.read_text()
    finally:
        node.stop()


def test_predict_tensors_answers_for_the_nodes_own_model_as_predict_does(node):
    x, _ = make_synthetic(n_samples=3, seed=5)
    predicted = rospy.ServiceProxy("/predict", Predict)(x.ravel().tolist())
    tensors = rospy.ServiceProxy("/predict_tensors", PredictTensors)
    answer = tensors([Tensor("input", [3, 10], "", x.ravel().tolist())])
    (output,) = answer.outputs
    assert (output.name, list(output.shape), output.dtype) == ("output", [3, 2], "float32")
    np.testing.assert_allclose(output.data, predicted.output, atol=1e-5)
    assert answer.model_version == predicted.model_version
    with pytest.raises(rospy.ServiceException, match=r"input 'input' takes shape \[-1, 10\]"):
        tensors([Tensor("input", [1, 5], "", [0.0] * 5)])


# Last in the module: the node they share lives until its end, and no other node of the same name may start
# meanwhile (ROS shuts the older one down).


@pytest.fixture(scope="module")
def shared_node(ros_master, tmp_path_factory):
    """One node for the checks that must leave it serving as before (bad goals, bad requests): a launch each would
    cost seconds and prove less."""
    node = LaunchedNode(tmp_path_factory.mktemp("shared_node"))
    client = node.wait_until_ready()
    yield node, client
    node.stop()


@pytest.fixture
def shared_predict(shared_node):
    return rospy.ServiceProxy("predict", Predict, persistent=False)


@pytest.mark.parametrize(
    "goal, reason",
    [
        (TrainGoal(epochs=0), "epochs must be > 0, got 0"),
        (TrainGoal(epochs=-3), "epochs must be > 0, got -3"),
        (TrainGoal(epochs=1, batch_size=-1), "batch_size must be >= 0"),
        (TrainGoal(epochs=1, validation_split=1.0), "validation_split must be in [0, 1)"),
        (TrainGoal(epochs=1, validation_split=float("nan")), "validation_split must be in [0, 1)"),
        (TrainGoal(epochs=1, dataset="no_such_data"), "unknown dataset 'no_such_data'"),
        (TrainGoal(epochs=1, validation_split=0.999), "validation_split 0.999 of 1000 samples leaves 0 to train on"),
    ],
)
def test_bad_goal_is_aborted_with_its_reason_and_the_node_still_serves(shared_node, goal, reason):
    _, client = shared_node
    feedbacks = []
    client.send_goal(goal, feedback_cb=feedbacks.append)
    assert client.wait_for_result(TIMEOUT)
    assert client.get_state() == GoalStatus.ABORTED
    assert reason in client.get_result().message
    assert reason in client.get_goal_status_text()
    assert feedbacks == [] and client.get_result().epochs_completed == 0
    client.send_goal(TrainGoal(epochs=1))
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED


@pytest.mark.parametrize(
    "data, reason",
    [
        ([], "expected k * 10 values"),
        ([0.5] * 7, "got 7"),
        ([0.5] * 25, "got 25"),
        ([0.5] * 9 + [float("nan")], "NaN or Inf"),
        ([float("-inf")] + [0.5] * 9, "NaN or Inf"),
        ([1e39] + [0.0] * 9, "outside float32's range"),
        ([1e308] * 3 + [0.0] * 7, "outside float32's range"),
    ],
)
def test_bad_predict_request_is_a_service_error_and_the_node_still_serves(shared_predict, data, reason):
    with pytest.raises(rospy.ServiceException, match=reason.replace("*", r"\*")):
        shared_predict(data)
    assert len(shared_predict([0.5] * 10).classes) == 1
