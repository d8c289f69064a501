"""ModelKeeper: the model's life (start-up fallbacks, save, reload, the training lock), without a master."""

import concurrent.futures
import logging
import os

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.with_tf.model import build_classifier
from ros_tensorflow.with_tf.model_keeper import ModelBusyError, ModelKeeper
from ros_tensorflow.with_tf.persistence import ModelFileError, backup_path, load_model

PROBE = make_synthetic(n_samples=4, seed=9)[0]
FRESH = Settings().fresh_model()


def outputs(model):
    return model.predict(PROBE, verbose=0)


def test_nothing_on_disk_gives_a_fresh_model(tmp_path):
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == "fresh" and keeper.fallback_error is None
    assert (keeper.wrapper.input_dim, keeper.wrapper.output_dim) == (10, 2)


def test_a_model_file_is_loaded_and_its_sizes_win(tmp_path, caplog):
    model = build_classifier(input_shape=4, output_dim=3)
    model.save(tmp_path / "model.keras")
    with caplog.at_level(logging.WARNING):
        keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == str(tmp_path / "model.keras")
    assert (keeper.wrapper.input_dim, keeper.wrapper.output_dim) == (4, 3)
    assert "sizes win" not in caplog.text  # the defaults: nobody asked for other sizes
    with caplog.at_level(logging.WARNING):
        ModelKeeper(tmp_path / "model.keras", Settings().replace(output_dim=5, input_dim=4).fresh_model())
    assert "takes samples of shape [4] and has 3 classes: its sizes win over ~output_dim 5" in caplog.text


def test_class_names_set_as_a_parameter_become_a_loaded_models_own_and_travel_at_start_up(tmp_path):
    versions = tmp_path / "versions"
    first = ModelKeeper(tmp_path / "model.keras", FRESH, versions_dir=versions)
    first.write()
    first.export_tflite().result(120)
    first.close()
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH, versions_dir=versions)
    keeper.adopt_class_names(["neg", "pos"])
    announced = []
    keeper.on_export = announced.append
    assert keeper.announce_at_startup() is None
    assert announced[0].class_names == ["neg", "pos"]  # the ~model message robots label with
    assert (tmp_path / "model.classes.txt").read_text() == "neg\npos\n"
    assert (versions / "1" / "model.classes.txt").read_text() == "neg\npos\n"
    keeper.adopt_class_names(["other", "names"])  # its own names win from now on
    assert keeper.wrapper.class_names == ["neg", "pos"]
    keeper.close()


@pytest.mark.parametrize(
    "last_layer, reason",
    [
        (lambda: keras.layers.Dense(1), "one output value per sample: a classifier needs one output per class"),
        (lambda: keras.layers.Dense(1, activation="sigmoid"), "one output value per sample"),
        (lambda: keras.layers.Dense(3), "its outputs are not class probabilities"),
    ],
)
def test_models_that_are_not_softmax_classifiers_are_refused_at_load(tmp_path, last_layer, reason):
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), last_layer()])
    model.save(tmp_path / "model.keras")
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == "fresh" and reason in keeper.fallback_error
    keeper.close()


def test_a_corrupt_file_falls_back_to_the_backup_which_a_save_then_keeps(tmp_path):
    backup = build_classifier()
    backup.save(tmp_path / "model.backup.keras")
    (tmp_path / "model.keras").write_bytes(os.urandom(3000))
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == str(tmp_path / "model.backup.keras")
    assert "not a Keras file" in keeper.fallback_error
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), outputs(backup), atol=1e-5)

    keeper.write()
    assert keeper.source == str(tmp_path / "model.keras") and keeper.fallback_error is None
    kept_backup, _ = load_model(backup_path(tmp_path / "model.keras"))
    np.testing.assert_allclose(outputs(kept_backup), outputs(backup), atol=1e-6)


def test_a_corrupt_file_and_backup_give_a_fresh_model_and_say_why(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "model.backup.keras").write_bytes(b"garbage")
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == "fresh" and "a corrupt zip archive" in keeper.fallback_error


def test_reload_swaps_the_model_and_predictions_are_counted_across_reloads(tmp_path, caplog):
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    keeper.wrapper.predict(PROBE)
    replacement = build_classifier()
    replacement.save(tmp_path / "model.keras")
    keeper.reload()
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), outputs(replacement), atol=1e-5)
    assert keeper.predictions_served == 2 * len(PROBE) and keeper.source == str(tmp_path / "model.keras")

    (tmp_path / "model.keras").write_bytes(os.urandom(3000))
    with caplog.at_level(logging.WARNING), pytest.raises(ModelFileError, match="not a Keras file"):
        keeper.reload()
    assert "reload failed: cannot load the model" in caplog.text
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), outputs(replacement), atol=1e-5)


def test_save_and_reload_are_refused_while_a_training_holds_the_model(tmp_path):
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    with keeper.training():
        with pytest.raises(ModelBusyError, match="a training runs"):
            keeper.save()
        with pytest.raises(ModelBusyError, match="a training runs"):
            keeper.reload()
    keeper.save()
    assert (tmp_path / "model.keras").is_file()


def test_a_saved_model_folder_is_served_by_tensorflow_and_not_saved(tmp_path, caplog):
    build_classifier().export(str(tmp_path / "exported"), verbose=False)
    with caplog.at_level(logging.WARNING):
        keeper = ModelKeeper(tmp_path / "exported", FRESH, serving_backend="litert")
    assert not keeper.wrapper.trainable and keeper.wrapper.serving == "tensorflow, commit 1"
    assert caplog.text.count("served for prediction only, by TensorFlow (LiteRT serves Keras models)") == 1
    with pytest.raises(ModelFileError, match="is a SavedModel and is not saved"):
        keeper.save()


def test_class_names_are_saved_beside_the_model_and_come_back_with_it(tmp_path):
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    keeper.wrapper.class_names = ["cup", "ball"]
    keeper.save()
    assert (tmp_path / "model.classes.txt").read_text() == "cup\nball\n"
    assert ModelKeeper(tmp_path / "model.keras", FRESH).wrapper.class_names == ["cup", "ball"]
    keeper.wrapper.class_names = []
    keeper.save()
    assert not (tmp_path / "model.classes.txt").exists(), "names of another model must not stay"


def test_models_replaced_while_they_wait_for_the_converter_are_not_converted_and_go(tmp_path):
    """Reloads in a row: each replaced model let go at once (it held its weights and, once converted, its
    interpreters: memory grew with every reload while their conversions queued)."""
    keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), serving_backend="litert")
    keeper.write()
    replaced = []
    for _ in range(6):
        replaced.append(keeper.wrapper.litert)
        keeper.reload()
    assert keeper.wrapper.litert.wait_until_serving(keeper.wrapper.commit_count, 120)
    for litert in replaced:
        litert._thread.join(120)
        assert not litert._thread.is_alive()
    assert sum(litert.conversions for litert in replaced) < len(replaced), "some were skipped"
    keeper.close()


def test_closing_skips_an_unfinished_export_says_so_and_the_next_start_exports_it(tmp_path, caplog):
    """The node shutting down: an export is neither waited on (Python joins the export thread at exit: roslaunch
    killed a node that waited 120 s) nor lost silently; the next start brings the .tflite back in step."""
    keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), serving_backend="litert")
    keeper.write()
    keeper.wrapper.commit()  # commit 2: its conversion waits behind commit 1's
    export = keeper.export_tflite()
    with caplog.at_level(logging.WARNING):
        keeper.close()
    assert f"shutting down before the .tflite export finished: {tmp_path / 'model.tflite'} is not" in caplog.text
    with pytest.raises((ModelFileError, concurrent.futures.CancelledError)):
        export.result(30)
    assert not (tmp_path / "model.tflite").exists()

    restarted = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), serving_backend="litert")
    assert restarted.announce_at_startup().result(120) == str(tmp_path / "model.tflite")
    assert restarted.version == 1 and restarted.wrapper.version == 1
    restarted.close()
    again = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), serving_backend="litert")
    assert again.announce_at_startup() is None, "in step now: announced as it is"
    assert again.exported.info["version"] == 1 and again.wrapper.version == 1
    again.close()


def test_an_export_does_not_wait_for_a_commit_that_a_later_goal_replaced(tmp_path):
    """Goal A ends and exports; goal B commits its first epoch before A's commit is served: A's commit will never
    be served, and A's export waited 120 s for it. It converts A's own weights instead."""
    keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), serving_backend="litert")
    goal_a = keeper.wrapper.model.get_weights()
    export = keeper.export_tflite()
    keeper.wrapper.model.set_weights([w + 1 for w in goal_a])
    keeper.wrapper.commit(epoch_end=True)  # goal B's first epoch
    path = export.result(60)
    exported = ModelKeeper(tmp_path / "check.keras", FRESH)  # the exported weights are goal A's
    exported.wrapper.model.set_weights(goal_a)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], PROBE[:1].astype(np.float32))
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
        outputs(exported.wrapper.model)[:1],
        atol=1e-5,
    )
    keeper.close()


def test_a_bad_byte_in_the_class_names_costs_the_names_not_the_model(tmp_path, caplog):
    model = build_classifier()
    model.save(tmp_path / "model.keras")
    (tmp_path / "model.classes.txt").write_bytes(b"cup\nb\xffll\n")
    with caplog.at_level(logging.WARNING):
        keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == str(tmp_path / "model.keras") and keeper.wrapper.class_names == []
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), outputs(model), atol=1e-5)
    assert "the model is used without its class names" in caplog.text


def test_class_names_given_as_a_parameter_are_saved_with_a_model_that_has_none(tmp_path):
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    keeper.write(["cup", "ball"])
    assert ModelKeeper(tmp_path / "model.keras", FRESH).wrapper.class_names == ["cup", "ball"]
    keeper.wrapper.class_names = ["zero", "one"]  # the model's own (from an image folder) win
    keeper.write(["cup", "ball"])
    assert ModelKeeper(tmp_path / "model.keras", FRESH).wrapper.class_names == ["zero", "one"]


def test_a_users_model_the_node_cannot_use_survives_the_next_save(tmp_path, caplog):
    """A custom layer: the node falls back to a fresh model; its first save keeps the user's file beside it."""

    class Doubling(keras.layers.Layer):  # the user's own layer, which the node cannot know
        def call(self, x):
            return 2 * x

    keras.Sequential([keras.Input((10,)), Doubling(), keras.layers.Dense(2, "softmax")]).save(tmp_path / "model.keras")
    users_bytes = (tmp_path / "model.keras").read_bytes()
    keeper = ModelKeeper(tmp_path / "model.keras", FRESH)
    assert keeper.source == "fresh"
    with caplog.at_level(logging.WARNING):
        keeper.write()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("model.unusable-")]
    assert len(kept) == 1 and kept[0].read_bytes() == users_bytes
    assert f"kept as {kept[0]}, not overwritten" in caplog.text
