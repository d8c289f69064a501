"""publish_all with a real master, publisher and subscriber: a batch is one write per subscriber, read back as
separate messages in order."""

import pytest
import rospy
from conftest import wait_for
from ros_tensorflow_msgs.msg import Prediction

from ros_tensorflow.ros.batch_publishing import publish_all


def refilled(message, values):
    """One message object filled in again for each value, as the stream's batcher does."""
    for value in values:
        message.output = [value]
        message.header.frame_id = f"frame {value}"
        yield message


@pytest.mark.filterwarnings("ignore:The publisher should be created:SyntaxWarning")  # queue_size=None, as ~prediction
def test_a_batch_reaches_the_subscriber_in_order_in_one_write(ros_master):
    topic = "/batch_publishing_test"
    publisher = rospy.Publisher(topic, Prediction, queue_size=None)
    got = []
    subscriber = rospy.Subscriber(topic, Prediction, got.append)

    def sent_one():  # until the connection is complete, a message published may not reach the subscriber
        publisher.publish(Prediction(output=[-1.0]))
        return got

    wait_for(sent_one, 30, "a first message")
    (connection,) = publisher.impl.connections
    writes_before = connection.stat_num_msg

    publish_all(publisher, refilled(Prediction(), [float(v) for v in range(50)]))

    wait_for(lambda: got[-1].output[0] == 49.0, 30, "the batch")
    assert connection.stat_num_msg == writes_before + 1, "the batch went out in one write"
    batch = [m for m in got if m.output[0] >= 0]
    assert [m.output[0] for m in batch] == list(range(50))
    assert [m.header.frame_id for m in batch] == [f"frame {v:.1f}" for v in range(50)]
    first_seq = got[0].header.seq
    assert [m.header.seq for m in got] == list(range(first_seq, first_seq + len(got))), "a seq each, as publish"
    subscriber.unregister()

    # no subscriber: the messages are still taken (the caller's filling goes on), nothing is written
    wait_for(lambda: publisher.get_num_connections() == 0, 30, "the subscriber gone")
    taken = []
    publish_all(publisher, (taken.append(v) or Prediction(output=[v]) for v in (1.0, 2.0)))
    assert taken == [1.0, 2.0]
    publisher.unregister()
    publish_all(publisher, refilled(Prediction(), [3.0]))  # unregistered: nothing to publish to, no error
