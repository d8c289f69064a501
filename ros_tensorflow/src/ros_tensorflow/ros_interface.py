"""RosInterface: translates between ROS and the ROS-free core."""

import math
from datetime import UTC, datetime

import actionlib
import numpy as np
import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ros_tensorflow_msgs.msg import Prediction, TrainAction, TrainFeedback, TrainResult
from ros_tensorflow_msgs.srv import Predict, PredictResponse
from std_msgs.msg import Float64MultiArray

from ros_tensorflow import datasets
from ros_tensorflow.callbacks import BatchProgressReporter, CancelOnRequest, EpochEndReporter
from ros_tensorflow.model import ModelWrapper, as_samples, classify
from ros_tensorflow.streaming import MicroBatcher


class RosInterface:
    """The `train` action, the `predict` service, the `~input` stream and the status of one model."""

    def __init__(self):
        self.batch_size = rospy.get_param("~batch_size", 32)
        self.dataset = rospy.get_param("~dataset", "synthetic")
        self.loop_rate = rospy.get_param("~loop_rate", 1.0)
        self.wrapper = ModelWrapper(
            input_dim=rospy.get_param("~input_dim", 10),
            output_dim=rospy.get_param("~output_dim", 2),
            hidden_units=rospy.get_param("~hidden_units", 32),
            learning_rate=rospy.get_param("~learning_rate", 0.1),
        )
        self.inputs_rejected = 0
        self.training_epoch = None  # None while idle, else the running epoch (0-based)
        self.model_source = "fresh"

        self._prediction_pub = rospy.Publisher(
            "~prediction", Prediction, queue_size=rospy.get_param("~queue_size", 100)
        )
        self._batcher = MicroBatcher(
            self.wrapper.predict,
            self._publish_prediction,
            max_batch=rospy.get_param("~max_batch", 256),
            queue_size=rospy.get_param("~queue_size", 100),
            on_error=lambda error: rospy.logerr_throttle(5, f"prediction of ~input failed: {error}"),
        )
        self._input_sub = rospy.Subscriber("~input", Float64MultiArray, self._handle_input, queue_size=None)
        self._diagnostics_pub = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=1)
        self._diagnostics_timer = rospy.Timer(rospy.Duration(1.0), self._publish_diagnostics)
        rospy.on_shutdown(self._batcher.close)

        self._predict_service = rospy.Service("predict", Predict, self._handle_predict)
        self._train_server = actionlib.SimpleActionServer(
            "train", TrainAction, execute_cb=self._execute_train, auto_start=False
        )
        self._train_server.start()
        rospy.loginfo(
            "ros_tensorflow ready: action %s, service %s, model %d -> %d",
            rospy.resolve_name("train"),
            rospy.resolve_name("predict"),
            self.wrapper.input_dim,
            self.wrapper.output_dim,
        )

    # --- predict -------------------------------------------------------------

    def _handle_predict(self, request):
        try:
            output = self.wrapper.predict(request.data)
        except ValueError as error:
            raise rospy.ServiceException(str(error)) from None
        classes, confidences = classify(output)
        return PredictResponse(
            i_class=int(classes[0]),
            confidence=float(confidences[0]),
            classes=classes.tolist(),
            confidences=confidences.tolist(),
            output=output.ravel().tolist(),
        )

    # --- ~input stream ----------------------------------------------------------

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

    def _publish_prediction(self, received, output):
        classes, confidences = classify(output)
        prediction = Prediction(
            classes=classes.tolist(), confidences=confidences.tolist(), output=output.ravel().tolist()
        )
        prediction.header.stamp = received
        self._prediction_pub.publish(prediction)

    # --- status ----------------------------------------------------------------

    def _publish_diagnostics(self, _event=None):
        training = self.training_epoch is not None
        values = {
            "state": "training" if training else "idle",
            "epoch": "" if not training else str(self.training_epoch),
            "model": self.model_source,
            "committed_at": datetime.fromtimestamp(self.wrapper.committed_at, UTC).isoformat(),
            "predictions_served": str(self.wrapper.predictions_served),
            "inputs_dropped": str(self._batcher.dropped),
            "inputs_rejected": str(self.inputs_rejected),
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

    # --- train ---------------------------------------------------------------

    def _goal_error(self, goal):
        if goal.epochs <= 0:
            return f"epochs must be > 0, got {goal.epochs}"
        if goal.batch_size < 0:
            return f"batch_size must be >= 0 (0: the node's ~batch_size), got {goal.batch_size}"
        if not 0.0 <= goal.validation_split < 1.0 or math.isnan(goal.validation_split):
            return f"validation_split must be in [0, 1), got {goal.validation_split}"
        return None

    def _execute_train(self, goal):
        result = TrainResult(loss=math.nan, acc=math.nan, val_loss=math.nan, val_acc=math.nan)
        try:
            error = self._goal_error(goal)
            if error is None:
                x, y = datasets.load(goal.dataset or self.dataset, self.wrapper.input_dim, self.wrapper.output_dim)
        except datasets.DatasetError as dataset_error:
            error = str(dataset_error)
        if error is not None:
            rospy.logwarn("train goal rejected: %s", error)
            result.message = error
            self._train_server.set_aborted(result, error)
            return

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
        self.training_epoch = 0
        try:
            self.wrapper.train(
                x,
                y,
                epochs=goal.epochs,
                batch_size=goal.batch_size or self.batch_size,
                validation_split=goal.validation_split,
                callbacks=[cancel, epochs, progress],
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
            result.message = f"cancelled after {epochs.epochs_completed} epochs"
            self._train_server.set_preempted(result, result.message)
        else:
            result.message = f"finished {epochs.epochs_completed} epochs"
            self._train_server.set_succeeded(result, result.message)
        rospy.loginfo("train goal: %s", result.message)

    def _publish_feedback(self, i_epoch, metrics, batch, batches_per_epoch):
        """Epoch feedback has batch == batches_per_epoch; progress feedback repeats the last finished epoch."""
        self._train_server.publish_feedback(
            TrainFeedback(i_epoch=i_epoch, batch=batch, batches_per_epoch=batches_per_epoch, **metrics)
        )

    # --- main loop -----------------------------------------------------------

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
