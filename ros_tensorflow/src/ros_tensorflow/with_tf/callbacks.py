"""Keras callbacks that report to and take orders from plain Python callables.

They know nothing of ROS: RosInterface passes in functions that publish
feedback or read the action server's preempt flag.
"""

import math
import time

import keras
import numpy as np

from ros_tensorflow.tf_free.files import new_run_folder

METRIC_KEYS = {
    "loss": "loss",
    "acc": "accuracy",
    "val_loss": "val_loss",
    "val_acc": "val_accuracy",
    "mae": "mae",  # a regression model's (compile_for)
    "val_mae": "val_mae",
}


def epoch_metrics(logs):
    """Keras logs as the action's metric fields; NaN for what was not measured."""
    logs = logs or {}
    return {name: float(logs.get(key, math.nan)) for name, key in METRIC_KEYS.items()}


class CancelOnRequest(keras.callbacks.Callback):
    """Stops training at the end of the running batch once should_stop() is true.

    Keras checks model.stop_training after every batch, so a cancel costs at
    most one batch. It is asked again at each epoch's end, as the last of the
    callbacks: a cancel that came during the epoch's end (the commit, the
    feedback) stops there, not after the next epoch's first batch.
    """

    def __init__(self, should_stop):
        super().__init__()
        self._should_stop = should_stop
        self.cancelled = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.cancelled and self._should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_batch_end(None)

    def on_test_batch_end(self, batch, logs=None):
        # Keras still validates the epoch it stopped in: cut that short too.
        if self.cancelled:
            self.model.stop_evaluating = True


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or Inf, or at an epoch's end whose weights are not all
    finite (a single-batch epoch never reports the loss its update ruined); `reason` says which, else None.

    Keras's TerminateOnNaN only stops: weights that diverged must not be committed, saved or served either.
    """

    def __init__(self):
        super().__init__()
        self.reason = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(f"the loss became {float(loss)} in epoch {self._epoch}, batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        if self.reason is None and not all(np.isfinite(w).all() for w in self.model.get_weights()):
            self._stop(f"the weights became NaN or Inf in epoch {epoch}")

    def _stop(self, reason):
        if self.reason is None:
            self.reason = reason
            self.model.stop_training = True


class EpochEndReporter(keras.callbacks.Callback):
    """Calls on_epoch(i_epoch, metrics) once per epoch that ran all its batches.

    Keras ends an epoch cut short by a cancel like any other; that one is
    neither counted nor reported.
    """

    def __init__(self, on_epoch):
        super().__init__()
        self._on_epoch = on_epoch
        self._batches_done = 0
        self.batches_per_epoch = 0
        self.epochs_completed = 0
        self.last_metrics = epoch_metrics(None)
        self.history = []  # the metrics of each completed epoch

    def on_train_begin(self, logs=None):
        self.batches_per_epoch = self.params.get("steps") or 0

    def on_epoch_begin(self, epoch, logs=None):
        self._batches_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_done = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if self._batches_done < self.batches_per_epoch:
            return
        self.epochs_completed = epoch + 1
        self.last_metrics = epoch_metrics(logs)
        self.history.append(self.last_metrics)
        self._on_epoch(epoch, self.last_metrics)


class BatchProgressReporter(keras.callbacks.Callback):
    """Calls on_progress(batches_done, batches_per_epoch) at most max_rate_hz times a second.

    The last batch of an epoch is left to the epoch-end report.
    """

    def __init__(self, on_progress, max_rate_hz=10.0):
        super().__init__()
        self._on_progress = on_progress
        self._min_interval = 1.0 / max_rate_hz
        self._last_report = -math.inf

    def on_train_batch_end(self, batch, logs=None):
        batches_per_epoch = self.params.get("steps") or 0
        now = time.monotonic()
        if batch + 1 < batches_per_epoch and now - self._last_report >= self._min_interval:
            self._last_report = now
            self._on_progress(batch + 1, batches_per_epoch)


def best_weights_callback(early_stopping_patience=0, validation=False, keep_best_epoch=False):
    """Keras's EarlyStopping, which puts the weights of the best epoch (val_loss, else loss) back at the end:
    stopping after early_stopping_patience epochs without improvement where that is set, else never
    (keep_best_epoch, with validation: a goal whose last epochs collapse keeps its best). None where neither."""
    if early_stopping_patience <= 0 and not (keep_best_epoch and validation):
        return None
    return keras.callbacks.EarlyStopping(
        monitor="val_loss" if validation else "loss",
        patience=early_stopping_patience if early_stopping_patience > 0 else 2**31 - 1,
        restore_best_weights=True,
    )


def optional_callbacks(tensorboard_dir=""):
    """Keras's TensorBoard, where asked for."""
    if tensorboard_dir:
        return [keras.callbacks.TensorBoard(log_dir=new_run_folder(tensorboard_dir))]
    return []
