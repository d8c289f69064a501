#!/usr/bin/env python3
"""Benchmark floor: a Predict service that answers at once, without a model."""

import rospy
from ros_tensorflow_msgs.srv import Predict, PredictResponse

if __name__ == "__main__":
    rospy.init_node("trivial_predict_server")
    answer = PredictResponse(i_class=0, confidence=1.0, classes=[0], confidences=[1.0], output=[1.0, 0.0])
    rospy.Service("trivial_predict", Predict, lambda request: answer)
    rospy.spin()
