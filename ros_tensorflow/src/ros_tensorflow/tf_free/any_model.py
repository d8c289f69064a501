"""A model a user brings: its tensors, the task its signature shows, and its model card; no TensorFlow, no rospy.

Both nodes serve such a model through a runner (LiteRT's here, TensorFlow's in with_tf.foreign) that has `inputs`
and `outputs` (TensorSpec lists) and run(arrays in the order of inputs) -> arrays in the order of outputs.
"""

import dataclasses
import functools
import math

import numpy as np

from ros_tensorflow.tf_free.samples import (
    FLOAT64,
    MEMORY_BYTES,
    as_samples,
    check_output,
    in_float_range,
    numeric_array,
)
from ros_tensorflow.tf_free.tasks import (
    CLASSIFICATION,
    DETECTION,
    REGRESSION,
    SEGMENTATION,
    TENSORS,
    TaskError,
)
from ros_tensorflow.tf_free.vision import prepare

OD_API_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
DETECTION_ROLES = ("boxes", "classes", "scores", "count")  # TFLite_Detection_PostProcess's outputs, in its order
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
VISION_TASKS = (DETECTION, SEGMENTATION)
FLOAT_DTYPES = ("float32", "float64", "float16")
# a float64 value beyond these becomes Inf in the model: refused, as predict refuses it
NARROW_FLOAT_MAX = {dtype: float(np.finfo(dtype).max) for dtype in ("float32", "float16")}


class TensorError(ValueError):
    """A tensor a request gave that the model cannot take; names the tensor."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, shape (-1 where any size goes, as the batch often) and the numpy dtype of its
    values; stored: the dtype inside the model where it differs (a quantized tensor's int8 or uint8: requests and
    answers carry real values, quantized and dequantized with its scale and zero point)."""

    name: str
    shape: tuple
    dtype: str
    stored: str = ""

    def __str__(self):
        return f"{self.name} {list(self.shape)} {self.dtype}" + (f" (stored {self.stored})" if self.stored else "")


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a model's tensors say it is: the tasks it can be served as (the first is the guess) and, for detection
    and segmentation, which input is the image and which outputs hold what."""

    tasks: tuple
    image_input: int = -1  # the image input's position; -1: none
    roles: dict = dataclasses.field(default_factory=dict)  # role -> output position (DETECTION_ROLES, 'mask')
    why_not: dict = dataclasses.field(default_factory=dict)  # task -> why the signature is not one of it


def _is_image(spec):
    """(k, height, width, 1 or 3), height and width > 1 or any (-1: an Object Detection API model's)."""
    return len(spec.shape) == 4 and spec.shape[3] in (1, 3) and all(s == -1 or s > 1 for s in spec.shape[1:3])


def recognise(inputs, outputs, postprocess_outputs=()):
    """The Signature of a model with these TensorSpecs. postprocess_outputs: the positions of the outputs of a
    TFLite_Detection_PostProcess op in the model (boxes, classes, scores, count), where the runner sees one."""
    names = [spec.name.split(":")[0] for spec in outputs]
    image = next((i for i, spec in enumerate(inputs) if _is_image(spec)), -1)
    tasks, roles, why_not = [], {}, {}
    if all(name in names for name in OD_API_OUTPUTS[:3]):
        roles = {
            role: names.index(name) for role, name in zip(DETECTION_ROLES, OD_API_OUTPUTS, strict=True) if name in names
        }
    elif len(postprocess_outputs) == 4:
        roles = dict(zip(DETECTION_ROLES, postprocess_outputs, strict=True))
    elif len(outputs) == 4 and names[0] == POSTPROCESS_OP:  # an SSD exported for TFLite: its outputs' names
        roles = dict(zip(DETECTION_ROLES, range(4), strict=True))
    if roles and image >= 0:
        tasks.append(DETECTION)
    else:
        why_not[DETECTION] = (
            "it has no image input (k, height, width, 1 or 3)"
            if roles
            else f"it has neither the Object Detection API's outputs ({', '.join(OD_API_OUTPUTS[:3])}) nor those of"
            f" {POSTPROCESS_OP}"
        )
    single = len(inputs) == 1 and len(outputs) == 1
    if single and image == 0 and _mask_like(outputs[0], inputs[0]):
        tasks.append(SEGMENTATION)
        roles = roles or {"mask": 0}
    else:
        why_not[SEGMENTATION] = "it does not map one image input to one output (k, height, width[, classes])"
    if single and len(outputs[0].shape) == 2 and outputs[0].shape[1] > 0 and -1 not in inputs[0].shape[1:]:
        tasks += [CLASSIFICATION, REGRESSION]
    else:
        why_not[CLASSIFICATION] = why_not[REGRESSION] = (
            "it does not map one input of known sample shape to one output (k, outputs)"
        )
    return Signature((*tasks, TENSORS), image, roles, why_not)


def _mask_like(output, image):
    rank = len(output.shape)
    if rank not in (3, 4) or min(output.shape[1:3]) <= 1:
        return False
    return rank == 3 or output.shape[3] >= 1 and output.shape[1:3] != (1, 1) and image.shape[1] > 1


def resolve_any(wanted, own, signature, what="the model"):
    """The task to serve a model as: wanted (~task) over its own (the task its trainer said; a contradiction is a
    TaskError) over the guess from its signature; TaskError if its tensors cannot be served as that task."""
    if own and wanted and own != wanted:
        raise TaskError(f"~task is {wanted}, but {what} is a {own} model: set ~task to {own} or '' (the model's)")
    task = wanted or own or signature.tasks[0]
    if task not in signature.tasks:
        said = "~task is" if wanted else f"{what} says it is a"
        raise TaskError(f"{said} {task}, but {what} cannot be: {signature.why_not[task]}")
    return task


def model_card(inputs, outputs, task, signature):
    """The lines a node logs at load and /diagnostics shows: each tensor and the task recognised."""
    lines = [f"task {task} (its tensors allow: {', '.join(signature.tasks)})"]
    lines += [
        f"input {i}: {spec}" + (" (the image)" if i == signature.image_input else "") for i, spec in enumerate(inputs)
    ]
    roles = {position: role for role, position in signature.roles.items()} if task in VISION_TASKS else {}
    lines += [f"output {i}: {spec}" + (f" ({roles[i]})" if i in roles else "") for i, spec in enumerate(outputs)]
    return lines


def feeds(requested, inputs, max_values=0):
    """Arrays in the order of inputs (TensorSpecs) from requested (name, shape, dtype, data) tuples, by name or, where
    every name is '', in order; TensorError names the tensor that does not fit. max_values: most values in all (0:
    as many as fill 1/4096 of the memory in float64)."""
    layout = tuple((name, tuple(shape), dtype) for name, shape, dtype, _ in requested)
    arrays = [None] * len(inputs)
    plan = _placed(layout, tuple(inputs), max_values or MEMORY_BYTES // 4096 // 8)
    for (i, shape, size), (*_, data) in zip(plan, requested, strict=True):
        arrays[i] = _values(inputs[i], shape, size, data)
    return arrays


@functools.lru_cache(maxsize=64)
def _placed(layout, inputs, max_values):
    """(position among inputs, shape, size) of each tensor of layout ((name, shape, dtype) of each): the checks of
    names, shapes, dtypes and sizes, the same for every request a client sends, made once for each layout."""
    by_name = {spec.name: i for i, spec in enumerate(inputs)}
    if all(name == "" for name, *_ in layout):
        if len(layout) != len(inputs):
            raise TensorError(
                f"{len(layout)} tensors without names for a model of {len(inputs)} inputs:"
                f" {', '.join(str(spec) for spec in inputs)}"
            )
        order = list(range(len(inputs)))
    else:
        order = []
        for name, *_ in layout:
            if name not in by_name:
                raise TensorError(f"the model has no input {name!r} (its inputs: {', '.join(by_name)})")
            order.append(by_name[name])
        missing = [inputs[i].name for i in range(len(inputs)) if i not in order]
        if missing or len(set(order)) != len(order):
            raise TensorError(f"give each input once, by name; missing: {missing or 'none'}, given: {len(order)}")
    shapes = [_shape(inputs[i], list(shape), dtype) for (_, shape, dtype), i in zip(layout, order, strict=True)]
    if sum(math.prod(shape) for shape in shapes) > max_values:
        raise TensorError(f"more than {max_values} values in one request (~max_request_samples)")
    return tuple((i, shape, math.prod(shape)) for i, shape in zip(order, shapes, strict=True))


def _shape(spec, shape, dtype):
    """The shape a tensor given as shape and dtype ('': the model's) takes: spec's where shape is empty."""
    what = f"input {spec.name!r}"
    if dtype and dtype != spec.dtype:
        raise TensorError(f"{what} is {spec.dtype}, got dtype {dtype!r}")
    if not shape:
        shape = list(spec.shape)
        if -1 in shape:
            raise TensorError(f"{what} has shape {shape}: give the tensor's shape")
    if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)):
        raise TensorError(f"{what} takes shape {list(spec.shape)} (-1: any size), got {shape}")
    if any(size < 0 for size in shape):
        raise TensorError(f"{what} cannot have shape {shape}")
    return tuple(shape)


def _values(spec, shape, size, data):
    if len(data) != size:
        raise TensorError(f"input {spec.name!r} of shape {list(shape)} needs {size} values, got {len(data)}")
    if type(data) is not np.ndarray or data.dtype is not FLOAT64:  # a numpy_msg's data is already one
        data = numeric_array(data, f"input {spec.name!r}").astype(np.float64)
    values = data.reshape(shape)
    largest = NARROW_FLOAT_MAX.get(spec.dtype)
    if not (in_float_range(values.ravel(), largest) if largest and size else np.isfinite(values).all()):
        if np.isfinite(values).all():  # finite in float64, Inf in the model's float32 or float16
            raise TensorError(
                f"input {spec.name!r} is {spec.dtype}: values within its range only (|v| <= {largest:.4g})"
            )
        raise TensorError(f"input {spec.name!r} holds NaN or Inf")
    if spec.dtype not in FLOAT_DTYPES:
        info = np.iinfo(spec.dtype) if spec.dtype != "bool" else None
        if (values != np.round(values)).any() or info and (values.min() < info.min or values.max() > info.max):
            raise TensorError(f"input {spec.name!r} is {spec.dtype}: whole numbers in its range only")
    return values.astype(spec.dtype)


def classic_specs(input_shape, output_dim):
    """The tensors of a model of one input and one (k, outputs) output as predict_tensors shows them, the same
    in both nodes whatever the file calls them."""
    return [TensorSpec("input", (-1, *input_shape), "float32")], [TensorSpec("output", (-1, output_dim), "float32")]


def classic_card(input_shape, output_dim, task):
    inputs, outputs = classic_specs(input_shape, output_dim)
    return model_card(inputs, outputs, task, recognise(inputs, outputs))


class AnyModel:
    """A model a user brings (detection, segmentation, tensors), as the serving face uses a model: the same
    attributes as a classifier's (input_shape: its image's or first input's sample shape; output_dim 0), but it
    answers predict_tensors and, with an image input, frames (run_frame); predict and ~input are refused."""

    def __init__(self, runner, task, signature, class_names=(), version=0, source=""):
        self.runner, self.task, self.signature = runner, task, signature
        self.tensor_inputs, self.tensor_outputs = list(runner.inputs), list(runner.outputs)
        main = self.tensor_inputs[max(signature.image_input, 0)]
        self.input_shape = tuple(max(int(size), 1) for size in main.shape[1:])
        # A classifier or regression model in a file only TensorFlow's graph or LiteRT reads (.pb, .tflite)
        self.output_dim = int(self.tensor_outputs[0].shape[1]) if task in (CLASSIFICATION, REGRESSION) else 0
        self.input_dim = math.prod(self.input_shape)
        self.class_names = list(class_names)
        self.version = version
        self.source = source
        self.sequence = 0
        self.predictions_served = 0
        self.card = model_card(self.tensor_inputs, self.tensor_outputs, task, signature)

    @property
    def takes_frames(self):
        return self.task in VISION_TASKS and len(self.tensor_inputs) == 1

    def predict_samples(self, x):
        if self.output_dim:
            return self.run_tensors([x.astype(self.tensor_inputs[0].dtype, copy=False)])[0]
        raise ValueError(
            f"a {self.task} model answers predict_tensors"
            f"{', predict_image and ~image' if self.takes_frames else ''}, not predict or ~input"
        )

    def predict(self, x):
        """As ModelWrapper.predict: k samples given flat or as (k, *input_shape)."""
        return check_output(self.predict_samples(as_samples(x, self.input_shape)))

    def run_tensors(self, arrays):
        outputs = self.runner.run(arrays)
        self.predictions_served += len(arrays[0]) if arrays and np.ndim(arrays[0]) else 1
        return outputs

    def run_frame(self, frame, preprocessing):
        """(outputs, Placement) of one frame (an (h, w, c) RGB array)."""
        image, placement = prepare(frame, self.tensor_inputs[0], preprocessing)
        return self.run_tensors([image]), placement
