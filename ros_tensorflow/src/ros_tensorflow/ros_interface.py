"""RosInterface: translates between ROS and the ROS-free core."""

import logging
import os
import warnings

import actionlib
import diagnostic_updater
import numpy as np
import rospkg
import rospy
from diagnostic_msgs.msg import DiagnosticArray
from dynamic_reconfigure.server import Server as ReconfigureServer
from ros_tensorflow_msgs.msg import ImageSample, Prediction, Sample, TrainAction, TrainFeedback, TrainResult
from ros_tensorflow_msgs.srv import Predict, PredictImage, PredictImageResponse, PredictRequest, PredictResponse
from rospy.numpy_msg import numpy_msg
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger, TriggerResponse

from ros_tensorflow.cfg import RosTensorflowConfig
from ros_tensorflow.images import ImageError, annotated, decode_message, image_sample
from ros_tensorflow.master_watch import MasterWatch
from ros_tensorflow.model_keeper import ModelBusyError, ModelKeeper
from ros_tensorflow.persistence import ModelFileError
from ros_tensorflow.sample_store import SampleStore, StoreError
from ros_tensorflow.samples import as_labelled_samples, as_samples, prediction_rows, request_limit
from ros_tensorflow.settings import PARAMETERS, Settings
from ros_tensorflow.status import Counters, model_status, stream_status
from ros_tensorflow.streaming import MicroBatcher
from ros_tensorflow.tf_context import configure_devices
from ros_tensorflow.training import ABORTED, PREEMPTED, SUCCEEDED, Trainer, TrainingRequest

LOCKED = "is refused: ~allow_training is false (this model is locked against changes over ROS)"
RECONFIGURABLE = [name for name, parameter in PARAMETERS.items() if parameter.reconfigurable]


def _resolved(name):
    return rospy.resolve_name(f"~{name}")


def _publisher(name, msg_class, queue_size):
    """queue_size 0: publish on the calling thread, over twice as fast as rospy's queued publishing,
    which yields the GIL after every message; a subscriber that stops reading then holds the caller up."""
    if queue_size:
        return rospy.Publisher(name, msg_class, queue_size=queue_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # rospy's nudge towards queue_size: chosen deliberately
        return rospy.Publisher(name, msg_class, queue_size=None)


class _NumpyPredict:
    """Predict, its request's data read as one numpy array: rospy would make a Python float of every value
    (a request of 3 million values left the node ~600 MB larger, Python's allocator keeping the memory)."""

    _type, _md5sum = Predict._type, Predict._md5sum
    _request_class, _response_class = numpy_msg(PredictRequest), PredictResponse


IMAGE_BUFFER_BYTES = 2**26  # rospy's read buffer: a few 4K RGB frames at a time


def _prediction_fields(rows, class_names):
    """The classes, confidences, output and labels fields shared by Predict's, PredictImage's response and
    Prediction."""
    classes, confidences, outputs = zip(*rows, strict=True)
    labels = [class_names[c] if c < len(class_names) else "" for c in classes]
    output = [value for row in outputs for value in row]
    return {"classes": classes, "confidences": confidences, "output": output, "labels": labels}


def _sizes(wrapper):
    """'10 -> 2' for the tutorial's model, '[28, 28, 1] -> 10' for images."""
    shape = wrapper.input_shape
    return f"{shape[0] if len(shape) == 1 else list(shape)} -> {wrapper.output_dim}"


def _filled(status, level, message, values):
    status.summary(level, message)
    for key, value in values.items():
        status.add(key, value)
    return status


class _Updater(diagnostic_updater.Updater):
    """Names each status '<node name>: <task>', with the leading slash the node's status always had."""

    def publish(self, msg):
        statuses = msg if isinstance(msg, list) else [msg]
        for status in statuses:
            status.name = f"{rospy.get_name()}: {status.name}"
        array = DiagnosticArray(status=statuses)
        array.header.stamp = rospy.Time.now()
        self.publisher.publish(array)


class RosInterface:
    """The `train` action, the `predict` service, the topics, the services and the status of one model."""

    def __init__(self):
        self.settings = Settings(lambda name, default: rospy.get_param(f"~{name}", default), _resolved)
        try:
            configure_devices(self.settings.device, self.settings.gpu_memory_growth)
        except ValueError as error:
            raise ValueError(f"parameter {_resolved('device')}: {error}") from error
        data_dir = self.settings.data_dir or os.path.join(rospkg.get_ros_home(), "ros_tensorflow")
        try:
            sample_store, moved_aside = SampleStore.open_in(data_dir)
        except ValueError as error:
            raise ValueError(f"parameter ~data_dir: {error}") from error
        if moved_aside:
            rospy.logerr("%s", moved_aside)
        log = logging.getLogger("rosout")  # rospy's logger: to the console and /rosout
        model_path = self.settings.model_path or os.path.join(data_dir, "model.keras")
        self.keeper = ModelKeeper(
            model_path, self.settings.fresh_model(), log, self.settings.serving_backend, self.settings.device
        )
        self.sample_store = sample_store
        self.trainer = Trainer(
            self.keeper, sample_store, data_dir, self.settings.bag_topic or _resolved("samples"), log
        )

        self._prediction_pub = _publisher("~prediction", Prediction, self.settings.publish_queue_size)
        self._annotated_pub = rospy.Publisher("~image_annotated", Image, queue_size=1)
        self._batcher = self._stream_batcher("~input", self.settings.queue_size, self._publish_prediction)
        self._image_batcher = self._stream_batcher("~image", self.settings.image_queue_size, self._deliver_image)
        rospy.on_shutdown(self.keeper.close)
        self.counters = Counters(lambda: self._batcher.dropped, lambda: self._image_batcher.dropped)
        self._subscribers = [
            rospy.Subscriber("~input", numpy_msg(Float64MultiArray), self._handle_input, queue_size=None),
            rospy.Subscriber("~samples", numpy_msg(Sample), self._handle_samples, queue_size=None),
            # Every frame is read and converted; only our queue drops (the oldest), so every drop is counted.
            rospy.Subscriber("~image", Image, self._handle_image, queue_size=None, buff_size=IMAGE_BUFFER_BYTES),
            rospy.Subscriber(
                "~image/compressed", CompressedImage, self._handle_image, queue_size=None, buff_size=IMAGE_BUFFER_BYTES
            ),
            rospy.Subscriber(
                "~image_samples", ImageSample, self._handle_image_sample, queue_size=None, buff_size=IMAGE_BUFFER_BYTES
            ),
        ]
        self._start_diagnostics()
        self._services = [
            rospy.Service("predict", _NumpyPredict, self._handle_predict),
            rospy.Service("predict_image", PredictImage, self._handle_predict_image),
            rospy.Service("~save", Trigger, self._handle_save),
            rospy.Service("~reload", Trigger, self._handle_reload),
            rospy.Service("~clear_samples", Trigger, self._handle_clear_samples),
        ]
        self._reconfigure_server = ReconfigureServer(RosTensorflowConfig, self._reconfigure)
        self._train_server = actionlib.SimpleActionServer(
            "train", TrainAction, execute_cb=self._execute_train, auto_start=False
        )
        self._train_server.start()
        self._master_watch = MasterWatch(on_return=self._set_parameters)
        sizes = _sizes(self.keeper.wrapper)
        rospy.loginfo(
            f"ros_tensorflow ready: action {rospy.resolve_name('train')}, service {rospy.resolve_name('predict')},"
            f" model {self.keeper.source} ({sizes}), data in {data_dir}"
        )

    def _set_parameters(self):
        """The values in force, for a master that restarted without them."""
        rospy.set_param("~", self.settings.as_dict())

    def _handle_save(self, _request):
        try:
            self.keeper.save()
        except (ModelBusyError, ModelFileError) as error:
            return TriggerResponse(False, str(error))
        return TriggerResponse(True, f"saved to {self.keeper.path}")

    def _handle_reload(self, _request):
        if not self.settings.allow_training:
            return TriggerResponse(False, f"reload {LOCKED}")
        try:
            wrapper = self.keeper.reload()
        except ModelBusyError as error:
            return TriggerResponse(False, str(error))
        except ModelFileError as error:
            return TriggerResponse(False, f"{error}; the current model stays")
        rospy.loginfo("reloaded the model from %s", self.keeper.path)
        return TriggerResponse(True, f"reloaded {self.keeper.path} ({_sizes(wrapper)})")

    def _stream_batcher(self, topic, queue_size, deliver):
        """A MicroBatcher from topic to deliver(prediction, tag, rows); each has its own Prediction to fill in."""
        prediction = Prediction()
        batcher = MicroBatcher(
            lambda x: prediction_rows(self.keeper.wrapper.predict_samples(x)),
            lambda tag, rows: deliver(prediction, tag, rows),
            max_batch=self.settings.max_batch,
            queue_size=queue_size,
            on_error=lambda error: rospy.logerr_throttle(5, f"prediction of {topic} failed: {error}"),
        )
        rospy.on_shutdown(batcher.close)
        return batcher

    def _class_names(self):
        """The model's own (saved with it, or from an image folder it trained on), else ~class_names."""
        return self.keeper.wrapper.class_names or self.settings.class_names

    def _request_limit(self, wrapper):
        return request_limit(self.settings.max_request_samples, wrapper.input_shape)

    def _handle_predict(self, request):
        wrapper = self.keeper.wrapper
        try:
            samples = as_samples(request.data, wrapper.input_shape, self._request_limit(wrapper))
            fields = _prediction_fields(prediction_rows(wrapper.predict_samples(samples)), self._class_names())
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        return PredictResponse(i_class=fields["classes"][0], confidence=fields["confidences"][0], **fields)

    def _handle_predict_image(self, request):
        if not request.images:
            raise rospy.ServiceException("no images: send one or more sensor_msgs/Image")
        wrapper = self.keeper.wrapper
        limit = self._request_limit(wrapper)
        if len(request.images) > limit:
            raise rospy.ServiceException(
                f"{len(request.images)} images in one request, more than ~max_request_samples allows ({limit})"
            )
        samples = []
        for i, image in enumerate(request.images):
            try:
                samples.append(image_sample(image, wrapper.input_shape, self.settings.input_scale))
            except ImageError as error:
                raise rospy.ServiceException(f"image {i}: {error}") from None
        try:
            rows = prediction_rows(wrapper.predict_samples(np.concatenate(samples)))
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        return PredictImageResponse(**_prediction_fields(rows, self._class_names()))

    def _handle_image(self, msg):
        """~image and ~image/compressed: the prediction carries the image's header, unchanged."""
        self.counters.images_received += 1
        try:
            frame = decode_message(msg)
            sample = image_sample(frame, self.keeper.wrapper.input_shape, self.settings.input_scale)
        except ImageError as error:
            self.counters.images_rejected += 1
            rospy.logwarn_throttle(5, f"dropped an image that cannot be used: {error}")
            return
        watched = self._annotated_pub.get_num_connections() > 0  # drawn only while someone looks
        self._image_batcher.submit((msg.header, frame if watched else None), sample)

    def _deliver_image(self, prediction, header_and_frame, rows):
        header, frame = header_and_frame
        self._publish_prediction(prediction, header, rows)
        if frame is not None:
            name = prediction.labels[0] or f"class {prediction.classes[0]}"  # just filled in for this frame
            drawn = annotated(frame, f"{name} {prediction.confidences[0]:.2f}")
            msg = Image(header=header, height=drawn.shape[0], width=drawn.shape[1], encoding="rgb8")
            msg.step, msg.data = drawn.strides[0], drawn.tobytes()
            self._annotated_pub.publish(msg)

    def _handle_image_sample(self, msg):
        if self._refuse_recording("~image_samples"):
            return
        wrapper = self.keeper.wrapper
        try:
            sample = image_sample(msg.image, wrapper.input_shape, self.settings.input_scale)
            x, y = as_labelled_samples(sample, [msg.label], wrapper.input_shape, wrapper.output_dim)
        except ValueError as error:
            self.counters.samples_rejected += 1
            rospy.logwarn_throttle(5, f"rejected a ~image_samples message: {error}")
            return
        self._record(x, y, "~image_samples")

    def _handle_input(self, msg):
        received = rospy.Time.now()
        self.counters.inputs_received += 1
        wrapper = self.keeper.wrapper
        try:
            samples = as_samples(msg.data, wrapper.input_shape, self._request_limit(wrapper))
        except ValueError as error:
            self.counters.inputs_rejected += 1
            rospy.logwarn_throttle(5, f"dropped a malformed ~input message: {error}")
            return
        if self._batcher.submit(received, samples):
            rospy.logwarn_throttle(5, f"~input queue full: dropped the oldest inputs ({self._batcher.dropped} so far)")

    def _publish_prediction(self, prediction, stamp_or_header, rows):
        """On a batcher's one thread, with that batcher's message (publish serialises it at once): building a
        Prediction with its Header and Time costs more than filling one in."""
        fields = _prediction_fields(rows, self._class_names())
        prediction.classes, prediction.confidences, prediction.output, prediction.labels = (
            fields["classes"],
            fields["confidences"],
            fields["output"],
            fields["labels"],
        )
        if isinstance(stamp_or_header, rospy.Time):  # ~input: when it was received
            prediction.header.stamp, prediction.header.frame_id = stamp_or_header, ""
        else:  # an image's header, stamp and frame_id unchanged
            prediction.header.stamp, prediction.header.frame_id = stamp_or_header.stamp, stamp_or_header.frame_id
        self._prediction_pub.publish(prediction)
        self.counters.predictions_published += 1

    def _refuse_recording(self, topic):
        if self.settings.allow_training:
            return False
        self.counters.samples_rejected += 1
        rospy.logwarn_throttle(5, f"rejected a {topic} message: recording {LOCKED}")
        return True

    def _handle_samples(self, msg):
        if self._refuse_recording("~samples"):
            return
        wrapper = self.keeper.wrapper
        try:
            x, y = as_labelled_samples(
                msg.data, msg.labels, wrapper.input_shape, wrapper.output_dim, self._request_limit(wrapper)
            )
        except ValueError as error:
            self.counters.samples_rejected += 1
            rospy.logwarn_throttle(5, f"rejected a ~samples message: {error}")
            return
        self._record(x, y, "~samples")

    def _record(self, x, y, topic):
        """Store the samples, or count and report a store that cannot take them (a full disk): it stays whole."""
        try:
            self.sample_store.append(x, y)
        except StoreError as error:
            self.counters.samples_rejected += len(x)
            rospy.logerr_throttle(5, f"could not record a {topic} message: {error}")

    def _handle_clear_samples(self, _request):
        if not self.settings.allow_training:
            return TriggerResponse(False, f"clearing samples {LOCKED}")
        count = len(self.sample_store)
        self.sample_store.clear()
        return TriggerResponse(True, f"cleared {count} samples")

    def _execute_train(self, goal):
        if not self.settings.allow_training:
            rospy.logwarn("train goal refused: ~allow_training is false")
            self._train_server.set_aborted(TrainResult(message=f"training {LOCKED}"), f"training {LOCKED}")
            return
        outcome = self.trainer.run(
            TrainingRequest(goal.epochs, goal.batch_size, goal.validation_split, goal.dataset),
            self.settings,
            should_stop=self._train_server.is_preempt_requested,
            on_feedback=self._publish_feedback,
        )
        result = TrainResult(
            epochs_completed=outcome.epochs_completed,
            model_path=outcome.model_path,
            message=outcome.message,
            **outcome.metrics,
        )
        finish = {
            SUCCEEDED: self._train_server.set_succeeded,
            PREEMPTED: self._train_server.set_preempted,
            ABORTED: self._train_server.set_aborted,
        }[outcome.state]
        finish(result, outcome.message)

    def _publish_feedback(self, i_epoch, metrics, batch, batches_per_epoch):
        """Epoch feedback has batch == batches_per_epoch; progress feedback repeats the last finished epoch."""
        self._train_server.publish_feedback(
            TrainFeedback(i_epoch=i_epoch, batch=batch, batches_per_epoch=batches_per_epoch, **metrics)
        )

    def _reconfigure(self, config, _level):
        """dynamic_reconfigure: apply the changes if every value keeps its rule, else refuse them all."""
        for unknown in set(config) - {*RECONFIGURABLE, "groups"}:  # dynamic_reconfigure would keep and publish
            del config[unknown]  # any name sent, for good: a client sending new names would grow the node
        try:
            settings = self.settings.replace(_resolved, **{name: config[name] for name in RECONFIGURABLE})
        except ValueError as error:
            rospy.logwarn("reconfigure refused: %s", error)
            config.update({name: getattr(self.settings, name) for name in RECONFIGURABLE})
            return config
        if settings.learning_rate != self.settings.learning_rate:
            self.trainer.learning_rate = settings.learning_rate
        self._batcher.max_batch, self._batcher.queue_size = settings.max_batch, settings.queue_size
        self._image_batcher.max_batch, self._image_batcher.queue_size = settings.max_batch, settings.image_queue_size
        changed = {k: v for k, v in settings.as_dict().items() if v != getattr(self.settings, k)}
        self.settings = settings
        if changed:
            rospy.loginfo("reconfigured: %s", changed)
        return config

    def _start_diagnostics(self):
        updater = _Updater()
        updater.setHardwareID(rospy.get_name())
        for name, status_of in (
            ("model", lambda: model_status(self.keeper, self.trainer, self.counters, len(self.sample_store))),
            ("stream", lambda: stream_status(self.counters)),
        ):
            updater.add(name, lambda status, status_of=status_of: _filled(status, *status_of()))

        def publish(_event):
            self.counters.close_window()
            updater.force_update()

        self._diagnostics_timer = rospy.Timer(rospy.Duration(1.0), publish)
