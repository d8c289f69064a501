"""RosInterface: translates between ROS and the ROS-free core."""

import math
import os
import sqlite3
import threading
import warnings
from datetime import UTC, datetime

import actionlib
import numpy as np
import rospkg
import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ros_tensorflow_msgs.msg import Prediction, Sample, TrainAction, TrainFeedback, TrainResult
from ros_tensorflow_msgs.srv import Predict, PredictResponse
from rospy.numpy_msg import numpy_msg
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger, TriggerResponse

from ros_tensorflow.callbacks import BatchProgressReporter, CancelOnRequest, EpochEndReporter, optional_callbacks
from ros_tensorflow.datasets import Datasets
from ros_tensorflow.model import (
    ModelWrapper,
    as_labelled_samples,
    as_samples,
    check_validation_split,
    classify,
    prediction_rows,
)
from ros_tensorflow.persistence import ModelFileError, backup_path, file_digest, load_model, save_model
from ros_tensorflow.sample_store import SampleStore
from ros_tensorflow.streaming import MicroBatcher


def _param(name, default, rule=None):
    """~name, or default; ValueError naming it when it breaks rule ('int > 0', 'int >= 0' or '>= 0')."""
    value = rospy.get_param(f"~{name}", default)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    ok = {
        None: True,
        "int > 0": is_int and value > 0,
        "int >= 0": is_int and value >= 0,
        ">= 0": is_number and value >= 0,
    }[rule]
    if not ok:
        raise ValueError(f"parameter {rospy.resolve_name('~' + name)} must be {rule}, got {value!r}")
    return value


def _publisher(name, msg_class, queue_size):
    """queue_size 0: publish on the calling thread, over twice as fast as rospy's queued publishing,
    which yields the GIL after every message; a subscriber that stops reading then holds the caller up."""
    if queue_size:
        return rospy.Publisher(name, msg_class, queue_size=queue_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # rospy's nudge towards queue_size: chosen deliberately
        return rospy.Publisher(name, msg_class, queue_size=None)


def _epochs(count):
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _prediction_fields(rows):
    """The classes, confidences and output fields shared by Predict's response and Prediction."""
    classes, confidences, outputs = zip(*rows, strict=True)
    return {"classes": classes, "confidences": confidences, "output": [value for row in outputs for value in row]}


class RosInterface:
    """The `train` action, the `predict` service, the topics, the services and the status of one model."""

    def __init__(self):
        self.batch_size = _param("batch_size", 32, "int > 0")
        self.dataset = rospy.get_param("~dataset", "synthetic")
        self.loop_rate = _param("loop_rate", 1.0, ">= 0")
        self.data_dir = rospy.get_param("~data_dir", "") or os.path.join(rospkg.get_ros_home(), "ros_tensorflow")
        self.model_path = rospy.get_param("~model_path", "") or os.path.join(self.data_dir, "model.keras")
        self.bag_topic = rospy.get_param("~bag_topic", "") or rospy.resolve_name("~samples")
        self.early_stopping_patience = _param("early_stopping_patience", 0, ">= 0")
        self.save_on_cancel = rospy.get_param("~save_on_cancel", False)
        self.tensorboard_dir = rospy.get_param("~tensorboard_dir", "")
        self.model_params = {
            "input_dim": _param("input_dim", 10, "int > 0"),
            "output_dim": _param("output_dim", 2, "int > 0"),
            "hidden_units": _param("hidden_units", 32, "int > 0"),
            "learning_rate": _param("learning_rate", 0.1, ">= 0"),
        }
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            self.sample_store = SampleStore(os.path.join(self.data_dir, "samples.sqlite"))
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"parameter ~data_dir: {self.data_dir} is not usable: {error}") from error

        self._good_model_files = set()  # digests of model files loaded or saved: a save keeps those as backup
        self.wrapper, self.model_source = self._startup_model()
        self.training_epoch = None  # None while idle, else the running epoch (0-based)
        self._training = threading.Lock()  # held while a goal trains: ~save and ~reload refuse meanwhile
        self._served_by_earlier_models = 0
        self.inputs_rejected = 0
        self.samples_rejected = 0

        queue_size = _param("queue_size", 100, "int > 0")
        self._prediction_pub = _publisher("~prediction", Prediction, _param("publish_queue_size", 0, "int >= 0"))
        self._batcher = MicroBatcher(
            lambda x: prediction_rows(self.wrapper.predict(x)),
            self._publish_prediction,
            max_batch=_param("max_batch", 256, "int > 0"),
            queue_size=queue_size,
            on_error=lambda error: rospy.logerr_throttle(5, f"prediction of ~input failed: {error}"),
        )
        rospy.on_shutdown(self._batcher.close)
        self._subscribers = [
            rospy.Subscriber("~input", numpy_msg(Float64MultiArray), self._handle_input, queue_size=None),
            rospy.Subscriber("~samples", Sample, self._handle_samples, queue_size=None),
        ]
        self._diagnostics_pub = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=1)
        self._diagnostics_timer = rospy.Timer(rospy.Duration(1.0), self._publish_diagnostics)
        self._services = [
            rospy.Service("predict", Predict, self._handle_predict),
            rospy.Service("~save", Trigger, self._handle_save),
            rospy.Service("~reload", Trigger, self._handle_reload),
            rospy.Service("~clear_samples", Trigger, self._handle_clear_samples),
        ]
        self._train_server = actionlib.SimpleActionServer(
            "train", TrainAction, execute_cb=self._execute_train, auto_start=False
        )
        self._train_server.start()
        rospy.loginfo(
            "ros_tensorflow ready: action %s, service %s, model %s (%d -> %d), data in %s",
            rospy.resolve_name("train"),
            rospy.resolve_name("predict"),
            self.model_source,
            self.wrapper.input_dim,
            self.wrapper.output_dim,
            self.data_dir,
        )

    # --- the model on disk -----------------------------------------------------

    def _load(self, path):
        """A ModelWrapper of the model file at path; ModelFileError if it cannot be used."""
        model, trainable = load_model(path)
        try:
            wrapper = ModelWrapper(model, trainable=trainable, learning_rate=self.model_params["learning_rate"])
        except Exception as error:  # noqa: BLE001 - e.g. a model Keras cannot clone: fall back, do not crash
            raise ModelFileError(f"cannot use the model {path}: {error}") from error
        if os.path.isfile(path):
            self._good_model_files.add(file_digest(path))
        sizes = (wrapper.input_dim, wrapper.output_dim)
        if sizes != (self.model_params["input_dim"], self.model_params["output_dim"]):
            rospy.logwarn(
                "model %s is %d -> %d: its sizes win over ~input_dim %d and ~output_dim %d",
                path,
                *sizes,
                self.model_params["input_dim"],
                self.model_params["output_dim"],
            )
        if not trainable:
            rospy.logwarn("model %s is a SavedModel: served for prediction only, train goals are refused", path)
        return wrapper

    def _startup_model(self):
        """The model at ~model_path, else its backup, else a fresh one; says which and why."""
        for path in (self.model_path, str(backup_path(self.model_path))):
            if not os.path.exists(path):
                continue
            try:
                return self._load(path), path
            except ModelFileError as error:
                rospy.logerr("%s; trying the next fallback", error)
        rospy.loginfo("no usable model at %s: starting a fresh one", self.model_path)
        return ModelWrapper(**self.model_params), "fresh"

    def _handle_save(self, _request):
        if not self.wrapper.trainable:
            return TriggerResponse(False, f"the model from {self.model_source} is a SavedModel and is not saved")
        if not self._training.acquire(blocking=False):
            return TriggerResponse(False, "a training runs: the model is saved when it ends")
        try:
            self._save(self.wrapper)
        except ModelFileError as error:
            return TriggerResponse(False, str(error))
        finally:
            self._training.release()
        return TriggerResponse(True, f"saved to {self.model_path}")

    def _handle_reload(self, _request):
        if not self._training.acquire(blocking=False):
            return TriggerResponse(False, "a training runs: reload once it ends")
        try:
            wrapper = self._load(self.model_path)
            self._served_by_earlier_models += self.wrapper.predictions_served
            self.wrapper, self.model_source = wrapper, self.model_path
        except ModelFileError as error:
            rospy.logwarn("reload failed: %s; the current model stays", error)
            return TriggerResponse(False, f"{error}; the current model stays")
        finally:
            self._training.release()
        rospy.loginfo("reloaded the model from %s", self.model_path)
        return TriggerResponse(True, f"reloaded {self.model_path} ({wrapper.input_dim} -> {wrapper.output_dim})")

    def _save(self, wrapper):
        """Save to ~model_path; the replaced file becomes the backup only if it is a model (persistence.save_model)."""
        self._good_model_files.add(save_model(wrapper.model, self.model_path, self._good_model_files))
        self.model_source = self.model_path

    # --- predict ---------------------------------------------------------------

    def _handle_predict(self, request):
        try:
            fields = _prediction_fields(prediction_rows(self.wrapper.predict(request.data)))
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        return PredictResponse(i_class=fields["classes"][0], confidence=fields["confidences"][0], **fields)

    # --- ~input stream ---------------------------------------------------------

    def _handle_input(self, msg):
        received = rospy.Time.now()
        try:
            samples = as_samples(msg.data, self.wrapper.input_dim)
        except ValueError as error:
            self.inputs_rejected += 1
            rospy.logwarn_throttle(5, f"dropped a malformed ~input message: {error}")
            return
        if self._batcher.submit(received, samples):
            rospy.logwarn_throttle(5, f"~input queue full: dropped the oldest inputs ({self._batcher.dropped} so far)")

    def _publish_prediction(self, received, rows):
        prediction = Prediction(**_prediction_fields(rows))
        prediction.header.stamp = received
        self._prediction_pub.publish(prediction)

    # --- recorded samples ------------------------------------------------------

    def _handle_samples(self, msg):
        try:
            x, y = as_labelled_samples(msg.data, msg.labels, self.wrapper.input_dim, self.wrapper.output_dim)
        except ValueError as error:
            self.samples_rejected += 1
            rospy.logwarn_throttle(5, f"rejected a ~samples message: {error}")
            return
        self.sample_store.append(x, y)

    def _handle_clear_samples(self, _request):
        count = len(self.sample_store)
        self.sample_store.clear()
        return TriggerResponse(True, f"cleared {count} samples")

    # --- status ----------------------------------------------------------------

    def _publish_diagnostics(self, _event=None):
        training = self.training_epoch is not None
        values = {
            "state": "training" if training else "idle",
            "epoch": "" if not training else str(self.training_epoch),
            "model": self.model_source,
            "committed_at": datetime.fromtimestamp(self.wrapper.committed_at, UTC).isoformat(),
            "predictions_served": str(self._served_by_earlier_models + self.wrapper.predictions_served),
            "inputs_dropped": str(self._batcher.dropped),
            "inputs_rejected": str(self.inputs_rejected),
            "samples_stored": str(len(self.sample_store)),
            "samples_rejected": str(self.samples_rejected),
        }
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{rospy.get_name()}: model",
            message=f"training epoch {self.training_epoch}" if training else "idle",
            hardware_id=rospy.get_name(),
            values=[KeyValue(key, value) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = rospy.Time.now()
        self._diagnostics_pub.publish(array)

    # --- train -----------------------------------------------------------------

    def _goal_error(self, goal):
        if goal.epochs <= 0:
            return f"epochs must be > 0, got {goal.epochs}"
        if goal.batch_size < 0:
            return f"batch_size must be >= 0 (0: the node's ~batch_size), got {goal.batch_size}"
        if not 0.0 <= goal.validation_split < 1.0 or math.isnan(goal.validation_split):
            return f"validation_split must be in [0, 1), got {goal.validation_split}"
        if not self.wrapper.trainable:
            return f"the model from {self.model_source} is a SavedModel, served for prediction only: it cannot train"
        return None

    def _execute_train(self, goal):
        result = TrainResult(loss=math.nan, acc=math.nan, val_loss=math.nan, val_acc=math.nan)
        with self._training:
            wrapper = self.wrapper
            try:
                error = self._goal_error(goal)
                if error is None:
                    datasets = Datasets(
                        self.data_dir, wrapper.input_dim, wrapper.output_dim, self.sample_store, self.bag_topic
                    )
                    x, y = datasets.load(goal.dataset or self.dataset)
                    check_validation_split(len(x), goal.validation_split)
            except ValueError as dataset_error:  # DatasetError, or a split the data cannot fill
                error = str(dataset_error)
            if error is not None:
                rospy.logwarn("train goal rejected: %s", error)
                result.message = error
                self._train_server.set_aborted(result, error)
                return
            self._train(wrapper, goal, x, y, result)

    def _train(self, wrapper, goal, x, y, result):
        def on_epoch(i_epoch, metrics):
            self.training_epoch = i_epoch + 1
            self._publish_feedback(i_epoch, metrics, epochs.batches_per_epoch, epochs.batches_per_epoch)

        epochs = EpochEndReporter(on_epoch)
        progress = BatchProgressReporter(
            lambda batch, batches_per_epoch: self._publish_feedback(
                epochs.epochs_completed - 1, epochs.last_metrics, batch, batches_per_epoch
            )
        )
        cancel = CancelOnRequest(self._train_server.is_preempt_requested)
        extra = optional_callbacks(self.early_stopping_patience, goal.validation_split > 0, self.tensorboard_dir)
        self.training_epoch = 0
        try:
            wrapper.train(
                x,
                y,
                epochs=goal.epochs,
                batch_size=goal.batch_size or self.batch_size,
                validation_split=goal.validation_split,
                callbacks=[cancel, epochs, progress, *extra],
            )
        except Exception as train_error:  # noqa: BLE001 - any failure must end the goal with its cause
            rospy.logerr("training failed: %s", train_error)
            result.message = f"training failed: {train_error}"
            self._train_server.set_aborted(result, result.message)
            return
        finally:
            self.training_epoch = None

        result.epochs_completed = epochs.epochs_completed
        for name, value in epochs.last_metrics.items():
            setattr(result, name, value)
        if cancel.cancelled:
            result.message = f"cancelled after {_epochs(epochs.epochs_completed)}"
        elif epochs.epochs_completed < goal.epochs:
            result.message = f"stopped early after {_epochs(epochs.epochs_completed)}; the best weights were kept"
        else:
            result.message = f"finished {_epochs(epochs.epochs_completed)}"
        if not cancel.cancelled or self.save_on_cancel:
            try:
                self._save(wrapper)
                result.model_path = self.model_path
            except ModelFileError as error:
                rospy.logerr("%s", error)
                result.message += f"; not saved: {error}"
        if cancel.cancelled:
            self._train_server.set_preempted(result, result.message)
        else:
            self._train_server.set_succeeded(result, result.message)
        rospy.loginfo("train goal: %s", result.message)

    def _publish_feedback(self, i_epoch, metrics, batch, batches_per_epoch):
        """Epoch feedback has batch == batches_per_epoch; progress feedback repeats the last finished epoch."""
        self._train_server.publish_feedback(
            TrainFeedback(i_epoch=i_epoch, batch=batch, batches_per_epoch=batches_per_epoch, **metrics)
        )

    # --- main loop -------------------------------------------------------------

    def spin(self):
        """The tutorial's prediction in the main loop, at ~loop_rate Hz (0: just spin)."""
        if self.loop_rate <= 0:
            rospy.spin()
            return
        rate = rospy.Rate(self.loop_rate)
        rng = np.random.default_rng()
        while not rospy.is_shutdown():
            sample = rng.random(self.wrapper.input_dim)
            classes, confidences = classify(self.wrapper.predict(sample))
            rospy.loginfo("main loop: class %d (confidence %.3f)", classes[0], confidences[0])
            try:
                rate.sleep()
            except rospy.ROSInterruptException:
                break
