#!/usr/bin/env python3
"""Start the ros_tensorflow node: see the README for its interface."""

import ctypes
import gc
import signal
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


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters

if __name__ == "__main__":
    # rospy serves every service connection on a new thread, and glibc gives threads malloc arenas of their own
    # (up to 8 per core) and keeps what is freed in each: after large requests the node stayed ~600 MB larger.
    libc = ctypes.CDLL(None)
    libc.mallopt(M_ARENA_MAX, 2)
    # Every buffer of 1 MiB or more (a large message, a request) gets pages of its own, given back when freed. By
    # default glibc raises that threshold to the largest buffer freed, and the heap kept what million-value messages
    # left: hostile input grew the node 26 MB after warm-up (9-12 MB with this; `make stress SCENARIOS=fuzz`).
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    # Past a file-size limit (prlimit --fsize, ulimit -f) a write fails with EFBIG, reported like a full disk,
    # instead of the signal killing the node.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    rospy.init_node("ros_tensorflow")
    try:
        interface = RosInterface()
    except ValueError as error:  # a bad parameter
        rospy.logfatal("%s", error)
        sys.exit(1)
    # What lives now (TensorFlow, rospy, the first model) is never freed: frozen, the collector stops scanning it.
    # A full collection then takes ~2 ms instead of ~200 ms of held GIL, so Python runs them often, and the cycles
    # of a replaced model (every reload, every goal) are freed soon, not after dozens of them (memory grew).
    gc.collect()
    gc.freeze()
    # Not on the main thread: rospy's SIGINT handler runs there and logs to /rosout, and it would
    # deadlock on the /rosout publisher's lock if the signal came while the demo was logging.
    threading.Thread(target=main_loop_demo, args=(interface,), name="main_loop_demo", daemon=True).start()
    rospy.spin()
