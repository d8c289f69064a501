"""The ~input/~prediction stream and the /diagnostics status of the launched node."""

import numpy as np
import pytest
import rospy
from conftest import wait_for
from ros_processes import Diagnostics, node_sends_to
from ros_tensorflow_msgs.msg import Prediction, TrainGoal
from ros_tensorflow_msgs.srv import Predict
from std_msgs.msg import Float64MultiArray

from ros_tensorflow.tf_free.datasets import make_synthetic


class Stream:
    """A publisher to the node's ~input and the predictions it gets back."""

    def __init__(self):
        self.predictions = []
        self.sub = rospy.Subscriber("/ros_tensorflow/prediction", Prediction, self.predictions.append)
        self.pub = rospy.Publisher("/ros_tensorflow/input", Float64MultiArray, queue_size=1000)
        wait_for(lambda: self.pub.get_num_connections() and node_sends_to(self.sub), 30, "the node's topics")

    def send(self, data):
        self.pub.publish(Float64MultiArray(data=list(data)))

    def close(self):
        self.sub.unregister()
        self.pub.unregister()


# The queue holds more than the 100 inputs sent: a smaller one may drop predictions by design (README: ~prediction).
@pytest.mark.parametrize("publish_queue_size", [0, 200], ids=["synchronous", "queued"])
def test_stream_answers_each_input_in_order_with_the_services_predictions(launch_node, tmp_path, publish_queue_size):
    config = tmp_path / "config.yaml"
    config.write_text(f"publish_queue_size: {publish_queue_size}\n")
    launch_node(config=config)
    stream = Stream()
    predict = rospy.ServiceProxy("/predict", Predict)
    # a message of up to 64 values is read as a tuple, a larger one (9 samples: 90 values) as a numpy array
    inputs = [make_synthetic(n_samples=k, seed=k)[0] for k in (1, 4, 2, 9, 3) * 20]
    first_sent = rospy.Time.now()
    for x in inputs:
        stream.send(x.ravel())
    wait_for(lambda: len(stream.predictions) == len(inputs), 60, "one prediction per input")
    stamps = [p.header.stamp for p in stream.predictions]  # when the node received each input
    assert first_sent <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= rospy.Time.now()
    assert {p.header.frame_id for p in stream.predictions} == {""}
    seqs = [p.header.seq for p in stream.predictions]  # a batch's predictions are written together (publish_all)
    assert seqs == list(range(seqs[0], seqs[0] + len(inputs)))
    for x, prediction in zip(inputs, stream.predictions, strict=True):
        answer = predict(x.ravel().tolist())
        assert list(prediction.classes) == list(answer.classes)
        np.testing.assert_allclose(prediction.output, answer.output, atol=1e-6)
        np.testing.assert_allclose(prediction.confidences, answer.confidences, atol=1e-6)
    stream.close()


def test_malformed_inputs_are_dropped_counted_and_the_stream_goes_on(node):
    diagnostics = Diagnostics()
    stream = Stream()
    bad_inputs = ([], [0.5] * 7, [0.5] * 9 + [float("nan")], [float("inf")] * 10, [1e39] + [0.5] * 9)
    for bad in bad_inputs + ([0.5] * 99 + [float("nan")], [0.5] * 99):  # and two of over 64 values
        stream.send(bad)
    stream.send([0.5] * 20)
    wait_for(lambda: stream.predictions, 30, "the prediction of the good input")
    assert len(stream.predictions) == 1 and len(stream.predictions[0].classes) == 2
    status = diagnostics.wait_until(lambda s: s["inputs_rejected"] == "7", "7 rejected inputs")
    assert status["inputs_dropped"] == "0"
    stream.close()


def test_diagnostics_report_state_model_and_counts(node):
    _, client = node
    diagnostics = Diagnostics()
    status = diagnostics.wait_until(lambda s: True, "a status")
    assert status["state"] == "idle" and status["model"] == "fresh"
    assert {"epoch", "committed_at", "predictions_served", "inputs_dropped", "inputs_rejected"} <= set(status)
    served = int(status["predictions_served"])
    rospy.ServiceProxy("/predict", Predict)([0.5] * 30)
    diagnostics.wait_until(lambda s: int(s["predictions_served"]) == served + 3, "3 more predictions served")

    client.send_goal(TrainGoal(epochs=100, batch_size=1))
    diagnostics.wait_until(lambda s: s["state"] == "training", "state training")
    client.cancel_goal()
    assert client.wait_for_result(rospy.Duration(60))
    diagnostics.wait_until(lambda s: s["state"] == "idle", "state idle again")
