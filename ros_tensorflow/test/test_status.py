"""The /diagnostics levels, messages and values, decided without ROS."""

import os

from ros_tensorflow.tf_free.sample_store import SampleStore
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.tf_free.status import ERROR, OK, WARN, Counters, model_status, stream_status
from ros_tensorflow.with_tf.model_keeper import ModelKeeper
from ros_tensorflow.with_tf.training import Trainer


def make(tmp_path):
    keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model())
    return keeper, Trainer(keeper, SampleStore(tmp_path / "s.sqlite"), tmp_path, "/samples")


def test_counters_give_the_stream_over_the_last_window():
    dropped = [0]
    counters = Counters(lambda: dropped[0])
    counters.inputs_received, counters.predictions_published, dropped[0] = 30, 25, 5
    counters.close_window()
    assert {k: counters.last_window[k] for k in ("received", "published", "dropped")} == {
        "received": 30,
        "published": 25,
        "dropped": 5,
    }
    counters.inputs_received += 10
    counters.close_window()
    assert counters.last_window["received"] == 10 and counters.last_window["dropped"] == 0
    level, _, values = stream_status(counters)
    assert level == OK and values["inputs dropped in window"] == "0"


def test_model_status_is_ok_warn_while_dropping_and_error_after_a_fallback(tmp_path):
    keeper, trainer = make(tmp_path)
    dropped = [0]
    counters = Counters(lambda: dropped[0])
    counters.close_window()
    level, message, values = model_status(keeper, trainer, counters, 7)
    assert (level, message) == (OK, "idle")
    assert values["state"] == "idle" and values["model"] == "fresh" and values["samples_stored"] == "7"
    assert values["task"] == "classification"
    assert set(values) == {
        "state",
        "epoch",
        "model",
        "task",
        "committed_at",
        "predictions_served",
        "inputs_dropped",
        "inputs_rejected",
        "samples_stored",
        "samples_rejected",
        "images_received",
        "images_rejected",
        "images_dropped",
        "serving",
        "inputs_received",
        "predictions_published",
        "model_version",
        "last_published_version",
    }

    dropped[0] = 3
    counters.close_window()
    assert model_status(keeper, trainer, counters, 7)[:2] == (WARN, "dropping ~input: 3 in the last window")
    assert stream_status(counters)[0] == WARN
    counters.close_window()
    assert model_status(keeper, trainer, counters, 7)[0] == OK, "the warning ends with the window"

    (tmp_path / "model.keras").write_bytes(os.urandom(2000))
    keeper, trainer = make(tmp_path)
    level, message, _ = model_status(keeper, trainer, counters, 0)
    assert level == ERROR and message.startswith(f"not using {tmp_path / 'model.keras'}: cannot load the model")
