"""RosInterface: the training node, its serving face and its training face over one ModelKeeper."""

import logging

import rospy

from ros_tensorflow.cfg import RosTensorflowConfig
from ros_tensorflow.ros.evaluation_face import EvaluationFace
from ros_tensorflow.ros.ros_node import NodeBase, data_dir_of
from ros_tensorflow.ros.serving_face import ServingFace, resolved
from ros_tensorflow.ros.training_face import TrainingFace, sizes
from ros_tensorflow.tf_free.sample_store import SampleStore
from ros_tensorflow.tf_free.signing import Signer, SigningError
from ros_tensorflow.tf_free.status import model_status, stream_status
from ros_tensorflow.with_tf.model_keeper import ModelKeeper
from ros_tensorflow.with_tf.tf_context import configure_devices
from ros_tensorflow.with_tf.training import OWN_DATA_WARNING, Trainer


class RosInterface(NodeBase):
    """The `train` action, `predict`, the topics, the services and the status of one model."""

    def __init__(self):
        super().__init__("train")
        try:
            configure_devices(self.settings.device, self.settings.gpu_memory_growth)
        except ValueError as error:
            raise ValueError(f"parameter {resolved('device')}: {error}") from error
        data_dir = data_dir_of(self.settings)
        try:
            sample_store, moved_aside = SampleStore.open_in(data_dir)
        except ValueError as error:
            raise ValueError(f"parameter ~data_dir: {error}") from error
        if moved_aside:
            rospy.logerr("%s", moved_aside)
        log = logging.getLogger("rosout")  # rospy's logger: to the console and /rosout
        self.keeper = ModelKeeper(
            self.settings.model_path or f"{data_dir}/model.keras",
            self.settings.fresh_model(),
            log,
            self.settings.serving_backend,
            self.settings.device,
            name=rospy.get_name(),
            versions_dir=f"{data_dir}/versions",
            tensor_names=(self.settings.input_tensors, self.settings.output_tensors),
        )
        self.keeper.keep_versions = self.settings.keep_versions
        if self.settings.signing_key:
            try:
                self.keeper.signer = Signer(self.settings.signing_key)
            except SigningError as error:
                raise ValueError(f"parameter {resolved('signing_key')}: {error}") from error
            rospy.loginfo("models are signed with key %s (%s)", self.keeper.signer.key_id, self.settings.signing_key)
        self.keeper.adopt_class_names(self.settings.class_names)
        if self.settings.promote == "if_better" and not self.settings.eval_dataset:
            rospy.logwarn("%s", OWN_DATA_WARNING)
        self.sample_store = sample_store
        self.trainer = Trainer(self.keeper, sample_store, data_dir, self.settings.bag_topic or resolved("samples"), log)
        self.serving = ServingFace(lambda: self.keeper.wrapper, lambda: self.settings)
        counters = self.serving.counters
        rospy.on_shutdown(self.keeper.close)
        statuses = [
            ("model", lambda: model_status(self.keeper, self.trainer, counters, len(self.sample_store))),
            ("stream", lambda: stream_status(counters)),
        ]
        self.start(RosTensorflowConfig, statuses, counters)
        # Last: clients take the train action server as the sign that everything else is up.
        self.evaluation = EvaluationFace(self.keeper, self.trainer, lambda: self.settings, data_dir)
        self.training = TrainingFace(self.keeper, self.trainer, sample_store, counters, lambda: self.settings)
        self.keeper.announce_at_startup()  # on ~model for serving nodes, latched
        rospy.loginfo(
            f"ros_tensorflow ready: action {rospy.resolve_name('train')}, service {rospy.resolve_name('predict')},"
            f" model {self.keeper.source} ({sizes(self.keeper.wrapper)}), data in {data_dir}"
        )

    def apply(self, old, new):
        if new.learning_rate != old.learning_rate:
            self.trainer.learning_rate = new.learning_rate
        self.keeper.keep_versions = new.keep_versions
        self.serving.apply(new)
