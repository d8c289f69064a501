#!/usr/bin/env python3
"""Start the ros_tensorflow node: see the README for its interface."""

import sys

import rospy

from ros_tensorflow.ros_interface import RosInterface

if __name__ == "__main__":
    rospy.init_node("ros_tensorflow")
    try:
        interface = RosInterface()
    except ValueError as error:  # a bad parameter
        rospy.logfatal("%s", error)
        sys.exit(1)
    interface.spin()
