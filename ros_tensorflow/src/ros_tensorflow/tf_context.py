"""Re-enter on any thread the TensorFlow context in force where a model was built."""

import contextlib

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
