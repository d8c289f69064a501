"""ModelKeeper: the model the node serves and trains, and its life on disk."""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import pathlib
import threading
import time

import tensorflow as tf

from ros_tensorflow.tf_free.any_model import AnyModel, classic_card, recognise, resolve_any
from ros_tensorflow.tf_free.files import (
    class_names_data,
    class_names_path,
    info_path,
    load_class_names,
    load_model_info,
    save_class_names,
    save_model_info,
    tflite_path,
)
from ros_tensorflow.tf_free.samples import probe_samples, task_of_output
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.tf_free.signing import load_signature, model_fields, save_signature
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, METRICS, TRAINABLE_TASKS, TaskError, resolve_task
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, served_tflite
from ros_tensorflow.tf_free.versions import Versions
from ros_tensorflow.with_tf.conversion import ConversionError, ConverterProcess
from ros_tensorflow.with_tf.foreign import ForeignWrapper, runner_of, to_tflite
from ros_tensorflow.with_tf.model import ModelWrapper, keras_predictor, task_of_model
from ros_tensorflow.with_tf.persistence import (
    ModelFileError,
    NotClassicModel,
    backup_path,
    export_tflite,
    file_digest,
    load_model,
    save_model,
)
from ros_tensorflow.with_tf.tf_context import settle_memory


class ModelBusyError(RuntimeError):
    """Refused because a training holds the model."""


@dataclasses.dataclass
class ExportedModel:
    """A model as it travels to serving nodes: its .tflite flatbuffer, sizes, class names, and its info (version,
    stamp, source, sha256, task and the metrics it was trained to)."""

    flatbuffer: bytes
    input_shape: tuple
    output_dim: int
    class_names: list
    info: dict
    task: str = CLASSIFICATION
    signature: str = ""  # with a signer (~signing_key): signed_payload's signature, its key and sequence
    key_id: str = ""
    sequence: int = 0


class ModelKeeper:
    """Loads the model at start-up (the file, else its backup, else a fresh one), saves it, reloads and
    swaps it, and holds it for one training at a time.

    `wrapper` is the ModelWrapper in use: readers take the attribute once per call, and a reload
    replaces it whole. `source` says where it came from (a path, or 'fresh'); `fallback_error`
    says why the file at `path` is not in use, while a corrupt file forced a fallback.
    """

    def __init__(
        self,
        path,
        fresh_model,
        log=None,
        serving_backend="tensorflow",
        device="",
        name="",
        versions_dir=None,
        tensor_names=((), ()),
    ):
        """fresh_model: ModelWrapper keyword arguments (Settings.fresh_model());
        tensor_names: a frozen graph's (~input_tensors, ~output_tensors);
        every model is served by serving_backend and built (so trained and served by TensorFlow) on device;
        name: the source named in the info of each export (the node's name); versions_dir: where each exported
        model is kept as a version (Versions), None: nowhere."""
        self.path = str(path)
        self.name = name
        self.versions = Versions(versions_dir) if versions_dir else None
        self.keep_versions = 0  # the newest kept (~keep_versions); 0: all
        self._last_number = 0  # the highest version number handed out
        self.on_export = None  # called with each ExportedModel, on the export thread
        self.signer = None  # a signing.Signer (~signing_key): each model announced is signed, and its signature saved
        self._sequence = load_signature(self.path)[2]  # the last signed, saved beside the model: survives restarts
        self._signing_lock = threading.Lock()
        self.exported = None  # the last ExportedModel
        self._fresh_model = fresh_model
        self._log = log or logging.getLogger(__name__)
        self._serving_backend = serving_backend
        self._device = device
        self._tensor_names = tensor_names
        self._converter = ConverterProcess()  # one child process converts for every model this keeper holds
        self._exports = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="TfliteExport")
        self._training_lock = threading.Lock()
        self._good_files = set()  # digests of model files loaded or saved: a save keeps those as backup
        self._served_by_earlier_models = 0
        self._unfinished_exports = []
        self.fallback_error = None
        self.wrapper, self.source = self._load_at_startup()
        self.version = load_model_info(self.path).get("version", 0) if self.source == self.path else 0
        if not isinstance(self.version, int):
            self.version = 0

    def adopt_class_names(self, class_names):
        """~class_names name a model that has none of its own: they become its own, saved beside it (and in its
        version), so that the ~model message carries them and robots label as this node does."""
        wrapper = self.wrapper
        if wrapper.class_names or not class_names:
            return
        wrapper.class_names = list(class_names)
        if self.source != self.path:
            return  # a fresh model: saved with its names by the first goal
        try:
            save_class_names(wrapper.class_names, self.path)
            if self.versions and self.version in self.versions.numbers():
                self.versions.add_file(self.version, "model.classes.txt", class_names_data(wrapper.class_names))
        except ModelFileError as error:
            self._log.warning("~class_names are used but not saved beside the model: %s", error)

    def reserve_version(self):
        """The next version number: one sequence for the versions kept and the models published on ~model."""
        kept = self.versions.numbers() if self.versions else []
        self._last_number = max(self.version, self._last_number, *kept) + 1
        return self._last_number

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
        wanted = self._fresh_model.get("task", "")
        if wanted and wanted not in TRAINABLE_TASKS:
            raise TaskError(
                f"~task is {wanted}, but there is no model at {self.path} (~model_path): a {wanted} model is brought,"
                " not trained"
            )
        self._log.info("no usable model at %s: starting a fresh one", self.path)
        return self._wrapper(**self._fresh_model), "fresh"

    def _wrapper(self, *args, **kwargs):
        """A ModelWrapper built on the device: it keeps the device for training and serving on any thread."""
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            return ModelWrapper(
                *args, serving_backend=self._serving_backend, converter=self._converter, log=self._log, **kwargs
            )

    def _foreign(self, path, keras_model=None):
        """A ForeignWrapper of a model a user brought (a detector, a segmentation model, tensors; or a classifier in
        a .pb or .tflite), served by TensorFlow or LiteRT; its card logged."""
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            runner = runner_of(path, *self._tensor_names, keras_model=keras_model)
        signature = recognise(runner.inputs, runner.outputs, runner.postprocess_outputs)
        own = load_model_info(path).get("task") or None
        task = resolve_any(self._fresh_model.get("task", ""), own, signature, f"the model {path}")
        try:
            names = load_class_names(path)
        except ModelFileError as error:
            self._log.warning("%s: the model is used without its class names (~class_names name its classes)", error)
            names = []
        wrapper = ForeignWrapper(AnyModel(runner, task, signature, names, source=str(path)))
        self._log.info("model %s, served as it is (never trained):\n  %s", path, "\n  ".join(wrapper.card))
        return wrapper

    def _load(self, path):
        """A ModelWrapper of the model file at path; ModelFileError if it cannot be used, TaskError if it is not of
        ~task (a setting to correct, not a file to fall back from)."""
        if path.endswith((".pb", ".tflite")):
            return self._foreign(path)
        try:
            model, trainable = load_model(path)
        except NotClassicModel as error:
            return self._foreign(path, error.model)
        # Its own task: its loss or output layer's, else the one saved beside it (a SavedModel has neither)
        own = task_of_model(model) or load_model_info(path).get("task")
        task = resolve_task(self._fresh_model.get("task", ""), own, f"the model {path}")
        try:
            wrapper = self._wrapper(
                model, trainable=trainable, learning_rate=self._fresh_model["learning_rate"], task=task
            )
        except TaskError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a model Keras cannot clone: fall back, do not crash
            raise ModelFileError(f"cannot use the model {path}: {error}") from error
        try:  # on the model itself: not counted as predictions served
            wrapper.task = task_of_output(
                wrapper.task, wrapper.output_dim, wrapper.trained_predictor()(probe_samples(wrapper.input_shape))
            )
        except ValueError as error:
            wrapper.close()
            raise ModelFileError(f"cannot use the model {path}: {error}") from None
        try:
            wrapper.class_names = load_class_names(path)
        except ModelFileError as error:  # the names are auxiliary: a bad byte must not cost a good model
            self._log.warning("%s: the model is used without its class names (~class_names name its classes)", error)
        if os.path.isfile(path):
            self._good_files.add(file_digest(path))
        self._warn_of_sizes_overruled(wrapper, path)
        wrapper.card = classic_card(wrapper.input_shape, wrapper.output_dim, wrapper.task)
        if not trainable:
            self._log.warning(
                "model %s is a SavedModel: served for prediction only, by TensorFlow (LiteRT serves Keras models);"
                " train goals are refused",
                path,
            )
        return wrapper

    def _load_instead(self, path):
        """_load of a model to replace the one in use: one of another task than ~task is a ModelFileError too."""
        try:
            return self._load(path)
        except TaskError as error:
            raise ModelFileError(f"cannot use the model {path}: {error}") from None

    def _warn_of_sizes_overruled(self, wrapper, path):
        """The sizes a user set (not the defaults) that the loaded model does not have: the model's win."""
        defaults = Settings().fresh_model()
        overruled = [
            f"{names} {self._fresh_model[key]}"
            for key, names, own in (
                ("input_shape", "~input_dim/~input_shape", list(wrapper.input_shape)),
                ("output_dim", "~output_dim", wrapper.output_dim),
            )
            if self._fresh_model[key] != defaults[key] and self._fresh_model[key] != own
        ]
        if overruled:
            self._log.warning(
                "model %s takes samples of shape %s and has %d classes: its sizes win over %s",
                path,
                list(wrapper.input_shape),
                wrapper.output_dim,
                " and ".join(overruled),
            )

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
        """Hold the model for one training (waiting for one that runs); yields the wrapper to train. What the goal
        leaves behind is freed by its caller once the client has the result (settle_memory)."""
        with self._training_lock:
            yield self.wrapper

    def save(self, class_names=()):
        """Save now (write()); ModelBusyError while a training holds the model, ModelFileError if it cannot be."""
        with self._exclusive("a training runs: the model is saved when it ends"):
            self.write(class_names)

    def write(self, class_names=()):
        """Save the model in use to path, with its class names, else class_names (~class_names), which become
        its own. The trainer calls this while it holds the model."""
        if not self.wrapper.trainable:
            raise ModelFileError(f"the model from {self.source} is a SavedModel and is not saved")
        self.wrapper.class_names = self.wrapper.class_names or list(class_names)
        digest, set_aside = save_model(self.wrapper.model, self.path, self._good_files)
        if set_aside:
            self._log.warning(
                "%s was not a model this node could use: kept as %s, not overwritten; the trained model is saved as %s",
                self.path,
                set_aside,
                self.path,
            )
        self._good_files.add(digest)
        save_class_names(self.wrapper.class_names, self.path)
        self.source, self.fallback_error = self.path, None

    def export_tflite(self, quantization="none", metrics=None, representative=None, version=None, meta=None):
        """Write <path stem>.tflite of the weights committed now beside the model, on a thread of its own (a
        conversion takes a quarter to half a second that a goal need not wait for); logs the path or why not.
        Each export is a new version (number `version`, else the next): its info (version, metrics) is written
        beside it, and on_export told. The model file, saved just before, is kept at once as that version (with
        meta: the goal's dataset, samples, epochs), its .tflite added when written.

        Returns a Future of the path (ModelFileError if not exported). Exports are written in order.
        """
        wrapper = self.wrapper
        version = version or self.reserve_version()
        metrics = metrics or {}
        if self.versions and wrapper.trainable and version not in self.versions.numbers():
            self._keep_version(version, {**metrics, **(meta or {}), "version": version, "stamp": time.time()})
            wrapper.version = version  # the weights committed now are that version: listed and answered as such
        snapshot = (wrapper, wrapper.commit_count, wrapper.model.to_json(), wrapper.model.get_weights())
        future = self._exports.submit(self._export, *snapshot, quantization, metrics, representative, version)
        self._unfinished_exports = [f for f in self._unfinished_exports if not f.done()] + [future]
        return future

    def _keep_version(self, version, meta, extra_files=()):
        """The files at path now as version `version`; a version that cannot be kept is logged, the model serves."""
        files = {f"model{os.path.splitext(self.path)[1]}": self.path, "model.classes.txt": class_names_path(self.path)}
        files.update(extra_files)
        try:
            contents = {name: pathlib.Path(path).read_bytes() for name, path in files.items() if os.path.isfile(path)}
            self.versions.add(version, contents, meta)
        except (OSError, ModelFileError) as error:
            self._log.error("the model is not kept as version %d: %s", version, error)

    def _export(self, wrapper, commit, architecture, weights, quantization, metrics, representative, version):
        litert = wrapper.litert
        try:
            # LiteRT's conversion of this commit, unless it will not be served: a later goal's commits or a reload
            # replace it (then this waited 120 s), or the node shuts down.
            if quantization == "none" and litert and litert.wait_until_serving(commit, timeout=120):
                flatbuffer = litert.flatbuffer_for(commit)
            else:
                try:
                    flatbuffer, _ = self._converter.convert(
                        architecture, weights, quantization, representative=representative
                    )
                except ConversionError as error:
                    raise ModelFileError(f"cannot convert the model to TFLite: {error}") from error
            path = export_tflite(flatbuffer, self.path)
            info = {name: float(metrics.get(name, math.nan)) for name in METRICS}
            info.update(
                version=version, stamp=time.time(), source=self.name, quantization=quantization, task=wrapper.task
            )
            info["sha256"] = hashlib.sha256(flatbuffer).hexdigest()
            save_model_info(info, self.path)
        except ModelFileError as error:
            self._log.warning("the model is saved but not exported to TFLite: %s", error)
            raise
        self.version = max(self.version, version)
        self._add_to_version(version, flatbuffer, wrapper)
        if wrapper.commit_count == commit:  # predictions come from the weights exported: say which version
            wrapper.version = version
        self._log.info("exported %s (version %d)", path, version)
        self._announce(flatbuffer, wrapper, info)
        return path

    def _add_to_version(self, version, flatbuffer, wrapper):
        """The .tflite and info of a kept version, then the oldest beyond ~keep_versions removed (never the
        served one)."""
        if not self.versions or version not in self.versions.numbers():
            return
        try:
            self.versions.add_file(version, "model.tflite", flatbuffer)
            self.versions.add_file(version, "model.info.json", info_path(self.path).read_bytes())
        except (OSError, ModelFileError) as error:
            self._log.error("version %d is kept without its .tflite: %s", version, error)
            return
        self._prune(wrapper.version or version)

    def _prune(self, served):
        """The oldest versions beyond ~keep_versions removed, never the one served nor the one at path (a restart
        serves it), and logged."""
        on_disk = load_model_info(self.path).get("version")
        removed = self.versions.prune(self.keep_versions, {served, on_disk})
        if removed:
            self._log.info(
                "removed versions %s (~keep_versions %d; kept the served version %s)",
                removed,
                self.keep_versions,
                served or "(none: a model that is no version)",
            )

    def _announce(self, flatbuffer, wrapper, info):
        exported = ExportedModel(
            flatbuffer, wrapper.input_shape, wrapper.output_dim, wrapper.class_names, info, wrapper.task
        )
        if self.signer:
            self._sign(exported)
        self.exported = exported
        if self.on_export:
            self.on_export(exported)

    def _sign(self, exported):
        """Sign exported under the next sequence number, saved beside the .tflite at path first: a signature a
        restart or a robot checks again, and a sequence that never goes back."""
        with self._signing_lock:
            self._sequence += 1
            info = exported.info
            fields = model_fields(
                info["version"],
                self._sequence,
                info["sha256"],
                exported.input_shape,
                exported.output_dim,
                exported.class_names,
                info["source"],
                exported.task,
            )
            exported.signature, exported.key_id = self.signer.sign(fields), self.signer.key_id
            exported.sequence = self._sequence
            try:
                save_signature(self.path, exported.signature, exported.key_id, exported.sequence)
            except ModelFileError as error:
                self._log.error("the model's signature is not saved beside it: %s", error)

    def announce_at_startup(self):
        """The model loaded from path, as exported before (on_export told), if its .tflite is in step; else export
        it now (a shutdown skipped its export, or it never had one). Returns the export's Future, or None."""
        if isinstance(self.wrapper, ForeignWrapper):
            return self._exports.submit(self._announce_foreign, self.wrapper)
        if self.source != self.path or not self.wrapper.trainable:
            return None
        exported, info = tflite_path(self.path), load_model_info(self.path)
        in_step = exported.exists() and exported.stat().st_mtime >= os.stat(self.path).st_mtime
        if not in_step or not isinstance(info.get("version"), int):
            return self.export_tflite()
        flatbuffer = exported.read_bytes()
        if hashlib.sha256(flatbuffer).hexdigest() != info.get("sha256"):
            return self.export_tflite()
        wrapper = self.wrapper
        wrapper.version = info["version"]
        if self.versions and info["version"] not in self.versions.numbers():  # a model from before versions
            files = {"model.tflite": exported, "model.info.json": info_path(self.path)}
            self._keep_version(info["version"], {**info, "found_at_startup": True}, files)
        self._announce(flatbuffer, wrapper, info)
        return None

    def _announce_foreign(self, wrapper):
        """A model a user brought, converted to .tflite and published for serving nodes, as a new version number
        (not kept as a version: it is the user's file); logged if it cannot be (then served by this node only)."""
        try:
            flatbuffer = to_tflite(wrapper.runner)
            served_tflite(flatbuffer, wrapper.class_names, task=wrapper.task)  # what a serving node will check
        except (ModelFileError, ModelRefused) as error:
            self._log.warning("the model is served here but not published on ~model: %s", error)
            return None
        version = self.reserve_version()
        wrapper.version = self.version = version
        info = {name: math.nan for name in METRICS}
        info.update(
            version=version,
            stamp=time.time(),
            source=self.name,
            task=wrapper.task,
            sha256=hashlib.sha256(flatbuffer).hexdigest(),
        )
        self._announce(flatbuffer, wrapper, info)
        self._log.info("published the model on ~model as version %d (%d bytes of .tflite)", version, len(flatbuffer))
        return self.exported

    def keep_unserved(self, meta, class_names=()):
        """The model in use, as trained, kept as a new version that is not served (~promote if_better found it
        worse): saved into the version's folder only, never to path. Returns its number, 0 if not kept."""
        wrapper = self.wrapper
        if not self.versions:
            return 0
        version = self.reserve_version()
        scratch = self.versions.root / f".{version}.model-{os.getpid()}.keras"
        try:
            self.versions.root.mkdir(parents=True, exist_ok=True)
            wrapper.model.save(scratch)
            names = class_names_data(wrapper.class_names or class_names)
            files = {"model.keras": scratch.read_bytes(), **({"model.classes.txt": names} if names else {})}
            self.versions.add(version, files, {**meta, "version": version, "stamp": time.time(), "served": False})
        except (OSError, ModelFileError) as error:
            self._log.error("the model not promoted is not kept as version %d: %s", version, error)
            return 0
        finally:
            scratch.unlink(missing_ok=True)
        self._prune(wrapper.version)
        return version

    def _kept_model_file(self, number):
        kept = self.versions.numbers() if self.versions else []
        model_file = self.versions.model_file(number) if number in kept else None
        if model_file is None:
            raise ModelFileError(f"there is no version {number} (kept: {kept or 'none'})")
        return model_file

    def version_predictor(self, number):
        """(predict(x) -> output of kept version `number`, on a model of its own, its sample shape);
        ModelFileError if it is not kept or cannot be loaded."""
        model_file = self._kept_model_file(number)
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            model, _ = load_model(str(model_file))
        return keras_predictor(model), tuple(int(size) for size in model.inputs[0].shape[1:])

    def activate(self, number):
        """Serve version `number` now, as reload() does, and make its files path's, so a restart serves it too.
        ModelFileError (the current model stays) if it is not kept or cannot be used; ModelBusyError while a
        training runs."""
        with self._exclusive("a training runs: activate a version once it ends"):
            model_file = self._kept_model_file(number)
            wrapper = self._load_instead(str(model_file))
            wrapper.version = number
            tflite, info = self.versions.folder(number) / "model.tflite", load_model_info(model_file)
            flatbuffer = tflite.read_bytes() if tflite.is_file() and info.get("version") == number else None
            self._replace_wrapper(wrapper)
            self.write()  # the version's model at path (the replaced file becomes the backup)
            if flatbuffer is not None:
                export_tflite(flatbuffer, self.path)
                save_model_info(info, self.path)
        if flatbuffer is not None:  # to the serving nodes: they roll back too
            self._announce(flatbuffer, wrapper, info)
        else:  # a version never exported (~promote if_better did not serve it): exported now, under its number
            self.export_tflite(version=number)
        return wrapper

    def close(self):
        """Stop the conversions: the node is shutting down. An export under way or waiting is skipped (a cold
        converter would hold the shutdown for seconds) and the log says so; the next start exports again."""
        self.wrapper.close()
        self._exports.shutdown(wait=False, cancel_futures=True)
        if any(not export.done() for export in self._unfinished_exports):
            self._log.warning(
                "shutting down before the .tflite export finished: %s is not %s's yet; the next start exports it",
                tflite_path(self.path),
                self.path,
            )
        self._converter.close()

    def reload(self):
        """Load path again and switch predictions to it at once; the current model stays if it cannot be used."""
        with self._exclusive("a training runs: reload once it ends"):
            try:
                wrapper = self._load_instead(self.path)
            except ModelFileError as error:
                self._log.warning("reload failed: %s; the current model stays", error)
                raise
            self._replace_wrapper(wrapper)
            self.source, self.fallback_error = self.path, None
        return wrapper

    def _replace_wrapper(self, wrapper):
        """Predictions switch to wrapper at once; the one it replaces stops converting and its memory is freed."""
        self._served_by_earlier_models += self.wrapper.predictions_served
        previous, self.wrapper = self.wrapper, wrapper
        previous.close()
        del previous
        settle_memory(model_replaced=True)
