"""The `evaluate` action of the training node: the served model on a dataset, with its report and picture.

It runs on the action's own thread, on a copy of the served weights (ModelWrapper.served_predictor): predictions
never wait for it, and it runs beside a training goal, evaluating the model served when it started.
"""

import actionlib
import rospy
from ros_tensorflow_msgs.msg import EvaluateAction, EvaluateFeedback, EvaluateResult
from sensor_msgs.msg import Image

from ros_tensorflow.ros.serving_face import rgb_image
from ros_tensorflow.tf_free.evaluation import class_names_for, evaluate, evaluate_regression, write_report
from ros_tensorflow.tf_free.files import ModelFileError, new_run_folder
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, REGRESSION, TRAINABLE_TASKS


class EvaluationFace:
    """`evaluate` and the latched ~evaluation/confusion_matrix (a classifier's) or ~evaluation/predicted_vs_true (a
    regression model's) picture of one ModelKeeper's served model."""

    def __init__(self, keeper, trainer, settings_of, data_dir):
        self.keeper, self.trainer = keeper, trainer
        self._settings_of = settings_of
        self._reports_dir = f"{data_dir}/evaluations"
        self._picture_pubs = {
            task: rospy.Publisher(f"~evaluation/{topic}", Image, queue_size=1, latch=True)
            for task, topic in ((CLASSIFICATION, "confusion_matrix"), (REGRESSION, "predicted_vs_true"))
        }
        self._server = actionlib.SimpleActionServer(
            "evaluate", EvaluateAction, execute_cb=self._execute, auto_start=False
        )
        self._server.start()

    def _execute(self, goal):
        wrapper, settings = self.keeper.wrapper, self._settings_of()
        if wrapper.task not in TRAINABLE_TASKS:
            return self._abort(f"the model from {self.keeper.source} is a {wrapper.task} model: served, not evaluated")
        dataset = goal.dataset or settings.dataset
        version = goal.version or wrapper.version
        if version == wrapper.version:
            predict = wrapper.served_predictor()
        else:
            try:
                predict, shape = self.keeper.version_predictor(version)
            except ModelFileError as error:
                return self._abort(f"version {version} cannot be evaluated: {error}")
            if shape != wrapper.input_shape:
                served = list(wrapper.input_shape)
                return self._abort(f"version {version} takes samples of shape {list(shape)}, the served model {served}")
        try:
            x, y, dataset_names = self.trainer.load_dataset(dataset, wrapper, settings)
        except ValueError as error:  # DatasetError: unknown, unreadable, or samples of another shape
            return self._abort(f"cannot evaluate on {dataset!r}: {error}")
        stop_and_progress = {
            "should_stop": self._server.is_preempt_requested,
            "on_progress": lambda done, total: self._server.publish_feedback(EvaluateFeedback(done, total)),
        }
        if wrapper.task == REGRESSION:
            evaluation = evaluate_regression(predict, x, y, version, **stop_and_progress)
        else:
            names = class_names_for(dataset_names or wrapper.class_names or settings.class_names, wrapper.output_dim)
            evaluation = evaluate(predict, x, y, names, version, **stop_and_progress)
        if evaluation is None:
            self._server.set_preempted(EvaluateResult(message="cancelled"), "cancelled")
            return
        if wrapper.task == REGRESSION:
            message = f"MAE {evaluation.mae:.4g}, RMSE {evaluation.rmse:.4g}, R2 {evaluation.r2:.4f}"
            result = EvaluateResult(
                loss=evaluation.loss,
                accuracy=float("nan"),
                mae=evaluation.mae,
                rmse=evaluation.rmse,
                r2=evaluation.r2,
                output_mae=evaluation.output_mae,
                output_r2=evaluation.output_r2,
            )
            summary = {"mae": evaluation.mae, "rmse": evaluation.rmse, "r2": evaluation.r2}
        else:
            message = f"accuracy {evaluation.accuracy:.4f}"
            result = EvaluateResult(
                loss=evaluation.loss,
                accuracy=evaluation.accuracy,
                class_names=evaluation.class_names,
                precision=evaluation.precision,
                recall=evaluation.recall,
                f1=evaluation.f1,
                support=evaluation.support,
                confusion=[count for row in evaluation.confusion for count in row],
                mae=float("nan"),
                rmse=float("nan"),
                r2=float("nan"),
            )
            summary = {"accuracy": evaluation.accuracy, "loss": evaluation.loss}
        message += f" on {evaluation.samples} samples of {dataset!r}"
        report_dir = ""
        try:
            report_dir = new_run_folder(self._reports_dir)
            picture = write_report(evaluation, report_dir, dataset)
            self._picture_pubs[wrapper.task].publish(rgb_image(picture))
            if self.keeper.versions and version in self.keeper.versions.numbers():
                summary.update(dataset=dataset, samples=evaluation.samples, report_dir=report_dir)
                self.keeper.versions.update_meta(version, evaluation=summary)
        except (OSError, ModelFileError) as error:
            message += f"; the report was not written: {error}"
            rospy.logerr("evaluation report: %s", error)
        rospy.loginfo("evaluation: %s, report in %s", message, report_dir or "(none)")
        result.samples, result.version, result.report_dir = evaluation.samples, version, report_dir
        result.message = message
        self._server.set_succeeded(result, message)

    def _abort(self, message):
        rospy.logwarn("evaluate goal refused: %s", message)
        self._server.set_aborted(EvaluateResult(message=message), message)
