"""The serving node's model: a .tflite file, or a model that arrived over ROS, answered by LiteRT; no TensorFlow.

A robot carries LiteRT's interpreter (tens of MB), not TensorFlow (about 600 MB resident and seconds to import).
"""

import hashlib
import logging
import math
import os
import pathlib
import time

from ros_tensorflow.tf_free.any_model import AnyModel, classic_card, classic_specs, recognise, resolve_any
from ros_tensorflow.tf_free.files import (
    ModelFileError,
    class_names_path,
    info_path,
    load_class_names,
    load_model_info,
    save_class_names,
    save_model_info,
    unusable_path,
    write_file,
)
from ros_tensorflow.tf_free.litert import LiteRtModel, LiteRtTensors, UnservableModel
from ros_tensorflow.tf_free.samples import as_float32, probe_samples, task_of_output
from ros_tensorflow.tf_free.signing import (
    SigningError,
    load_signature,
    model_fields,
    save_signature,
    signature_path,
    verify,
)
from ros_tensorflow.tf_free.tasks import TRAINABLE_TASKS, TaskError, resolve_task

SIDE_FILES = (class_names_path, info_path, signature_path)  # what travels beside a model file


class ModelRefused(ValueError):
    """A model that arrived and is not served; says why."""


class TfliteModel:
    """A TFLite model as the serving face uses a model: its task, sizes, class names and version, and
    predict_samples(). Loading it makes one prediction (a warm-up): a model that cannot answer is never served.

    task: the model's own as its trainer said ('': unknown, a classifier if its outputs are probabilities);
    wanted_task (~task) must agree with it."""

    def __init__(self, flatbuffer, class_names=(), version=0, source="", task="", wanted_task=""):
        try:
            self.litert = LiteRtModel(flatbuffer)
            self.input_shape, self.output_dim = self.litert.input_shape, self.litert.output_dim
            self.input_dim = math.prod(self.input_shape)
            probe = self.litert.predict(probe_samples(self.input_shape))
        except UnservableModel as error:
            raise ModelRefused(f"the node cannot serve it: {error}") from None
        except (ValueError, RuntimeError) as error:  # LiteRT's word for a flatbuffer it cannot use
            raise ModelRefused(f"LiteRT cannot load it: {_first_line(error)}") from None
        try:
            self.task = task_of_output(resolve_task(wanted_task, task or None, "it"), self.output_dim, probe)
        except ValueError as error:  # TaskError, or not a classifier
            raise ModelRefused(f"the node cannot serve it: {error}") from None
        self.flatbuffer = flatbuffer
        self.sha256 = hashlib.sha256(flatbuffer).hexdigest()
        self.tensor_inputs, self.tensor_outputs = classic_specs(self.input_shape, self.output_dim)
        self.card = classic_card(self.input_shape, self.output_dim, self.task)
        self.class_names = list(class_names)
        self.version = version
        self.source = source
        self.sequence = 0  # its signed sequence number (~trusted_keys), 0: unsigned
        self.predictions_served = 0

    def predict_samples(self, x):
        """Output, shape (k, output_dim), of samples as_samples() has checked; prediction_rows() refuses NaN or Inf
        outputs."""
        output = self.litert.predict(as_float32(x))
        self.predictions_served += len(x)
        return output

    def run_tensors(self, arrays):
        """predict_tensors: the one input's samples to the one output."""
        return [self.predict_samples(arrays[0])]


def _first_line(error):
    return str(error).splitlines()[0] if str(error) else repr(error)


def served_tflite(flatbuffer, class_names=(), version=0, source="", task="", wanted_task=""):
    """The model a .tflite flatbuffer is, served as its task: a TfliteModel for a classifier or regression model
    (one input, one (k, outputs) output), else an AnyModel (detection, segmentation, tensors); ModelRefused says
    why it cannot be served. task: the one its trainer said ('': unknown); wanted_task: ~task."""
    try:
        runner = LiteRtTensors(flatbuffer)
    except (ValueError, RuntimeError) as error:  # LiteRT's word for a flatbuffer it cannot use
        raise ModelRefused(f"LiteRT cannot load it: {_first_line(error)}") from None
    signature = recognise(runner.inputs, runner.outputs, runner.postprocess_outputs)
    try:
        chosen = resolve_any(wanted_task, task or None, signature, "it")
    except TaskError as error:
        raise ModelRefused(f"the node cannot serve it: {error}") from None
    if chosen in TRAINABLE_TASKS:
        del runner
        return TfliteModel(flatbuffer, class_names, version, source, task, wanted_task)
    model = AnyModel(runner, chosen, signature, class_names, version, source)
    model.flatbuffer, model.sha256 = flatbuffer, hashlib.sha256(flatbuffer).hexdigest()
    return model


def previous_path(path):
    """<stem>.previous.tflite: the model served before the one at path, its fallback."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


class TfliteKeeper:
    """Loads path at start-up (with the class names and info saved beside it; if it cannot be used, the model served
    before it, previous_path) and replaces the model whole with each one that arrives and passes the checks, saving
    it to path first: after a restart with no trainer reachable, the node serves the last model it received. A
    refused model changes nothing and is counted. A file at path this node cannot use is never overwritten: it is
    kept as <stem>.unusable-<time>.tflite when a model arrives.

    With trusted keys (~trusted_keys) only models they signed are served, from the topic and from disk (the signature
    is kept beside the model), and only with a sequence above the one served: no replay, no rollback unless signed.
    """

    def __init__(self, path, pinned_shape=(), log=None, trusted_keys=None, task=""):
        """pinned_shape: models of another sample shape are refused (~input_shape); () takes any. trusted_keys:
        {key id: public key} (signing.load_trusted_keys), None: models need no signature. task (~task): models
        of another task are refused; '' takes either."""
        self.path = pathlib.Path(path)
        self.task = task
        self.pinned_shape = tuple(pinned_shape)
        self.trusted_keys = trusted_keys
        self._log = log or logging.getLogger(__name__)
        self.model = None
        self.load_error = None  # why there is no model at path, while none is served
        self.refused = 0
        self.last_refusal = ""
        self._served_from = None  # the file the model served was loaded from or saved to
        for candidate in (self.path, previous_path(self.path)):
            try:
                self.model, self._served_from = self._load_file(candidate), candidate
                break
            except ModelFileError as error:
                if candidate == self.path:
                    self.load_error = str(error)
                elif candidate.exists():
                    self._log.error("the fallback %s cannot be served either: %s", candidate, error)
        if self.model is not None and self._served_from != self.path:
            self._log.error("%s; serving the model served before it, %s", self.load_error, self._served_from)
            self.load_error = None

    def _load_file(self, path):
        try:
            flatbuffer = path.read_bytes()
        except FileNotFoundError:
            raise ModelFileError(f"no model at {path}") from None
        except OSError as error:
            raise ModelFileError(f"cannot read the model {path}: {error.strerror}") from None
        try:
            names = load_class_names(path)
        except ModelFileError as error:  # auxiliary: the model serves without them
            self._log.warning("%s: the model is used without its class names (~class_names name its classes)", error)
            names = []
        info = load_model_info(path)
        try:
            version, source = int(info.get("version", 0)), info.get("source") or str(path)
            model = served_tflite(flatbuffer, names, version, source, info.get("task", ""), self.task)
            signature, signer_id, model.sequence = load_signature(path)
            if self.trusted_keys is not None:  # checked again: a file changed on disk is no longer what was signed
                verify(self.trusted_keys, self._signed_fields(model, model.sequence), signature, signer_id)
        except (ModelRefused, SigningError) as error:
            raise ModelFileError(f"cannot serve the model {path}: {error}") from None
        self._check_shape(model, f"the model {path}", ModelFileError)
        return model

    @staticmethod
    def _signed_fields(model, sequence):
        return model_fields(
            model.version,
            sequence,
            model.sha256,
            model.input_shape,
            model.output_dim,
            model.class_names,
            model.source,
            model.task,
        )

    def _check_shape(self, model, what, error_type):
        if self.pinned_shape and model.input_shape != self.pinned_shape:
            raise error_type(
                f"{what} takes samples of shape {list(model.input_shape)}, ~input_shape pins {list(self.pinned_shape)}"
            )

    def accept(self, message):
        """Serve a ros_tensorflow_msgs/Model, saved to path first; ModelRefused (counted, logged) if it is not
        one this node can serve. Returns the model now served."""
        try:
            model = self._checked(message)
            files = {"version": model.version, "source": model.source, "sha256": model.sha256, "task": model.task}
            files.update(stamp=time.time(), **{k: getattr(message, k) for k in ("loss", "acc", "val_loss", "val_acc")})
            try:
                self._keep_aside()
                write_file(self.path, model.flatbuffer)
                save_class_names(model.class_names, self.path)
                save_model_info(files, self.path)
                if message.signature:
                    save_signature(self.path, message.signature, message.key_id, model.sequence)
                else:
                    signature_path(self.path).unlink(missing_ok=True)
            except ModelFileError as error:
                raise ModelRefused(f"cannot be saved, so it would not survive a restart: {error}") from None
        except ModelRefused as error:
            self.refused += 1
            self.last_refusal = f"version {message.version} from {message.source or '?'}: {error}"
            self._log.error("refused the model %s; the model served stays", self.last_refusal)
            raise
        self.model, self.load_error, self._served_from = model, None, self.path
        return model

    def _check_signature(self, model, message):
        try:
            verify(self.trusted_keys, self._signed_fields(model, message.sequence), message.signature, message.key_id)
        except SigningError as error:
            raise ModelRefused(str(error)) from None
        served = self.model.sequence if self.model else 0
        if message.sequence <= served:
            raise ModelRefused(
                f"signed with sequence {message.sequence}, not above the served model's {served}: a replayed or older"
                " message (a rollback the trainer decides is signed with a higher sequence)"
            )
        model.sequence = message.sequence

    def _keep_aside(self):
        """Before a model takes path: the one served from there becomes previous_path's (with its class names and
        info), the fallback if path is ever unusable; a file there that this node could not use is kept aside."""
        if not self.path.exists():
            return
        try:
            if self._served_from == self.path:
                previous = previous_path(self.path)
                for source, target in ((self.path, previous), *((f(self.path), f(previous)) for f in SIDE_FILES)):
                    if source.exists():
                        os.replace(source, target)
                    else:
                        target.unlink(missing_ok=True)
            else:
                unusable = unusable_path(self.path)
                os.link(self.path, unusable)  # fails rather than replace a file; path is replaced by the new model
                self._log.warning("%s is not a model this node could use: kept as %s", self.path, unusable)
        except OSError as error:
            raise ModelFileError(f"cannot keep {self.path} aside: {error}") from error

    def _checked(self, message):
        if message.format != "tflite":
            raise ModelRefused(f"format {message.format!r}, expected 'tflite'")
        data = bytes(message.data)
        digest = hashlib.sha256(data).hexdigest()
        if digest != message.sha256:
            raise ModelRefused(f"its data ({len(data)} bytes) does not match its sha256 (a corrupt or cut transfer)")
        model = served_tflite(data, message.class_names, message.version, message.source, message.task, self.task)
        if self.trusted_keys is not None:
            self._check_signature(model, message)
        self._check_shape(model, "it", ModelRefused)
        if list(model.input_shape) != list(message.input_shape) or model.output_dim != message.output_dim:
            raise ModelRefused(
                f"it says input_shape {list(message.input_shape)} and output_dim {message.output_dim}, its data"
                f" takes {list(model.input_shape)} and gives {model.output_dim}"
            )
        return model
