"""Settings: one source of truth for the parameters, and the files that must agree with it."""

import pathlib
import re

import pytest
import yaml

from ros_tensorflow.tf_free.settings import PARAMETERS, Settings, parameters_of

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
README = PACKAGE.parent / "README.md"
TYPE_NAMES = {
    "int > 0": "int",
    "int >= 0": "int",
    "finite >= 0": "double",
    "int > 1": "int",
    "int": "int",
    "list of finite": "list",
    "str": "string",
    "bool": "bool",
    "list of int > 0": "list",
    "list of str": "list",
}


@pytest.mark.parametrize("node, config", [("train", "default.yaml"), ("serve", "serve.yaml")])
def test_each_nodes_config_holds_every_parameter_of_that_node_with_its_default(node, config):
    values = yaml.safe_load((PACKAGE / "config" / config).read_text())
    assert values == {name: parameter.default for name, parameter in parameters_of(node).items()}


def test_the_serving_node_has_no_training_parameter_and_refuses_one_in_a_change():
    settings = Settings(node="serve")
    assert not hasattr(settings, "learning_rate") and settings.model_topic == ""
    with pytest.raises(ValueError, match="unknown parameters"):
        settings.replace(learning_rate=0.1)


def readme_default(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`" if value else "''"
    return repr(value)


def test_the_readme_table_lists_every_parameter_with_its_type_and_default():
    rows = re.findall(r"^\| `~(\w+)` \| (\w+) \| ([^|]+) \|", README.read_text(), re.MULTILINE)
    table = {name: (type_name, default.strip()) for name, type_name, default in rows}
    assert set(table) == set(PARAMETERS)
    for name, parameter in PARAMETERS.items():
        type_name, default = table[name]
        assert type_name == TYPE_NAMES.get(parameter.rule, "string"), name  # 'one of: ...' are strings
        assert default.startswith(readme_default(parameter.default)), f"{name}: README says {default}"


def test_defaults_and_a_lookup_fill_the_settings():
    assert Settings().max_batch == 256
    settings = Settings(lambda name, default: {"max_batch": 8, "learning_rate": 1}.get(name, default))
    assert settings.max_batch == 8 and settings.learning_rate == 1.0 and isinstance(settings.learning_rate, float)


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("input_dim", 0, "must be int > 0, got 0"),
        ("max_batch", 2.5, "must be int > 0, got 2.5"),
        ("publish_queue_size", -1, "must be int >= 0, got -1"),
        ("learning_rate", -0.1, "must be finite >= 0, got -0.1"),
        ("loop_rate", float("nan"), "must be finite >= 0, got nan"),
        ("early_stopping_patience", True, "must be int >= 0, got True"),
        ("save_on_cancel", "yes", "must be bool, got 'yes'"),
        ("dataset", 5, "must be str, got 5"),
        ("serving_backend", "tflite", "must be one of: litert, tensorflow, got 'tflite'"),
        ("learning_rate", float("inf"), "must be finite >= 0, got inf"),
        ("output_dim", 1, "must be > 1 for a classifier (one output per class), got 1"),
        ("output_dim", 0, "must be int > 0, got 0"),
        (
            "task",
            "detect",
            "must be one of: '', classification, regression, detection, segmentation, tensors, got 'detect'",
        ),
        ("input_mean", [], "must be list of finite, got []"),
        ("label_offset", 0.5, "must be int, got 0.5"),
        ("loss", "mse2", "must be one of: mse, mae, huber, got 'mse2'"),
        ("input_shape", [16, 16, 4], "must be [height, width, channels] with 1 (grey) or 3 (RGB) channels"),
    ],
)
def test_a_value_that_breaks_its_rule_is_refused_naming_the_parameter(name, value, reason):
    with pytest.raises(ValueError, match=re.escape(f"parameter /node/{name} {reason}")):
        Settings(lambda n, default: value if n == name else default, name_of=lambda n: f"/node/{n}")
    with pytest.raises(ValueError, match=re.escape(f"parameter ~{name} {reason}")):
        Settings().replace(**{name: value})


def test_a_regression_model_may_have_one_output_and_a_fresh_one_gets_the_task_and_loss():
    settings = Settings().replace(task="regression", output_dim=1, loss="huber")
    assert settings.fresh_model()["output_dim"] == 1
    assert (settings.fresh_model()["task"], settings.fresh_model()["loss"]) == ("regression", "huber")


def test_replace_gives_a_checked_copy_and_leaves_the_original():
    settings = Settings()
    changed = settings.replace(max_batch=64, save_on_cancel=True)
    assert (changed.max_batch, changed.save_on_cancel) == (64, True)
    assert settings == Settings() and changed != settings
    with pytest.raises(ValueError, match="unknown parameters"):
        settings.replace(max_batches=64)
