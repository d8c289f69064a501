"""LiteRT's interpreter as the nodes call it: one TFLite model, an interpreter for each batch size. No TensorFlow:
the serving node answers with this alone.

A call of LiteRT's interpreter costs microseconds where a compiled tf.function costs a few
hundred: TensorFlow's per-call overhead, not the model, dominated a prediction.
"""

import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from ros_tensorflow.tf_free.any_model import TensorSpec

LARGEST_BATCH = 256  # interpreters are kept for 1, 2, 4 ... 256 samples; more are predicted in chunks


class UnservableModel(ValueError):
    """LiteRT loaded the model, but it is not one the node serves (its inputs, outputs or types)."""


class LiteRtModel:
    """One TFLite model with an interpreter allocated for each power-of-two batch size.

    Interpreters are not thread-safe, and resizing one re-allocates it: so each batch size has its
    own, built up front, a batch is padded to the next size, and one lock guards them all (a call
    takes microseconds). A model whose batch size cannot change (many models made for microcontrollers
    and accelerators take exactly one sample) gets the one interpreter, called once per sample.
    Quantized models (int8 or uint8 input and output, as the Edge TPU needs) take and give real values
    here: the input is quantized and the output dequantized with each tensor's scale and zero point.
    """

    def __init__(self, flatbuffer):
        self._lock = threading.Lock()
        self._interpreters = {}
        size = 1
        while size <= LARGEST_BATCH:
            try:
                self._interpreters[size] = self._interpreter(flatbuffer, size)
            except UnservableModel:
                raise
            except (RuntimeError, ValueError):  # a batch size fixed in the model's ops
                if size == 1:
                    raise
                break
            size *= 2
        self._largest = max(self._interpreters)
        interpreter = self._interpreters[1][0]
        given, wanted = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if len(wanted["shape"]) != 2:
            raise UnservableModel(f"expected an output of shape (k, outputs), got {list(wanted['shape'])}")
        self.input_shape = tuple(int(size) for size in given["shape"][1:])
        self.output_dim = int(wanted["shape"][1])
        self._input_type = given["dtype"]
        self._input_quantization = given["quantization"] if given["dtype"] in (np.int8, np.uint8) else None
        self._output_quantization = wanted["quantization"] if wanted["dtype"] in (np.int8, np.uint8) else None
        if self._input_type not in (np.float32, np.int8, np.uint8):
            raise UnservableModel(f"expected a float32, int8 or uint8 input, got {np.dtype(self._input_type).name}")

    @staticmethod
    def _interpreter(flatbuffer, size):
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UnservableModel(f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
        if size != inputs[0]["shape"][0]:
            interpreter.resize_tensor_input(inputs[0]["index"], [size, *inputs[0]["shape"][1:]])
        interpreter.allocate_tensors()
        # predict calls its C++ wrapper's own methods: the Python ones add a check for views from tensor() (never
        # held here), 4-6 us of a call at 200 Hz, where every step finds the caches cold (README: Benchmark). The
        # Interpreter is kept with it: it owns the model and the delegates the wrapper runs.
        wrapper = interpreter._interpreter  # noqa: SLF001
        return interpreter, wrapper, inputs[0]["index"], outputs[0]["index"]

    def _quantized(self, x):
        scale, zero_point = self._input_quantization
        info = np.iinfo(self._input_type)
        return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(self._input_type)

    def predict(self, x):
        """Output for x, shape (k, *input_shape) float32, any k >= 1, as float32."""
        called = self._interpreters.get(len(x))  # a stream's lone sample goes straight in (README: Benchmark)
        if called is None:
            return self._predict_resized(x)
        _, wrapper, input_index, output_index = called
        if self._input_quantization is not None:
            x = self._quantized(x)
        with self._lock:
            wrapper.SetTensor(input_index, x)
            wrapper.Invoke()
            output = wrapper.GetTensor(output_index, 0)  # 0: the model's main subgraph, as get_tensor's default
        if self._output_quantization is not None:
            scale, zero_point = self._output_quantization
            output = (output.astype(np.float32) - zero_point) * scale
        return output

    def _predict_resized(self, x):
        """k samples that no interpreter takes as they are: in chunks of the largest size, or padded with zeros
        to the next size, or split in two where that would be over 1/8 padding (a CNN computes the zeros too:
        the camera was 0.7 x its floor)."""
        k = len(x)
        if k > self._largest:
            chunks = range(0, k, self._largest)
            return np.concatenate([self.predict(x[i : i + self._largest]) for i in chunks])
        size = 1 << (k - 1).bit_length()
        if (size - k) * 8 > size:
            half = size // 2
            return np.concatenate([self.predict(x[:half]), self.predict(x[half:])])
        return self.predict(np.concatenate([x, np.zeros((size - k, *x.shape[1:]), np.float32)]))[:k]


class LiteRtTensors:
    """Any TFLite model as any_model's runner: every input and output by name, of any dtype and shape. One
    interpreter, its inputs resized to each call's shapes (re-allocated only when they change), one lock."""

    def __init__(self, flatbuffer):
        self._lock = threading.Lock()
        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        self._interpreter.allocate_tensors()
        names = _signature_names(self._interpreter)
        self._input_details = _in_order(self._interpreter.get_input_details(), names["inputs"])
        self._output_details = _in_order(self._interpreter.get_output_details(), names["outputs"])
        self.inputs = [_spec(detail, names["inputs"]) for detail in self._input_details]
        self.outputs = [_spec(detail, names["outputs"]) for detail in self._output_details]
        self.postprocess_outputs = self._postprocess_outputs()
        # Python ints: a tuple of numpy ints compares element by element through numpy, 9 us a call
        self._shapes = [tuple(int(size) for size in detail["shape"]) for detail in self._input_details]
        # what each call needs of the details, looked up once
        self._stored_as = [(d["index"], d["dtype"], _quantization(d)) for d in self._input_details]
        self._real_as = [(d["index"], _quantization(d)) for d in self._output_details]

    def _postprocess_outputs(self):
        """Positions in outputs of the TFLite_Detection_PostProcess op's four outputs, () if it has none."""
        positions = {detail["index"]: i for i, detail in enumerate(self._output_details)}
        try:
            ops = self._interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only view of a model's ops
        except AttributeError:
            return ()
        for op in ops:
            if op.get("op_name") == "TFLite_Detection_PostProcess":
                found = tuple(positions.get(int(index), -1) for index in op["outputs"])
                return found if -1 not in found and len(found) == 4 else ()
        return ()

    def run(self, arrays):
        """Outputs (float32 where dequantized) for arrays in the order of inputs: float arrays for a quantized
        input are quantized; arrays already of its stored type (an image's uint8 pixels) go in as they are."""
        with self._lock:
            shapes = [tuple(array.shape) for array in arrays]
            if shapes != self._shapes:
                for detail, shape in zip(self._input_details, shapes, strict=True):
                    self._interpreter.resize_tensor_input(detail["index"], list(shape), strict=False)
                self._interpreter.allocate_tensors()
                self._shapes = shapes
            for (index, dtype, quantization), array in zip(self._stored_as, arrays, strict=True):
                self._interpreter.set_tensor(index, _stored(array, dtype, quantization))
            self._interpreter.invoke()
            return [_real(self._interpreter.get_tensor(index), quantization) for index, quantization in self._real_as]


def _signature_names(interpreter):
    """{'inputs'/'outputs': {tensor index: name}} of the model's one signature (the names its SavedModel or Keras
    model gave, in its order: detection_boxes rather than StatefulPartitionedCall:0); empty without one."""
    signatures = interpreter._interpreter.GetSignatureDefs()  # noqa: SLF001 - the indices are not public
    if len(signatures) != 1:
        return {"inputs": {}, "outputs": {}}
    signature = next(iter(signatures.values()))
    return {kind: {index: name for name, index in signature[kind].items()} for kind in ("inputs", "outputs")}


def _in_order(details, names):
    """details in the signature's order where it names them all, else the model's (its tensor indices)."""
    if len(names) == len(details) and all(detail["index"] in names for detail in details):
        order = list(names)
        return sorted(details, key=lambda detail: order.index(detail["index"]))
    return sorted(details, key=lambda detail: detail["index"])


def _quantization(detail):
    scale, zero_point = detail["quantization"]
    return (scale, zero_point) if scale and detail["dtype"] in (np.int8, np.uint8, np.int16) else None


def _spec(detail, names):
    name = names.get(detail["index"], detail["name"])
    signature = detail.get("shape_signature")
    shape = tuple(int(size) for size in (signature if len(signature) == len(detail["shape"]) else detail["shape"]))
    stored = np.dtype(detail["dtype"]).name
    if _quantization(detail):
        return TensorSpec(name, shape, "float32", stored)
    return TensorSpec(name, shape, stored)


def _stored(array, dtype, quantization):
    if quantization and array.dtype.kind == "f":
        scale, zero_point = quantization
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)
    return np.ascontiguousarray(array, dtype)


def _real(array, quantization):
    if quantization:
        scale, zero_point = quantization
        return (array.astype(np.float32) - zero_point) * scale
    return array  # get_tensor's is a copy already
