#!/usr/bin/env python3
"""Start the ros_tensorflow node: see the README for its interface."""

import sys
import threading

import numpy as np
import rospy

from ros_tensorflow.ros_interface import RosInterface
from ros_tensorflow.samples import classify


def main_loop_demo(interface):
    """The tutorial's prediction in the main loop, at ~loop_rate Hz (0: off), which may change while running."""
    rng = np.random.default_rng()
    while not rospy.is_shutdown():
        loop_rate = interface.settings.loop_rate
        if loop_rate > 0:
            wrapper = interface.keeper.wrapper
            classes, confidences = classify(wrapper.predict(rng.random(wrapper.input_dim)))
            rospy.loginfo("main loop: class %d (confidence %.3f)", classes[0], confidences[0])
        try:
            rospy.sleep(1.0 / loop_rate if loop_rate > 0 else 0.5)
        except rospy.ROSInterruptException:
            break


if __name__ == "__main__":
    rospy.init_node("ros_tensorflow")
    try:
        interface = RosInterface()
    except ValueError as error:  # a bad parameter
        rospy.logfatal("%s", error)
        sys.exit(1)
    # Not on the main thread: rospy's SIGINT handler runs there and logs to /rosout, and it would
    # deadlock on the /rosout publisher's lock if the signal came while the demo was logging.
    threading.Thread(target=main_loop_demo, args=(interface,), name="main_loop_demo", daemon=True).start()
    rospy.spin()
