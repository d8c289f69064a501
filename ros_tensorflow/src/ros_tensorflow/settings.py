"""The node's parameters: each one's default, type and rule, in one place.

config/default.yaml, the README's table and cfg/RosTensorflow.cfg (dynamic_reconfigure) all follow
PARAMETERS; a test checks that the first two agree, and the .cfg reads it.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Parameter:
    default: object
    rule: str  # 'int > 0', 'int >= 0', '>= 0' (a number), 'str', 'bool', 'list of int > 0' or 'one of: a, b'
    description: str
    reconfigurable: bool = False  # may change while the node runs (dynamic_reconfigure)


PARAMETERS = {
    "input_dim": Parameter(10, "int > 0", "values per sample of a fresh model"),
    "output_dim": Parameter(2, "int > 0", "classes of a fresh model"),
    "hidden_units": Parameter(32, "int > 0", "units of a fresh model's hidden layer"),
    "input_shape": Parameter([], "list of int > 0", "a fresh model's sample shape, e.g. [28, 28, 1]; []: [input_dim]"),
    "architecture": Parameter(
        "auto", "one of: auto, mlp, cnn", "a fresh model's layers; auto: cnn for rank 3, else mlp"
    ),
    "learning_rate": Parameter(0.1, ">= 0", "SGD learning rate; set while running: of every goal from then on", True),
    "batch_size": Parameter(32, "int > 0", "used when a goal's batch_size is 0", True),
    "dataset": Parameter("synthetic", "str", "used when a goal's dataset is ''"),
    "loop_rate": Parameter(1.0, ">= 0", "Hz of the main-loop prediction demo; 0: off", True),
    "max_batch": Parameter(256, "int > 0", "most samples per model call on the ~input stream", True),
    "queue_size": Parameter(100, "int > 0", "~input messages waiting; beyond it the oldest are dropped", True),
    "image_queue_size": Parameter(
        1, "int > 0", "~image frames waiting while the model is busy; older are dropped", True
    ),
    "input_scale": Parameter(0.0, ">= 0", "image values are multiplied by it; 0: 1/255 for 8-bit, 1/65535 for 16-bit"),
    "class_names": Parameter([], "list of str", "one name per class, for the labels of predictions"),
    "publish_queue_size": Parameter(0, "int >= 0", "~prediction publisher's rospy queue_size; 0: synchronous"),
    "data_dir": Parameter("", "str", "'': $ROS_HOME/ros_tensorflow"),
    "model_path": Parameter("", "str", "'': <data_dir>/model.keras"),
    "bag_topic": Parameter("", "str", "topic of Sample messages in .bag datasets; '': this node's ~samples"),
    "early_stopping_patience": Parameter(0, "int >= 0", "epochs without improvement before stopping; 0: off", True),
    "save_on_cancel": Parameter(False, "bool", "also save the model when a goal is cancelled", True),
    "tensorboard_dir": Parameter("", "str", "'': no TensorBoard logs"),
    "allow_training": Parameter(True, "bool", "false: train goals, recording, ~clear_samples and ~reload are refused"),
    "max_request_samples": Parameter(
        0, "int >= 0", "most samples one request or message may hold; 0: 1/4096 of this machine's memory", True
    ),
    "serving_backend": Parameter("litert", "one of: litert, tensorflow", "what answers predictions"),
    "tflite_quantization": Parameter("none", "one of: none, float16, dynamic", "of the exported .tflite"),
    "device": Parameter("", "str", "TensorFlow device for training and TensorFlow serving; '': TensorFlow's choice"),
    "gpu_memory_growth": Parameter(True, "bool", "let TensorFlow take GPU memory as it needs it, not all at once"),
}


def _obeys(value, rule):
    if rule.startswith("one of: "):
        return value in rule.removeprefix("one of: ").split(", ")
    if rule == "list of str":
        return isinstance(value, list) and all(isinstance(name, str) for name in value)
    if rule == "list of int > 0":
        return isinstance(value, list) and all(_obeys(size, "int > 0") for size in value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    return {
        "int > 0": is_int and value > 0,
        "int >= 0": is_int and value >= 0,
        ">= 0": is_number and value >= 0,  # NaN fails too
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[rule]


def _tilde(name):
    return f"~{name}"


class Settings:
    """The value of every parameter, each checked against its rule; changed only as a whole, by replace()."""

    def __init__(self, lookup=None, name_of=_tilde):
        """lookup(name, default) gives each value (default: the defaults); ValueError names the first bad one
        as name_of(name) says (the ROS side passes the resolved name)."""
        lookup = lookup or (lambda name, default: default)
        for name, parameter in PARAMETERS.items():
            value = lookup(name, parameter.default)
            if parameter.rule == ">= 0" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not _obeys(value, parameter.rule):
                raise ValueError(f"parameter {name_of(name)} must be {parameter.rule}, got {value!r}")
            setattr(self, name, value)

    def replace(self, name_of=_tilde, **changes):
        """A copy with changes, each checked; ValueError (and no copy) if one breaks its rule."""
        unknown = set(changes) - set(PARAMETERS)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        return Settings(lambda name, default: changes.get(name, getattr(self, name)), name_of)

    def fresh_model(self):
        """ModelWrapper's arguments for a model built afresh."""
        fresh = {name: getattr(self, name) for name in ("output_dim", "hidden_units", "learning_rate", "architecture")}
        return {**fresh, "input_shape": list(self.input_shape) or [self.input_dim]}

    def as_dict(self):
        return {name: getattr(self, name) for name in PARAMETERS}

    def __eq__(self, other):
        return isinstance(other, Settings) and self.as_dict() == other.as_dict()
