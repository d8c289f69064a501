#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged, published as the node does.

_type:=image echoes sensor_msgs/Image (the camera rows' floor) instead of Float64MultiArray. With _model_path:=a
.tflite of images it is the camera rows' minimal hand-written node instead: the bare preprocessing and LiteRT call of
each frame, as the node makes them, and the model's output published as a Float64MultiArray (no checks, no
batching, on rospy's receiving thread).
"""

import warnings

import rospy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray


def publisher(msg_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: synchronous, the node's default
        return rospy.Publisher("~output", msg_type, queue_size=None)


def model_call(model_path):
    """A callback that publishes the model's output for each frame, as bare as it comes."""
    import numpy as np

    from ros_tensorflow.tf_free.images import image_sample
    from ros_tensorflow.tf_free.litert import LiteRtModel

    with open(model_path, "rb") as file:
        model = LiteRtModel(file.read())
    pub, output = publisher(Float64MultiArray), Float64MultiArray()

    def call_then_publish(frame):
        output.data = model.predict(image_sample(frame, model.input_shape).astype(np.float32))[0].tolist()
        pub.publish(output)

    return call_then_publish


if __name__ == "__main__":
    rospy.init_node("echo")
    msg_type = Image if rospy.get_param("~type", "") == "image" else Float64MultiArray
    model_path = rospy.get_param("~model_path", "")
    handle = model_call(model_path) if model_path else publisher(msg_type).publish
    rospy.Subscriber("~input", msg_type, handle, queue_size=None, buff_size=2**26)
    rospy.spin()
