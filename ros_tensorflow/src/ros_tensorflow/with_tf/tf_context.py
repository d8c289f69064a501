"""Re-enter on any thread the TensorFlow context in force where a model was built."""

import contextlib
import gc

import tensorflow as tf
from tensorflow.python.eager import context as _eager_context


class TensorFlowContext:
    """The thread-local TensorFlow state captured on the constructing thread.

    rospy runs every callback on a thread of its own, and TensorFlow keeps the
    device scope and distribution strategy (eager) or the graph and session
    (tf.compat.v1, eager disabled) per thread. A callback that does not
    re-enter them silently runs on other devices, outside the strategy, or in
    an empty graph.
    """

    def __init__(self):
        self.eager = tf.executing_eagerly()
        # TensorFlow has no public getter for the device scope in force.
        self.device = _eager_context.context().device_name if self.eager else None
        self.strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        self.graph = None if self.eager else tf.compat.v1.get_default_graph()
        self.session = None
        if not self.eager:
            self.session = tf.compat.v1.get_default_session() or tf.compat.v1.Session(graph=self.graph)

    def scope(self):
        """A context manager that re-enters the captured state; free when nothing was in force."""
        if self.graph is None and self.strategy is None and not self.device:
            return contextlib.nullcontext(self)
        return self._reentered()

    @contextlib.contextmanager
    def _reentered(self):
        with contextlib.ExitStack() as stack:
            if self.graph is not None:
                stack.enter_context(self.graph.as_default())
                stack.enter_context(self.session.as_default())
            if self.strategy is not None:
                stack.enter_context(self.strategy.scope())
            if self.device:
                stack.enter_context(tf.device(self.device))
            yield self


def configure_devices(device="", memory_growth=True):
    """Before TensorFlow allocates anything: memory growth on every GPU (else TensorFlow takes all of their
    memory and keeps other nodes off them), and a check that `device` exists; ValueError names those that do."""
    if memory_growth:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    if not device:
        return
    try:
        wanted = tf.DeviceSpec.from_string(device)
    except ValueError as error:
        raise ValueError(f"{device!r} is not a device name (e.g. /CPU:0, /GPU:0): {error}") from error
    names = [logical.name for logical in tf.config.list_logical_devices()]
    for name in names:
        spec = tf.DeviceSpec.from_string(name)
        if (spec.device_type or "").upper() == (wanted.device_type or "").upper() and spec.device_index == (
            wanted.device_index or 0
        ):
            return
    raise ValueError(f"device {device} does not exist here (devices: {', '.join(names)})")


def free_released_memory():
    """Free what a finished goal or a replaced model leaves behind, now.

    Keras models and data adapters are webs of cycles, which Python frees only when it next scans
    everything (TensorFlow's 300,000 objects make that rare). And TensorFlow's eager kernel cache keeps
    a kernel for every function ever run (each reloaded model's, each goal's data pipeline's) and never
    evicts one: the node grew 0.07 MB a reload, without bound. Kernels still in use are kept.
    """
    gc.collect()
    _eager_context.context().clear_kernel_cache()


def settle_memory(model_replaced=False):
    """The training node's free_released_memory, after a goal's result or a model replaced; what survives is then
    frozen. A first goal leaves the model's training functions and the optimizer's state (Keras's cycles) behind,
    alive: unfrozen, each automatic full collection of later goals scanned them, holding the GIL ~40 ms every second
    or so while predictions and a cancel waited (measured with gc.callbacks in the node; 3-16 ms with this).
    model_replaced: the replaced model was frozen with the rest, so everything is scanned again first (~150 ms,
    once per reload) or its cycles would stay.
    """
    if model_replaced:
        gc.unfreeze()
    free_released_memory()
    gc.freeze()
