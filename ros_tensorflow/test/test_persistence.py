"""Samples and models on disk: SampleStore, Datasets and persistence, without a master."""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import rosbag
from ros_tensorflow_msgs.msg import Sample
from std_msgs.msg import String

from ros_tensorflow.callbacks import optional_callbacks
from ros_tensorflow.datasets import DatasetError, Datasets, make_synthetic
from ros_tensorflow.model import ModelWrapper, NotTrainableError, as_labelled_samples, build_classifier
from ros_tensorflow.persistence import ModelFileError, backup_path, file_digest, load_model, save_model
from ros_tensorflow.sample_store import SampleStore

X, Y = make_synthetic(n_samples=60, seed=5)


# --- SampleStore -------------------------------------------------------------------


def test_store_appends_loads_counts_and_clears_across_reopening(tmp_path):
    store = SampleStore(tmp_path / "s.sqlite")
    store.append(X[:10], Y[:10])
    store.append(X[10:25], Y[10:25])
    store.close()
    store = SampleStore(tmp_path / "s.sqlite")
    assert len(store) == 25
    x, y = store.load(10)
    np.testing.assert_array_equal(x, X[:25])
    np.testing.assert_array_equal(y, Y[:25])
    with pytest.raises(ValueError, match="input_dim 4"):
        store.load(4)
    store.clear()
    assert len(store) == 0 and store.load(10)[0].shape == (0, 10)


def test_store_keeps_every_committed_sample_through_sigkill(tmp_path):
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import numpy as np
            from ros_tensorflow.sample_store import SampleStore
            store = SampleStore({str(tmp_path / "s.sqlite")!r})
            for i in range(100000):
                store.append(np.full((3, 10), float(i)), [0, 1, 0])
                print(len(store), flush=True)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(300):
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    x, y = SampleStore(tmp_path / "s.sqlite").load(10)
    assert len(x) >= acknowledged and len(x) % 3 == 0, "a record is missing or half-written"
    np.testing.assert_array_equal(x[::3, 0], np.arange(len(x) // 3))


# --- labelled samples and datasets ---------------------------------------------


@pytest.mark.parametrize(
    "data, labels, reason",
    [
        ([0.5] * 20, [0], r"expected labels of shape \(2,\), one per sample, got shape \(1,\)"),
        ([0.5] * 20, [[0], [1]], r"expected labels of shape \(2,\), one per sample, got shape \(2, 1\)"),
        ([0.5] * 20, ["0", "1"], "labels must be numbers, got strings"),
        (["0.5"] * 10, [0], "input values must be numbers, got strings"),
        ([1e39] + [0.5] * 9, [0], "outside float32's range"),
        ([0.5] * 20, [0, 2], r"labels must be in \[0, 2\), got \[2\]"),
        ([0.5] * 20, [-1, 1], "got \\[-1\\]"),
        ([0.5] * 19 + [float("nan")], [0, 1], "NaN or Inf"),
        ([0.5] * 15, [0, 1], "got 15"),
        ([0.5] * 10, [0.5], "integers"),
    ],
)
def test_bad_labelled_samples_are_rejected_whole(data, labels, reason):
    with pytest.raises(ValueError, match=reason):
        as_labelled_samples(data, labels, 10, 2)


@pytest.fixture
def datasets(tmp_path):
    store = SampleStore(tmp_path / "samples.sqlite")
    return Datasets(tmp_path, 10, 2, store, bag_topic="/ros_tensorflow/samples")


def test_synthetic_and_recorded(datasets):
    assert datasets.load("synthetic")[0].shape == (1000, 10)
    with pytest.raises(DatasetError, match="'recorded' is empty"):
        datasets.load("recorded")
    datasets.sample_store.append(X, Y)
    x, y = datasets.load("recorded")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_npz_csv_and_bag_files_load(datasets, tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("# ten features, then the label\n")
        np.savetxt(f, np.column_stack([X, Y]), delimiter=",")
    with rosbag.Bag(str(tmp_path / "d.bag"), "w") as bag:
        for start in range(0, len(X), 20):
            msg = Sample(data=X[start : start + 20].ravel().tolist(), labels=Y[start : start + 20].tolist())
            bag.write("/ros_tensorflow/samples", msg)
        bag.write("/other", Sample(data=[1.0] * 10, labels=[5]))
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x=X, y=Y)
    for name in ("d.npz", "d.csv", "d.bag", "sub/d.npz", str(tmp_path / "d.npz")):
        x, y = datasets.load(name)
        np.testing.assert_allclose(x, X)
        np.testing.assert_array_equal(y, Y)


def write_bytes(path, data):
    path.write_bytes(data)
    return path.name


def test_bad_dataset_files_give_one_clear_error(datasets, tmp_path):
    np.savez(tmp_path / "good.npz", x=X, y=Y)
    cases = {
        "../outside.npz": "outside the data folder",
        "/etc/passwd.csv": "outside the data folder",
        "sub/../../x.npz": "outside the data folder",
        "missing.npz": "missing.npz not found",
        "data.txt": "unknown dataset 'data.txt'",
        write_bytes(tmp_path / "trunc.npz", (tmp_path / "good.npz").read_bytes()[:200]): "trunc.npz is not a readable",
        write_bytes(tmp_path / "junk.csv", b"1,2,3\nfoo,bar\n"): "junk.csv cannot be used",
        write_bytes(tmp_path / "junk.bag", b"not a bag"): "junk.bag is not a rosbag file",
    }
    np.savez(tmp_path / "no_y.npz", x=X)
    cases["no_y.npz"] = r"lacks the arrays \['y'\]"
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object), y=Y[:1])
    cases["pickled.npz"] = "pickled.npz cannot be used"
    np.savez(tmp_path / "labels.npz", x=X, y=Y + 5)
    cases["labels.npz"] = r"labels.npz cannot be used: labels must be in \[0, 2\)"
    np.savetxt(tmp_path / "cols.csv", X, delimiter=",")
    cases["cols.csv"] = "has 10 columns, expected 10 features and a label"
    np.savez(tmp_path / "y2d.npz", x=X, y=Y[:, None])
    cases["y2d.npz"] = r"expected labels of shape \(60,\), one per sample, got shape \(60, 1\)"
    np.save(tmp_path / "single.npy", X)
    cases[write_bytes(tmp_path / "single.npz", (tmp_path / "single.npy").read_bytes())] = "a single .npy array"
    np.savez(tmp_path / "strings.npz", x=X.astype(str), y=Y)
    cases["strings.npz"] = "array x must be numbers, got strings"
    np.savez(tmp_path / "big.npz", x=X * 1e300, y=Y)
    cases["big.npz"] = "outside float32's range"
    cases[write_bytes(tmp_path / "binary.csv", bytes(range(128, 256)) * 8)] = "not a text CSV file: byte 0"
    cases[write_bytes(tmp_path / "empty.csv", b"")] = "has no data rows"
    cases[write_bytes(tmp_path / "random.bag", bytes(range(128, 256)) * 8)] = "not a rosbag file"
    with rosbag.Bag(str(tmp_path / "strings.bag"), "w") as bag:
        bag.write("/ros_tensorflow/samples", String(data="hello"))
    cases["strings.bag"] = (
        "holds std_msgs/String messages on topic /ros_tensorflow/samples, expected ros_tensorflow_msgs/Sa"
    )
    with rosbag.Bag(str(tmp_path / "elsewhere.bag"), "w") as bag:
        bag.write("/other", Sample(data=[1.0] * 10, labels=[1]))
    cases["elsewhere.bag"] = r"no Sample messages on topic /ros_tensorflow/samples \(its topics: /other"
    for name, reason in cases.items():
        with pytest.raises(DatasetError, match=reason):
            datasets.load(name)


# --- models on disk ------------------------------------------------------------------


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


def test_a_save_never_replaces_the_backup_with_a_file_that_does_not_load(tmp_path):
    path = tmp_path / "model.keras"
    good, newer, newest = build_classifier(), build_classifier(), build_classifier()
    save_model(good, path)
    save_model(newer, path)  # the backup is now `good`
    path.write_bytes(os.urandom(5000))
    save_model(newest, path)
    np.testing.assert_allclose(predictions_of(backup_path(path)), good.predict(X, verbose=0), atol=1e-6)
    np.testing.assert_allclose(predictions_of(path), newest.predict(X, verbose=0), atol=1e-6)


def test_a_model_file_put_there_by_hand_becomes_the_backup_and_a_known_one_is_not_loaded_again(tmp_path):
    path = tmp_path / "model.keras"
    by_hand = build_classifier()
    by_hand.save(path)
    digest = save_model(build_classifier(), path)
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
    model = build_classifier(input_dim=4, output_dim=3)
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


def test_models_of_other_shapes_are_refused(tmp_path):
    images = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    images.save(tmp_path / "images.keras")
    with pytest.raises(ModelFileError, match=r"expected input \(k, input_dim\)"):
        load_model(tmp_path / "images.keras")


def test_saved_model_is_served_for_prediction_only(tmp_path):
    model = build_classifier()
    model.export(str(tmp_path / "exported"), verbose=False)
    loaded, trainable = load_model(tmp_path / "exported")
    assert not trainable
    wrapper = ModelWrapper(loaded, trainable=False)
    np.testing.assert_allclose(wrapper.predict(X), model.predict(X, verbose=0), atol=1e-5)
    with pytest.raises(NotTrainableError, match="prediction only"):
        wrapper.train(X, Y, epochs=1)


def test_an_uncompiled_model_is_compiled_to_train():
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    wrapper = ModelWrapper(model)
    assert len(wrapper.train(X, Y, epochs=2).history["loss"]) == 2


# --- optional Keras callbacks --------------------------------------------------------


def test_early_stopping_stops_when_nothing_improves():
    wrapper = ModelWrapper(learning_rate=0.0)  # val_loss, on the same validation samples each epoch, stays put
    callbacks = optional_callbacks(early_stopping_patience=2, validation=True)
    history = wrapper.train(X, Y, epochs=20, validation_split=0.25, callbacks=callbacks)
    assert len(history.history["loss"]) == 3


def test_every_goal_gets_a_tensorboard_folder_of_its_own(tmp_path):
    # Three goals within the same second: the old per-second names made them share one run.
    logdirs = [optional_callbacks(tensorboard_dir=str(tmp_path))[0].log_dir for _ in range(3)]
    assert len(set(logdirs)) == 3 and all(os.path.isdir(logdir) for logdir in logdirs)


def test_tensorboard_logs_are_written(tmp_path):
    ModelWrapper().train(X, Y, epochs=2, callbacks=optional_callbacks(tensorboard_dir=str(tmp_path)))
    events = [name for _, _, files in os.walk(tmp_path) for name in files if name.startswith("events.out.tfevents")]
    assert events
