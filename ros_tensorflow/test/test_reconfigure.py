"""Parameters changed while the node runs (dynamic_reconfigure), and the statuses that show the stream."""

import math
import subprocess

import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticStatus
from dynamic_reconfigure.client import Client
from dynamic_reconfigure.msg import Config
from ros_processes import Diagnostics
from ros_tensorflow_msgs.msg import TrainGoal
from ros_tensorflow_msgs.srv import Predict
from test_topics import Stream

from ros_tensorflow.tf_free.datasets import make_synthetic

TIMEOUT = rospy.Duration(120)
PROBE = make_synthetic(n_samples=4, seed=11)[0]


def predict(x):
    return np.array(rospy.ServiceProxy("/predict", Predict)(x.ravel().tolist()).output)


def test_set_parameters_from_the_command_line_changes_the_next_goals_batch_size(node):
    _, client = node
    done = subprocess.run(
        ["rosservice", "call", "/ros_tensorflow/set_parameters", "config: {ints: [{name: batch_size, value: 7}]}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and 'name: "batch_size"\n      value: 7' in done.stdout, done.stdout + done.stderr
    assert rospy.get_param("/ros_tensorflow/batch_size") == 7
    feedbacks = []
    client.send_goal(TrainGoal(epochs=1), feedback_cb=feedbacks.append)
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    assert {f.batches_per_epoch for f in feedbacks} == {math.ceil(1000 / 7)}


def test_a_value_that_breaks_its_rule_is_refused_and_the_old_one_stays(node):
    node, _ = node
    reconfigure = Client("/ros_tensorflow", timeout=30)
    config = reconfigure.update_configuration({"max_batch": 0, "queue_size": 5})
    assert config["max_batch"] == 256 and config["queue_size"] == 100, "all of a refused change is refused"
    assert rospy.get_param("/ros_tensorflow/max_batch") == 256
    wait_for(
        lambda: "reconfigure refused: parameter /ros_tensorflow/max_batch must be int > 0, got 0" in node.log(),
        30,
        "the refusal in the node's log",
    )
    assert reconfigure.update_configuration({"max_batch": 64})["max_batch"] == 64
    reconfigure.close()


def test_a_learning_rate_set_while_running_applies_from_the_next_goal(node):
    _, client = node
    reconfigure = Client("/ros_tensorflow", timeout=30)
    before = predict(PROBE)
    # 1e-30: each step changes no weight (far below float32's resolution); 0 would mean the optimizer's own rate
    assert reconfigure.update_configuration({"learning_rate": 1e-30})["learning_rate"] == 1e-30
    client.send_goal(TrainGoal(epochs=2))
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    np.testing.assert_allclose(predict(PROBE), before, atol=1e-7)
    reconfigure.update_configuration({"learning_rate": 0.1})
    client.send_goal(TrainGoal(epochs=2))
    assert client.wait_for_result(TIMEOUT) and client.get_state() == GoalStatus.SUCCEEDED
    assert not np.allclose(predict(PROBE), before, atol=1e-4)
    reconfigure.close()


def test_queue_size_set_while_running_decides_what_is_dropped_and_the_statuses_say_so(node):
    model = Diagnostics()
    stream_status = Diagnostics("/ros_tensorflow: stream")
    model.wait_until(lambda s: s["_level"] == DiagnosticStatus.OK, "an OK model status")
    reconfigure = Client("/ros_tensorflow", timeout=30)
    stream = Stream()

    reconfigure.update_configuration({"queue_size": 1})
    for _ in range(2000):
        stream.send([0.5] * 10)
    status = model.wait_until(lambda s: s["_level"] == DiagnosticStatus.WARN, "a WARN model status while dropping")
    assert status["_message"].startswith("dropping ~input") and int(status["inputs_dropped"]) > 0
    status = stream_status.wait_until(lambda s: s["_level"] == DiagnosticStatus.WARN, "a WARN stream status")
    assert int(status["inputs dropped in window"]) > 0 and float(status["~input rate (Hz)"]) > 0
    status = model.wait_until(lambda s: s["_level"] == DiagnosticStatus.OK, "OK again once nothing is dropped")
    dropped = status["inputs_dropped"]

    # A queue longer than the burst: nothing may be dropped (the default 100 drops under this burst).
    reconfigure.update_configuration({"queue_size": 5000})
    stream.predictions.clear()
    for _ in range(900):  # fewer than the test publisher's own queue of 1000
        stream.send([0.5] * 10)
    wait_for(lambda: len(stream.predictions) == 900, 60, "a prediction for each of the 900 inputs")
    assert model.wait_until(lambda s: True, "a status")["inputs_dropped"] == dropped
    stream.close()
    reconfigure.close()


def test_the_main_loop_demo_starts_when_loop_rate_is_set_while_running(node):
    node, _ = node  # launched with loop_rate 0: the demo is off
    assert "main loop: class" not in node.log_path.read_text()
    reconfigure = Client("/ros_tensorflow", timeout=30)
    reconfigure.update_configuration({"loop_rate": 20.0})
    wait_for(lambda: node.log_path.read_text().count("main loop: class") >= 3, 30, "the demo's predictions in the log")
    reconfigure.close()


def test_dynparam_from_debians_dynamic_reconfigure_sets_a_value_and_an_infinite_learning_rate_is_refused(node):
    done = subprocess.run(
        ["rosrun", "dynamic_reconfigure", "dynparam", "set", "/ros_tensorflow", "max_batch", "48"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert rospy.get_param("/ros_tensorflow/max_batch") == 48
    node, _ = node
    reconfigure = Client("/ros_tensorflow", timeout=30)
    assert reconfigure.update_configuration({"learning_rate": math.inf})["learning_rate"] == 0.0
    wait_for(
        lambda: "parameter /ros_tensorflow/learning_rate must be finite >= 0, got inf" in node.log(),
        30,
        "the refusal in the node's log",
    )
    reconfigure.close()


def test_a_loop_rate_so_low_it_never_fires_can_still_be_changed_and_is_published_as_a_double(launch_node, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("loop_rate: 0\n")  # an int in YAML
    node, _ = launch_node(config=config, loop_rate="")
    updates = []
    sub = rospy.Subscriber("/ros_tensorflow/parameter_updates", Config, updates.append)
    wait_for(lambda: updates, 30, "the latched parameter_updates")
    assert "loop_rate" in {p.name for p in updates[-1].doubles} and "loop_rate" not in {
        p.name for p in updates[-1].ints
    }
    sub.unregister()
    reconfigure = Client("/ros_tensorflow", timeout=30)
    reconfigure.update_configuration({"loop_rate": 1e-9})  # once now, then every 31 years
    wait_for(lambda: node.log().count("main loop: class") == 1, 30, "the first prediction of the main loop")
    reconfigure.update_configuration({"loop_rate": 20.0})  # the loop slept 1e9 s after its first one, ignoring this
    wait_for(lambda: node.log().count("main loop: class") >= 5, 30, "the main loop at 20 Hz")
    reconfigure.close()
