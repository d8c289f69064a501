"""Versions: the folders on their own, and through the ModelKeeper and Trainer on real TensorFlow, without a
master."""

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.files import ModelFileError, load_model_info
from ros_tensorflow.tf_free.sample_store import SampleStore
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.tf_free.versions import Versions
from ros_tensorflow.with_tf.model_keeper import ModelKeeper
from ros_tensorflow.with_tf.training import SUCCEEDED, Trainer, TrainingRequest

PROBE = make_synthetic(n_samples=4, seed=9)[0]


def test_a_version_appears_whole_with_its_meta_and_never_twice(tmp_path):
    versions = Versions(tmp_path / "versions")
    assert versions.numbers() == []
    versions.add(1, {"model.keras": b"m"}, {"version": 1, "val_acc": float("nan"), "acc": 0.5})
    assert versions.numbers() == [1] and (versions.folder(1) / "model.keras").read_bytes() == b"m"
    assert versions.meta(1) == {"version": 1, "val_acc": None, "acc": 0.5}  # JSON has no NaN
    with pytest.raises(ModelFileError, match="cannot keep version 1"):
        versions.add(1, {"model.keras": b"other"}, {})
    assert (versions.folder(1) / "model.keras").read_bytes() == b"m"
    assert sorted(os.listdir(tmp_path / "versions")) == ["1"]  # the refused one left nothing


def test_pruning_keeps_the_newest_and_never_the_served(tmp_path):
    versions = Versions(tmp_path)
    for n in range(1, 6):
        versions.add(n, {}, {"version": n})
    assert versions.prune(keep=2, protected={1}) == [2, 3]
    assert versions.numbers() == [1, 4, 5]
    assert versions.prune(keep=0, protected={4}) == [] and versions.numbers() == [1, 4, 5]
    assert versions.prune(keep=1, protected={1, 4}) == [] and versions.numbers() == [1, 4, 5]
    assert sorted(os.listdir(tmp_path)) == ["1", "4", "5"]


def make_trainer(tmp_path, **settings):
    settings = Settings().replace(**settings)
    keeper = ModelKeeper(tmp_path / "model.keras", settings.fresh_model(), versions_dir=tmp_path / "versions")
    keeper.keep_versions = settings.keep_versions
    return Trainer(keeper, SampleStore(tmp_path / "samples.sqlite"), tmp_path, "/samples"), settings


def train(trainer, settings, epochs=1):
    outcome = trainer.run(TrainingRequest(epochs=epochs, validation_split=0.2), settings)
    assert outcome.state == SUCCEEDED
    trainer.last_export.result(120)
    return outcome


def test_each_goal_becomes_a_version_with_its_files_and_meta(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    first, second = train(trainer, settings), train(trainer, settings)
    assert (first.version, second.version) == (1, 2)
    versions = trainer.keeper.versions
    assert versions.numbers() == [1, 2]
    folder = versions.folder(2)
    assert sorted(os.listdir(folder)) == ["meta.json", "model.info.json", "model.keras", "model.tflite"]
    assert (folder / "model.tflite").read_bytes() == (tmp_path / "model.tflite").read_bytes()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["samples"] == 1000 and meta["epochs"] == 1
    assert meta["val_acc"] == second.metrics["val_acc"] and meta["version"] == 2
    assert load_model_info(folder / "model.keras")["version"] == 2 == trainer.keeper.wrapper.version


def test_keep_versions_prunes_the_oldest_but_never_the_served(tmp_path):
    trainer, settings = make_trainer(tmp_path, keep_versions=2)
    for _ in range(2):
        train(trainer, settings)
    trainer.keeper.activate(1)
    for _ in range(2):
        train(trainer, settings)  # versions 3 and 4 are served in turn: 1 was served when 3 came
    assert trainer.keeper.versions.numbers() == [3, 4]
    trainer.keeper.activate(3)
    train(trainer, settings)  # 5: served now, so 3 may go
    assert trainer.keeper.versions.numbers() == [4, 5]


def test_activate_serves_a_version_now_and_after_a_restart(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    train(trainer, settings)
    keeper = trainer.keeper
    version_1 = keeper.wrapper.predict(PROBE)
    train(trainer, settings, epochs=3)
    assert not np.allclose(keeper.wrapper.predict(PROBE), version_1, atol=1e-6)
    announced = []
    keeper.on_export = announced.append
    keeper.activate(1)
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), version_1, atol=1e-6)
    assert keeper.wrapper.version == 1 and announced[-1].info["version"] == 1  # robots roll back with it
    restarted = ModelKeeper(tmp_path / "model.keras", settings.fresh_model(), versions_dir=tmp_path / "versions")
    assert restarted.announce_at_startup() is None  # in step: no new export, no new version
    np.testing.assert_allclose(restarted.wrapper.predict(PROBE), version_1, atol=1e-6)
    assert restarted.wrapper.version == 1 and restarted.versions.numbers() == [1, 2]
    assert restarted.reserve_version() == 3  # one sequence: the next goal is a new number


def test_an_unknown_or_broken_version_is_refused_and_the_current_model_stays(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    train(trainer, settings)
    train(trainer, settings)
    keeper = trainer.keeper
    before = keeper.wrapper.predict(PROBE)
    with pytest.raises(ModelFileError, match=r"there is no version 9 \(kept: \[1, 2\]\)"):
        keeper.activate(9)
    (keeper.versions.folder(1) / "model.keras").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        keeper.activate(1)
    assert keeper.wrapper.version == 2
    np.testing.assert_allclose(keeper.wrapper.predict(PROBE), before, atol=1e-6)


def test_a_model_found_at_start_up_becomes_a_version(tmp_path):
    trainer, settings = make_trainer(tmp_path)
    train(trainer, settings)
    shutil.rmtree(tmp_path / "versions")  # as before versions existed
    keeper = ModelKeeper(tmp_path / "model.keras", settings.fresh_model(), versions_dir=tmp_path / "versions")
    assert keeper.announce_at_startup() is None
    assert keeper.versions.numbers() == [1] and keeper.versions.meta(1)["found_at_startup"] is True
    assert (keeper.versions.folder(1) / "model.tflite").is_file()


def test_if_better_keeps_the_served_model_when_the_new_one_is_worse(tmp_path):
    x, y = make_synthetic(n_samples=1000, seed=5)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    np.savez(tmp_path / "inverted.npz", x=x, y=1 - y)  # labels a careless recording swapped: trains a worse model
    trainer, settings = make_trainer(tmp_path, promote="if_better", eval_dataset="good.npz")
    first = trainer.run(TrainingRequest(epochs=5, dataset="good.npz"), settings)
    trainer.last_export.result(120)
    assert first.promoted and first.version == 1 and "; promoted: accuracy" in first.message
    on_disk = {name: (tmp_path / name).read_bytes() for name in ("model.keras", "model.tflite")}
    before = trainer.keeper.wrapper.predict(PROBE)

    worse = trainer.run(TrainingRequest(epochs=5, dataset="inverted.npz"), settings)
    assert worse.state == SUCCEEDED and not worse.promoted and worse.version == 2
    served_accuracy = float(worse.message.split("against the served model's ")[1].split()[0])
    assert "; not promoted: accuracy 0.0" in worse.message and served_accuracy > 0.9
    assert "on 1000 samples of 'good.npz'; kept as version 2, the served model stays" in worse.message
    np.testing.assert_allclose(trainer.keeper.wrapper.predict(PROBE), before, atol=1e-6)
    assert trainer.keeper.wrapper.version == 1
    assert {name: (tmp_path / name).read_bytes() for name in on_disk} == on_disk  # neither saved nor exported
    versions = trainer.keeper.versions
    assert versions.numbers() == [1, 2] and versions.meta(2)["served"] is False
    assert trainer.run(TrainingRequest(epochs=1, dataset="good.npz"), settings).version == 3  # a newer one after it
    trainer.last_export.result(120)
    trainer.keeper.activate(2)  # kept, so it can still be served on purpose
    assert trainer.keeper.wrapper.predict(PROBE).argmax(axis=1).tolist() != before.argmax(axis=1).tolist()
    deadline = time.monotonic() + 120  # exported now, under its own number, for the serving nodes and restarts
    while trainer.keeper.exported.info["version"] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trainer.keeper.exported.info["version"] == 2 and (versions.folder(2) / "model.tflite").is_file()
    assert load_model_info(tmp_path / "model.keras")["version"] == 2 and versions.numbers() == [1, 2, 3]
    assert trainer.keeper.wrapper.version == 2  # the version served, not the highest number handed out


def test_if_better_compares_on_the_validation_split_and_needs_one(tmp_path):
    trainer, settings = make_trainer(tmp_path, promote="if_better")
    refused = trainer.run(TrainingRequest(epochs=1), settings)
    assert refused.state == "aborted" and refused.message.startswith("~promote is if_better: send a validation_split")
    better = trainer.run(TrainingRequest(epochs=3, validation_split=0.2), settings)  # against a fresh model
    assert better.promoted and "promoted: accuracy" in better.message
    assert "on 200 samples of the goal's validation split (warning: ~promote is if_better without ~eval_dataset" in (
        better.message
    )


def test_a_diverged_goal_leaves_the_served_version_its_number_and_folder_and_pruning_says_what_it_removes(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    x, y = make_synthetic(n_samples=400, seed=5)
    np.savez(tmp_path / "trusted.npz", x=x, y=y)
    np.savez(tmp_path / "swapped.npz", x=x, y=1 - y)
    trainer, settings = make_trainer(tmp_path, promote="if_better", eval_dataset="trusted.npz", keep_versions=1)
    assert train(trainer, settings, epochs=3).version == 1
    keeper, folder = trainer.keeper, trainer.keeper.versions.folder(1)
    kept = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    trainer.learning_rate = 1e308
    diverged = trainer.run(TrainingRequest(epochs=2, validation_split=0.2), settings)
    assert diverged.state == "aborted" and "learning rate 1e+308" in diverged.message
    assert keeper.wrapper.version == 1  # /predict's model_version, ~list_versions' served
    trainer.learning_rate = 0.1
    for number in (2, 3):
        worse = trainer.run(TrainingRequest(epochs=3, dataset="swapped.npz"), settings)
        assert not worse.promoted and worse.version == number and keeper.wrapper.version == 1
    assert keeper.versions.numbers() == [1, 3]  # the newest and the served one
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == kept
    assert "removed versions [2] (~keep_versions 1; kept the served version 1)" in caplog.text
    restarted = ModelKeeper(tmp_path / "model.keras", settings.fresh_model(), versions_dir=tmp_path / "versions")
    assert restarted.announce_at_startup() is None and restarted.wrapper.version == 1
    assert restarted.versions.meta(1)["samples"] == 1000


def test_pruning_never_removes_the_version_a_restart_serves(tmp_path):
    trainer, settings = make_trainer(tmp_path, keep_versions=1)
    train(trainer, settings)
    trainer.keeper.wrapper.commit()  # weights that are no version (a cancelled goal's, say), not saved
    assert trainer.keeper.wrapper.version == 0
    assert trainer.keeper.keep_unserved({"dataset": "synthetic"}) == 2
    assert trainer.keeper.versions.numbers() == [1, 2]  # 1 is still what ~model_path holds
