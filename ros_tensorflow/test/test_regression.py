"""Regression, without a master: the task of a model, targets in datasets and the store, training on targets of any
scale, evaluation, export and serving without TensorFlow."""

import json

import keras
import numpy as np
import pytest
import rosbag
from geometry_msgs.msg import Twist
from ros_tensorflow_msgs.msg import ImageSample, Sample
from sensor_msgs.msg import Image, Joy
from sklearn.metrics import mean_absolute_error, r2_score
from std_msgs.msg import Float32, Float64MultiArray
from test_training import make_trainer

from ros_tensorflow.tf_free.commands import check_fields, field_values, fill_twist
from ros_tensorflow.tf_free.datasets import DatasetError, Datasets, make_synthetic_regression
from ros_tensorflow.tf_free.evaluation import evaluate_regression, write_report
from ros_tensorflow.tf_free.plots import curves_figure
from ros_tensorflow.tf_free.sample_store import SampleStore
from ros_tensorflow.tf_free.samples import as_target_samples, output_rows
from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.tf_free.signing import model_fields, signed_payload
from ros_tensorflow.tf_free.tasks import TaskError
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, TfliteKeeper, TfliteModel
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import ModelWrapper, build_model, fit_target_scale, task_of_model
from ros_tensorflow.with_tf.model_keeper import ModelKeeper
from ros_tensorflow.with_tf.persistence import ModelFileError
from ros_tensorflow.with_tf.training import SUCCEEDED, TrainingRequest

REGRESSION = Settings().replace(task="regression", output_dim=2).fresh_model()


def trained_regressor(scale=1.0, offset=0.0, epochs=30):
    keras.utils.set_random_seed(1)
    x, y = make_synthetic_regression(1000, 10, 2, seed=0)
    wrapper = ModelWrapper(input_dim=10, output_dim=2, task="regression", serving_backend="tensorflow")
    wrapper.train(x, y * scale + offset, epochs=epochs, validation_split=0.2)
    return wrapper, x, y * scale + offset


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e4, 1e6), (1e-4, -3e-3)])
def test_targets_of_any_scale_train_stably_and_predictions_come_in_the_users_units(scale, offset):
    wrapper, x, y = trained_regressor(scale, offset)
    predicted = wrapper.predict(x[800:])
    # as well at every scale: well under the targets' spread (a model that learnt nothing: MAE ~0.8 std)
    assert mean_absolute_error(y[800:], predicted) < 0.2 * y.std(axis=0).mean()
    assert r2_score(y[800:], predicted) > 0.9


def test_refitting_the_target_scale_keeps_a_trained_models_function():
    wrapper, x, y = trained_regressor(epochs=3)
    before = wrapper.model.predict(x[:20], verbose=0)
    fit_target_scale(wrapper.model, y[:100] * 3 + 7)
    np.testing.assert_allclose(wrapper.model.predict(x[:20], verbose=0), before, rtol=1e-3, atol=1e-2)


def test_a_models_task_comes_from_its_loss_and_output_and_a_contradicting_task_is_refused():
    regressor, classifier = build_model(10, 2, task="regression"), build_model(10, 3)
    assert (task_of_model(regressor), task_of_model(classifier)) == ("regression", "classification")
    assert task_of_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None  # it does not say
    with pytest.raises(TaskError, match="~task is classification, but the model is a regression model"):
        ModelWrapper(regressor, task="classification")
    assert ModelWrapper(regressor).task == "regression"


@pytest.mark.parametrize(
    "targets, reason",
    [
        ([1.0, 2.0, 3.0], "expected targets of 2 samples x 2 outputs = 4 values, got 3"),
        ([1.0, float("nan"), 3.0, 4.0], "targets contain NaN, Inf"),
        ([1.0, float("inf"), 3.0, 4.0], "targets contain NaN, Inf"),
    ],
)
def test_targets_of_the_wrong_count_or_not_finite_are_refused_naming_the_field(targets, reason):
    with pytest.raises(ValueError, match=reason):
        as_target_samples(np.zeros(20), targets, 10, 2)


def test_datasets_give_targets_to_a_regression_model(tmp_path):
    x, y = make_synthetic_regression(50, 4, 2, seed=3)
    np.savez(tmp_path / "flat.npz", x=x, y=y[:, 0])
    np.savez(tmp_path / "two.npz", x=x, y=y)
    np.savetxt(tmp_path / "two.csv", np.hstack([x, y]), delimiter=",")
    one = Datasets(tmp_path, 4, 1, task="regression")
    assert one.load("flat.npz")[1].shape == (50, 1)
    two = Datasets(tmp_path, 4, 2, task="regression")
    for name in ("two.npz", "two.csv"):
        loaded_x, loaded_y = two.load(name)
        np.testing.assert_allclose(loaded_y, y)
        np.testing.assert_allclose(loaded_x, x)
    with pytest.raises(DatasetError, match="expected 4 features and 1 targets"):
        one.load("two.csv")
    synthetic_x, synthetic_y = Datasets(tmp_path, 4, 2, task="regression", seed=1).load("synthetic")
    assert synthetic_y.dtype == np.float64 and synthetic_y.shape == (1000, 2) and synthetic_y.std() > 5


def test_an_image_folder_is_refused_for_a_regression_model(tmp_path):
    (tmp_path / "images" / "left").mkdir(parents=True)
    with pytest.raises(DatasetError, match="folder of images, which names classes: a regression model learns targets"):
        Datasets(tmp_path, (8, 8, 3), 1, task="regression").load("images")


def test_the_store_keeps_targets_and_refuses_to_mix_them_with_labels(tmp_path):
    store = SampleStore(tmp_path / "samples.sqlite")
    store.append(np.ones((3, 4)), np.array([[1.5, -2.0], [3.0, 4.0], [5.0, 6.25]]))
    reopened = SampleStore(tmp_path / "samples.sqlite")  # committed: a killed node loses none
    x, y = reopened.load(4, "regression")
    np.testing.assert_array_equal(y, [[1.5, -2.0], [3.0, 4.0], [5.0, 6.25]])
    with pytest.raises(ValueError, match="recorded for another model .3 with targets .regression. and 0 with labels"):
        reopened.load(4)
    reopened.append(np.ones((1, 4)), [1])
    with pytest.raises(ValueError, match="this one is a regression model"):
        reopened.load(4, "regression")


def test_evaluation_gives_scikit_learns_metrics_and_a_predicted_against_true_picture(tmp_path):
    x = np.arange(20, dtype=float).reshape(10, 2)
    y = x * [1.0, -2.0] + 0.5
    evaluation = evaluate_regression(lambda samples: samples * [1.0, -2.0], x, y, version=3)
    assert evaluation.mae == pytest.approx(0.5) and evaluation.rmse == pytest.approx(0.5)
    assert evaluation.output_mae == pytest.approx([0.5, 0.5])
    assert evaluation.output_r2 == pytest.approx(r2_score(y, x * [1.0, -2.0], multioutput="raw_values"))
    picture = write_report(evaluation, tmp_path, "d.npz")
    assert (tmp_path / "predicted_vs_true.png").read_bytes()[:4] == b"\x89PNG" and picture.ndim == 3
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mae"] == pytest.approx(0.5) and "predicted" not in report


def test_regression_rows_carry_values_and_no_class():
    rows = output_rows("regression", np.array([[1.5, 2.0]], np.float32))
    assert rows[0][0] == -1 and np.isnan(rows[0][1]) and rows[0][2] == [1.5, 2.0]
    with pytest.raises(ValueError):
        output_rows("regression", np.array([[np.nan, 2.0]], np.float32))


def test_a_regression_model_is_kept_reloaded_and_a_contradicting_task_stops_the_node(tmp_path):
    path = tmp_path / "model.keras"
    keeper = ModelKeeper(path, REGRESSION, versions_dir=tmp_path / "versions")
    x, y = make_synthetic_regression(200, 10, 2, seed=0)
    with keeper.training() as wrapper:
        wrapper.train(x, y, epochs=2)
        keeper.write()
    keeper.export_tflite().result(120)
    assert json.loads((tmp_path / "model.info.json").read_text())["task"] == "regression"
    keeper.close()
    again = ModelKeeper(path, Settings().fresh_model())  # ~task '': the model's own
    assert again.wrapper.task == "regression" and again.source == str(path)
    with pytest.raises(TaskError, match="~task is classification, but the model .* is a regression model"):
        ModelKeeper(path, Settings().replace(task="classification").fresh_model())
    classifier = ModelKeeper(tmp_path / "other.keras", Settings().replace(task="classification").fresh_model())
    (tmp_path / "other.keras").write_bytes(path.read_bytes())  # a regression model where a classifier was
    with pytest.raises(ModelFileError, match="is a regression model"):
        classifier.reload()
    assert classifier.wrapper.task == "classification"  # the current model stays


@pytest.fixture(scope="module")
def regressor_in_hundreds():
    return trained_regressor(scale=100.0, offset=1000.0)


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic", "int8"])
def test_every_export_serves_values_in_the_users_units_without_tensorflow(quantization, regressor_in_hundreds):
    wrapper, x, y = regressor_in_hundreds
    flatbuffer = to_tflite(wrapper.model, quantization, representative=x[:300].astype(np.float32))
    served = TfliteModel(flatbuffer, task="regression")
    predicted, keras_predicted = served.predict_samples(x[800:]), wrapper.predict(x[800:])
    spread = y.std(axis=0).mean()
    tolerance = 0.1 if quantization == "int8" else 0.01  # int8: 256 steps over the outputs' range
    assert np.abs(predicted - keras_predicted).mean() < tolerance * spread
    assert mean_absolute_error(y[800:], predicted) < 0.25 * spread


def test_a_regression_model_is_not_served_as_a_classifier_nor_under_a_contradicting_task(tmp_path):
    flatbuffer = to_tflite(build_model(10, 2, task="regression"))
    with pytest.raises(ModelRefused, match="for a regression model set ~task regression"):
        TfliteModel(flatbuffer)  # no task said: its outputs are no probabilities
    with pytest.raises(ModelRefused, match="~task is classification, but it is a regression model"):
        TfliteModel(flatbuffer, task="regression", wanted_task="classification")
    assert TfliteModel(flatbuffer, wanted_task="regression").task == "regression"
    assert TfliteKeeper(tmp_path / "model.tflite", task="regression").task == "regression"


def test_the_task_is_signed_for_regression_and_a_classifiers_signature_is_unchanged():
    classifier = model_fields(1, 1, "ab", [10], 2, [], "/t", "classification")
    assert classifier == model_fields(1, 1, "ab", [10], 2, [], "/t")  # signatures made before tasks hold
    regressor = model_fields(1, 1, "ab", [10], 2, [], "/t", "regression")
    assert signed_payload(regressor) != signed_payload(classifier)
    assert b'"task":"regression"' in signed_payload(regressor)


@pytest.mark.parametrize("outputs, loss", [(1, None), (3, "mse"), (3, keras.losses.MeanAbsoluteError()), (2, "huber")])
def test_a_users_regression_model_brings_its_task_or_is_refused_until_task_says_so(tmp_path, outputs, loss):
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(outputs)])
    if loss is not None:
        model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    if loss is None:  # a linear output, uncompiled: values or logits, it does not say
        keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model())
        assert keeper.source == "fresh" and "for a regression model set ~task regression" in keeper.fallback_error
        regression = Settings().replace(task="regression", output_dim=1).fresh_model()
        keeper = ModelKeeper(tmp_path / "model.keras", regression)
    else:
        keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model())
    assert keeper.source == str(tmp_path / "model.keras") and keeper.wrapper.task == "regression"
    assert keeper.wrapper.output_dim == outputs


def test_the_gate_compares_mae_and_a_worse_regression_model_is_kept_unserved(tmp_path):
    x, y = make_synthetic_regression(300, 10, 1, seed=2)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    np.savez(tmp_path / "bad.npz", x=x, y=-y)  # the opposite of the truth: worse on good.npz
    trainer, settings = make_trainer(
        tmp_path, task="regression", output_dim=1, promote="if_better", eval_dataset="good.npz"
    )
    first = trainer.run(TrainingRequest(epochs=20, dataset="good.npz"), settings)
    assert first.state == SUCCEEDED and first.promoted and "promoted: MAE" in first.message, first.message
    served = trainer.keeper.wrapper.served_predictor()(x[:5])
    second = trainer.run(TrainingRequest(epochs=20, dataset="bad.npz"), settings)
    assert second.state == SUCCEEDED and not second.promoted, second.message
    assert "not promoted: MAE" in second.message and "against the served model's" in second.message
    np.testing.assert_allclose(trainer.keeper.wrapper.served_predictor()(x[:5]), served)


def test_bags_of_samples_and_image_samples_with_targets_train_a_regression_model(tmp_path):
    x, y = make_synthetic_regression(6, 4, 2, seed=1)
    with rosbag.Bag(str(tmp_path / "s.bag"), "w") as bag:
        bag.write("/samples", Sample(data=x[:3].ravel().tolist(), targets=y[:3].ravel().tolist()))
        bag.write("/samples", Sample(data=x[3:].ravel().tolist(), targets=y[3:].ravel().tolist()))
    loaded_x, loaded_y = Datasets(tmp_path, 4, 2, bag_topic="/samples", task="regression").load("s.bag")
    np.testing.assert_allclose(loaded_y, y)
    with pytest.raises(DatasetError, match="Sample 0 on /samples: it has targets but the model is a classification"):
        Datasets(tmp_path, 4, 2, bag_topic="/samples").load("s.bag")
    pixels = np.full((8, 8, 3), 200, np.uint8)
    image = Image(height=8, width=8, encoding="rgb8", step=24, data=pixels.tobytes())
    with rosbag.Bag(str(tmp_path / "i.bag"), "w") as bag:
        for value in (0.5, -0.25):
            bag.write("/frames", ImageSample(image=image, targets=[value]))
    _, targets = Datasets(tmp_path, (8, 8, 3), 1, bag_topic="/frames", task="regression").load("i.bag")
    np.testing.assert_allclose(targets, [[0.5], [-0.25]])


def test_targets_come_from_the_fields_of_teleop_and_joystick_messages():
    twist = Twist()
    twist.linear.x, twist.angular.z = 0.4, -0.2
    assert field_values(twist, "geometry_msgs/Twist", ["linear.x", "angular.z"]) == [0.4, -0.2]
    assert field_values(twist, "geometry_msgs/Twist", []) == [0.4, 0.0, 0.0, 0.0, 0.0, -0.2]
    assert field_values(Joy(axes=[0.1, 0.7]), "sensor_msgs/Joy", ["axes.1"]) == pytest.approx([0.7])
    assert field_values(Float32(data=2.5), "std_msgs/Float32", []) == [2.5]
    assert field_values(Float64MultiArray(data=[1, 2, 3]), "std_msgs/Float64MultiArray", []) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="axes.3 is beyond the message's 2 values"):
        field_values(Joy(axes=[0.1, 0.7]), "sensor_msgs/Joy", ["axes.3"])
    with pytest.raises(ValueError, match="'angular.w' is not a field of geometry_msgs/Twist"):
        check_fields("geometry_msgs/Twist", ["angular.w"], "~target_fields")
    with pytest.raises(ValueError, match="the type sensor_msgs/Image is none of"):
        check_fields("sensor_msgs/Image", [], "~target_fields")
    driven = fill_twist(twist, ["angular.z"], [0.3])
    assert (driven.linear.x, driven.angular.z) == (0.0, 0.3)  # every other field 0: nothing stale


def test_the_training_curves_of_a_regression_model_show_mae():
    nan = float("nan")
    history = [{"loss": 2.0 / (i + 1), "acc": nan, "val_loss": nan, "val_acc": nan, "mae": 1.0 / (i + 1),
                "val_mae": nan} for i in range(3)]  # fmt: skip
    titles = [axes.get_title() for axes in curves_figure(history, 2).axes]
    assert titles == ["loss", "MAE"]
