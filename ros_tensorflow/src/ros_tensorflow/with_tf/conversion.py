"""TFLite conversion for the training node: committed weights converted in a process of its own (TensorFlow there,
`python -m ros_tensorflow.with_tf.conversion`), then answered by LiteRT (LiteRtServing)."""

import gc
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time

import numpy as np

from ros_tensorflow.tf_free.litert import LiteRtModel

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
REPRESENTATIVE_SAMPLES = 300  # of a goal's training data, to calibrate a full-integer (int8) model


class ConversionError(RuntimeError):
    """The model cannot be converted to TFLite; says why in a line."""


class ConverterDied(ConversionError):
    """The converter process ended mid-conversion (killed, out of memory): the model may well convert."""


def short_reason(error, limit=200):
    """The converter's errors run to pages of MLIR: its type and first line say enough for a log or a result (a
    longer line is cut after a whole word)."""
    first_line = (str(error).splitlines() or [""])[0]
    if len(first_line) > limit:
        first_line = first_line[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {first_line}"


def to_tflite(model, quantization="none", representative=None):
    """The model as a TFLite flatbuffer: as it is, float16 weights, dynamic-range int8 weights, or int8 weights and
    activations with int8 input and output (what the Edge TPU and most NPUs run), calibrated on representative
    samples (an array of them)."""
    import tensorflow as tf  # only the converter process and the benchmark convert in-process

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"tflite quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative is None or not len(representative):
            raise ValueError("an int8 model needs representative samples to calibrate its activations")
        samples = np.asarray(representative, np.float32)
        converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


class ConverterProcess:
    """TFLite conversion in a child process at the lowest CPU priority, started on first use.

    The converter holds the GIL for most of a conversion (0.5-2 s of tracing and graph rewriting in
    Python): in the node's own process it stalled training to 0.26x and /predict's p99 to 30 ms.
    The child keeps the last architecture built, so a commit sends only its weights.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._closed = False

    def convert(self, architecture, weights, quantization="none", still_wanted=lambda: True, representative=None):
        """(flatbuffer, seconds the conversion took) of the model whose to_json() is architecture, with weights
        (representative: samples that calibrate an int8 model);
        ConversionError if it cannot be converted. None if still_wanted() is false once the converter is free:
        models replaced while they waited (reloads in a row) are not converted for nothing."""
        with self._lock:
            if not still_wanted():
                return None
            if self._closed:  # the node is shutting down: no new child
                raise ConverterDied("the converter process was closed")
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            try:
                pickle.dump((architecture, weights, quantization, representative), process.stdin)
                process.stdin.flush()
                ok, payload, seconds = pickle.load(process.stdout)
            except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
                process.kill()
                process.wait()  # else the next call may find it not yet ended, and write to it
                raise ConverterDied(f"the converter process ended ({short_reason(error)})") from error
        if not ok:
            raise ConversionError(payload)
        return payload, seconds

    @staticmethod
    def _start():
        package_parent = str(pathlib.Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["CUDA_VISIBLE_DEVICES"] = ""  # converting needs no GPU, and TensorFlow would take its memory
        return subprocess.Popen(
            [sys.executable, "-m", "ros_tensorflow.with_tf.conversion"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the converter's MLIR dumps; the reply says why in a line
            env=env,
        )

    def close(self):
        """End the child at the end of its input; not waiting for a conversion that runs (shutdown comes first)."""
        self._closed = True
        process, self._process = self._process, None
        if process is not None:
            process.stdin.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


def _serve_conversions():
    """The converter process: (architecture, weights, quantization, representative samples or None) in, (ok,
    flatbuffer or reason, seconds) out."""
    os.nice(19)  # training and predictions come first
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the converter prints its progress: not into the replies
    import keras

    from ros_tensorflow.with_tf.tf_context import free_released_memory

    architecture, model = None, None
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        started = time.monotonic()
        try:
            if request[0] != architecture:
                architecture, model = request[0], keras.models.model_from_json(request[0])
            model.set_weights(request[1])
            reply = (True, to_tflite(model, request[2], request[3]))
        except Exception as error:  # noqa: BLE001 - any op LiteRT lacks: the node keeps TensorFlow serving
            architecture, reply = None, (False, short_reason(error))
        pickle.dump((*reply, time.monotonic() - started), replies)
        replies.flush()
        # Each conversion leaves cycles (traced functions, the converter's graphs): free them now. What lives after
        # the first (TensorFlow and the converter's modules) is frozen, so these collections stay cheap.
        free_released_memory()
        if not gc.get_freeze_count():
            gc.freeze()


class LiteRtServing:
    """Converts the newest committed weights on a thread of its own; `model_for(commit)` is its LiteRT model
    once converted, else None (the TensorFlow serving copy answers meanwhile).

    Commits that arrive while a conversion runs coalesce: only the newest is converted next. The commits
    of a training's epochs are converted at most a tenth of the time (each waits nine times the last
    conversion after it), so the converter does not take the CPU from the training; the commit that ends
    a goal is converted at once. A model that cannot be converted is said once in the log and left to
    TensorFlow.
    """

    PAUSE_AFTER_CONVERSION = 9  # x the last conversion's duration, before converting an epoch's commit
    CONVERTER_DEATHS = 3  # in a row, converting one commit: then TensorFlow serves this model

    def __init__(self, architecture, converter, log=None):
        """architecture: the model's to_json(); converter: a ConverterProcess, shared by the models of a node."""
        self._architecture = architecture
        self._converter = converter
        self._log = log or logging.getLogger(__name__)
        self._pending = None  # (commit, weights, committed at, epoch_end) waiting to be converted
        self._newest_commit = None
        self._resume_at = 0.0  # when an epoch's commit may be converted
        self._wakeup = threading.Condition()
        self._served = (None, None, None)  # (commit, LiteRtModel, flatbuffer)
        self.failed = None  # why the model cannot be converted, once known
        self.conversions = 0
        self.conversion_seconds = None  # the last conversion, in the converter process
        self.commit_to_serving_seconds = None  # from the last converted commit to LiteRT serving it
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="LiteRtServing", daemon=True)
        self._thread.start()

    @property
    def serving_commit(self):
        return self._served[0]

    def flatbuffer_for(self, commit):
        """The TFLite model of commit, once served; else None."""
        served_commit, _, flatbuffer = self._served
        return flatbuffer if served_commit == commit else None

    def submit(self, commit, weights, epoch_end=False):
        with self._wakeup:
            self._pending = (commit, weights, time.monotonic(), epoch_end)
            self._newest_commit = commit
            self._wakeup.notify()

    def model_for(self, commit):
        served_commit, model, _ = self._served
        return model if served_commit == commit else None

    def wait_until_serving(self, commit, timeout):
        """True once commit is served by LiteRT; False if it never will be (it cannot be converted, a newer commit
        came, the model was replaced or the node shuts down: close()), or timeout passes (tests; the export)."""
        deadline = time.monotonic() + timeout
        while (
            self.serving_commit != commit
            and self._newest_commit == commit
            and self.failed is None
            and not self._closed
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        return self.serving_commit == commit

    def close(self):
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()

    def _next_commit(self):
        """The commit to convert next, once it is due; None once closed."""
        with self._wakeup:
            while not self._closed:
                if self._pending is None:
                    self._wakeup.wait()
                    continue
                wait = self._resume_at - time.monotonic() if self._pending[3] else 0
                if wait <= 0:
                    pending, self._pending = self._pending, None
                    return pending
                self._wakeup.wait(wait)
            return None

    def _run(self):
        deaths = 0  # of the converter in a row: one that always dies (out of memory) is given up on
        while (pending := self._next_commit()) is not None:
            commit, weights, committed_at, _ = pending
            try:
                converted = self._converter.convert(self._architecture, weights, still_wanted=lambda: not self._closed)
                if converted is None:
                    return
                flatbuffer, conversion_seconds = converted
                model = LiteRtModel(flatbuffer)
            except ConverterDied as error:
                if self._closed:  # the node is shutting down: the converter went first
                    return
                deaths += 1
                if deaths < self.CONVERTER_DEATHS:
                    self._log.warning("%s: converting commit %d again in a new one", error, commit)
                    with self._wakeup:
                        self._pending = self._pending or pending  # unless a newer commit waits
                    continue
                self.failed = str(error)
                self._log.warning("this model cannot be served by LiteRT (%s): TensorFlow serves it", self.failed)
                return
            except (RuntimeError, ValueError) as error:  # ConversionError, or LiteRT cannot allocate the model
                self.failed = str(error) if isinstance(error, ConversionError) else short_reason(error)
                self._log.warning("this model cannot be served by LiteRT (%s): TensorFlow serves it", self.failed)
                return
            self._served = (commit, model, flatbuffer)
            self.conversions += 1
            deaths = 0
            now = time.monotonic()
            self.conversion_seconds, self.commit_to_serving_seconds = conversion_seconds, now - committed_at
            self._resume_at = now + self.PAUSE_AFTER_CONVERSION * self.conversion_seconds


if __name__ == "__main__":
    _serve_conversions()
