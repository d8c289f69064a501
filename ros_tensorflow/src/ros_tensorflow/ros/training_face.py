"""The training face of the training node: the `train` action, recording, ~save, ~reload, ~clear_samples, and
each trained model published on ~model for the serving nodes.

The locks live in the core: the Trainer and ~save/~reload hold the ModelKeeper's training lock.
"""

import math

import actionlib
import rospy
from ros_tensorflow_msgs.msg import ImageSample, Model, Sample, TrainAction, TrainFeedback, TrainResult, VersionInfo
from ros_tensorflow_msgs.srv import ActivateVersion, ActivateVersionResponse, ListVersions, ListVersionsResponse
from rospy.numpy_msg import numpy_msg
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger, TriggerResponse

from ros_tensorflow.ros.serving_face import IMAGE_BUFFER_BYTES, rgb_image
from ros_tensorflow.tf_free.images import image_sample, pixel_limit
from ros_tensorflow.tf_free.plots import curves_figure, png_and_rgb
from ros_tensorflow.tf_free.sample_store import StoreError
from ros_tensorflow.tf_free.samples import request_limit, stored_samples_limit
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, METRICS, REGRESSION
from ros_tensorflow.with_tf.model_keeper import ModelBusyError
from ros_tensorflow.with_tf.persistence import ModelFileError
from ros_tensorflow.with_tf.tf_context import settle_memory
from ros_tensorflow.with_tf.training import ABORTED, PREEMPTED, SUCCEEDED, TrainingOutcome, TrainingRequest

LOCKED = "is refused: ~allow_training is false (this model is locked against changes over ROS)"


def sizes(wrapper):
    """'10 -> 2' for the tutorial's model, '[28, 28, 1] -> 10' for images."""
    shape = wrapper.input_shape
    return f"{shape[0] if len(shape) == 1 else list(shape)} -> {wrapper.output_dim}"


def model_message(exported):
    """A ros_tensorflow_msgs/Model of a core ExportedModel."""
    info = exported.info
    return Model(
        version=info["version"],
        stamp=rospy.Time.from_sec(info["stamp"]),
        source=info["source"],
        format="tflite",
        data=exported.flatbuffer,
        sha256=info["sha256"],
        input_shape=list(exported.input_shape),
        output_dim=exported.output_dim,
        class_names=exported.class_names,
        task=exported.task,
        **{name: info.get(name, float("nan")) for name in ("loss", "acc", "val_loss", "val_acc")},
        signature=exported.signature,
        key_id=exported.key_id,
        sequence=exported.sequence,
    )


class TrainingFace:
    """The action, recording and model-changing services of one ModelKeeper, its Trainer and SampleStore."""

    def __init__(self, keeper, trainer, sample_store, counters, settings_of):
        self.keeper, self.trainer, self.sample_store = keeper, trainer, sample_store
        self._curves_pub = rospy.Publisher("~training/curves", Image, queue_size=1, latch=True)
        self.counters = counters
        self._settings_of = settings_of
        self._model_pub = rospy.Publisher("~model", Model, queue_size=1, latch=True)
        keeper.on_export = lambda exported: self._model_pub.publish(model_message(exported))
        self._subscribers = [
            rospy.Subscriber("~samples", numpy_msg(Sample), self._handle_samples, queue_size=None),
            rospy.Subscriber(
                "~image_samples", ImageSample, self._handle_image_sample, queue_size=None, buff_size=IMAGE_BUFFER_BYTES
            ),
        ]
        self._services = [
            rospy.Service("~save", Trigger, self._handle_save),
            rospy.Service("~reload", Trigger, self._handle_reload),
            rospy.Service("~clear_samples", Trigger, self._handle_clear_samples),
            rospy.Service("~list_versions", ListVersions, self._handle_list_versions),
            rospy.Service("~activate_version", ActivateVersion, self._handle_activate_version),
        ]
        self._train_server = actionlib.SimpleActionServer(
            "train", TrainAction, execute_cb=self._execute_train, auto_start=False
        )
        self._train_server.start()

    def _locked(self):
        return not self._settings_of().allow_training

    def _handle_save(self, _request):
        if self._locked():  # a save replaces the backup: the locked robot's only rollback copy
            return TriggerResponse(False, f"save {LOCKED}")
        try:
            self.keeper.save(self._settings_of().class_names)
        except (ModelBusyError, ModelFileError) as error:
            return TriggerResponse(False, str(error))
        return TriggerResponse(True, f"saved to {self.keeper.path}")

    def _handle_reload(self, _request):
        if self._locked():
            return TriggerResponse(False, f"reload {LOCKED}")
        try:
            wrapper = self.keeper.reload()
        except ModelBusyError as error:
            return TriggerResponse(False, str(error))
        except ModelFileError as error:
            return TriggerResponse(False, f"{error}; the current model stays")
        rospy.loginfo("reloaded the model from %s", self.keeper.path)
        return TriggerResponse(True, f"reloaded {self.keeper.path} ({sizes(wrapper)})")

    def _handle_list_versions(self, _request):
        versions, served = self.keeper.versions, self.keeper.wrapper.version
        listed = []
        for number in versions.numbers() if versions else []:
            meta = versions.meta(number)
            metrics = {k: math.nan if meta.get(k) is None else meta[k] for k in METRICS}
            listed.append(
                VersionInfo(
                    version=number,
                    stamp=rospy.Time.from_sec(meta.get("stamp", 0)),
                    dataset=meta.get("dataset", ""),
                    samples=meta.get("samples", 0),
                    epochs=meta.get("epochs", 0),
                    served=number == served,
                    task=meta.get("task", CLASSIFICATION),
                    **metrics,
                )
            )
        return ListVersionsResponse(listed, served)

    def _handle_activate_version(self, request):
        if self._locked():
            return ActivateVersionResponse(False, f"activating a version {LOCKED}")
        try:
            wrapper = self.keeper.activate(request.version)
        except (ModelBusyError, ModelFileError) as error:
            return ActivateVersionResponse(False, f"{error}; the current model stays")
        rospy.loginfo("serving version %d, saved to %s", request.version, self.keeper.path)
        return ActivateVersionResponse(True, f"serving version {request.version} ({sizes(wrapper)})")

    def _handle_clear_samples(self, _request):
        if self._locked():
            return TriggerResponse(False, f"clearing samples {LOCKED}")
        count = len(self.sample_store)
        self.sample_store.clear()
        return TriggerResponse(True, f"cleared {count} samples")

    def _refuse_recording(self, topic):
        if self._locked():
            why = f"recording {LOCKED}"
        elif not self._settings_of().accept_samples:
            why = "recording is refused: ~accept_samples is false"
        else:
            return False
        self.counters.samples_rejected += 1
        rospy.logwarn_throttle(5, f"rejected a {topic} message: {why}")
        return True

    def _handle_samples(self, msg):
        if self._refuse_recording("~samples"):
            return
        wrapper = self.keeper.wrapper
        limit = request_limit(self._settings_of().max_request_samples, wrapper.input_shape)
        try:
            x, y = wrapper.checked_samples(msg.data, self._labels_or_targets(msg, wrapper, msg.labels), limit)
        except ValueError as error:
            self.counters.samples_rejected += 1
            rospy.logwarn_throttle(5, f"rejected a ~samples message: {error}")
            return
        self._record(x, y, "~samples")

    def _handle_image_sample(self, msg):
        if self._refuse_recording("~image_samples"):
            return
        wrapper, settings = self.keeper.wrapper, self._settings_of()
        try:
            max_pixels = pixel_limit(settings.max_image_pixels)
            sample = image_sample(msg.image, wrapper.input_shape, settings.input_scale, max_pixels)
            x, y = wrapper.checked_samples(sample, self._labels_or_targets(msg, wrapper, [msg.label]))
        except ValueError as error:
            self.counters.samples_rejected += 1
            rospy.logwarn_throttle(5, f"rejected a ~image_samples message: {error}")
            return
        self._record(x, y, "~image_samples")

    @staticmethod
    def _labels_or_targets(msg, wrapper, labels):
        """The targets of a regression model's sample, else its labels; ValueError names a field sent for the
        other task (an ImageSample's label is ignored for regression: it cannot be empty)."""
        if wrapper.task == REGRESSION:
            if len(labels) and isinstance(msg, Sample):
                raise ValueError("it has labels, but the model is a regression model: send targets (labels empty)")
            return msg.targets
        if len(msg.targets):
            raise ValueError("it has targets, but the model is a classifier: send labels (targets empty)")
        return labels

    def _record(self, x, y, topic):
        """Store the samples, or count and report a store that cannot take them (full: ~max_stored_samples, or a
        full disk): it stays whole, and no sample already stored is dropped for new ones."""
        limit = stored_samples_limit(self._settings_of().max_stored_samples, self.keeper.wrapper.input_shape)
        try:
            if len(self.sample_store) + len(x) > limit:
                raise StoreError(
                    f"the sample store holds {len(self.sample_store)} samples, ~max_stored_samples allows {limit}:"
                    " new samples are refused (train on them, or ~clear_samples)"
                )
            self.sample_store.append(x, y)
        except StoreError as error:
            self.counters.samples_rejected += len(x)
            rospy.logerr_throttle(5, f"could not record a {topic} message: {error}")

    def _execute_train(self, goal):
        if self._locked():
            rospy.logwarn("train goal refused: ~allow_training is false")
            outcome = TrainingOutcome(ABORTED, f"training {LOCKED}")  # no epoch: no metrics, best_epoch -1
        else:
            outcome = self.trainer.run(
                TrainingRequest(goal.epochs, goal.batch_size, goal.validation_split, goal.dataset),
                self._settings_of(),
                should_stop=self._train_server.is_preempt_requested,
                on_feedback=self._publish_feedback,
            )
        result = TrainResult(
            epochs_completed=outcome.epochs_completed,
            model_path=outcome.model_path,
            message=outcome.message,
            best_epoch=outcome.best_epoch,
            version=outcome.version,
            promoted=outcome.promoted,
            **outcome.metrics,
        )
        finish = {
            SUCCEEDED: self._train_server.set_succeeded,
            PREEMPTED: self._train_server.set_preempted,
            ABORTED: self._train_server.set_aborted,
        }[outcome.state]
        finish(result, outcome.message)
        # After the result, so that the client waits for neither: a collection after a goal takes ~40 ms (a
        # cancel was 1 batch + 60 ms with it before the result, `make bench ROWS=training`).
        settle_memory()
        if outcome.state == SUCCEEDED and outcome.history:
            self._publish_curves(outcome.history, outcome.version, outcome.best_epoch)

    def _publish_curves(self, history, version, best_epoch):
        """curves.png into the goal's version folder, and latched on ~training/curves."""
        png, rgb = png_and_rgb(curves_figure(history, version, best_epoch))
        if version and self.keeper.versions:
            try:
                self.keeper.versions.add_file(version, "curves.png", png)
            except ModelFileError as error:
                rospy.logerr("the training curves were not written: %s", error)
        self._curves_pub.publish(rgb_image(rgb))

    def _publish_feedback(self, i_epoch, metrics, batch, batches_per_epoch):
        """Epoch feedback has batch == batches_per_epoch; progress feedback repeats the last finished epoch."""
        self._train_server.publish_feedback(
            TrainFeedback(i_epoch=i_epoch, batch=batch, batches_per_epoch=batches_per_epoch, **metrics)
        )
