"""The serving node (serve_node.py) run in the serving venv, where TensorFlow cannot be imported: it serves .tflite
models, follows a trainer's ~model, refuses bad models and keeps serving, and never maps a TensorFlow library."""

import hashlib
import json
import os
import subprocess

import keras
import numpy as np
import pytest
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import Diagnostics, node_pid, node_sends_to
from ros_tensorflow_msgs.msg import Model, Prediction, TrainGoal
from ros_tensorflow_msgs.srv import Predict
from std_msgs.msg import Float64MultiArray
from test_tfctl import Tfctl, write_samples

from ros_tensorflow.ros.master_watch import register_again
from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.signing import generate_key_pair
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import build_classifier

PROBE = make_synthetic(n_samples=6, seed=3)[0]
SERVE_PYTHON = os.environ.get("SERVE_PYTHON", "")


def predict(x, service="/robot1/predict"):
    answer = rospy.ServiceProxy(service, Predict)(np.asarray(x).ravel().tolist())
    return np.array(answer.output).reshape(len(x), -1), answer


def served_version(service="/robot1/predict"):
    """The model_version a prediction comes from; -1 while the node has no model."""
    try:
        return predict(PROBE, service)[1].model_version
    except rospy.ServiceException:
        return -1


def write_model(path, model, class_names=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_tflite(model))
    if class_names:
        path.with_suffix(".classes.txt").write_text("".join(f"{name}\n" for name in class_names))
    return path


def test_the_serving_node_runs_where_tensorflow_cannot_be_imported_and_maps_no_tensorflow_library(serving, tmp_path):
    no_tf = subprocess.run([SERVE_PYTHON, "-c", "import tensorflow"], capture_output=True, text=True)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    model = build_classifier()
    path = write_model(tmp_path / "robot1" / "model.tflite", model, ["cup", "ball"])
    serving(model_path=path)
    output, answer = predict(PROBE)
    np.testing.assert_allclose(output, model.predict(PROBE, verbose=0), atol=1e-5)
    assert list(answer.labels) == [("cup", "ball")[c] for c in answer.classes]

    maps = open(f"/proc/{node_pid('/robot1/ros_tensorflow')}/maps").read()
    assert "_pywrap_litert" in maps or "interpreter_wrapper" in maps, "the node's own maps: LiteRT is there"
    assert "tensorflow" not in maps.lower(), "no TensorFlow library mapped"

    predictions = []
    sub = rospy.Subscriber("/robot1/ros_tensorflow/prediction", Prediction, predictions.append)
    pub = rospy.Publisher("/robot1/ros_tensorflow/input", Float64MultiArray, queue_size=10)
    wait_for(lambda: pub.get_num_connections() and node_sends_to(sub, node="/robot1/ros_tensorflow"), 30, "~input")
    pub.publish(Float64MultiArray(data=PROBE[0].tolist()))
    wait_for(lambda: predictions, 30, "a prediction")
    assert predictions[0].classes[0] == answer.classes[0] and predictions[0].labels[0] in ("cup", "ball")
    status = Diagnostics("/robot1/ros_tensorflow: model", "/robot1/ros_tensorflow").wait_until(
        lambda s: s["predictions_published"] == "1", "the prediction counted"
    )
    assert status["model"] == str(path) and status["_level"] == 0
    sub.unregister()
    pub.unregister()


def test_a_trained_model_travels_to_the_serving_node_which_keeps_it_without_the_trainer(node, serving, tmp_path):
    trainer, client = node
    robot = serving(model_topic="/ros_tensorflow/model")
    with pytest.raises(rospy.ServiceException, match="no model to serve yet"):
        predict(PROBE)
    client.send_goal(TrainGoal(epochs=2))
    assert client.wait_for_result(rospy.Duration(120)) and client.get_state() == GoalStatus.SUCCEEDED
    wait_for(lambda: served_version() == 1, 60, "the serving node on version 1")
    trained, answer = predict(PROBE, "/predict")
    assert answer.model_version == 1
    np.testing.assert_allclose(predict(PROBE)[0], trained, atol=1e-5)
    status = Diagnostics("/robot1/ros_tensorflow: model", "/robot1/ros_tensorflow").wait_until(
        lambda s: s["model_version"] == "1", "version 1 in the status"
    )
    assert status["model_source"] == "/ros_tensorflow" and status["models_refused"] == "0"
    info = json.loads((tmp_path / "robot1" / "model.info.json").read_text())
    assert (
        info["version"] == 1
        and info["sha256"] == hashlib.sha256((tmp_path / "robot1" / "model.tflite").read_bytes()).hexdigest()
    )

    trainer.stop()
    robot.stop()
    serving(model_topic="/ros_tensorflow/model")  # no trainer: the last model received
    output, answer = predict(PROBE)
    assert answer.model_version == 1
    np.testing.assert_allclose(output, trained, atol=1e-5)


@pytest.fixture
def pinned_config(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("input_shape: [10]\n")
    return config


def model_message(flatbuffer, version, input_shape=(10,), output_dim=2, sha256=None):
    return Model(
        version=version,
        source="/tests",
        format="tflite",
        data=flatbuffer,
        sha256=sha256 or hashlib.sha256(flatbuffer).hexdigest(),
        input_shape=list(input_shape),
        output_dim=output_dim,
    )


def test_a_robot_serves_only_what_the_operators_trainer_signed(launch_node, serving, tmp_path):
    generate_key_pair(tmp_path / "operator")
    trainer_config = tmp_path / "trainer.yaml"
    trainer_config.write_text(f"signing_key: {tmp_path / 'operator'}\n")
    _, client = launch_node(config=trainer_config)
    robot_config = tmp_path / "robot.yaml"
    robot_config.write_text(f"trusted_keys: [{tmp_path / 'operator.pub'}]\n")
    serving(model_topic="/ros_tensorflow/model", config=robot_config)
    client.send_goal(TrainGoal(epochs=1))
    assert client.wait_for_result(rospy.Duration(120)) and client.get_state() == GoalStatus.SUCCEEDED
    wait_for(lambda: served_version() == 1, 60, "the serving node on the signed version 1")
    robot_files = {path.name: path.read_bytes() for path in (tmp_path / "robot1").glob("model.*")}
    assert "model.signature.json" in robot_files and (tmp_path / "data" / "model.signature.json").is_file()
    status = Diagnostics("/robot1/ros_tensorflow: model", "/robot1/ros_tensorflow")
    forger = rospy.Publisher("/ros_tensorflow/model", Model, queue_size=1)  # anyone on the network can
    wait_for(lambda: forger.get_num_connections(), 30, "the robot subscribed to the forger")
    forger.publish(model_message(to_tflite(build_classifier()), 2))  # a right sha256, no signature
    values = status.wait_until(lambda s: s["models_refused"] == "1", "the forged model refused")
    assert (
        "version 2 from /tests: it is not signed, and ~trusted_keys accepts only signed models"
        in (values["last_refusal"])
    )
    assert served_version() == 1
    assert {path.name: path.read_bytes() for path in (tmp_path / "robot1").glob("model.*")} == robot_files
    forger.unregister()


def test_bad_models_on_the_topic_are_refused_counted_and_the_served_model_stays(serving, tmp_path, pinned_config):
    served = build_classifier()
    path = write_model(tmp_path / "robot1" / "model.tflite", served)
    serving(model_path=path, model_topic="/tests/model", config=pinned_config)
    status = Diagnostics("/robot1/ros_tensorflow: model", "/robot1/ros_tensorflow")
    good = to_tflite(build_classifier())
    pub = rospy.Publisher("/tests/model", Model, queue_size=10)
    wait_for(lambda: pub.get_num_connections(), 30, "the serving node's ~model_topic")
    bad = [
        model_message(good, 7, sha256="0" * 64),  # a corrupt or cut transfer
        model_message(good[: len(good) // 2], 8),  # a truncated .tflite, hashed as it is
        model_message(to_tflite(build_classifier(input_shape=4)), 9, input_shape=(4,)),  # another shape than pinned
        model_message(good, 10, input_shape=(12,)),  # says one shape, holds another
        model_message(to_tflite(keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])), 11, output_dim=1),
        model_message(to_tflite(keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])), 12),  # logits
    ]
    for i, msg in enumerate(bad, 1):  # one at a time: the node takes the newest model waiting, not a backlog
        pub.publish(msg)
        values = status.wait_until(lambda s, i=i: s["models_refused"] == str(i), f"{i} models refused")
        if i == 4:
            assert "version 10 from /tests: it says input_shape [12]" in values["last_refusal"]
        if i == 5:  # judged as the training node judges it
            assert "the node cannot serve it: one output value per sample: a classifier needs" in values["last_refusal"]
    assert (
        "version 12 from /tests: the node cannot serve it: its outputs are not class probabilities"
        in (values["last_refusal"])
    )
    output, answer = predict(PROBE)
    assert answer.model_version == 0
    np.testing.assert_allclose(output, served.predict(PROBE, verbose=0), atol=1e-5)
    pub.publish(model_message(good, 13))
    wait_for(lambda: served_version() == 13, 30, "the good model served")
    pub.unregister()
    # tfctl: a serving node has no training interface, and says so rather than waiting for one
    for command in (["versions"], ["evaluate"], ["train", "--epochs", "1"], ["activate", "1"]):
        status, out, err = Tfctl("--node", "/robot1/ros_tensorflow", "--timeout", 600, *command).wait(timeout=60)
        assert status == 1 and "/robot1/ros_tensorflow is a serving node (serve_node.py)" in err, out + err
    status, out, err = Tfctl("--node", "/robot1/ros_tensorflow", "predict", write_samples(tmp_path, 2)).wait()
    assert status == 0 and "model version 13" in out, out + err


def test_a_fully_quantized_model_gives_real_probabilities_close_to_the_float_models(serving, tmp_path):
    model = build_classifier()
    x = make_synthetic(n_samples=300, seed=1)[0]
    model.fit(x, make_synthetic(n_samples=300, seed=1)[1], epochs=3, verbose=0)
    path = tmp_path / "robot1" / "int8.tflite"
    path.parent.mkdir(parents=True)
    path.write_bytes(to_tflite(model, "int8", x[:200]))
    serving(model_path=path)
    output, answer = predict(PROBE)
    expected = model.predict(PROBE, verbose=0)
    np.testing.assert_allclose(output, expected, atol=0.05)  # int8 steps of 1/256
    np.testing.assert_allclose(output.sum(axis=1), 1.0, atol=0.02)
    assert list(answer.classes) == expected.argmax(axis=1).tolist()


def test_the_serving_node_registers_again_with_a_master_that_restarted(serving, ros_master, tmp_path):
    model = build_classifier()
    serving(model_path=write_model(tmp_path / "robot1" / "model.tflite", model))
    ros_master.restart()  # knows nothing of the node now
    register_again()  # the tests' own rospy node too
    wait_for(lambda: served_version() == 0, 30, "/robot1/predict found through the new master")
    np.testing.assert_allclose(predict(PROBE)[0], model.predict(PROBE, verbose=0), atol=1e-5)
