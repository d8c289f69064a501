#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged, published as the node does.

_type:=image echoes sensor_msgs/Image (the camera rows' floor) instead of Float64MultiArray; with _model_path:=a
.tflite of images it also runs the bare preprocessing and LiteRT call of each frame before echoing it.
"""

import warnings

import rospy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray


def with_model_call(publish, model_path):
    """publish, after the frame's preprocessing and model call, as bare as they come (no checks, no batching)."""
    import numpy as np

    from ros_tensorflow.tf_free.images import image_sample
    from ros_tensorflow.tf_free.litert import LiteRtModel

    with open(model_path, "rb") as file:
        model = LiteRtModel(file.read())

    def call_then_publish(frame):
        model.predict(image_sample(frame, model.input_shape).astype(np.float32))
        publish(frame)

    return call_then_publish


if __name__ == "__main__":
    rospy.init_node("echo")
    msg_type = Image if rospy.get_param("~type", "") == "image" else Float64MultiArray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: synchronous, the node's default
        pub = rospy.Publisher("~output", msg_type, queue_size=None)
    model_path = rospy.get_param("~model_path", "")
    handle = with_model_call(pub.publish, model_path) if model_path else pub.publish
    rospy.Subscriber("~input", msg_type, handle, queue_size=None, buff_size=2**26)
    rospy.spin()
