"""Bring your own model, through ROS: a detector, a segmentation model, a two-input model and a frozen graph served
by both nodes (predict_tensors, predict_image, ~detections, ~mask, ~image_annotated, /diagnostics' model card), the
detector sent from the training node to a serving node over ~model, and the refusals of each."""

import threading

import numpy as np
import pytest
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import Diagnostics, ServingNode
from ros_tensorflow_msgs.msg import Detections, Tensor, TrainGoal
from ros_tensorflow_msgs.srv import Predict, PredictImage, PredictTensors
from sensor_msgs.msg import Image

from ros_tensorflow.ros.serving_face import rgb_image
from ros_tensorflow.with_tf.demo_models import (
    CLASSES,
    frame_with_squares,
    frozen_graph_bytes,
    postprocess_detector_tflite,
    save_od_api_detector,
    segmentation_model,
    tflite_of_keras,
    two_in_two_out_model,
)

CELLS = [(1, 3, 0), (5, 0, 1), (6, 7, 0)]  # (row, column, class) of the drawn squares


def write(path, data, class_names=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if class_names:
        path.with_suffix(".classes.txt").write_text("".join(f"{name}\n" for name in class_names))
    return path


def assert_found(detections, boxes, cells=CELLS, labels=True):
    assert len(detections) == len(cells), detections
    for (_, _, colour), box in zip(cells, boxes, strict=True):
        match = [d for d in detections if np.allclose([d.x_min, d.y_min, d.width, d.height], box, atol=1.0)]
        assert len(match) == 1 and match[0].class_id == colour, (box, detections)
        assert match[0].label == (CLASSES[colour] if labels else "") and match[0].score > 0.9


class Latest:
    """The messages of a topic, and a wait for the next one."""

    def __init__(self, topic, msg_class):
        self.messages, self._lock = [], threading.Condition()
        self.sub = rospy.Subscriber(topic, msg_class, self._on)

    def _on(self, msg):
        with self._lock:
            self.messages.append(msg)
            self._lock.notify_all()

    def wait(self, count=1, timeout=30):
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.messages) >= count, timeout), f"no message on {self.sub.name}"
            return self.messages[-1]


def test_the_serving_node_serves_a_detector_on_every_path_and_refuses_what_does_not_fit(serving, tmp_path):
    path = write(tmp_path / "robot1" / "model.tflite", postprocess_detector_tflite(), CLASSES)
    serving(model_path=path)
    status = Diagnostics("/robot1/ros_tensorflow: model", "/robot1/ros_tensorflow").wait_until(
        lambda values: "card_0" in values, "the model card"
    )
    assert status["task"] == "detection" and status["card_0"].startswith("task detection")
    assert status["card_2"] == "output 0: output_0 [1, 10, 4] float32 (boxes)"

    frame, boxes = frame_with_squares(CELLS)
    answer = rospy.ServiceProxy("/robot1/predict_image", PredictImage)([rgb_image(frame)])
    assert len(answer.detections) == 1 and answer.classes == () and answer.masks == []
    assert_found(answer.detections[0].detections, boxes)

    small = frame_with_squares(CELLS, 64, 64)[0].astype(np.float64) / 255
    tensors = rospy.ServiceProxy("/robot1/predict_tensors", PredictTensors)
    outputs = tensors([Tensor("", [1, 64, 64, 3], "", small.ravel())]).outputs
    assert [(t.name, list(t.shape), t.dtype) for t in outputs] == [
        ("output_0", [1, 10, 4], "float32"),
        ("output_1", [1, 10], "float32"),
        ("output_2", [1, 10], "float32"),
        ("output_3", [1], "float32"),
    ]
    assert outputs[3].data[0] == 3 and sorted(outputs[1].data[:3]) == [0, 0, 1]

    detections = Latest("/robot1/ros_tensorflow/detections", Detections)
    annotated = Latest("/robot1/ros_tensorflow/image_annotated", Image)
    camera = rospy.Publisher("/robot1/ros_tensorflow/image", Image, queue_size=1)
    message = rgb_image(frame)
    message.header.stamp, message.header.frame_id = rospy.Time(1234), "camera"
    wait_for(lambda: camera.get_num_connections() and annotated.sub.get_num_connections(), 30, "the node's topics")
    wait_for(lambda: camera.publish(message) or annotated.messages, 30, "an annotated frame")
    found = detections.wait()
    assert (found.header.stamp, found.header.frame_id) == (rospy.Time(1234), "camera")
    assert_found(found.detections, boxes)
    drawn = np.frombuffer(annotated.wait().data, np.uint8).reshape(480, 640, 3)
    x, y, w, h = (round(v) for v in boxes[0])
    assert (drawn[y, x + w // 2] != frame[y, x + w // 2]).any()  # the box's top edge is drawn over the square

    for service, request, refusal in [
        (tensors, [Tensor("", [1, 32, 32, 3], "", [0.0] * 3072)], "input 'image' takes shape [1, 64, 64, 3]"),
        (tensors, [Tensor("", [1, 64, 64, 3], "uint8", [0.0] * 12288)], "input 'image' is float32, got dtype 'uint8'"),
        (tensors, [Tensor("pixels", [], "", [0.0] * 12288)], "the model has no input 'pixels' (its inputs: image)"),
        (rospy.ServiceProxy("/robot1/predict", Predict), [0.0] * 12288, "a detection model answers predict_tensors"),
    ]:
        with pytest.raises(rospy.ServiceException) as refused:
            service(request)
        assert refusal in str(refused.value)


def test_segmentation_and_letterbox_in_the_serving_node(serving, tmp_path):
    path = write(tmp_path / "robot1" / "model.tflite", tflite_of_keras(segmentation_model()))
    serving(yaml="resize: letterbox\n", model_path=path)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:300, 100:300, 0], frame[300:460, 400:600, 1] = 255, 255
    masks = Latest("/robot1/ros_tensorflow/mask", Image)
    camera = rospy.Publisher("/robot1/ros_tensorflow/image", Image, queue_size=1)
    wait_for(lambda: camera.publish(rgb_image(frame)) or masks.messages, 30, "a mask")
    for mask_msg in (
        masks.wait(),
        rospy.ServiceProxy("/robot1/predict_image", PredictImage)([rgb_image(frame)]).masks[0],
    ):
        assert (mask_msg.encoding, mask_msg.width, mask_msg.height) == ("mono8", 640, 480)
        mask = np.frombuffer(mask_msg.data, np.uint8).reshape(480, 640)
        assert (mask[200, 200], mask[380, 500], mask[40, 40]) == (1, 2, 0)


def test_the_training_node_serves_an_od_api_saved_model_refuses_to_train_it_and_deploys_it(
    launch_node, serving, tmp_path
):
    config = tmp_path / "detector.yaml"
    config.write_text("label_offset: -1\nclass_names: [red, green]\n")
    node, client = launch_node(model_path=save_od_api_detector(tmp_path / "detector"), config=config)
    frame, boxes = frame_with_squares(CELLS)
    answer = rospy.ServiceProxy("/predict_image", PredictImage)([rgb_image(frame)])
    assert_found(answer.detections[0].detections, boxes)  # 1-based classes, label_offset -1

    client.send_goal_and_wait(TrainGoal(epochs=1), rospy.Duration(60))
    assert client.get_state() == GoalStatus.ABORTED
    assert "a detection model is served, not trained" in client.get_result().message
    assert "input 0: input_tensor [1, -1, -1, 3] uint8 (the image)" in node.log_path.read_text()

    # Converted to .tflite and sent over ~model: the robot serves it without TensorFlow, with its class names
    serving(yaml="label_offset: -1\n", model_topic="/ros_tensorflow/model")
    wait_for(lambda: _served_detections(frame), 60, "the robot to serve the detector")
    assert_found(_served_detections(frame), boxes)


def _served_detections(frame):
    try:
        answer = rospy.ServiceProxy("/robot1/predict_image", PredictImage)([rgb_image(frame)])
    except rospy.ServiceException:
        return None
    return answer.detections[0].detections if answer.detections else None


def test_the_training_node_serves_a_frozen_graph_and_a_two_input_keras_model_through_predict_tensors(
    launch_node, tmp_path
):
    graph = write(tmp_path / "graph.pb", frozen_graph_bytes())
    config = tmp_path / "graph.yaml"
    config.write_text("output_tensors: ['y:0', 's:0']\n")
    node, _ = launch_node(model_path=graph, config=config)
    tensors = rospy.ServiceProxy("/predict_tensors", PredictTensors)
    outputs = tensors([Tensor("x:0", [2, 3], "float32", [1, 2, 3, 0, 0, 1])]).outputs
    assert [(t.name, list(t.shape)) for t in outputs] == [("y:0", [2, 3]), ("s:0", [2])]
    assert list(outputs[0].data) == [3, 5, 7, 1, 1, 3] and list(outputs[1].data) == [6, 1]
    node.stop()

    two = tmp_path / "two.keras"
    two_in_two_out_model().save(two)
    launch_node(model_path=two)
    outputs = tensors([Tensor("b", [1, 3], "", [10, 20, 30]), Tensor("a", [1, 4], "", [1, 2, 3, 4])]).outputs
    assert [t.name for t in outputs] == ["total", "twice"]
    assert list(outputs[0].data) == [70] and list(outputs[1].data) == [2, 4, 6, 8]


def test_a_task_that_contradicts_the_model_stops_the_serving_node_naming_both(ros_master, tmp_path):
    path = write(tmp_path / "robot1" / "model.tflite", postprocess_detector_tflite())
    (tmp_path / "serve.yaml").write_text("task: segmentation\n")
    node = ServingNode(tmp_path, model_path=path, config=tmp_path / "serve.yaml")
    try:
        wait_for(lambda: node.process.poll() is not None, 60, "the node to stop")
        assert "~task is segmentation, but it cannot be: it does not map one image input" in node.log()
    finally:
        node.stop()
