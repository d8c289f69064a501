#!/usr/bin/env python3
"""Start the ros_tensorflow node: see the README for its interface."""

import rospy

from ros_tensorflow.ros_interface import RosInterface

if __name__ == "__main__":
    rospy.init_node("ros_tensorflow")
    RosInterface().spin()
