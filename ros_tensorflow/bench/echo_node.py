#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged, published as the node does."""

import warnings

import rospy
from std_msgs.msg import Float64MultiArray

if __name__ == "__main__":
    rospy.init_node("echo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: synchronous, the node's default
        pub = rospy.Publisher("~output", Float64MultiArray, queue_size=None)
    rospy.Subscriber("~input", Float64MultiArray, pub.publish, queue_size=None)
    rospy.spin()
