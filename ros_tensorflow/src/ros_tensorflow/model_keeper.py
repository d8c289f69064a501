"""ModelKeeper: the model the node serves and trains, and its life on disk."""

import concurrent.futures
import contextlib
import logging
import os
import threading

import tensorflow as tf

from ros_tensorflow.litert import ConversionError, ConverterProcess
from ros_tensorflow.model import ModelWrapper
from ros_tensorflow.persistence import (
    ModelFileError,
    backup_path,
    export_tflite,
    file_digest,
    load_class_names,
    load_model,
    save_class_names,
    save_model,
)
from ros_tensorflow.tf_context import free_released_memory


class ModelBusyError(RuntimeError):
    """Refused because a training holds the model."""


class ModelKeeper:
    """Loads the model at start-up (the file, else its backup, else a fresh one), saves it, reloads and
    swaps it, and holds it for one training at a time.

    `wrapper` is the ModelWrapper in use: readers take the attribute once per call, and a reload
    replaces it whole. `source` says where it came from (a path, or 'fresh'); `fallback_error`
    says why the file at `path` is not in use, while a corrupt file forced a fallback.
    """

    def __init__(self, path, fresh_model, log=None, serving_backend="tensorflow", device=""):
        """fresh_model: ModelWrapper keyword arguments (Settings.fresh_model());
        every model is served by serving_backend and built (so trained and served by TensorFlow) on device."""
        self.path = str(path)
        self._fresh_model = fresh_model
        self._log = log or logging.getLogger(__name__)
        self._serving_backend = serving_backend
        self._device = device
        self._converter = ConverterProcess()  # one child process converts for every model this keeper holds
        self._exports = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="TfliteExport")
        self._training_lock = threading.Lock()
        self._good_files = set()  # digests of model files loaded or saved: a save keeps those as backup
        self._served_by_earlier_models = 0
        self.fallback_error = None
        self.wrapper, self.source = self._load_at_startup()

    @property
    def predictions_served(self):
        """Samples predicted since start-up, across reloads."""
        return self._served_by_earlier_models + self.wrapper.predictions_served

    def _load_at_startup(self):
        for path in (self.path, str(backup_path(self.path))):
            if not os.path.exists(path):
                continue
            try:
                return self._load(path), path
            except ModelFileError as error:
                self.fallback_error = self.fallback_error or str(error)
                self._log.error("%s; trying the next fallback", error)
        self._log.info("no usable model at %s: starting a fresh one", self.path)
        return self._wrapper(**self._fresh_model), "fresh"

    def _wrapper(self, *args, **kwargs):
        """A ModelWrapper built on the device: it keeps the device for training and serving on any thread."""
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            return ModelWrapper(
                *args, serving_backend=self._serving_backend, converter=self._converter, log=self._log, **kwargs
            )

    def _load(self, path):
        """A ModelWrapper of the model file at path; ModelFileError if it cannot be used."""
        model, trainable = load_model(path)
        try:
            wrapper = self._wrapper(model, trainable=trainable, learning_rate=self._fresh_model["learning_rate"])
        except Exception as error:  # noqa: BLE001 - e.g. a model Keras cannot clone: fall back, do not crash
            raise ModelFileError(f"cannot use the model {path}: {error}") from error
        wrapper.class_names = load_class_names(path)
        if os.path.isfile(path):
            self._good_files.add(file_digest(path))
        sizes = (list(wrapper.input_shape), wrapper.output_dim)
        asked = (list(self._fresh_model["input_shape"]), self._fresh_model["output_dim"])
        if sizes != asked:
            self._log.warning(
                "model %s takes samples of shape %s and has %d classes: its sizes win over ~input_dim/~input_shape"
                " %s and ~output_dim %d",
                path,
                *sizes,
                *asked,
            )
        if not trainable:
            self._log.warning("model %s is a SavedModel: served for prediction only, train goals are refused", path)
        return wrapper

    @contextlib.contextmanager
    def _exclusive(self, refusal):
        if not self._training_lock.acquire(blocking=False):
            raise ModelBusyError(refusal)
        try:
            yield
        finally:
            self._training_lock.release()

    @contextlib.contextmanager
    def training(self):
        """Hold the model for one training (waiting for one that runs); yields the wrapper to train."""
        with self._training_lock:
            try:
                yield self.wrapper
            finally:
                free_released_memory()

    def save(self):
        """Save now; ModelBusyError while a training holds the model, ModelFileError if it cannot be saved."""
        with self._exclusive("a training runs: the model is saved when it ends"):
            self.write()

    def write(self):
        """Save the model in use to path. The trainer calls this while it holds the model."""
        if not self.wrapper.trainable:
            raise ModelFileError(f"the model from {self.source} is a SavedModel and is not saved")
        self._good_files.add(save_model(self.wrapper.model, self.path, self._good_files))
        save_class_names(self.wrapper.class_names, self.path)
        self.source, self.fallback_error = self.path, None

    def export_tflite(self, quantization="none"):
        """Write <path stem>.tflite of the weights committed now beside the model, on a thread of its own (a
        conversion takes a quarter to half a second that a goal need not wait for); logs the path or why not.

        Returns a Future of the path (ModelFileError if not exported). Exports are written in order.
        """
        wrapper = self.wrapper
        snapshot = (wrapper, wrapper.commit_count, wrapper.model.to_json(), wrapper.model.get_weights())
        return self._exports.submit(self._export, *snapshot, quantization)

    def _export(self, wrapper, commit, architecture, weights, quantization):
        litert = wrapper.litert
        try:
            if quantization == "none" and litert and litert.wait_until_serving(commit, timeout=120):
                flatbuffer = litert.flatbuffer_for(commit)  # converted for serving already
            else:
                try:
                    flatbuffer, _ = self._converter.convert(architecture, weights, quantization)
                except ConversionError as error:
                    raise ModelFileError(f"cannot convert the model to TFLite: {error}") from error
            path = export_tflite(flatbuffer, self.path)
        except ModelFileError as error:
            self._log.warning("the model is saved but not exported to TFLite: %s", error)
            raise
        self._log.info("exported %s", path)
        return path

    def close(self):
        """Stop the conversions: the node is shutting down."""
        self._exports.shutdown(wait=False, cancel_futures=True)
        self.wrapper.close()
        self._converter.close()

    def reload(self):
        """Load path again and switch predictions to it at once; the current model stays if it cannot be used."""
        with self._exclusive("a training runs: reload once it ends"):
            try:
                wrapper = self._load(self.path)
            except ModelFileError as error:
                self._log.warning("reload failed: %s; the current model stays", error)
                raise
            self._served_by_earlier_models += self.wrapper.predictions_served
            previous, self.wrapper, self.source, self.fallback_error = self.wrapper, wrapper, self.path, None
            previous.close()
            del previous
            free_released_memory()
        return wrapper
