"""Serving backends of the launched node: LiteRT by default, TensorFlow on request, the exported .tflite."""

import pathlib

import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from ai_edge_litert.interpreter import Interpreter
from conftest import wait_for
from ros_processes import Diagnostics
from ros_tensorflow_msgs.msg import TrainGoal
from ros_tensorflow_msgs.srv import Predict
from std_srvs.srv import Trigger

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.with_tf.persistence import load_model

PROBE = make_synthetic(n_samples=100, seed=5)[0]


def predict(x):
    answer = rospy.ServiceProxy("/predict", Predict)(x.ravel().tolist())
    return np.array(answer.output).reshape(len(x), -1)


def run_tflite(path, x):
    """The exported file run by LiteRT alone, as the README shows."""
    interpreter = Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_litert_serves_each_commit_and_the_tflite_export_answers_alike(launch_node):
    node, client = launch_node()
    diagnostics = Diagnostics()
    diagnostics.wait_until(lambda s: s["serving"] == "litert, commit 1", "LiteRT serving the start-up model")

    client.send_goal(TrainGoal(epochs=3))
    assert client.wait_for_result(rospy.Duration(120))
    assert client.get_state() == GoalStatus.SUCCEEDED, client.get_goal_status_text()
    result = client.get_result()
    status = diagnostics.wait_until(
        lambda s: s["serving"].startswith("litert, commit ") and s["serving"] != "litert, commit 1",
        "LiteRT serving the trained weights",
    )
    assert float(status["litert_conversion_ms"]) > 0 and float(status["commit_to_litert_ms"]) > 0

    exported = pathlib.Path(result.model_path).with_suffix(".tflite")
    wait_for(lambda: f"exported {exported}" in node.log(), 60, "the export to be logged")
    keras_model, _ = load_model(result.model_path)
    answers = predict(PROBE)
    np.testing.assert_allclose(answers, keras_model(PROBE.astype(np.float32)).numpy(), atol=1e-5)
    np.testing.assert_allclose(answers, run_tflite(exported, PROBE), atol=1e-5)


def test_tensorflow_backend_serves_without_litert(launch_node, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("serving_backend: tensorflow\n")
    launch_node(config=config, model_path=tmp_path / "model.keras")
    status = Diagnostics().wait_until(lambda s: "serving" in s, "the model status")
    assert status["serving"] == "tensorflow, commit 1" and "litert_conversion_ms" not in status
    rospy.wait_for_service("/ros_tensorflow/save", 30)
    assert rospy.ServiceProxy("/ros_tensorflow/save", Trigger)().success
    keras_model, _ = load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(predict(PROBE), keras_model(PROBE.astype(np.float32)).numpy(), atol=1e-5)
