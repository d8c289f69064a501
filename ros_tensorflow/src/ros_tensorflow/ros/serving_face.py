"""The serving face of a node: `predict`, `predict_image`, the ~input and ~image streams and their predictions.

Both nodes use it: the training node with its Keras model, the serving node with a .tflite one. It asks
model_of() for the model at every call (a swap replaces it whole) and settings_of() for the parameters in force.
"""

import threading
import time
import warnings

import numpy as np
import rospy
from geometry_msgs.msg import Twist
from ros_tensorflow_msgs.msg import Detection, Detections, Prediction, Tensor
from ros_tensorflow_msgs.srv import (
    Predict,
    PredictImage,
    PredictImageResponse,
    PredictRequest,
    PredictResponse,
    PredictTensors,
    PredictTensorsRequest,
    PredictTensorsResponse,
)
from rospy.numpy_msg import numpy_msg
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray

from ros_tensorflow.ros.batch_publishing import publish_all
from ros_tensorflow.tf_free.any_model import VISION_TASKS, feeds
from ros_tensorflow.tf_free.commands import fill_twist
from ros_tensorflow.tf_free.images import ImageError, annotated, decode_message, image_sample, pixel_limit
from ros_tensorflow.tf_free.samples import FEW_VALUES, as_samples, output_rows, request_limit
from ros_tensorflow.tf_free.status import Counters
from ros_tensorflow.tf_free.streaming import MicroBatcher
from ros_tensorflow.tf_free.tasks import DETECTION
from ros_tensorflow.tf_free.vision import (
    Preprocessing,
    check_preprocessing,
    class_mask,
    detections,
    draw_detections,
    overlay_mask,
    prepare,
)

IMAGE_BUFFER_BYTES = 2**26  # rospy's read buffer: a few 4K RGB frames at a time
NO_MODEL = "no model to serve yet"


class _StreamInput(Float64MultiArray):
    """~input's message. A few values (a stream's lone sample) come as a tuple of floats, which as_samples checks
    and converts in fewer steps than numpy_msg's array (README: Benchmark); more come as that array, far cheaper
    than a tuple of many."""

    __slots__ = ()
    _FEW_VALUES_BYTES = FEW_VALUES * 8 + 64  # the values and a short layout

    def deserialize(self, serialized):
        if len(serialized) > self._FEW_VALUES_BYTES:
            return self.deserialize_numpy(serialized, np)
        return super().deserialize(serialized)


def resolved(name):
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


class _NumpyPredictTensors:
    """PredictTensors, its request's tensors read as numpy arrays (an image of 300 x 300 x 3 is 270,000 values)."""

    _type, _md5sum = PredictTensors._type, PredictTensors._md5sum
    _request_class, _response_class = numpy_msg(PredictTensorsRequest), PredictTensorsResponse


def frames_model(model):
    """Whether model answers frames with detections or a mask (any_model.AnyModel), not with prediction rows."""
    return model.task in VISION_TASKS


def mono8_image(mask, header):
    return Image(
        header=header,
        height=mask.shape[0],
        width=mask.shape[1],
        encoding="mono8",
        step=mask.shape[1],
        data=np.ascontiguousarray(mask, np.uint8).tobytes(),
    )


def fill_prediction(message, rows, class_names, model_version):
    """Sets the classes, confidences, output, labels and model_version fields that Predict's and PredictImage's
    responses and Prediction share; returns message. Set one by one: a message built with keyword arguments
    costs four times as much (measured: 2.2 against 0.5 us), a tenth of a /predict call's time in the node."""
    message.classes, message.confidences, outputs = zip(*rows, strict=True)
    if message.classes[0] < 0:  # a regression model's: values, no classes (output_rows)
        message.classes, message.confidences, message.labels = (), (), ()
    else:
        message.labels = [class_names[c] if c < len(class_names) else "" for c in message.classes]
    message.output = [value for row in outputs for value in row]
    message.model_version = model_version
    return message


def rgb_image(rgb, header=None):
    """An rgb8 sensor_msgs/Image of a (height, width, 3) uint8 array; stamped now unless a header is given."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes())
    if header is None:
        msg.header.stamp = rospy.Time.now()
    else:
        msg.header = header
    return msg


class ServingFace:
    """Services and streams that answer with whatever model_of() returns (None: refused, NO_MODEL)."""

    def __init__(self, model_of, settings_of):
        self._model_of = model_of
        self._settings_of = settings_of
        settings = settings_of()
        self._prediction_pub = _publisher("~prediction", Prediction, settings.publish_queue_size)
        self._annotated_pub = rospy.Publisher("~image_annotated", Image, queue_size=1)
        self._detections_pub = _publisher("~detections", Detections, settings.publish_queue_size)
        self._mask_pub = _publisher("~mask", Image, settings.publish_queue_size)
        self._batcher = self._stream_batcher("~input", settings.queue_size, self._publish_predictions)
        self._image_batcher = self._stream_batcher("~image", settings.image_queue_size, self._deliver_image)
        self.counters = Counters(lambda: self._batcher.dropped, lambda: self._image_batcher.dropped)
        self._next_drop_warning = 0.0  # monotonic time
        self._request_limit_of = None, None, 0  # max_request_samples, input_shape, the limit
        # ~input's receive times as integer nanoseconds, set into the Prediction's own stamp when published: a
        # rospy.Time built per message was a sixth of the node's time in a flood (py-spy). Simulated time: Times.
        self._wallclock = rospy.rostime.is_wallclock()
        image_topic = resolved("image")
        self._subscribers = [
            rospy.Subscriber("~input", _StreamInput, self._handle_input, queue_size=None),
            # Every frame is read and converted; only our queue drops (the oldest), so every drop is counted.
            rospy.Subscriber(image_topic, Image, self._handle_image, queue_size=None, buff_size=IMAGE_BUFFER_BYTES),
            rospy.Subscriber(  # image_transport's name: follows a remap of ~image
                f"{image_topic}/compressed",
                CompressedImage,
                self._handle_image,
                queue_size=None,
                buff_size=IMAGE_BUFFER_BYTES,
            ),
        ]
        self._commands = _Commands(settings) if settings.command_topic else None
        self._services = [
            rospy.Service("predict", _NumpyPredict, self._handle_predict),
            rospy.Service("predict_image", PredictImage, self._handle_predict_image),
            rospy.Service("predict_tensors", _NumpyPredictTensors, self._handle_predict_tensors),
        ]

    def apply(self, settings):
        """Parameters changed while running."""
        self._batcher.max_batch, self._batcher.queue_size = settings.max_batch, settings.queue_size
        self._image_batcher.max_batch, self._image_batcher.queue_size = settings.max_batch, settings.image_queue_size
        if self._commands:
            self._commands.timeout = settings.command_timeout

    def class_names(self, model):
        """The model's own (saved with it, or from an image folder it trained on), else ~class_names."""
        return model.class_names or self._settings_of().class_names

    def _model(self):
        model = self._model_of()
        if model is None:
            raise ValueError(NO_MODEL)
        return model

    def _rows_model(self):
        """The model, if it answers predict and ~input (a classifier or regression model); else ValueError."""
        model = self._model_of()
        if model is None or not model.output_dim:  # one test of the two: ~input asks with every message
            self._model().predict_samples(None)  # no model, or an AnyModel: raises what it answers instead
        return model

    def _frames_model(self):
        """The model and the Preprocessing of the parameters in force, for a detection or segmentation model."""
        model = self._model()
        preprocessing = Preprocessing.of(self._settings_of())
        if not model.takes_frames:
            raise ValueError(f"a {model.task} model of {len(model.tensor_inputs)} inputs: use predict_tensors")
        check_preprocessing(preprocessing, model.input_shape[-1])
        return model, preprocessing

    def _detections(self, model, outputs, placement, header):
        settings = self._settings_of()
        names = self.class_names(model)
        message = Detections(header=header, model_version=model.version)
        found = detections(
            outputs,
            model.signature.roles,
            placement,
            settings.score_threshold,
            settings.max_detections,
            settings.label_offset,
        )
        for class_id, score, x, y, w, h in found:
            label = names[class_id] if 0 <= class_id < len(names) else ""
            message.detections.append(Detection(class_id, label, score, x, y, w, h))
        return message

    def _frame_results(self, model, outputs, placement, header):
        """(Detections, None) of a detector's outputs, or (None, mask Image) of a segmentation model's."""
        if model.task == DETECTION:
            return self._detections(model, outputs, placement, header), None
        return None, mono8_image(class_mask(outputs[model.signature.roles["mask"]], placement), header)

    def _handle_predict_tensors(self, request):
        try:
            model = self._model()
            max_values = self._settings_of().max_request_samples * model.input_dim
            given = [(t.name, t.shape.tolist(), t.dtype, t.data) for t in request.inputs]  # numpy_msg's arrays
            arrays = feeds(given, model.tensor_inputs, max_values)
            outputs = model.run_tensors(arrays)
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        # messages filled in field by field: built with arguments they cost three times as much (fill_prediction)
        response = PredictTensorsResponse()
        response.model_version = model.version
        for spec, output in zip(model.tensor_outputs, outputs, strict=True):
            tensor = Tensor()
            tensor.name, tensor.shape, tensor.dtype = spec.name, list(output.shape), spec.dtype
            tensor.data = output.ravel().tolist()  # Python numbers, which the float64[] field takes as they are
            response.outputs.append(tensor)
        return response

    def _stream_batcher(self, topic, queue_size, deliver):
        """A MicroBatcher from topic to deliver(prediction, [(tag, rows), ...], model); each has its own Prediction
        to fill. One model predicts a whole batch, and its version goes with each of the batch's predictions."""
        prediction = Prediction()
        used = [None]  # the model of the batch: predict and deliver run one after the other, never two at once

        def predict(samples):
            used[0] = model = self._model()
            if frames_model(model):  # one frame at a time: detectors take one (their batch is fixed)
                return [model.run_tensors([samples[i : i + 1]]) for i in range(len(samples))]
            return output_rows(model.task, model.predict_samples(samples))

        batcher = MicroBatcher(
            predict,
            lambda deliveries: deliver(prediction, deliveries, used[0]),
            max_batch=self._settings_of().max_batch,
            queue_size=queue_size,
            on_error=lambda error: rospy.logerr_throttle(5, f"prediction of {topic} failed: {error}"),
        )
        rospy.on_shutdown(batcher.close)
        return batcher

    def _request_limit(self, model):
        """request_limit, worked out again only when ~max_request_samples or the model's input changes: ~input
        asks for it with every message (a model's input_shape is the same tuple at every call)."""
        max_samples, shape = self._settings_of().max_request_samples, model.input_shape
        if self._request_limit_of[0] != max_samples or self._request_limit_of[1] is not shape:
            self._request_limit_of = max_samples, shape, request_limit(max_samples, shape)
        return self._request_limit_of[2]

    def _handle_predict(self, request):
        try:
            model = self._rows_model()
            samples = as_samples(request.data, model.input_shape, self._request_limit(model))
            rows = output_rows(model.task, model.predict_samples(samples))
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        response = fill_prediction(PredictResponse(), rows, self.class_names(model), model.version)
        response.i_class, response.confidence = rows[0][0], rows[0][1]
        return response

    def _handle_predict_image(self, request):
        if not request.images:
            raise rospy.ServiceException("no images: send one or more sensor_msgs/Image")
        try:
            model = self._model()
            if frames_model(model):
                return self._predict_frames(request.images)
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        limit = self._request_limit(model)
        if len(request.images) > limit:
            raise rospy.ServiceException(
                f"{len(request.images)} images in one request, more than ~max_request_samples allows ({limit})"
            )
        settings = self._settings_of()
        samples, max_pixels = [], pixel_limit(settings.max_image_pixels)
        for i, image in enumerate(request.images):
            try:
                samples.append(image_sample(image, model.input_shape, settings.input_scale, max_pixels))
            except ImageError as error:
                raise rospy.ServiceException(f"image {i}: {error}") from None
        try:
            rows = output_rows(model.task, model.predict_samples(np.concatenate(samples)))
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        return fill_prediction(PredictImageResponse(), rows, self.class_names(model), model.version)

    def _predict_frames(self, images):
        """predict_image of a detection or segmentation model: one Detections or mask per image."""
        model, preprocessing = self._frames_model()
        limit, max_pixels = self._request_limit(model), pixel_limit(self._settings_of().max_image_pixels)
        if len(images) > limit:
            raise ValueError(f"{len(images)} images in one request, more than ~max_request_samples allows ({limit})")
        response = PredictImageResponse(model_version=model.version)
        for i, image in enumerate(images):
            try:
                outputs, placement = model.run_frame(decode_message(image, max_pixels), preprocessing)
            except ImageError as error:
                raise ValueError(f"image {i}: {error}") from None
            found, mask = self._frame_results(model, outputs, placement, image.header)
            if found is not None:
                response.detections.append(found)
            else:
                response.masks.append(mask)
        return response

    def _handle_image(self, msg):
        """~image and ~image/compressed: the prediction carries the image's header, unchanged."""
        self.counters.images_received += 1
        settings = self._settings_of()
        try:
            model = self._model()
            frame = decode_message(msg, pixel_limit(settings.max_image_pixels))
            if frames_model(model):
                model, preprocessing = self._frames_model()
                sample, placement = prepare(frame, model.tensor_inputs[0], preprocessing)
            else:
                sample, placement = image_sample(frame, model.input_shape, settings.input_scale), None
        except ValueError as error:  # ImageError, or no model yet
            self.counters.images_rejected += 1
            rospy.logwarn_throttle(5, f"dropped an image that cannot be used: {error}")
            return
        watched = self._annotated_pub.get_num_connections() > 0  # drawn only while someone looks
        self._image_batcher.submit((msg.header, frame if watched else None, placement), sample)

    def _deliver_image(self, prediction, deliveries, model):
        for tag, rows in deliveries:
            self._deliver_one_image(prediction, tag, rows, model)

    def _deliver_one_image(self, prediction, tag, rows, model):
        header, frame, placement = tag
        if placement is not None:  # a detection or segmentation model's outputs
            self._deliver_frame(model, rows[0], placement, header, frame)
            return
        self._publish_predictions(prediction, [(header, rows)], model)
        if self._commands:
            self._commands.publish(rows[0][2])
        if frame is not None:
            if prediction.classes:
                name = prediction.labels[0] or f"class {prediction.classes[0]}"  # just filled in for this frame
                text = f"{name} {prediction.confidences[0]:.2f}"
            else:
                text = " ".join(f"{value:.3g}" for value in rows[0][2])
            self._annotated_pub.publish(rgb_image(annotated(frame, text), header))

    def _deliver_frame(self, model, outputs, placement, header, frame):
        """~detections or ~mask of one frame, and ~image_annotated while someone looks (frame is not None)."""
        found, mask = self._frame_results(model, outputs, placement, header)
        if found is not None:
            self._detections_pub.publish(found)
        else:
            self._mask_pub.publish(mask)
        self.counters.predictions_published += 1
        if frame is None:
            return
        picture = annotated(frame, "")
        if found is not None:
            names = self.class_names(model)
            boxes = [(d.class_id, d.score, d.x_min, d.y_min, d.width, d.height) for d in found.detections]
            picture = draw_detections(picture, boxes, lambda c: names[c] if 0 <= c < len(names) else "")
        else:
            picture = overlay_mask(picture, np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width))
        self._annotated_pub.publish(rgb_image(picture, header))

    def _handle_input(self, msg):
        received = time.time_ns() if self._wallclock else rospy.get_rostime()
        self.counters.inputs_received += 1
        try:
            model = self._rows_model()
            samples = as_samples(msg.data, model.input_shape, self._request_limit(model), np.float32)
        except ValueError as error:
            self.counters.inputs_rejected += 1
            rospy.logwarn_throttle(5, f"dropped a malformed ~input message: {error}")
            return
        if self._batcher.submit(received, samples) and time.monotonic() >= self._next_drop_warning:
            # not rospy.logwarn_throttle: it looks up its caller on every call, a quarter of the node's time in a
            # flood of ~input that makes it drop (py-spy)
            self._next_drop_warning = time.monotonic() + 5.0
            rospy.logwarn(f"~input queue full: dropped the oldest inputs ({self._batcher.dropped} so far)")

    def _publish_predictions(self, prediction, deliveries, model):
        """A Prediction for each (stamp_or_header, rows) of deliveries, written together (publish_all: also fewer
        steps than rospy's publish for a lone one), in the batcher's own message filled in again for each
        (building a Prediction with its Header and Time costs more than filling one in)."""
        class_names, version = self.class_names(model), model.version
        filled = (_filled(prediction, tag, rows, class_names, version) for tag, rows in deliveries)
        publish_all(self._prediction_pub, filled)
        self.counters.predictions_published += len(deliveries)


def _filled(prediction, stamp_or_header, rows, class_names, model_version):
    """prediction filled in (fill_prediction) and stamped with stamp_or_header: ~input's receive time in ns
    (wall-clock time) or as a rospy.Time (simulated time), or an image's header (stamp and frame_id kept)."""
    fill_prediction(prediction, rows, class_names, model_version)
    if isinstance(stamp_or_header, int):
        stamp = prediction.header.stamp  # the ~input batcher's own, never shared
        stamp.secs, stamp.nsecs = divmod(stamp_or_header, 1_000_000_000)
    elif isinstance(stamp_or_header, rospy.Time):
        prediction.header.stamp, prediction.header.frame_id = stamp_or_header, ""
    else:
        prediction.header.stamp, prediction.header.frame_id = stamp_or_header.stamp, stamp_or_header.frame_id
    return prediction


class _Commands:
    """~command_topic: the latest frame's prediction as a command; once no frame has come for ~command_timeout
    seconds, one zero command, then nothing until frames return (a robot must not drive on a stale command)."""

    def __init__(self, settings):
        self._twist = settings.command_type == "geometry_msgs/Twist"
        self._fields = list(settings.command_fields)
        self.timeout = settings.command_timeout
        self._pub = rospy.Publisher(settings.command_topic, Twist if self._twist else Float64MultiArray, queue_size=1)
        self._last = None  # when the last command was published; None: stopped (or none yet)
        self._size = 1  # values of the last command: a zero Float64MultiArray has as many
        self._lock = threading.Lock()
        self._watchdog = threading.Thread(target=self._watch, name="CommandWatchdog", daemon=True)
        self._watchdog.start()

    def _message(self, outputs):
        return fill_twist(Twist(), self._fields, outputs) if self._twist else Float64MultiArray(data=list(outputs))

    def publish(self, outputs):
        with self._lock:
            self._last, self._size = time.monotonic(), len(outputs)
            self._pub.publish(self._message(outputs))

    def _watch(self):
        while not rospy.is_shutdown():
            time.sleep(0.02)
            with self._lock:
                if self._last is None or not self.timeout or time.monotonic() - self._last < self.timeout:
                    continue
                self._last = None
                self._pub.publish(self._message([0.0] * self._size))
            rospy.logwarn(f"no ~image frame for {self.timeout:g} s: published a zero command on {self._pub.name}")
