"""A regression model in the training node, as users reach it: recorded Sample targets (and the refusals), the
train action's MAE, /predict's values, the evaluate action, ~list_versions, and tfctl."""

import math

import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import Diagnostics
from ros_tensorflow_msgs.msg import Sample, TrainGoal
from ros_tensorflow_msgs.srv import ListVersions, Predict
from test_tfctl import Tfctl

from ros_tensorflow.tf_free.datasets import make_synthetic_regression


def test_a_regression_node_records_targets_refuses_labels_trains_predicts_and_evaluates(launch_node, tmp_path):
    node, client = launch_node(config=_config(tmp_path))
    diagnostics = Diagnostics()
    status = diagnostics.wait_until(lambda s: s["task"] == "regression", "the task on /diagnostics")
    assert status["samples_stored"] == "0"
    pub = rospy.Publisher("/ros_tensorflow/samples", Sample, queue_size=10)
    wait_for(lambda: pub.get_num_connections(), 30, "the node on ~samples")
    x, y = make_synthetic_regression(400, 10, 2, seed=4)
    bad = [
        Sample(data=x[:2].ravel().tolist(), labels=[0, 1]),  # labels for a regressor
        Sample(data=x[:2].ravel().tolist(), targets=y[:2].ravel().tolist()[:3]),  # wrong count
        Sample(data=x[:2].ravel().tolist(), targets=[1.0, math.nan, 2.0, 3.0]),  # NaN
    ]
    for msg in bad:
        pub.publish(msg)
    diagnostics.wait_until(lambda s: s["samples_rejected"] == "3", "the three messages rejected")
    pub.publish(Sample(data=x.ravel().tolist(), targets=y.ravel().tolist()))
    diagnostics.wait_until(lambda s: s["samples_stored"] == "400", "400 samples stored")
    # the first refusal's warning (they are throttled; test_regression.py checks the others' words)
    assert "rejected a ~samples message: it has labels, but the model is a regression model: send targets" in node.log()

    status, out, err = Tfctl("train", "--epochs", 2, "--dataset", "recorded").wait(300)
    assert status == 0 and "mae" in out and " acc " not in out, out + err
    feedback = []
    client.send_goal(TrainGoal(epochs=30, validation_split=0.2, dataset="recorded"), feedback_cb=feedback.append)
    client.wait_for_result(rospy.Duration(300))
    result = client.get_result()
    assert client.get_state() == GoalStatus.SUCCEEDED, result.message
    assert math.isnan(result.acc) and math.isnan(result.val_acc)
    assert result.val_mae < 0.25 * y.std() and not math.isnan(feedback[-1].mae)

    answer = rospy.ServiceProxy("/predict", Predict)(x[:3].ravel().tolist())
    assert (list(answer.classes), list(answer.labels), answer.i_class) == ([], [], -1) and math.isnan(answer.confidence)
    predicted = np.reshape(answer.output, (3, 2))
    assert np.abs(predicted - y[:3]).mean() < 0.3 * y.std()  # in the targets' units: around 50

    versions = rospy.ServiceProxy("/ros_tensorflow/list_versions", ListVersions)().versions
    assert versions[-1].task == "regression" and versions[-1].val_mae == result.val_mae
    assert math.isnan(versions[-1].val_acc)

    np.save(tmp_path / "samples.npy", x[:2])
    status, out, err = Tfctl("predict", tmp_path / "samples.npy").wait()
    assert status == 0, err
    first = [float(value) for value in out.splitlines()[0].split(": ")[1].split()]
    assert np.abs(np.array(first) - y[0]).mean() < 0.3 * y.std()
    status, out, err = Tfctl("evaluate", "--dataset", "recorded").wait(300)
    assert status == 0, err
    assert "MAE" in out and "RMSE" in out and "R2" in out and "predicted_vs_true.png" in out
    status, out, err = Tfctl("versions").wait()
    assert status == 0 and "regression" in out


def _config(tmp_path):
    config = tmp_path / "regression.yaml"
    config.write_text("task: regression\noutput_dim: 2\n")
    return config
