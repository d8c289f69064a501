#!/usr/bin/env python3
"""Start ros_tensorflow's serving node: a .tflite model answered by LiteRT, without TensorFlow (README: Deploying to
robots)."""

import signal
import sys

import rospy

from ros_tensorflow.ros.serve_interface import ServeInterface

# Python hands the GIL to a waiting thread after 5 ms by default: the thread that receives camera frames and the one
# that predicts them then wait on each other (240 frames/s against 540 with 0.5 ms, `make bench ROWS=serve`).
GIL_SWITCH_INTERVAL_S = 0.0005

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
