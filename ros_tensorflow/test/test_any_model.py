"""Models a user brings, without ROS: their tensors and task recognised, detections and masks in source pixels
(stretched and letterboxed), predict_tensors' checks, quantized tensors, a frozen graph, and ~task against them."""

import numpy as np
import pytest

from ros_tensorflow.tf_free.any_model import AnyModel, TensorError, feeds, recognise, resolve_any
from ros_tensorflow.tf_free.files import ModelFileError
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, served_tflite
from ros_tensorflow.tf_free.vision import Preprocessing, class_mask, detections
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
from ros_tensorflow.with_tf.foreign import runner_of, to_tflite
from ros_tensorflow.with_tf.model import build_classifier

CELLS = [(1, 3, 0), (5, 0, 1), (6, 7, 0)]  # (row, column, class): red, green, red


@pytest.fixture(scope="module")
def detector():
    return postprocess_detector_tflite()


def found_boxes(model, frame, preprocessing=None, **options):
    outputs, placement = model.run_frame(frame, preprocessing or Preprocessing())
    return detections(outputs, model.signature.roles, placement, **options)


def assert_boxes(found, cells, boxes, tolerance=1.0):
    """Each drawn square found once, with its class, its box within tolerance pixels."""
    assert len(found) == len(cells), found
    for (_, _, colour), box in zip(cells, boxes, strict=True):
        match = [d for d in found if np.allclose(d[2:], box, atol=tolerance)]
        assert len(match) == 1 and match[0][0] == colour, (box, found)


def test_a_postprocess_detector_is_recognised_and_its_card_names_each_tensor(detector):
    model = served_tflite(detector)
    assert isinstance(model, AnyModel) and model.task == "detection"
    assert model.signature.roles == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}
    assert model.card[0] == "task detection (its tensors allow: detection, tensors)"
    assert model.card[1] == "input 0: image [1, 64, 64, 3] float32 (the image)"
    assert model.card[2:] == [
        "output 0: output_0 [1, 10, 4] float32 (boxes)",
        "output 1: output_1 [1, 10] float32 (classes)",
        "output 2: output_2 [1, 10] float32 (scores)",
        "output 3: output_3 [1] float32 (count)",
    ]
    with pytest.raises(ValueError, match="a detection model answers predict_tensors, predict_image and ~image"):
        model.predict_samples(np.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("size", [(640, 480), (300, 500)])
def test_boxes_come_back_in_source_pixels(detector, resize, size):
    model = served_tflite(detector)
    cells = [(2, 3, 0), (5, 1, 1)] if resize == "letterbox" else CELLS
    frame, boxes = frame_with_squares(cells, *size, letterbox=resize == "letterbox")
    if resize == "letterbox" and size == (300, 500):  # a portrait frame: the columns in the picture only
        cells = [(2, 3, 0), (5, 4, 1)]
        frame, boxes = frame_with_squares(cells, *size, letterbox=True)
    assert_boxes(found_boxes(model, frame, Preprocessing(resize=resize)), cells, boxes)


def test_the_score_threshold_max_detections_and_label_offset_apply(detector):
    model = served_tflite(detector)
    frame, _ = frame_with_squares(CELLS)
    assert len(found_boxes(model, frame, max_detections=2)) == 2
    assert found_boxes(model, frame, score_threshold=0.999) == []
    assert sorted(d[0] for d in found_boxes(model, frame, label_offset=1)) == [1, 1, 2]


def test_an_int8_detector_takes_the_pixels_as_they_are_and_finds_the_same_boxes():
    model = served_tflite(postprocess_detector_tflite(int8=True))
    assert model.tensor_inputs[0].stored == "uint8" and model.tensor_inputs[0].dtype == "float32"
    frame, boxes = frame_with_squares(CELLS)
    assert_boxes(found_boxes(model, frame), CELLS, boxes)
    # predict_tensors gives real values: quantized with the input's scale and zero point, outputs dequantized
    image = frame_with_squares(CELLS, 64, 64)[0][np.newaxis].astype(np.float32) / 255
    outputs = model.run_tensors(feeds([("", [1, 64, 64, 3], "", image.ravel())], model.tensor_inputs))
    assert outputs[2].dtype == np.float32 and int(outputs[3][0]) == 3 and outputs[2][0, 0] > 0.5


def test_an_od_api_saved_model_is_recognised_by_its_output_names_and_converts_for_serving_nodes(tmp_path):
    runner = runner_of(save_od_api_detector(tmp_path / "detector"))
    signature = recognise(runner.inputs, runner.outputs)
    model = AnyModel(runner, resolve_any("", None, signature), signature, CLASSES)
    assert model.task == "detection" and model.card[1] == "input 0: input_tensor [1, -1, -1, 3] uint8 (the image)"
    frame, boxes = frame_with_squares(CELLS)
    found = found_boxes(model, frame, label_offset=-1)  # the Object Detection API counts classes from 1
    assert_boxes(found, CELLS, boxes)
    served = served_tflite(to_tflite(runner))  # what a serving node receives over ~model
    assert served.task == "detection"
    assert_boxes(found_boxes(served, frame, label_offset=-1), CELLS, boxes)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_a_segmentation_model_gives_a_mask_of_class_ids_at_the_source_size(resize):
    model = served_tflite(tflite_of_keras(segmentation_model()))
    assert model.task == "segmentation" and model.signature.roles == {"mask": 0}
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:300, 100:300, 0] = 255  # red
    frame[300:460, 400:600, 1] = 255  # green
    outputs, placement = model.run_frame(frame, Preprocessing(resize=resize))
    mask = class_mask(outputs[0], placement)
    assert mask.shape == (480, 640) and mask.dtype == np.uint8
    assert mask[200, 200] == 1 and mask[380, 500] == 2 and mask[40, 40] == 0 and mask[200, 500] == 0
    expected = np.zeros((480, 640), np.uint8)
    expected[100:300, 100:300], expected[300:460, 400:600] = 1, 2
    assert (mask == expected).mean() > 0.97  # nearest neighbour from 32 x 32: only edges differ


def test_two_inputs_and_two_outputs_by_name_and_in_order_with_each_bad_tensor_named():
    model = served_tflite(tflite_of_keras(two_in_two_out_model()))
    assert model.task == "tensors" and [spec.name for spec in model.tensor_inputs] == ["a", "b"]
    a, b = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0]
    by_name = feeds([("b", [1, 3], "float32", b), ("a", [1, 4], "", a)], model.tensor_inputs)
    in_order = feeds([("", [1, 4], "", a), ("", [1, 3], "", b)], model.tensor_inputs)
    total, twice = model.run_tensors(by_name)
    assert total[0, 0] == pytest.approx(70.0) and twice[0].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert model.run_tensors(in_order)[0][0, 0] == pytest.approx(70.0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([("a", [1, 5], "", [0.0] * 5), ("b", [1, 3], "", [0.0] * 3)], "input 'a' takes shape [-1, 4] (-1: any size)"),
        ([("a", [1, 4], "int32", [0.0] * 4), ("b", [1, 3], "", [0.0] * 3)], "input 'a' is float32, got dtype 'int32'"),
        ([("c", [1, 4], "", [0.0] * 4)], "the model has no input 'c' (its inputs: a, b)"),
        ([("a", [1, 4], "", [0.0] * 4)], "give each input once, by name; missing: ['b']"),
        ([("", [1, 4], "", [0.0] * 4)], "1 tensors without names for a model of 2 inputs"),
        ([("a", [1, 4], "", [0.0] * 3), ("b", [1, 3], "", [0.0] * 3)], "input 'a' of shape [1, 4] needs 4 values"),
        ([("a", [1, 4], "", [np.nan] * 4), ("b", [1, 3], "", [0.0] * 3)], "input 'a' holds NaN or Inf"),
        ([("a", [1, 4], "", [0.0] * 4), ("b", [1, 3], "", [0.0, -np.inf, 0.0])], "input 'b' holds NaN or Inf"),
        (
            [("a", [1, 4], "", [0.0, 1e39, 0.0, 0.0]), ("b", [1, 3], "", [0.0] * 3)],
            "input 'a' is float32: values within its range only (|v| <= 3.403e+38)",
        ),
        ([("a", [], "", [0.0] * 4), ("b", [1, 3], "", [0.0] * 3)], "input 'a' has shape [-1, 4]: give the tensor's"),
    ],
)
def test_a_tensor_that_does_not_fit_is_refused_naming_it(given, message):
    model = served_tflite(tflite_of_keras(two_in_two_out_model()))
    with pytest.raises(TensorError) as refused:
        feeds(given, model.tensor_inputs)
    assert message in str(refused.value)


def test_an_integer_input_takes_whole_numbers_in_its_range_only(tmp_path):
    runner = runner_of(save_od_api_detector(tmp_path / "detector"))
    with pytest.raises(TensorError, match="input 'input_tensor' is uint8: whole numbers in its range only"):
        feeds([("", [1, 2, 2, 3], "", [300.0] * 12)], runner.inputs)
    assert feeds([("", [1, 2, 2, 3], "uint8", [255.0] * 12)], runner.inputs)[0].dtype == np.uint8


def test_a_frozen_graph_is_served_by_a_session_of_its_own_and_converts(tmp_path):
    path = tmp_path / "graph.pb"
    path.write_bytes(frozen_graph_bytes())
    runner = runner_of(path, [], ["y:0", "s"])
    assert [str(spec) for spec in runner.inputs + runner.outputs] == [
        "x:0 [-1, 3] float32",
        "y:0 [-1, 3] float32",
        "s:0 [-1] float32",
    ]
    y, s = runner.run([np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], np.float32)])
    assert y.tolist() == [[3.0, 5.0, 7.0], [1.0, 1.0, 3.0]] and s.tolist() == [6.0, 1.0]
    served = served_tflite(to_tflite(runner))
    assert served.task == "tensors" and served.run_tensors([np.ones((1, 3), np.float32)])[1].tolist() == [3.0]
    with pytest.raises(ModelFileError, match="set ~output_tensors to its output tensors"):
        runner_of(path)
    with pytest.raises(ModelFileError, match="has no tensor 'z:0'"):
        runner_of(path, [], ["z:0"])


def test_task_overrides_the_guess_and_a_contradiction_names_both(detector):
    assert served_tflite(detector, wanted_task="tensors").task == "tensors"
    with pytest.raises(ModelRefused, match="~task is segmentation, but it cannot be: it does not map one image"):
        served_tflite(detector, wanted_task="segmentation")
    with pytest.raises(ModelRefused, match="~task is detection, but it is a tensors model"):
        served_tflite(detector, task="tensors", wanted_task="detection")
    classifier = tflite_of_keras(build_classifier())
    with pytest.raises(ModelRefused, match="~task is detection, but it cannot be: it has"):
        served_tflite(classifier, wanted_task="detection")
    assert served_tflite(classifier).task == "classification"  # one input -> (k, classes): as before
