#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged."""

import rospy
from std_msgs.msg import Float64MultiArray

if __name__ == "__main__":
    rospy.init_node("echo")
    pub = rospy.Publisher("~output", Float64MultiArray, queue_size=1000)
    rospy.Subscriber("~input", Float64MultiArray, pub.publish, queue_size=None)
    rospy.spin()
