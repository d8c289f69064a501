"""The Keras callbacks in real training runs."""

import math
import os
import threading

import keras
import numpy as np

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.with_tf.callbacks import (
    BatchProgressReporter,
    CancelOnRequest,
    EpochEndReporter,
    best_weights_callback,
    optional_callbacks,
)
from ros_tensorflow.with_tf.model import ModelWrapper

X, Y = make_synthetic(n_samples=320, seed=4)  # 10 batches of 32


class BatchCounter(keras.callbacks.Callback):
    """Counts training batches; requests a cancel once `cancel_at` batches have run."""

    def __init__(self, cancel_at=None):
        super().__init__()
        self.batches = 0
        self.cancel_at = cancel_at
        self.cancel_requested = threading.Event()

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.cancel_at:
            self.cancel_requested.set()


def test_cancel_stops_at_the_end_of_the_running_batch():
    counter = BatchCounter(cancel_at=14)
    cancel = CancelOnRequest(counter.cancel_requested.is_set)
    epochs = EpochEndReporter(lambda i_epoch, metrics: None)
    ModelWrapper().train(X, Y, epochs=5, batch_size=32, validation_split=0.0, callbacks=[counter, cancel, epochs])
    assert cancel.cancelled
    assert counter.batches == 14
    assert epochs.epochs_completed == 1, "the epoch cut short is not counted"


def test_a_cancel_during_an_epochs_end_stops_before_the_next_epoch():
    counter = BatchCounter()  # never by batch
    epochs = EpochEndReporter(lambda i_epoch, metrics: counter.cancel_requested.set())  # at the first epoch's end
    cancel = CancelOnRequest(counter.cancel_requested.is_set)
    ModelWrapper().train(X, Y, epochs=5, batch_size=32, callbacks=[counter, epochs, cancel])
    assert cancel.cancelled and epochs.epochs_completed == 1
    assert counter.batches == epochs.batches_per_epoch, "no batch of the second epoch ran"


def test_cancel_with_validation_stops_too():
    counter = BatchCounter(cancel_at=3)
    cancel = CancelOnRequest(counter.cancel_requested.is_set)
    ModelWrapper().train(X, Y, epochs=5, batch_size=32, validation_split=0.5, callbacks=[counter, cancel])
    assert cancel.cancelled and counter.batches == 3


def test_epoch_reporter_is_called_once_per_epoch_with_metrics():
    reports = []
    reporter = EpochEndReporter(lambda i_epoch, metrics: reports.append((i_epoch, metrics)))
    ModelWrapper().train(X, Y, epochs=4, batch_size=32, callbacks=[reporter])
    assert [i for i, _ in reports] == [0, 1, 2, 3]
    assert reporter.epochs_completed == 4 and reporter.batches_per_epoch == 10
    for _, metrics in reports:
        assert set(metrics) == {"loss", "acc", "val_loss", "val_acc", "mae", "val_mae"}
        assert metrics["loss"] > 0 and 0 <= metrics["acc"] <= 1
        assert math.isnan(metrics["val_loss"]) and math.isnan(metrics["val_acc"])


def test_epoch_reporter_reports_validation_metrics():
    reports = []
    ModelWrapper().train(
        X,
        Y,
        epochs=2,
        batch_size=32,
        validation_split=0.25,
        callbacks=[EpochEndReporter(lambda i_epoch, metrics: reports.append(metrics))],
    )
    assert len(reports) == 2
    assert all(m["val_loss"] > 0 and 0 <= m["val_acc"] <= 1 for m in reports)


def test_progress_reporter_reports_every_batch_but_the_epoch_end_when_unthrottled():
    reports = []
    reporter = BatchProgressReporter(lambda batch, per_epoch: reports.append((batch, per_epoch)), max_rate_hz=1e9)
    ModelWrapper().train(X, Y, epochs=2, batch_size=32, callbacks=[reporter])
    assert reports == [(b, 10) for b in range(1, 10)] * 2


def test_progress_reporter_is_throttled():
    reports = []
    reporter = BatchProgressReporter(lambda batch, per_epoch: reports.append(batch), max_rate_hz=1e-6)
    ModelWrapper().train(X, Y, epochs=3, batch_size=32, callbacks=[reporter])
    assert reports == [1]


def test_early_stopping_stops_when_nothing_improves():
    wrapper = ModelWrapper(learning_rate=1e-30)  # no step changes a float32 weight: val_loss stays put
    callbacks = [best_weights_callback(early_stopping_patience=2, validation=True)]
    history = wrapper.train(X, Y, epochs=20, validation_split=0.25, callbacks=callbacks)
    assert len(history.history["loss"]) == 3


class _CollapseAt(keras.callbacks.Callback):
    """Ruins the weights at the start of an epoch (as a too-high learning rate does): that epoch's val_loss is
    the worst; the weights at each epoch's end are kept to compare."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.weights_at_end = epoch, []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([np.full_like(w, 3.0) for w in self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        self.weights_at_end.append(self.model.get_weights())


def test_keep_best_epoch_puts_the_best_epochs_weights_back_when_the_last_collapsed():
    wrapper = ModelWrapper()
    best = best_weights_callback(keep_best_epoch=True, validation=True)
    collapse = _CollapseAt(3)
    history = wrapper.train(X, Y, epochs=4, validation_split=0.25, callbacks=[collapse, best])
    val_loss = history.history["val_loss"]
    assert len(val_loss) == 4 and val_loss[3] > max(val_loss[:3])  # all four epochs ran; the last collapsed
    assert best.best_epoch == int(np.argmin(val_loss[:3]))
    kept = wrapper.model.get_weights()
    for kept_weight, best_weight in zip(kept, collapse.weights_at_end[best.best_epoch], strict=True):
        np.testing.assert_array_equal(kept_weight, best_weight)
    served = wrapper.predict(X[:5])  # the final commit serves the kept weights, not the collapse
    np.testing.assert_allclose(served, wrapper.model.predict(X[:5], verbose=0), atol=1e-5)


def test_keep_best_epoch_needs_validation_and_patience_still_works_without():
    assert best_weights_callback(keep_best_epoch=True, validation=False) is None
    assert best_weights_callback() is None
    assert best_weights_callback(early_stopping_patience=3).monitor == "loss"


def test_every_goal_gets_a_tensorboard_folder_of_its_own(tmp_path):
    # Three goals within the same second: the old per-second names made them share one run.
    logdirs = [optional_callbacks(tensorboard_dir=str(tmp_path))[0].log_dir for _ in range(3)]
    assert len(set(logdirs)) == 3 and all(os.path.isdir(logdir) for logdir in logdirs)


def test_tensorboard_logs_are_written(tmp_path):
    ModelWrapper().train(X, Y, epochs=2, callbacks=optional_callbacks(tensorboard_dir=str(tmp_path)))
    events = [name for _, _, files in os.walk(tmp_path) for name in files if name.startswith("events.out.tfevents")]
    assert events
