"""TensorFlowContext and ModelWrapper keep the creating thread's TensorFlow context.

Each case runs in a fresh interpreter: logical devices and eager mode are
process-wide and must be set before TensorFlow starts.
"""

import subprocess
import sys
import textwrap

import pytest


def run_python(code):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_model_built_in_a_device_and_strategy_scope_keeps_them_on_other_threads():
    out = run_python("""
        import threading
        import keras, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from ros_tensorflow.tf_free.datasets import make_synthetic
        from ros_tensorflow.with_tf.model import ModelWrapper

        strategy = tf.distribute.OneDeviceStrategy("/cpu:1")
        with strategy.scope(), tf.device("/cpu:1"):
            wrapper = ModelWrapper()
        seen = {}
        probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.update(
            strategy=tf.distribute.get_strategy(), device=tf.constant(1.0).device))
        x, y = make_synthetic(n_samples=64)
        thread = threading.Thread(target=lambda: wrapper.train(x, y, epochs=1, callbacks=[probe]))
        thread.start(); thread.join()
        with wrapper.context.scope():
            assert tf.distribute.get_strategy() is strategy
        print(seen["strategy"] is strategy, seen["device"].endswith("CPU:1"),
              wrapper.model.weights[0].value.device.endswith("CPU:1"))
        """)
    assert out.split() == ["True", "True", "True"]


def test_without_the_captured_context_another_thread_would_lose_it():
    """The case above is not vacuous: a bare thread sees neither the strategy nor the device."""
    out = run_python("""
        import threading
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.OneDeviceStrategy("/cpu:1")
        seen = {}
        with strategy.scope(), tf.device("/cpu:1"):
            thread = threading.Thread(target=lambda: seen.update(
                has_strategy=tf.distribute.has_strategy(), device=tf.constant(1.0).device))
            thread.start(); thread.join()
        print(seen["has_strategy"], seen["device"].endswith("CPU:1"))
        """)
    assert out.split() == ["False", "False"]


def test_graph_mode_context_reenters_the_graph_and_session():
    out = run_python("""
        import threading
        import tensorflow as tf
        tf.compat.v1.disable_eager_execution()
        from ros_tensorflow.with_tf.tf_context import TensorFlowContext

        graph = tf.Graph()
        with graph.as_default():
            total = tf.compat.v1.placeholder(tf.float32) * 2.0
            session = tf.compat.v1.Session(graph=graph)
            with session.as_default():
                context = TensorFlowContext()
        seen = {}
        def on_thread():
            seen["bare"] = tf.compat.v1.get_default_graph() is graph
            with context.scope():
                seen["graph"] = tf.compat.v1.get_default_graph() is graph
                seen["session"] = tf.compat.v1.get_default_session() is session
                seen["value"] = tf.compat.v1.get_default_session().run(total, {total.op.inputs[0]: 21.0})
        thread = threading.Thread(target=on_thread)
        thread.start(); thread.join()
        print(seen["bare"], seen["graph"], seen["session"], seen["value"])
        """)
    assert out.split() == ["False", "True", "True", "42.0"]


def test_model_wrapper_refuses_graph_mode_with_a_clear_error():
    out = run_python("""
        import tensorflow as tf
        tf.compat.v1.disable_eager_execution()
        from ros_tensorflow.with_tf.model import ModelWrapper
        try:
            ModelWrapper()
        except RuntimeError as error:
            print("eager" in str(error))
        """)
    assert out.split() == ["True"]


def test_configure_devices_accepts_a_device_that_exists_and_names_those_that_do():
    from ros_tensorflow.with_tf.tf_context import configure_devices

    configure_devices("/CPU:0")
    configure_devices("")
    with pytest.raises(ValueError, match=r"device /GPU:7 does not exist here \(devices: /device:CPU:0"):
        configure_devices("/GPU:7")
    with pytest.raises(ValueError, match="is not a device name"):
        configure_devices("not a device")
