"""MicroBatcher: one model call for all the inputs that queued while the model was busy."""

import collections
import threading

import numpy as np

# Python hands the GIL to a waiting thread after 5 ms by default: the thread that receives camera frames and the one
# that predicts them then wait on each other (the serving node's camera: 240 frames/s against 540 with 0.5 ms,
# `make bench ROWS=serve`). Both nodes set it at start (README: Benchmark).
GIL_SWITCH_INTERVAL_S = 0.0005


class MicroBatcher:
    """Predicts queued inputs in batches on a worker thread and hands each input its own rows back.

    A model call costs about the same for one sample as for a hundred, so a
    stream keeps up far better when the inputs that arrive during one call
    share the next. Results come back in arrival order. The queue holds at
    most queue_size inputs; when a new one arrives at a full queue the oldest
    is dropped and counted.
    """

    def __init__(self, predict, deliver, max_batch=256, queue_size=100, on_error=None):
        """predict(x) -> a sequence of one row per sample of x; deliver(tag, rows) gets each input's rows;
        on_error(exception) is told of a failed model call (its inputs are lost)."""
        self._predict = predict
        self._deliver = deliver
        self._on_error = on_error or (lambda error: None)
        self.max_batch = max_batch
        self._queue = collections.deque()
        self.queue_size = queue_size
        self._wakeup = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._worker = threading.Thread(target=self._run, name="MicroBatcher", daemon=True)
        self._worker.start()

    def submit(self, tag, samples):
        """Queue samples, shape (k, input_dim), to be delivered with tag. Returns how many inputs were dropped."""
        with self._wakeup:
            dropped = 0
            while len(self._queue) >= self.queue_size:
                self._queue.popleft()
                dropped += 1
            self._queue.append((tag, samples))
            self.dropped += dropped
            self._wakeup.notify()
        return dropped

    def close(self):
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._worker.join(timeout=10)

    def _next_batch(self):
        """The oldest inputs whose samples add up to at most max_batch (always at least one input)."""
        with self._wakeup:
            self._wakeup.wait_for(lambda: self._queue or self._closed)
            batch = [self._queue.popleft()] if self._queue else []
            total = sum(len(samples) for _, samples in batch)
            while self._queue and total + len(self._queue[0][1]) <= self.max_batch:
                batch.append(self._queue.popleft())
                total += len(batch[-1][1])
            return batch

    def _run(self):
        while not self._closed:
            batch = self._next_batch()
            if batch:
                self._predict_and_deliver(batch)

    def _predict_and_deliver(self, batch):
        """One call for the batch; if it fails, one call per input, so a bad input loses only its own rows."""
        try:
            rows = self._predict(np.concatenate([samples for _, samples in batch]))
        except Exception as error:  # noqa: BLE001 - the stream must outlive a failed call
            if len(batch) == 1:
                self._on_error(error)
            else:
                for one in batch:
                    self._predict_and_deliver([one])
            return
        start = 0
        for tag, samples in batch:
            end = start + len(samples)
            self._deliver(tag, rows[start:end])
            start = end
