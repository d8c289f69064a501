"""The serving node: the serving face over a .tflite model, replaced by the models a trainer publishes; it never
imports TensorFlow."""

import logging
import os

import rospy
from ros_tensorflow_msgs.msg import Model

from ros_tensorflow.cfg import ServeNodeConfig
from ros_tensorflow.ros.ros_node import NodeBase, data_dir_of
from ros_tensorflow.ros.serving_face import IMAGE_BUFFER_BYTES, ServingFace, resolved
from ros_tensorflow.tf_free.signing import SigningError, load_trusted_keys
from ros_tensorflow.tf_free.status import serving_status, stream_status
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, TfliteKeeper


class ServeInterface(NodeBase):
    """`predict`, `predict_image`, the streams and /diagnostics of one TfliteKeeper, fed by ~model_topic."""

    def __init__(self):
        super().__init__("serve")
        data_dir = data_dir_of(self.settings)
        path = self.settings.model_path or os.path.join(data_dir, "model.tflite")
        trusted = None
        if self.settings.trusted_keys:
            try:
                trusted = load_trusted_keys(self.settings.trusted_keys)
            except SigningError as error:
                raise ValueError(f"parameter {resolved('trusted_keys')}: {error}") from error
            rospy.loginfo("serving only models signed by the keys %s", ", ".join(trusted))
        self.keeper = TfliteKeeper(
            path, self.settings.input_shape, logging.getLogger("rosout"), trusted, self.settings.task
        )
        topic = self.settings.model_topic
        if self.keeper.model is None and not topic:
            raise ValueError(
                f"nothing to serve: {self.keeper.load_error}, and ~model_topic is '' (no models to wait for)"
            )
        if self.keeper.load_error:
            rospy.logerr("%s; waiting for a model on %s", self.keeper.load_error, rospy.resolve_name(topic))
        self.serving = ServingFace(lambda: self.keeper.model, lambda: self.settings)
        if topic:  # latched: the trainer's current model arrives at once, and each new one after it
            self._model_sub = rospy.Subscriber(
                topic, Model, self._handle_model, queue_size=1, buff_size=IMAGE_BUFFER_BYTES
            )
        counters = self.serving.counters
        statuses = [
            ("model", lambda: serving_status(self.keeper, counters)),
            ("stream", lambda: stream_status(counters)),
        ]
        self.start(ServeNodeConfig, statuses, counters)
        model = self.keeper.model
        if model is not None:
            _log_card(model)
        rospy.loginfo(
            f"ros_tensorflow serving node ready: service {rospy.resolve_name('predict')}, model"
            f" {f'version {model.version} from {model.source}' if model else 'none yet'}, models from"
            f" {rospy.resolve_name(topic) if topic else 'nowhere (~model_topic is empty)'}"
        )

    def apply(self, old, new):
        self.serving.apply(new)

    def _handle_model(self, msg):
        served = self.keeper.model
        if served is not None and (served.version, served.sha256) == (msg.version, msg.sha256):
            return  # the latched model again (a reconnection): already served
        try:
            model = self.keeper.accept(msg)
        except ModelRefused:
            return  # counted and logged; the model served stays
        rospy.loginfo("serving model version %d from %s, saved to %s", model.version, model.source, self.keeper.path)
        _log_card(model)


def _log_card(model):
    rospy.loginfo("the model served:\n  %s", "\n  ".join(model.card))
