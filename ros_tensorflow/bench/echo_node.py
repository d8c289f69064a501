#!/usr/bin/env python3
"""Benchmark floor: republishes every ~input message on ~output, unchanged, published as the node does.

_type:=image echoes sensor_msgs/Image (the camera rows' floor) instead of Float64MultiArray. With _model_path:=a
.tflite it is a minimal hand-written node instead, the floor of rows that predict: the bare LiteRT call of each
message (of a frame: the bare preprocessing first, as the node makes it; of a Float64MultiArray: its values as one
sample) and the model's output published as a Float64MultiArray (no checks, no batching, on rospy's receiving
thread).
"""

import warnings

import rospy
from rospy.impl.tcpros import DEFAULT_BUFF_SIZE
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray


def publisher(msg_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # queue_size=None: synchronous, the node's default
        return rospy.Publisher("~output", msg_type, queue_size=None)


def model_call(model_path, msg_type):
    """A callback that publishes the model's output for each message, as bare as it comes."""
    import numpy as np

    from ros_tensorflow.tf_free.images import image_sample
    from ros_tensorflow.tf_free.litert import LiteRtModel

    with open(model_path, "rb") as file:
        model = LiteRtModel(file.read())
    pub, output = publisher(Float64MultiArray), Float64MultiArray()

    def sample_of(msg):
        if msg_type is Image:
            return image_sample(msg, model.input_shape).astype(np.float32)
        return np.array(msg.data, np.float32).reshape(1, *model.input_shape)

    def call_then_publish(msg):
        output.data = model.predict(sample_of(msg))[0].tolist()
        pub.publish(output)

    return call_then_publish


if __name__ == "__main__":
    rospy.init_node("echo")
    msg_type = Image if rospy.get_param("~type", "") == "image" else Float64MultiArray
    model_path = rospy.get_param("~model_path", "")
    handle = model_call(model_path, msg_type) if model_path else publisher(msg_type).publish
    # read as the node reads each: frames with its 64 MiB buffer, samples with rospy's default (a 64 MiB read
    # costs a sample 30-45 us: it is allocated and given back every time)
    buff_size = 2**26 if msg_type is Image else DEFAULT_BUFF_SIZE
    rospy.Subscriber("~input", msg_type, handle, queue_size=None, buff_size=buff_size)
    rospy.spin()
