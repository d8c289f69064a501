"""A leak on purpose, for the stress suite to prove its memory check can fail: with this folder on PYTHONPATH the
node keeps 10 kB for every /predict it answers."""

import importlib.abc
import importlib.util
import sys

KEPT = []


def _leaking(handle_predict):
    def handle(self, request):
        KEPT.append(bytearray(10_000))
        return handle_predict(self, request)

    return handle


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps ServingFace._handle_predict once the node imports ros_tensorflow.ros.serving_face."""

    def find_spec(self, name, path, target=None):
        if name != "ros_tensorflow.ros.serving_face":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.ServingFace._handle_predict = _leaking(module.ServingFace._handle_predict)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchOnImport())
