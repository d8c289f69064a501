#!/usr/bin/env python3
"""Start ros_tensorflow's serving node: a .tflite model answered by LiteRT, without TensorFlow (README: Deploying to
robots)."""

import signal
import sys

import rospy

from ros_tensorflow.serve_interface import ServeInterface

if __name__ == "__main__":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past a file-size limit a write fails (EFBIG), not the node
    rospy.init_node("ros_tensorflow")
    try:
        ServeInterface()
    except ValueError as error:  # a bad parameter, or no model to serve and none to wait for
        rospy.logfatal("%s", error)
        sys.exit(1)
    rospy.spin()
