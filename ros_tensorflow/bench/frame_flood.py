#!/usr/bin/env python3
"""Benchmark sender: publishes one camera frame, serialised once, on ~topic as fast as the socket takes it.

A rospy publisher in the benchmark's own process (which also receives the node's answers) serialises each 0.9 MB
frame and sent about 500 frames/s on 2 cores: a node that kept up with it was measured at its sender's limit. Several
of these, each a process of its own, send more than a node takes. Sends for ~duration seconds once ~subscribers
subscribers are connected, then prints the number of frames sent.
"""

import io
import time
import warnings

import rospy
from bench_common import camera_frame
from sensor_msgs.msg import Image


class SerialisedImage(Image):
    """An Image whose bytes were serialised once: publishing it writes them as they are."""

    __slots__ = ("serialised",)

    def serialize(self, buff):
        buff.write(self.serialised)


if __name__ == "__main__":
    rospy.init_node("frame_flood", anonymous=True)
    topic, duration = rospy.get_param("~topic"), rospy.get_param("~duration", 3.0)
    buffer = io.BytesIO()
    camera_frame().serialize(buffer)
    message = SerialisedImage()
    message.serialised = buffer.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: publish blocks while the socket is full
        publisher = rospy.Publisher(topic, Image, queue_size=None)
    while publisher.get_num_connections() < rospy.get_param("~subscribers", 1) and not rospy.is_shutdown():
        time.sleep(0.01)
    sent, end = 0, time.monotonic() + duration
    while time.monotonic() < end:
        publisher.publish(message)
        sent += 1
    print(sent, flush=True)
