"""Trainer: every outcome of a training request, on real TensorFlow, without a master."""

import math

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.sample_store import SampleStore
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.with_tf.model_keeper import ModelKeeper
from ros_tensorflow.with_tf.persistence import ModelFileError
from ros_tensorflow.with_tf.training import ABORTED, PREEMPTED, SUCCEEDED, Trainer, TrainingRequest

PROBE = make_synthetic(n_samples=4, seed=9)[0]


def make_trainer(tmp_path, model_path=None, **settings):
    settings = Settings().replace(**settings)
    keeper = ModelKeeper(model_path or tmp_path / "model.keras", settings.fresh_model())
    trainer = Trainer(keeper, SampleStore(tmp_path / "samples.sqlite"), tmp_path, "/samples")
    return trainer, settings


class Feedback:
    def __init__(self):
        self.calls = []

    def __call__(self, i_epoch, metrics, batch, batches_per_epoch):
        self.calls.append((i_epoch, batch, batches_per_epoch, metrics))

    def epochs(self):
        return [i_epoch for i_epoch, batch, per_epoch, _ in self.calls if batch == per_epoch]


def test_a_request_that_finishes_reports_each_epoch_and_saves(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    feedback = Feedback()
    outcome = trainer.run(TrainingRequest(epochs=3, validation_split=0.2), settings, on_feedback=feedback)
    assert (outcome.state, outcome.epochs_completed) == (SUCCEEDED, 3)
    assert outcome.message.startswith("finished 3 epochs")
    assert outcome.model_path == str(tmp_path / "model.keras") and (tmp_path / "model.keras").is_file()
    assert feedback.epochs() == [0, 1, 2] and all(per_epoch == 25 for _, _, per_epoch, _ in feedback.calls)
    epoch_metrics = [metrics for _, batch, per_epoch, metrics in feedback.calls if batch == per_epoch]
    assert outcome.history == epoch_metrics
    # ~keep_best_epoch (on by default): the metrics are the kept epoch's, the one of the lowest val_loss
    assert outcome.best_epoch == min(range(3), key=lambda i: epoch_metrics[i]["val_loss"])
    assert outcome.metrics == epoch_metrics[outcome.best_epoch] and outcome.metrics["val_acc"] > 0.8
    assert trainer.epoch is None
    assert trainer.last_export.result(120) == str(tmp_path / "model.tflite")  # exported beside the model
    interpreter = Interpreter(model_path=str(tmp_path / "model.tflite"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], PROBE[:1].astype(np.float32))
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(output, trainer.keeper.wrapper.predict(PROBE[:1]), atol=1e-5)


def test_without_keep_best_epoch_the_last_epoch_is_kept(tmp_path):
    trainer, settings = make_trainer(tmp_path, keep_best_epoch=False)
    outcome = trainer.run(TrainingRequest(epochs=2, validation_split=0.2), settings)
    assert (outcome.message, outcome.best_epoch) == ("finished 2 epochs", -1)
    assert outcome.metrics == outcome.history[-1]


def test_a_request_that_stops_early_keeps_the_best_weights(tmp_path):
    trainer, settings = make_trainer(tmp_path, learning_rate=1e-30, early_stopping_patience=1)
    outcome = trainer.run(TrainingRequest(epochs=30, validation_split=0.2), settings)
    assert outcome.state == SUCCEEDED and outcome.epochs_completed == 2
    assert outcome.message.startswith("stopped early after 2 epochs; kept the weights of epoch 0 (0-based), the best")


@pytest.mark.parametrize("save_on_cancel", [False, True])
def test_a_cancel_mid_epoch_ends_preempted_and_saves_only_if_asked(tmp_path, save_on_cancel):
    trainer, settings = make_trainer(tmp_path, batch_size=8, save_on_cancel=save_on_cancel)
    asked = []
    outcome = trainer.run(TrainingRequest(epochs=5), settings, should_stop=lambda: asked.append(1) or len(asked) >= 10)
    assert (outcome.state, outcome.message, outcome.epochs_completed) == (PREEMPTED, "cancelled after 0 epochs", 0)
    assert len(asked) == 10, "the cancel took effect after the batch that saw it"
    assert math.isnan(outcome.metrics["loss"])
    assert (outcome.model_path != "") == save_on_cancel == (tmp_path / "model.keras").is_file()
    assert trainer.last_export is None and not (tmp_path / "model.tflite").exists(), "only goals that succeed export"


@pytest.mark.parametrize(
    "request_, reason",
    [
        (TrainingRequest(epochs=0), "epochs must be > 0, got 0"),
        (TrainingRequest(epochs=1, batch_size=-1), "batch_size must be >= 0"),
        (TrainingRequest(epochs=1, validation_split=1.0), "validation_split must be in [0, 1), got 1.0"),
        (TrainingRequest(epochs=1, validation_split=math.nan), "validation_split must be in [0, 1), got nan"),
        (TrainingRequest(epochs=1, validation_split=0.9995), "validation_split 0.9995 of 1000 samples leaves 0"),
        (TrainingRequest(epochs=1, dataset="missing.npz"), "missing.npz not found"),
        (TrainingRequest(epochs=1, dataset="recorded"), "'recorded' is empty"),
    ],
)
def test_an_invalid_request_or_dataset_is_aborted_before_training(tmp_path, request_, reason):
    trainer, settings = make_trainer(tmp_path)
    before = trainer.keeper.wrapper.predict(PROBE)
    outcome = trainer.run(request_, settings)
    assert outcome.state == ABORTED and reason in outcome.message and outcome.epochs_completed == 0
    np.testing.assert_array_equal(trainer.keeper.wrapper.predict(PROBE), before)
    assert not (tmp_path / "model.keras").exists()


def test_a_save_that_fails_still_succeeds_and_says_why(tmp_path):
    (tmp_path / "not_a_folder").write_text("a file where the model's folder should be")
    trainer, settings = make_trainer(tmp_path, model_path=tmp_path / "not_a_folder" / "model.keras")
    outcome = trainer.run(TrainingRequest(epochs=1), settings)
    assert outcome.state == SUCCEEDED and outcome.model_path == ""
    assert outcome.message.startswith("finished 1 epoch; not saved: cannot save the model to")


def test_a_learning_rate_set_while_running_applies_to_the_next_request(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    trainer.learning_rate = 1e-30  # no step changes a float32 weight
    before = trainer.keeper.wrapper.predict(PROBE)
    assert trainer.run(TrainingRequest(epochs=1), settings).state == SUCCEEDED
    np.testing.assert_allclose(trainer.keeper.wrapper.predict(PROBE), before, atol=1e-7)
    trainer.learning_rate = 0.1
    trainer.run(TrainingRequest(epochs=1), settings)
    assert not np.allclose(trainer.keeper.wrapper.predict(PROBE), before, atol=1e-4)


def test_a_model_that_cannot_be_exported_still_succeeds_and_the_export_says_why(tmp_path):
    inputs = keras.Input((10,))
    squashed = keras.ops.erfinv(keras.ops.tanh(inputs) * 0.5)  # TFLite has no kernel for erfinv
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(squashed)).save(tmp_path / "model.keras")
    trainer, settings = make_trainer(tmp_path)
    outcome = trainer.run(TrainingRequest(epochs=1), settings)
    assert outcome.state == SUCCEEDED and outcome.model_path == str(tmp_path / "model.keras")
    assert outcome.message == "finished 1 epoch"
    with pytest.raises(ModelFileError, match="cannot convert the model to TFLite: ConverterError"):
        trainer.last_export.result(120)
    assert not (tmp_path / "model.tflite").exists()


def test_a_diverged_training_is_aborted_and_the_model_from_before_keeps_serving_and_stays_on_disk(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    assert trainer.run(TrainingRequest(epochs=2), settings).state == SUCCEEDED
    trainer.last_export.result(120)
    on_disk = {name: (tmp_path / name).read_bytes() for name in ("model.keras", "model.tflite")}
    before = trainer.keeper.wrapper.predict(PROBE)

    trainer.learning_rate = 1e308  # as ~set_parameters sets it: finite, so accepted, and far too high
    outcome = trainer.run(TrainingRequest(epochs=2, validation_split=0.2), settings)
    assert outcome.state == ABORTED and outcome.message.startswith("training diverged: the loss became nan in epoch 0")
    assert "the model from before this goal is kept, serving and on disk" in outcome.message
    assert outcome.model_path == ""
    np.testing.assert_allclose(trainer.keeper.wrapper.predict(PROBE), before, atol=1e-6)
    assert {name: (tmp_path / name).read_bytes() for name in on_disk} == on_disk
    # The optimizer's state is back too: the next goal at a sane rate trains as before.
    trainer.learning_rate = 0.1
    outcome = trainer.run(TrainingRequest(epochs=2, validation_split=0.2), settings)
    assert outcome.state == SUCCEEDED and outcome.metrics["val_acc"] > 0.8


def test_class_names_given_as_a_parameter_are_saved_with_the_trained_model(tmp_path):
    trainer, settings = make_trainer(tmp_path, class_names=["cup", "ball"])
    assert trainer.run(TrainingRequest(epochs=1), settings).state == SUCCEEDED
    assert (tmp_path / "model.classes.txt").read_text() == "cup\nball\n"
