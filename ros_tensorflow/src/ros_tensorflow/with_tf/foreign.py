"""Models a user brings to the training node, served by TensorFlow as any_model's runners: a SavedModel's
serving_default signature, a Keras model of several inputs or outputs, a TF1 frozen graph (.pb), or a .tflite (by
LiteRT). Served, never trained; each is converted to .tflite where it can be, to travel to serving nodes."""

import pathlib
import threading
import time

import numpy as np
import tensorflow as tf

from ros_tensorflow.tf_free.any_model import TensorSpec
from ros_tensorflow.tf_free.files import ModelFileError
from ros_tensorflow.tf_free.litert import LiteRtTensors


def _shape(shape):
    return tuple(-1 if size is None else int(size) for size in shape)


def _dtype(dtype):
    return tf.as_dtype(dtype).name


class SignatureRunner:
    """A SavedModel's serving_default signature (the Object Detection API's exports among them): named inputs and
    outputs of any dtype."""

    def __init__(self, path):
        self._loaded = tf.saved_model.load(str(path))
        if "serving_default" not in self._loaded.signatures:
            raise ModelFileError(f"cannot use the model {path}: a SavedModel without a serving_default signature")
        self._function = self._loaded.signatures["serving_default"]
        _, kwargs = self._function.structured_input_signature
        self._input_names = list(kwargs)
        self.inputs = [TensorSpec(name, _shape(spec.shape), _dtype(spec.dtype)) for name, spec in kwargs.items()]
        outputs = self._function.structured_outputs
        self._output_names = list(outputs)
        self.outputs = [TensorSpec(name, _shape(spec.shape), _dtype(spec.dtype)) for name, spec in outputs.items()]
        self.postprocess_outputs = ()
        self.converter_source = ("saved_model", str(path))

    def run(self, arrays):
        answer = self._function(**{name: tf.constant(a) for name, a in zip(self._input_names, arrays, strict=True)})
        return [answer[name].numpy() for name in self._output_names]


class KerasRunner:
    """A Keras model of any inputs and outputs."""

    def __init__(self, model):
        self._model = model
        self.inputs = [TensorSpec(t.name, _shape(t.shape), _dtype(t.dtype)) for t in model.inputs]
        self.outputs = [
            TensorSpec(name, _shape(t.shape), _dtype(t.dtype))
            for name, t in zip(model.output_names, model.outputs, strict=True)
        ]
        self.postprocess_outputs = ()
        self.converter_source = ("keras", model)
        self._function = tf.function(lambda xs: model(xs, training=False), reduce_retracing=True)

    def run(self, arrays):
        outputs = self._function([tf.constant(a) for a in arrays])
        return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


class FrozenGraphRunner:
    """A TF1 frozen graph (.pb GraphDef) in a tf.compat.v1 graph and session of its own, the TF1 tutorials' way:
    built on the loading thread and called from any thread (Session.run is thread-safe), never the default graph
    that Keras's eager code uses."""

    def __init__(self, path, input_tensors, output_tensors):
        if not output_tensors:
            raise ModelFileError(f"cannot use the frozen graph {path}: set ~output_tensors to its output tensors")
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(pathlib.Path(path).read_bytes())
        except OSError as error:
            raise ModelFileError(f"cannot read the frozen graph {path}: {error.strerror}") from None
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and kin
            raise ModelFileError(f"cannot use the frozen graph {path}: not a GraphDef ({error})") from None
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        placeholders = [op.outputs[0].name for op in self._graph.get_operations() if op.type == "Placeholder"]
        self._inputs = [self._tensor(path, name) for name in (input_tensors or placeholders)]
        self._outputs = [self._tensor(path, name) for name in output_tensors]
        self.inputs = [TensorSpec(t.name, _shape(t.shape), _dtype(t.dtype)) for t in self._inputs]
        self.outputs = [TensorSpec(t.name, _shape(t.shape), _dtype(t.dtype)) for t in self._outputs]
        self.postprocess_outputs = ()
        self.converter_source = ("frozen_graph", str(path), [t.name for t in self._inputs], self._outputs)
        self._session = tf.compat.v1.Session(graph=self._graph)

    def _tensor(self, path, name):
        name = name if ":" in name else f"{name}:0"
        try:
            return self._graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            raise ModelFileError(
                f"the frozen graph {path} has no tensor {name!r} (~input_tensors, ~output_tensors)"
            ) from None

    def run(self, arrays):
        return self._session.run(self._outputs, dict(zip(self._inputs, arrays, strict=True)))

    def close(self):
        self._session.close()


def runner_of(path, input_tensors=(), output_tensors=(), keras_model=None):
    """The runner of a model file a user brought: .pb (a frozen graph), .tflite, a SavedModel folder, or a
    Keras model already loaded (keras_model)."""
    path = pathlib.Path(path)
    if keras_model is not None:
        return KerasRunner(keras_model)
    if path.suffix == ".pb" and path.is_file():
        return FrozenGraphRunner(path, list(input_tensors), list(output_tensors))
    if path.suffix == ".tflite":
        try:
            runner = LiteRtTensors(path.read_bytes())
        except OSError as error:
            raise ModelFileError(f"cannot read the model {path}: {error.strerror}") from None
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(f"LiteRT cannot load the model {path}: {error}") from None
        runner.converter_source = ("tflite", path.read_bytes())
        return runner
    try:
        return SignatureRunner(path)
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - TensorFlow raises many kinds for a folder it cannot load
        raise ModelFileError(f"cannot load the model {path}: {error}") from None


def to_tflite(runner):
    """The runner's model as a .tflite flatbuffer, for serving nodes; ModelFileError if it cannot be converted
    (ops LiteRT lacks: the model is then served by this node only)."""
    kind, source, *rest = runner.converter_source
    if kind == "tflite":
        return source
    try:
        if kind == "saved_model":
            converter = tf.lite.TFLiteConverter.from_saved_model(source)
        elif kind == "keras":
            converter = tf.lite.TFLiteConverter.from_keras_model(source)
        else:
            input_names, outputs = rest
            shapes = {
                name.split(":")[0]: [max(size, 1) for size in spec.shape]
                for name, spec in zip(input_names, runner.inputs, strict=True)
            }
            converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                source, list(shapes), [t.name.split(":")[0] for t in outputs], shapes
            )
        converter.allow_custom_ops = True  # TFLite_Detection_PostProcess
        return converter.convert()
    except Exception as error:  # noqa: BLE001 - the converter raises many kinds
        raise ModelFileError(f"cannot convert it to TFLite: {str(error).splitlines()[0][:200]}") from None


class ForeignWrapper:
    """An AnyModel-like wrapper in the keeper's place of a ModelWrapper: the attributes the training node's faces,
    status and exports read, for a model that is served and never trained."""

    trainable = False
    litert = None
    validation_data = None

    def __init__(self, any_model):
        self.served = any_model
        self.committed_at, self.commit_count = time.time(), 1
        self.version = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):  # task, class_names, input_shape, output_dim, card, signature, run_tensors ...
        return getattr(self.__dict__["served"], name)

    @property
    def class_names(self):
        return self.served.class_names

    @class_names.setter
    def class_names(self, names):
        self.served.class_names = list(names)

    @property
    def untrainable_reason(self):
        return f"a {self.task} model is served, not trained"

    @property
    def serving(self):
        return f"{type(self.served.runner).__name__.removesuffix('Runner').lower() or 'tensorflow'}, commit 1"

    def served_predictor(self):
        raise ValueError(f"a {self.task} model is served, not evaluated")

    trained_predictor = served_predictor

    def close(self):
        closing = getattr(self.served.runner, "close", None)
        if closing:
            closing()
