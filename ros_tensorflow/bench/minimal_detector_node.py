#!/usr/bin/env python3
"""Benchmark floor: a detector on a camera as bare as it comes: each rgb8 frame read with numpy, resized with OpenCV
and scaled to [0, 1] (the serving node's default preprocessing), one LiteRT call, the boxes above 0.5 published in
source pixels as Detections. No checks, no queue, no class names, no letterbox."""

import warnings

import cv2
import numpy as np
import rospy
from ai_edge_litert.interpreter import Interpreter
from ros_tensorflow_msgs.msg import Detection, Detections
from sensor_msgs.msg import Image

if __name__ == "__main__":
    rospy.init_node("minimal_detector")
    interpreter = Interpreter(model_path=rospy.get_param("~model_path"), num_threads=1)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    _, height, width, _ = given["shape"]
    outputs = [detail["index"] for detail in sorted(interpreter.get_output_details(), key=lambda d: d["index"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        pub = rospy.Publisher("~output", Detections, queue_size=None)

    def detect(frame):
        pixels = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
        x = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        interpreter.set_tensor(given["index"], x[np.newaxis])
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(i) for i in outputs)
        found = Detections(header=frame.header)
        for i in range(int(count[0])):
            if scores[0, i] >= 0.5:
                y0, x0, y1, x1 = boxes[0, i]
                found.detections.append(
                    Detection(int(classes[0, i]), "", float(scores[0, i]), x0 * frame.width, y0 * frame.height,
                              (x1 - x0) * frame.width, (y1 - y0) * frame.height)
                )  # fmt: skip
        pub.publish(found)

    rospy.Subscriber("~input", Image, detect, queue_size=None, buff_size=2**26)
    rospy.spin()
