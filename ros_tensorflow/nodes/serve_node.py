#!/usr/bin/env python3
"""Start ros_tensorflow's serving node: a .tflite model answered by LiteRT, without TensorFlow (README: Deploying to
robots)."""

import signal
import sys

import rospy

from ros_tensorflow.ros.serve_interface import ServeInterface
from ros_tensorflow.tf_free.streaming import GIL_SWITCH_INTERVAL_S

if __name__ == "__main__":
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past a file-size limit a write fails (EFBIG), not the node
    rospy.init_node("ros_tensorflow")
    try:
        ServeInterface()
    except ValueError as error:  # a bad parameter, or no model to serve and none to wait for
        rospy.logfatal("%s", error)
        sys.exit(1)
    rospy.spin()
