"""The nodes' parameters: each one's default, type, rule and node, in one place.

config/default.yaml and config/serve.yaml, the README's table and the cfg/*.cfg (dynamic_reconfigure) all follow
PARAMETERS; a test checks that the first three agree, and the .cfg files read it.
"""

import dataclasses
import math

from ros_tensorflow.tf_free.commands import COMMAND_TYPES, TWIST_FIELDS
from ros_tensorflow.tf_free.tasks import REGRESSION, REGRESSION_LOSSES, TASKS


@dataclasses.dataclass(frozen=True)
class Parameter:
    default: object
    # 'int > 0', 'int > 1', 'int >= 0', 'finite >= 0' (a number), 'str', 'bool', 'list of int > 0', 'one of: a, b'
    rule: str
    description: str
    reconfigurable: bool = False  # may change while the node runs (dynamic_reconfigure)
    node: str = "both"  # which node has it: 'train' (node.py), 'serve' (serve_node.py) or 'both'


PARAMETERS = {
    "input_dim": Parameter(10, "int > 0", "values per sample of a fresh model", node="train"),
    "task": Parameter(
        "",
        f"one of: '', {', '.join(TASKS)}",
        "a fresh model's ('': classification); a loaded model brings its own, and a different ~task is an error",
    ),
    "output_dim": Parameter(2, "int > 0", "classes (2 or more) or values (regression) of a fresh model", node="train"),
    "loss": Parameter(
        "mse", f"one of: {', '.join(REGRESSION_LOSSES)}", "a fresh regression model's loss", node="train"
    ),
    "hidden_units": Parameter(32, "int > 0", "units of a fresh model's hidden layer", node="train"),
    "input_shape": Parameter(
        [], "list of int > 0", "a fresh model's sample shape, e.g. [28, 28, 1]; []: [input_dim]; serving: a pin"
    ),
    "architecture": Parameter(
        "auto", "one of: auto, mlp, cnn", "a fresh model's layers; auto: cnn for rank 3, else mlp", node="train"
    ),
    "learning_rate": Parameter(
        0.0,
        "finite >= 0",
        "0: SGD 0.1 (mlp), Adam 0.003 (cnn); set while running: of every goal from then on",
        True,
        node="train",
    ),
    "batch_size": Parameter(32, "int > 0", "used when a goal's batch_size is 0", True, node="train"),
    "dataset": Parameter("synthetic", "str", "used when a goal's dataset is ''", node="train"),
    "seed": Parameter(
        0, "int >= 0", "of the synthetic dataset: the same samples for the same seed and sizes", node="train"
    ),
    "loop_rate": Parameter(1.0, "finite >= 0", "Hz of the main-loop prediction demo; 0: off", True, node="train"),
    "max_batch": Parameter(256, "int > 0", "most samples per model call on the ~input stream", True),
    "queue_size": Parameter(100, "int > 0", "~input messages waiting; beyond it the oldest are dropped", True),
    "image_queue_size": Parameter(
        1, "int > 0", "~image frames waiting while the model is busy; older are dropped", True
    ),
    "input_scale": Parameter(
        0.0, "finite >= 0", "image values are multiplied by it; 0: 1/255 for 8-bit, 1/65535 for 16-bit"
    ),
    "input_mean": Parameter([0.0], "list of finite", "per channel (or one for all): subtracted from scaled values"),
    "input_std": Parameter([1.0], "list of finite", "per channel (or one for all): scaled values are divided by it"),
    "channel_order": Parameter("rgb", "one of: rgb, bgr", "channel order a model brought takes"),
    "resize": Parameter("stretch", "one of: stretch, letterbox", "how a frame fits a detection or segmentation model"),
    "score_threshold": Parameter(0.5, "finite >= 0", "detections scored below it are dropped", True),
    "max_detections": Parameter(100, "int > 0", "most detections per frame, best first", True),
    "label_offset": Parameter(0, "int", "added to a detector's class ids (1-based label maps: -1)"),
    "input_tensors": Parameter(
        [], "list of str", "a frozen .pb's input tensors, e.g. [image_tensor:0]; []: its placeholders", node="train"
    ),
    "output_tensors": Parameter(
        [], "list of str", "a frozen .pb's output tensors, e.g. [detection_boxes:0]; required for a .pb", node="train"
    ),
    "class_names": Parameter([], "list of str", "one name per class, for the labels of predictions"),
    "publish_queue_size": Parameter(
        0, "int >= 0", "~prediction, ~detections, ~mask publishers' rospy queue_size; 0: synchronous"
    ),
    "data_dir": Parameter("", "str", "'': $ROS_HOME/ros_tensorflow"),
    "model_path": Parameter("", "str", "'': <data_dir>/model.keras (serving node: model.tflite)"),
    "bag_topic": Parameter(
        "", "str", "topic of Sample messages in .bag datasets; '': this node's ~samples", node="train"
    ),
    "early_stopping_patience": Parameter(
        0, "int >= 0", "epochs without improvement before stopping; 0: off", True, node="train"
    ),
    "keep_best_epoch": Parameter(
        True,
        "bool",
        "a goal with validation keeps its best epoch's weights (val_loss), not the last",
        True,
        node="train",
    ),
    "keep_versions": Parameter(
        10, "int >= 0", "newest versions kept in <data_dir>/versions, and the served one; 0: all", True, node="train"
    ),
    "promote": Parameter(
        "always",
        "one of: always, if_better",
        "if_better: a goal's model is served only if its accuracy on ~eval_dataset is at least the served one's",
        node="train",
    ),
    "eval_dataset": Parameter(
        "", "str", "what ~promote if_better compares on; '': the goal's validation split", node="train"
    ),
    "save_on_cancel": Parameter(False, "bool", "also save the model when a goal is cancelled", True, node="train"),
    "tensorboard_dir": Parameter("", "str", "'': no TensorBoard logs", node="train"),
    "allow_training": Parameter(
        True, "bool", "false: train goals, recording, ~clear_samples and ~reload are refused", node="train"
    ),
    "accept_samples": Parameter(
        True,
        "bool",
        "false: ~samples and ~image_samples messages are refused (counted), nothing recorded",
        node="train",
    ),
    "max_stored_samples": Parameter(
        0,
        "int >= 0",
        "most samples recorded; beyond, new ones are refused (counted); 0: as many as fill 1/8 of the memory",
        node="train",
    ),
    "signing_key": Parameter(
        "", "str", "Ed25519 private key file that signs each model published and saved; '': unsigned", node="train"
    ),
    "trusted_keys": Parameter(
        [],
        "list of str",
        "public key files or folders of *.pub: only models they signed are served; []: any",
        node="serve",
    ),
    "max_request_samples": Parameter(
        0, "int >= 0", "most samples one request or message may hold; 0: 1/4096 of this machine's memory", True
    ),
    "max_image_pixels": Parameter(
        0, "int >= 0", "largest image (width x height) decoded; 0: 8 bytes a pixel fill 1/128 of the memory", True
    ),
    "serving_backend": Parameter("litert", "one of: litert, tensorflow", "what answers predictions", node="train"),
    "tflite_quantization": Parameter(
        "none", "one of: none, float16, dynamic, int8", "of the exported .tflite", node="train"
    ),
    "model_topic": Parameter(
        "",
        "str",
        "a trainer's ~model topic: serve each model it publishes; '': only the model at ~model_path",
        node="serve",
    ),
    "command_topic": Parameter(
        "", "str", "publish each ~image frame's prediction there as a command, e.g. /cmd_vel; '': off"
    ),
    "command_type": Parameter(COMMAND_TYPES[0], f"one of: {', '.join(COMMAND_TYPES)}", "of ~command_topic"),
    "command_fields": Parameter(
        ["angular.z"], "list of str", "the Twist fields the outputs fill, in order; the others are 0"
    ),
    "command_timeout": Parameter(
        0.5, "finite >= 0", "s without a frame before one zero command is published; 0: never", True
    ),
    "device": Parameter(
        "", "str", "TensorFlow device for training and TensorFlow serving; '': TensorFlow's choice", node="train"
    ),
    "gpu_memory_growth": Parameter(
        True, "bool", "let TensorFlow take GPU memory as it needs it, not all at once", node="train"
    ),
}


def _obeys(value, rule):
    if rule.startswith("one of: "):
        return value in [choice.replace("''", "") for choice in rule.removeprefix("one of: ").split(", ")]
    if rule == "list of str":
        return isinstance(value, list) and all(isinstance(name, str) for name in value)
    if rule == "list of finite":
        return isinstance(value, list) and all(_obeys(x, "finite") for x in value) and len(value) > 0
    if rule == "list of int > 0":
        return isinstance(value, list) and all(_obeys(size, "int > 0") for size in value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    return {
        "int > 0": is_int and value > 0,
        "int >= 0": is_int and value >= 0,
        "int > 1": is_int and value > 1,
        "int": is_int,
        "finite": is_number and math.isfinite(value),
        "finite >= 0": is_number and math.isfinite(value) and value >= 0,
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[rule]


def parameters_of(node):
    """The parameters of the 'train' or the 'serve' node."""
    return {name: parameter for name, parameter in PARAMETERS.items() if parameter.node in ("both", node)}


def reconfigure_options(node):
    """A dynamic_reconfigure ParameterGenerator of the node's live parameters (for cfg/*.cfg, at build time). No
    min/max: the node checks each value against its rule and refuses a bad one, rather than it being clamped."""
    from dynamic_reconfigure.parameter_generator_catkin import ParameterGenerator, bool_t, double_t, int_t

    types = {"int > 0": int_t, "int >= 0": int_t, "finite >= 0": double_t, "bool": bool_t}
    generator = ParameterGenerator()
    for name, parameter in parameters_of(node).items():
        if parameter.reconfigurable:
            generator.add(name, types[parameter.rule], 0, parameter.description, parameter.default)
    return generator


def _tilde(name):
    return f"~{name}"


class Settings:
    """The value of every parameter, each checked against its rule; changed only as a whole, by replace()."""

    def __init__(self, lookup=None, name_of=_tilde, node="train"):
        """The parameters of node ('train' or 'serve'): lookup(name, default) gives each value (default: the
        defaults); ValueError names the first bad one as name_of(name) says (the ROS side passes the resolved
        name)."""
        lookup = lookup or (lambda name, default: default)
        self.node = node
        for name, parameter in parameters_of(node).items():
            value = lookup(name, parameter.default)
            if parameter.rule == "finite >= 0" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if parameter.rule == "list of finite" and isinstance(value, list):
                value = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in value]
            if not _obeys(value, parameter.rule):
                raise ValueError(f"parameter {name_of(name)} must be {parameter.rule}, got {value!r}")
            setattr(self, name, value)
        if len(self.input_shape) == 3 and self.input_shape[2] not in (1, 3):
            raise ValueError(
                f"parameter {name_of('input_shape')} must be [height, width, channels] with 1 (grey) or 3 (RGB)"
                f" channels for a shape of rank 3 (an image), got {self.input_shape}"
            )

        unknown = [field for field in self.command_fields if field not in TWIST_FIELDS]
        if self.command_type == COMMAND_TYPES[0] and unknown:
            raise ValueError(
                f"parameter {name_of('command_fields')}: {unknown} are not Twist fields"
                f" (fields: {', '.join(TWIST_FIELDS)})"
            )
        if getattr(self, "output_dim", 2) < 2 and self.task != REGRESSION:
            raise ValueError(
                f"parameter {name_of('output_dim')} must be > 1 for a classifier (one output per class), got"
                f" {self.output_dim}: set {name_of('task')} regression for a model of one value"
            )

    def replace(self, name_of=_tilde, **changes):
        """A copy with changes, each checked; ValueError (and no copy) if one breaks its rule."""
        unknown = set(changes) - set(parameters_of(self.node))
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        return Settings(lambda name, default: changes.get(name, getattr(self, name)), name_of, self.node)

    def fresh_model(self):
        """ModelWrapper's arguments for a model built afresh."""
        names = ("output_dim", "hidden_units", "learning_rate", "architecture", "task", "loss")
        fresh = {name: getattr(self, name) for name in names}
        return {**fresh, "input_shape": list(self.input_shape) or [self.input_dim]}

    def as_dict(self):
        return {name: getattr(self, name) for name in parameters_of(self.node)}

    def __eq__(self, other):
        return isinstance(other, Settings) and self.as_dict() == other.as_dict()
