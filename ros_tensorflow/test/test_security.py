"""A deployed model locked against changes over ROS (~allow_training: false), through a real master."""

import math

import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import Diagnostics
from ros_tensorflow_msgs.msg import Sample, TrainGoal
from ros_tensorflow_msgs.srv import ActivateVersion, Predict
from std_srvs.srv import Trigger
from test_tfctl import Tfctl

LOCKED = "refused: ~allow_training is false"


def samples_publisher():
    samples = rospy.Publisher("/ros_tensorflow/samples", Sample, queue_size=100)
    wait_for(lambda: samples.get_num_connections(), 30, "the node's ~samples")
    return samples


def test_a_locked_model_refuses_every_change_and_still_serves(launch_node, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("allow_training: false\n")
    node, client = launch_node(config=config)
    diagnostics = Diagnostics()

    client.send_goal(TrainGoal(epochs=1))
    assert client.wait_for_result(rospy.Duration(60))
    result = client.get_result()
    assert client.get_state() == GoalStatus.ABORTED and LOCKED in result.message
    assert (
        result.best_epoch == -1 and math.isnan(result.loss) and math.isnan(result.acc)
    )  # as every goal that trained none
    status, out, err = Tfctl("train", "--epochs", 1).wait()
    assert status == 1 and f"ABORTED: training is {LOCKED}" in out and "epoch" not in out.split("\n", 1)[1], out + err

    samples = samples_publisher()
    samples.publish(Sample(data=[0.5] * 10, labels=[1]))
    status = diagnostics.wait_until(lambda s: s["samples_rejected"] == "1", "the sample rejected")
    assert status["samples_stored"] == "0"
    samples.unregister()

    # ~save too: it replaces the backup, the locked robot's only copy to roll back to.
    for service in ("/ros_tensorflow/clear_samples", "/ros_tensorflow/reload", "/ros_tensorflow/save"):
        rospy.wait_for_service(service, 30)
        answer = rospy.ServiceProxy(service, Trigger)()
        assert not answer.success and LOCKED in answer.message, service
    answer = rospy.ServiceProxy("/ros_tensorflow/activate_version", ActivateVersion)(1)
    assert not answer.success and LOCKED in answer.message
    assert len(rospy.ServiceProxy("/predict", Predict)([0.5] * 10).classes) == 1
    assert not list((tmp_path / "data").glob("model*")), "nothing saved"


def test_recording_stops_at_max_stored_samples_and_with_accept_samples_false(launch_node, tmp_path):
    config = tmp_path / "flood.yaml"
    config.write_text("max_stored_samples: 5\n")
    node, _ = launch_node(config=config)
    diagnostics = Diagnostics()
    samples = samples_publisher()
    for i in range(20):  # a flood: the first 5 fit, every later one is refused, none of the first dropped
        samples.publish(Sample(data=[float(i)] * 10, labels=[i % 2]))
    status = diagnostics.wait_until(lambda s: s["samples_rejected"] == "15", "15 samples refused")
    assert status["samples_stored"] == "5"
    samples.unregister()
    node.stop()

    config.write_text("accept_samples: false\n")
    launch_node(config=config)  # the same data_dir: the 5 stay
    samples = samples_publisher()
    samples.publish(Sample(data=[0.5] * 10, labels=[1]))
    status = diagnostics.wait_until(lambda s: s["samples_rejected"] == "1", "the sample refused")
    assert status["samples_stored"] == "5"
    samples.unregister()
