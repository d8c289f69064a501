"""Models on disk: atomic saves, the backup rule, and loading whatever a user brings, without a master."""

import os
import pathlib
import zipfile

import keras
import numpy as np
import pytest

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.with_tf.model import ModelWrapper, NotTrainableError, build_classifier
from ros_tensorflow.with_tf.persistence import (
    ModelFileError,
    backup_path,
    export_tflite,
    file_digest,
    load_model,
    save_model,
)

X, Y = make_synthetic(n_samples=60, seed=5)


def test_save_is_atomic_and_keeps_the_previous_model_as_backup(tmp_path):
    path = tmp_path / "m" / "model.keras"
    first, second = build_classifier(), build_classifier()
    save_model(first, path)
    save_model(second, path)
    assert sorted(os.listdir(path.parent)) == ["model.backup.keras", "model.keras"]
    np.testing.assert_allclose(load_model(path)[0].predict(X, verbose=0), second.predict(X, verbose=0), atol=1e-6)
    np.testing.assert_allclose(
        load_model(backup_path(path))[0].predict(X, verbose=0), first.predict(X, verbose=0), atol=1e-6
    )


def test_a_failed_save_leaves_the_old_model_and_no_partial_file(tmp_path):
    class DiesWhileSaving:
        def save(self, filepath):
            with open(filepath, "wb") as f:
                f.write(b"half a model")
            raise OSError("disk full")

    path = tmp_path / "model.keras"
    save_model(build_classifier(), path)
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match="disk full"):
        save_model(DiesWhileSaving(), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.backup.keras", "model.keras"]


def predictions_of(path):
    return load_model(path)[0].predict(X, verbose=0)


def test_a_file_that_does_not_load_is_set_aside_never_overwritten_nor_made_the_backup(tmp_path):
    path = tmp_path / "model.keras"
    good, newer, newest = build_classifier(), build_classifier(), build_classifier()
    save_model(good, path)
    save_model(newer, path)  # the backup is now `good`
    garbage = os.urandom(5000)
    path.write_bytes(garbage)
    _, set_aside = save_model(newest, path)
    np.testing.assert_allclose(predictions_of(backup_path(path)), good.predict(X, verbose=0), atol=1e-6)
    np.testing.assert_allclose(predictions_of(path), newest.predict(X, verbose=0), atol=1e-6)
    assert (
        set_aside.parent == tmp_path and set_aside.name.startswith("model.unusable-") and set_aside.suffix == ".keras"
    )
    assert set_aside.read_bytes() == garbage


def test_a_users_model_the_node_cannot_serve_is_set_aside_not_overwritten(tmp_path):
    """Two outputs: it loads in Keras, but not as a classifier the node serves; it may be the user's only copy."""
    inputs = keras.Input((10,))
    two_heads = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    path = tmp_path / "model.keras"
    two_heads.save(path)
    users_bytes = path.read_bytes()
    _, set_aside = save_model(build_classifier(), path)
    assert set_aside.read_bytes() == users_bytes and not backup_path(path).exists()
    assert load_model(path)[0].output_shape == (None, 2)


def test_a_model_file_put_there_by_hand_becomes_the_backup_and_a_known_one_is_not_loaded_again(tmp_path):
    path = tmp_path / "model.keras"
    by_hand = build_classifier()
    by_hand.save(path)
    digest, _ = save_model(build_classifier(), path)
    np.testing.assert_allclose(predictions_of(backup_path(path)), by_hand.predict(X, verbose=0), atol=1e-6)
    assert digest == file_digest(path)
    # A digest the caller vouches for is taken as loadable without loading it (here a file that would not load).
    path.write_bytes(b"not a model, but vouched for")
    save_model(build_classifier(), path, known_good={file_digest(path)})
    assert backup_path(path).read_bytes() == b"not a model, but vouched for"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_models_get_the_mode_of_a_normally_created_file(tmp_path, suffix):
    (tmp_path / "plain").write_bytes(b"")
    save_model(build_classifier(), tmp_path / f"model{suffix}")
    save_model(build_classifier(), tmp_path / f"model{suffix}")
    normal = os.stat(tmp_path / "plain").st_mode
    assert os.stat(tmp_path / f"model{suffix}").st_mode == normal
    assert os.stat(backup_path(tmp_path / f"model{suffix}")).st_mode == normal


def test_a_model_loaded_from_h5_trains_and_trains_again_after_saving(tmp_path):
    save_model(build_classifier(), tmp_path / "own.h5")
    for _ in range(2):
        wrapper = ModelWrapper(load_model(tmp_path / "own.h5")[0])
        assert len(wrapper.train(X, Y, epochs=2).history["loss"]) == 2
        save_model(wrapper.model, tmp_path / "own.h5")


def test_bad_model_files_say_what_is_wrong(tmp_path):
    save_model(build_classifier(), tmp_path / "good.keras")
    good = (tmp_path / "good.keras").read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 3] ^= 0xFF  # inside a compressed member: its CRC no longer matches
    cases = {
        "random.keras": (os.urandom(5000), "not a Keras file"),
        "truncated.keras": (good[: len(good) // 2], "a corrupt zip archive"),
        "damaged.keras": (bytes(damaged), "a corrupt zip archive"),
        "random.h5": (os.urandom(5000), "not an HDF5 file"),
        "model.pkl": (good, "expected a .keras or .h5 file or a SavedModel folder"),
    }
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, not a model")
    cases["other.keras"] = ((tmp_path / "other.keras").read_bytes(), "not a Keras model")
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match=f"{name}: .*{reason}"):
            load_model(tmp_path / name)
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "missing.keras")


def test_h5_round_trip_and_bad_files(tmp_path):
    model = build_classifier(input_shape=4, output_dim=3)
    save_model(model, tmp_path / "model.h5")
    loaded, trainable = load_model(tmp_path / "model.h5")
    assert trainable and loaded.inputs[0].shape[-1] == 4 and loaded.outputs[0].shape[-1] == 3
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="corrupt.keras"):
        load_model(tmp_path / "corrupt.keras")
    with pytest.raises(ModelFileError, match="must end in .keras or .h5"):
        save_model(model, tmp_path / "model.pkl")


def test_lambda_layers_do_not_load_code(tmp_path):
    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2)(inputs)))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match="safe_mode"):
        load_model(tmp_path / "lambda.keras")


def test_a_model_of_any_input_rank_loads_and_one_of_unknown_sizes_is_refused(tmp_path):
    images = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    images.save(tmp_path / "images.keras")
    assert tuple(load_model(tmp_path / "images.keras")[0].inputs[0].shape) == (None, 8, 8, 1)
    any_size = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])
    any_size.save(tmp_path / "any_size.keras")
    with pytest.raises(ModelFileError, match=r"expected input \(k, \*sample shape\), every size known"):
        load_model(tmp_path / "any_size.keras")


def test_saved_model_is_served_for_prediction_only(tmp_path):
    model = build_classifier()
    model.export(str(tmp_path / "exported"), verbose=False)
    loaded, trainable = load_model(tmp_path / "exported")
    assert not trainable
    wrapper = ModelWrapper(loaded, trainable=False)
    np.testing.assert_allclose(wrapper.predict(X), model.predict(X, verbose=0), atol=1e-5)
    with pytest.raises(NotTrainableError, match="prediction only"):
        wrapper.train(X, Y, epochs=1)


def test_export_writes_the_tflite_beside_the_model_atomically_or_says_why_not(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    path = export_tflite(b"flatbuffer", tmp_path / "own.h5")
    assert path == str(tmp_path / "own.tflite") and os.stat(path).st_mode == os.stat(tmp_path / "plain").st_mode
    assert pathlib.Path(path).read_bytes() == b"flatbuffer"
    (tmp_path / "odd.tflite").mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(ModelFileError, match="cannot write .*odd.tflite"):
        export_tflite(b"flatbuffer", tmp_path / "odd.keras")
    assert sorted(os.listdir(tmp_path)) == ["odd.tflite", "own.tflite", "plain"], "no partial file is left"
