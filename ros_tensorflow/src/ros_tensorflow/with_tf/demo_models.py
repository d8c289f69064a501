"""Models a user brings, built for the demo (nodes/demo_models.py), the tests and the benchmark: detectors
(TFLite_Detection_PostProcess, as the Object Detection API's TFLite exporter makes them, and a SavedModel with the
Object Detection API's outputs), a segmentation model, a model of two inputs and two outputs, a TF1 frozen graph;
and frames with drawn squares where they find objects.

The detectors find red (class 0) and green (class 1) squares that cover one cell of a GRID x GRID grid of the model's
SIZE x SIZE input: each cell is an anchor, scored by how red or green it is; a box is its cell.
"""

import contextlib
import io

import numpy as np
import tensorflow as tf

SIZE, GRID, MAX_DETECTIONS = 64, 8, 10
CELL = SIZE // GRID
CLASSES = ("red", "green")

_cy, _cx = np.meshgrid((np.arange(GRID) + 0.5) / GRID, (np.arange(GRID) + 0.5) / GRID, indexing="ij")
ANCHORS = np.stack([_cy.ravel(), _cx.ravel(), np.full(GRID * GRID, 1 / GRID), np.full(GRID * GRID, 1 / GRID)], 1)
ANCHORS = ANCHORS.astype(np.float32)  # (ycenter, xcenter, height, width), as the post-processing op takes them


def _postprocess_signature():
    attrs = {
        "max_detections": MAX_DETECTIONS,
        "max_classes_per_detection": 1,
        "detections_per_class": MAX_DETECTIONS,
        "num_classes": len(CLASSES),
        "y_scale": 10.0,
        "x_scale": 10.0,
        "h_scale": 5.0,
        "w_scale": 5.0,
        "nms_score_threshold": 0.3,
        "nms_iou_threshold": 0.5,
        "use_regular_nms": False,
    }
    parts = ['name: "TFLite_Detection_PostProcess"']
    for key, value in attrs.items():
        kind = "b" if isinstance(value, bool) else "i" if isinstance(value, int) else "f"
        text = str(value).lower() if isinstance(value, bool) else value
        parts.append(f'attr {{ key: "{key}" value {{ {kind}: {text} }} }}')
    return " ".join(parts)


def _cell_scores(image):
    """(1, GRID * GRID, classes) scores of an image (1, SIZE, SIZE, 3) in [0, 1]."""
    pooled = tf.nn.avg_pool2d(image, CELL, CELL, "VALID")
    return tf.sigmoid(12.0 * tf.reshape(pooled[..., : len(CLASSES)], [1, GRID * GRID, len(CLASSES)]) - 6.0)


class _PostProcessDetector(tf.Module):
    @tf.function(experimental_implements=_postprocess_signature())
    def _postprocess(self, box_encodings, class_predictions, anchors):
        del box_encodings, class_predictions, anchors  # the op replaces this body in the .tflite
        return (
            tf.zeros([1, MAX_DETECTIONS, 4]),
            tf.zeros([1, MAX_DETECTIONS]),
            tf.zeros([1, MAX_DETECTIONS]),
            tf.zeros([1]),
        )

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
    def __call__(self, image):
        scores = tf.concat([tf.zeros([1, GRID * GRID, 1]), _cell_scores(image)], -1)  # background first
        return self._postprocess(tf.zeros([1, GRID * GRID, 4]), scores, tf.constant(ANCHORS))


def postprocess_detector_tflite(int8=False):
    """A .tflite detector ending in TFLite_Detection_PostProcess; int8: quantized, uint8 image input."""
    module = _PostProcessDetector()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.allow_custom_ops = True
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random((1, SIZE, SIZE, 3), np.float32)] for _ in range(20))
        converter.inference_input_type = tf.uint8
    return converter.convert()


class _OdApiDetector(tf.Module):
    """The Object Detection API's SavedModel signature: uint8 images of any size in; boxes, 1-based classes,
    scores and their count out."""

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def __call__(self, input_tensor):
        image = tf.image.resize(
            tf.cast(input_tensor, tf.float32) / 255.0, [SIZE, SIZE], method="bilinear", antialias=False
        )
        scores = _cell_scores(image)[0]
        best, cells = tf.math.top_k(tf.reduce_max(scores, axis=1), MAX_DETECTIONS)
        centres = tf.gather(tf.constant(ANCHORS), cells)
        half = centres[:, 2:] / 2
        boxes = tf.concat([centres[:, :2] - half, centres[:, :2] + half], 1)
        classes = tf.cast(tf.argmax(tf.gather(scores, cells), axis=1), tf.float32) + 1.0
        return {
            "detection_boxes": boxes[tf.newaxis],
            "detection_classes": classes[tf.newaxis],
            "detection_scores": best[tf.newaxis],
            "num_detections": tf.constant([float(MAX_DETECTIONS)]),
        }


def save_od_api_detector(path):
    module = _OdApiDetector()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__.get_concrete_function()})
    return path


def segmentation_model(size=32):
    """A Keras model (1, size, size, 3) -> (1, size, size, 3) scores: background 0.5, red, green; so a pixel's
    class is 1 where it is red, 2 where green, else 0."""
    import keras  # noqa: PLC0415

    inputs = keras.Input((size, size, 3), name="image")
    layer = keras.layers.Conv2D(3, 1, name="classes")
    outputs = layer(inputs)
    layer.set_weights([np.array([[[[0, 1, 0], [0, 0, 1], [0, 0, 0]]]], np.float32), np.array([0.5, 0, 0], np.float32)])
    return keras.Model(inputs, outputs)


def two_in_two_out_model():
    """(a [4], b [3]) -> (sum of a and b [1], a times 2 [4]): every output checkable by hand."""
    import keras  # noqa: PLC0415

    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    total = keras.layers.Concatenate()([a, b])
    ones = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", name="total")(total)
    double = keras.layers.Dense(4, use_bias=False, kernel_initializer=keras.initializers.Identity(2.0), name="twice")(a)
    return keras.Model([a, b], [ones, double])


def frozen_graph_bytes():
    """A TF1 frozen graph: x [None, 3] float32 -> y = 2 x + 1 and s = sum(x), tensors named x:0, y:0, s:0."""
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415
        convert_variables_to_constants_v2,
    )

    weight = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def graph(x):
        return tf.identity(weight * x + 1.0, name="y"), tf.reduce_sum(x, axis=1, name="s")

    frozen = convert_variables_to_constants_v2(graph.get_concrete_function())
    return frozen.graph.as_graph_def().SerializeToString()


def tflite_of_keras(model):
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the artifact it saves on the way
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def write_all(folder):
    """Every demo model into folder, with the detectors' class names beside them; returns the paths written."""
    import pathlib  # noqa: PLC0415

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "detector.tflite": postprocess_detector_tflite(),
        "detector_int8.tflite": postprocess_detector_tflite(int8=True),
        "segmenter.tflite": tflite_of_keras(segmentation_model()),
        "two_inputs.tflite": tflite_of_keras(two_in_two_out_model()),
        "graph.pb": frozen_graph_bytes(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    save_od_api_detector(folder / "detector_saved_model")
    for stem in ("detector", "detector_int8", "detector_saved_model"):
        (folder / f"{stem}.classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    return sorted(folder.iterdir())


def frame_with_squares(cells, width=640, height=480, letterbox=False):
    """An rgb8 frame with a red or green rectangle on each (row, column, class) cell of the model's grid, and
    the boxes (x_min, y_min, width, height) in frame pixels a detector must find there. letterbox: the grid as a
    letterboxed frame lies in the model's input (rows inside the picture only)."""
    frame = np.zeros((height, width, 3), np.uint8)
    scale = min(SIZE / width, SIZE / height)
    new_w, new_h = round(width * scale), round(height * scale)  # the picture's size in the input, whole pixels
    boxes = []
    for row, column, colour in cells:
        if letterbox:
            dx, dy = (SIZE - new_w) // 2, (SIZE - new_h) // 2
            x0, y0 = (column * CELL - dx) * width / new_w, (row * CELL - dy) * height / new_h
            w, h = CELL * width / new_w, CELL * height / new_h
        else:
            w, h = width / GRID, height / GRID
            x0, y0 = column * w, row * h
        frame[round(y0) : round(y0 + h), round(x0) : round(x0 + w), colour] = 255
        boxes.append((x0, y0, w, h))
    return frame, boxes
