#!/usr/bin/env python3
"""Benchmark floor: a Predict service answered by LiteRT and nothing else: the request's values to numpy, one
interpreter call, the response. No checks, no batching, no class names: the practical floor of serving a model."""

import numpy as np
import rospy
from ai_edge_litert.interpreter import Interpreter
from ros_tensorflow_msgs.srv import Predict, PredictResponse

if __name__ == "__main__":
    rospy.init_node("minimal_litert_server")
    interpreter = Interpreter(model_path=rospy.get_param("~model_path"), num_threads=1)
    interpreter.allocate_tensors()
    given, wanted = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def answer(request):
        interpreter.set_tensor(given, np.array(request.data, np.float32).reshape(1, -1))
        interpreter.invoke()
        output = interpreter.get_tensor(wanted)[0]
        best = int(output.argmax())
        confidence = float(output[best])
        return PredictResponse(best, confidence, [best], [confidence], output.tolist(), [""], 0)

    rospy.Service("minimal_litert_predict", Predict, answer)
    rospy.spin()
