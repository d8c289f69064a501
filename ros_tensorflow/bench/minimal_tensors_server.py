#!/usr/bin/env python3
"""Benchmark floor: a PredictTensors service answered by LiteRT and nothing else: each tensor's values to numpy in
the order of the model's signature, one interpreter call, every output back. No checks, no names, no quantization."""

import numpy as np
import rospy
from ai_edge_litert.interpreter import Interpreter
from ros_tensorflow_msgs.msg import Tensor
from ros_tensorflow_msgs.srv import PredictTensors, PredictTensorsResponse

if __name__ == "__main__":
    rospy.init_node("minimal_tensors_server")
    interpreter = Interpreter(model_path=rospy.get_param("~model_path"), num_threads=1)
    interpreter.allocate_tensors()
    signature = Interpreter(model_path=rospy.get_param("~model_path")).get_signature_runner()  # its order only
    inputs = [detail["index"] for detail in signature.get_input_details().values()]
    outputs = list(signature.get_output_details().values())

    def answer(request):
        for index, tensor in zip(inputs, request.inputs, strict=True):
            interpreter.set_tensor(index, np.array(tensor.data, np.float32).reshape(tensor.shape))
        interpreter.invoke()
        response = PredictTensorsResponse()
        for detail in outputs:
            value = interpreter.get_tensor(detail["index"])
            response.outputs.append(Tensor(detail["name"], list(value.shape), "float32", value.ravel().tolist()))
        return response

    rospy.Service("minimal_tensors_predict", PredictTensors, answer)
    rospy.spin()
