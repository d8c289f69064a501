#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged, published as the node does.

_type:=image echoes sensor_msgs/Image (the camera rows' floor) instead of Float64MultiArray.
"""

import warnings

import rospy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

if __name__ == "__main__":
    rospy.init_node("echo")
    msg_type = Image if rospy.get_param("~type", "") == "image" else Float64MultiArray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: synchronous, the node's default
        pub = rospy.Publisher("~output", msg_type, queue_size=None)
    rospy.Subscriber("~input", msg_type, pub.publish, queue_size=None, buff_size=2**26)
    rospy.spin()
