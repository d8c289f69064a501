#!/usr/bin/env python3
"""Start the ros_tensorflow node: see the README for its interface."""

import contextlib
import ctypes
import gc
import math
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np
import rospy

from ros_tensorflow.ros.ros_node import read_settings
from ros_tensorflow.tf_free.samples import classify
from ros_tensorflow.tf_free.streaming import GIL_SWITCH_INTERVAL_S
from ros_tensorflow.tf_free.tasks import REGRESSION

# What TensorFlow prints, before its log level applies, on a machine without a GPU: expected there.
NO_GPU_MESSAGES = ("Could not find cuda drivers", "failed call to cuInit", "before absl::InitializeLog() is called")


@contextlib.contextmanager
def without_no_gpu_messages():
    """Where no NVIDIA driver is loaded, drop NO_GPU_MESSAGES from what the block prints on stderr (file
    descriptor 2: TensorFlow's C++ writes there directly); pass everything else on. With a driver, leave all."""
    if os.path.exists("/proc/driver/nvidia"):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(message in line for message in NO_GPU_MESSAGES):
                    sys.stderr.write(line)


def main_loop_demo(interface):
    """The tutorial's prediction in the main loop, at ~loop_rate Hz (0: off), which may change while running: the
    loop wakes every 0.1 s to read it, so a very low rate (1e-9 Hz) never holds a later change back."""
    rng = np.random.default_rng()
    last = -math.inf
    while not rospy.is_shutdown():
        loop_rate, now = interface.settings.loop_rate, time.monotonic()
        if loop_rate > 0 and now - last >= 1.0 / loop_rate:
            last = now
            wrapper = interface.keeper.wrapper
            output = wrapper.predict(rng.random(wrapper.input_dim)) if wrapper.output_dim else None
            if output is None:  # a detector or the like: it answers frames and tensors, not samples
                pass
            elif wrapper.task == REGRESSION:
                rospy.loginfo("main loop: values %s", " ".join(f"{value:.4g}" for value in output[0]))
            else:
                classes, confidences = classify(output)
                rospy.loginfo("main loop: class %d (confidence %.3f)", classes[0], confidences[0])
        due = last + 1.0 / loop_rate - time.monotonic() if loop_rate > 0 else math.inf
        try:
            rospy.sleep(min(max(due, 0.0), 0.1))
        except rospy.ROSInterruptException:
            break


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters

if __name__ == "__main__":
    # rospy serves every service connection on a new thread, and glibc gives threads malloc arenas of their own
    # (up to 8 per core) and keeps what is freed in each: after large requests the node stayed ~600 MB larger.
    libc = ctypes.CDLL(None)
    libc.mallopt(M_ARENA_MAX, 2)
    # Every buffer of 1 MiB or more (a large message, a request) gets pages of its own, given back when freed. By
    # default glibc raises that threshold to the largest buffer freed, and the heap kept what million-value messages
    # left: hostile input grew the node 26 MB after warm-up (9-12 MB with this; `make stress SCENARIOS=fuzz`).
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    # Setting that also fixed the top of each heap that glibc gives back to the system at 128 KiB: every camera
    # frame's buffers were then given back and faulted in again (450-590 page faults a frame against the minimal
    # node's 230-460, 1.2 x its CPU per frame; README: Benchmark). Up to 16 MiB a heap stays.
    libc.mallopt(M_TRIM_THRESHOLD, 16 << 20)
    # Past a file-size limit (prlimit --fsize, ulimit -f) a write fails with EFBIG, reported like a full disk,
    # instead of the signal killing the node.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rospy.init_node("ros_tensorflow")
    try:
        read_settings("train")  # a bad parameter is said at once, not after seconds of importing TensorFlow
    except ValueError as error:
        rospy.logfatal("%s", error)
        sys.exit(1)
    with without_no_gpu_messages():
        try:
            import tensorflow as tf
        except ModuleNotFoundError:
            rospy.logfatal(
                "TensorFlow cannot be imported by %s: this workspace was built for the serving node (make serve)."
                " Run `make build` for the training node, or launch serve.launch",
                sys.executable,
            )
            sys.exit(1)
        tf.config.list_physical_devices()  # TensorFlow looks for GPUs (cuInit) once, here
    from ros_tensorflow.ros.ros_interface import RosInterface

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
