#!/usr/bin/env python3
"""Benchmark sender: publishes one message, serialised once, on ~topic as fast as the socket takes it.

_kind:=image sends a 640 x 480 rgb8 camera frame (sensor_msgs/Image), _kind:=sample one sample of the tutorial's
MLP (std_msgs/Float64MultiArray). A rospy publisher in the benchmark's own process (which also receives the node's
answers) serialises each message and sent about 500 frames/s on 2 cores: a node that kept up with it was measured
at its sender's limit. Several of these, each a process of its own, send more than a node takes. Sends for
~duration seconds at ~rate messages/s (0: as fast as the socket takes them) once ~subscribers subscribers are
connected and wall-clock time ~start_at has come, then prints the number of messages sent and the wall-clock time
the last was.
"""

import io
import time
import warnings

import rospy
from bench_common import SAMPLE, camera_frame
from std_msgs.msg import Float64MultiArray


def serialised(message):
    """An instance of message's own class whose bytes were serialised once: publishing it writes them as they are."""
    buffer = io.BytesIO()
    message.serialize(buffer)
    data = buffer.getvalue()

    class Serialised(type(message)):
        __slots__ = ()

        def serialize(self, buff):
            buff.write(data)

    return Serialised()


if __name__ == "__main__":
    rospy.init_node("flood", anonymous=True)
    kind = rospy.get_param("~kind", "image")
    message = camera_frame() if kind == "image" else Float64MultiArray(data=SAMPLE)
    topic, duration = rospy.get_param("~topic"), rospy.get_param("~duration", 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: publish blocks while the socket is full
        publisher = rospy.Publisher(topic, type(message), queue_size=None)
    message = serialised(message)
    rate = rospy.get_param("~rate", 0.0)  # messages/s; 0: as fast as the socket takes them
    while publisher.get_num_connections() < rospy.get_param("~subscribers", 1) and not rospy.is_shutdown():
        time.sleep(0.01)
    time.sleep(max(0.0, rospy.get_param("~start_at", 0.0) - time.time()))  # the senders of one run start together
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < duration:
        due = int(elapsed * rate) + 1 if rate else sent + 1
        while sent < due:
            publisher.publish(message)
            sent += 1
        if rate:
            time.sleep(0.001)
    print(sent, time.time(), flush=True)
