"""Training requests in, outcomes out: what a train goal does, without ROS.

The ROS side turns a goal into a TrainingRequest, passes functions that read the cancel flag
and publish feedback, and turns the TrainingOutcome into the action's result and final state.
"""

import dataclasses
import logging
import math

import numpy as np

from ros_tensorflow.tf_free.datasets import Datasets
from ros_tensorflow.tf_free.evaluation import class_names_for, evaluate, evaluate_regression
from ros_tensorflow.tf_free.samples import check_validation_split
from ros_tensorflow.tf_free.tasks import REGRESSION
from ros_tensorflow.with_tf.callbacks import (
    METRIC_KEYS,
    BatchProgressReporter,
    CancelOnRequest,
    EpochEndReporter,
    best_weights_callback,
    optional_callbacks,
)
from ros_tensorflow.with_tf.conversion import REPRESENTATIVE_SAMPLES
from ros_tensorflow.with_tf.model import TrainingDiverged
from ros_tensorflow.with_tf.persistence import ModelFileError

SUCCEEDED, PREEMPTED, ABORTED = "succeeded", "preempted", "aborted"
OWN_DATA_WARNING = (
    "~promote is if_better without ~eval_dataset: each model is judged on its own goal's validation split, which"
    " a badly labelled recording passes (the model learnt those labels); set ~eval_dataset to data you trust"
)


@dataclasses.dataclass
class TrainingRequest:
    epochs: int
    batch_size: int = 0  # 0: the settings' batch_size
    validation_split: float = 0.0
    dataset: str = ""  # '': the settings' dataset

    def error(self):
        """What breaks the request's rules, or None."""
        if self.epochs <= 0:
            return f"epochs must be > 0, got {self.epochs}"
        if self.batch_size < 0:
            return f"batch_size must be >= 0 (0: the node's ~batch_size), got {self.batch_size}"
        if math.isnan(self.validation_split) or not 0.0 <= self.validation_split < 1.0:
            return f"validation_split must be in [0, 1), got {self.validation_split}"
        return None


def _no_metrics():
    return dict.fromkeys(METRIC_KEYS, math.nan)


@dataclasses.dataclass
class TrainingOutcome:
    state: str  # SUCCEEDED, PREEMPTED or ABORTED
    message: str
    epochs_completed: int = 0
    metrics: dict = dataclasses.field(default_factory=_no_metrics)  # the last finished epoch's
    model_path: str = ""  # where the model was saved, '' if it was not
    best_epoch: int = -1  # the epoch (0-based) whose weights were kept (~keep_best_epoch), -1: the last one's
    history: list = dataclasses.field(default_factory=list)  # the metrics of each completed epoch
    version: int = 0  # the version this goal's model became, 0: none (not saved, or cancelled)
    promoted: bool = False  # whether that version is served now


def _epochs(count):
    return f"{count} epoch" if count == 1 else f"{count} epochs"


class Trainer:
    """Runs one training request at a time on the ModelKeeper's model, then saves it."""

    def __init__(self, keeper, sample_store, data_dir, bag_topic, log=None):
        self.keeper = keeper
        self.sample_store = sample_store
        self.data_dir = data_dir
        self.bag_topic = bag_topic
        self._log = log or logging.getLogger(__name__)
        self.epoch = None  # the running epoch (0-based) while a request trains, else None
        self.last_export = None  # Future of the last goal's .tflite export (its path)
        self.learning_rate = 0.0  # set while running (not 0): every request from then on trains at this rate

    def run(self, request, settings, should_stop=lambda: False, on_feedback=lambda *feedback: None):
        """Train as the request says; returns a TrainingOutcome, whatever happens.

        should_stop() is asked after every batch; on_feedback(i_epoch, metrics, batch, batches_per_epoch)
        is called at each epoch's end (batch == batches_per_epoch) and for progress in between.
        """
        with self.keeper.training() as wrapper:
            try:
                error = request.error()
                if error is None and not wrapper.trainable:
                    error = f"the model from {self.keeper.source}: {wrapper.untrainable_reason}; it cannot train"
                if error is None:
                    x, y, class_names = self.load_dataset(request.dataset or settings.dataset, wrapper, settings)
                    check_validation_split(len(x), request.validation_split)
                    if class_names:  # an image folder names its classes
                        wrapper.class_names = class_names
                    compare_on = self._comparison_data(request, wrapper, settings)
            except ValueError as dataset_error:  # DatasetError, or a split the data cannot fill
                error = str(dataset_error)
            if error is not None:
                self._log.warning("train goal rejected: %s", error)
                return TrainingOutcome(ABORTED, error)
            outcome = self._train(wrapper, request, settings, x, y, should_stop, on_feedback, compare_on)
        self._log.info("train goal: %s", outcome.message)
        return outcome

    def _comparison_data(self, request, wrapper, settings):
        """What ~promote if_better compares on: (x, y, what) of ~eval_dataset, None for the goal's validation split
        (known once it trained), or ValueError if there is nothing to compare on."""
        if settings.promote != "if_better":
            return None
        if settings.eval_dataset:
            try:
                x, y, _ = self.load_dataset(settings.eval_dataset, wrapper, settings)
            except ValueError as error:
                raise ValueError(f"~eval_dataset: {error}") from error
            return x, y, repr(settings.eval_dataset)
        if request.validation_split <= 0:
            raise ValueError(
                "~promote is if_better: send a validation_split (or set ~eval_dataset) to compare the new model"
                " with the served one on"
            )
        return None

    def load_dataset(self, name, wrapper, settings):
        """(x, y, class names or []) of a dataset name for wrapper's model; DatasetError (a ValueError) says why
        not."""
        datasets = Datasets(
            self.data_dir,
            wrapper.input_shape,
            wrapper.output_dim,
            self.sample_store,
            self.bag_topic,
            settings.input_scale,
            settings.max_image_pixels,
            settings.seed,
            wrapper.task,
        )
        x, y = datasets.load(name)
        return x, y, datasets.class_names

    def _promotes(self, wrapper, compare_on, outcome):
        """~promote if_better: whether the trained model's accuracy is at least the served one's (a regression
        model's MAE at most the served one's) on the same samples (both measured now); outcome.message says both."""
        x, y, what = compare_on or (*wrapper.validation_data, "the goal's validation split")
        if wrapper.task == REGRESSION:
            metric, trained, served = (
                "MAE",
                *(evaluate_regression(p, x, y).mae for p in (wrapper.trained_predictor(), wrapper.served_predictor())),
            )
            better = trained <= served
        else:
            names = class_names_for([], wrapper.output_dim)
            metric, trained, served = (
                "accuracy",
                *(evaluate(p, x, y, names).accuracy for p in (wrapper.trained_predictor(), wrapper.served_predictor())),
            )
            better = trained >= served
        outcome.message += (
            f"; {'promoted' if better else 'not promoted'}: {metric} {trained:.4f} against the served model's"
            f" {served:.4f} on {len(x)} samples of {what}"
        )
        if compare_on is None:
            outcome.message += f" (warning: {OWN_DATA_WARNING})"
            self._log.warning("%s", OWN_DATA_WARNING)
        return better

    def _train(self, wrapper, request, settings, x, y, should_stop, on_feedback, compare_on=None):
        def on_epoch(i_epoch, metrics):
            self.epoch = i_epoch + 1
            on_feedback(i_epoch, metrics, epochs.batches_per_epoch, epochs.batches_per_epoch)

        epochs = EpochEndReporter(on_epoch)
        progress = BatchProgressReporter(
            lambda batch, batches_per_epoch: on_feedback(
                epochs.epochs_completed - 1, epochs.last_metrics, batch, batches_per_epoch
            )
        )
        cancel = CancelOnRequest(should_stop)
        validation = request.validation_split > 0
        best = best_weights_callback(settings.early_stopping_patience, validation, settings.keep_best_epoch)
        extra = [best] if best else []
        extra += optional_callbacks(settings.tensorboard_dir)
        self.epoch = 0
        try:
            if self.learning_rate:
                wrapper.model.optimizer.learning_rate = self.learning_rate
            wrapper.train(
                x,
                y,
                epochs=request.epochs,
                batch_size=request.batch_size or settings.batch_size,
                validation_split=request.validation_split,
                callbacks=[epochs, progress, *extra, cancel],  # cancel last: it asks at each epoch's end too
                serve=settings.promote == "always",
            )
        except TrainingDiverged as diverged:
            # the rate as set: the optimizer's float32 variable holds 1e308 as inf
            rate = self.learning_rate or float(wrapper.model.optimizer.learning_rate)
            message = (
                f"training diverged: {diverged} (learning rate {rate:g}: lower ~learning_rate);"
                " the model from before this goal is kept, serving and on disk"
            )
            self._log.error("%s", message)
            return TrainingOutcome(ABORTED, message, epochs.epochs_completed, dict(epochs.last_metrics))
        except Exception as train_error:  # noqa: BLE001 - any failure must end the goal with its cause
            self._log.error("training failed: %s", train_error)
            return TrainingOutcome(ABORTED, f"training failed: {train_error}")
        finally:
            self.epoch = None

        outcome = TrainingOutcome(SUCCEEDED, "", epochs.epochs_completed, dict(epochs.last_metrics))
        outcome.history = epochs.history
        if cancel.cancelled:
            outcome.state, outcome.message = PREEMPTED, f"cancelled after {_epochs(epochs.epochs_completed)}"
        elif epochs.epochs_completed < request.epochs:
            outcome.message = f"stopped early after {_epochs(epochs.epochs_completed)}"
        else:
            outcome.message = f"finished {_epochs(epochs.epochs_completed)}"
        if best is not None and best.best_weights is not None and best.best_epoch < epochs.epochs_completed:
            # Keras put the best epoch's weights back at the end: the metrics are that epoch's
            outcome.best_epoch, outcome.metrics = best.best_epoch, dict(epochs.history[best.best_epoch])
            if best.best_epoch < epochs.epochs_completed - 1 or epochs.epochs_completed < request.epochs:
                outcome.message += (
                    f"; kept the weights of epoch {best.best_epoch} (0-based), the best {best.monitor}"
                    f" ({best.best:.4g})"
                )
        meta = {"dataset": request.dataset or settings.dataset, "samples": len(x), "epochs": epochs.epochs_completed}
        meta["task"] = wrapper.task
        if settings.promote == "if_better":  # nothing trained was served yet
            if cancel.cancelled:
                wrapper.discard()
                outcome.message += "; nothing promoted (~promote if_better): the served model stays"
                return outcome
            if not self._promotes(wrapper, compare_on, outcome):
                outcome.version = self.keeper.keep_unserved({**outcome.metrics, **meta}, settings.class_names)
                wrapper.discard()
                outcome.message += f"; kept as version {outcome.version}, the served model stays"
                return outcome
            wrapper.promote()
        if not cancel.cancelled or settings.save_on_cancel:
            try:
                self.keeper.write(settings.class_names)
                outcome.model_path = self.keeper.path
            except ModelFileError as error:
                self._log.error("%s", error)
                outcome.message += f"; not saved: {error}"
        if outcome.model_path and not cancel.cancelled:
            representative = None
            if settings.tflite_quantization == "int8":  # calibrated on the goal's own data
                representative = x[np.random.default_rng().permutation(len(x))[:REPRESENTATIVE_SAMPLES]]
            outcome.version, outcome.promoted = self.keeper.reserve_version(), True
            self.last_export = self.keeper.export_tflite(
                settings.tflite_quantization, outcome.metrics, representative, outcome.version, meta
            )
        return outcome
