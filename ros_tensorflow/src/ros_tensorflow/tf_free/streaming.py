"""MicroBatcher: one model call for all the inputs that queued while the model was busy."""

import collections
import math
import threading
import time

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

    An input that finds nothing queued or running is predicted at once on the thread that submits it, if inputs
    come further apart than the last call took (twice that since the one before, four times on average): a slow
    stream's latency is one thread hand-over shorter (README: Benchmark). Inputs that come closer, as they do in a
    fast stream or when they waited in the socket behind such a call, go to the worker, whose queue keeps the
    newest.
    """

    def __init__(self, predict, deliver, max_batch=256, queue_size=100, on_error=None, inline=True):
        """predict(x) -> a sequence of one row per sample of x; deliver([(tag, rows), ...]) gets a call's inputs,
        each with its own rows, in one go (a publisher writes them together: README, Benchmark);
        on_error(exception) is told of a failed model call (its inputs are lost); inline=False: every input goes
        through the worker."""
        self._predict = predict
        self._deliver = deliver
        self._on_error = on_error or (lambda error: None)
        self.max_batch = max_batch
        self._queue = collections.deque()
        self.queue_size = queue_size
        self._lock = threading.Lock()  # taken as itself where no one waits: a Condition's `with` costs more
        self._wakeup = threading.Condition(self._lock)
        self._closed = False
        self._busy = False  # a call and its deliveries run, on the worker or on a submitting thread
        self._inline = inline
        self._last_arrival = -math.inf
        self._mean_gap_s = 1.0  # between inputs, averaged over the last few
        self._call_s = 0.0  # how long the last call took, with its deliveries, on whichever thread
        self.dropped = 0
        self._worker = threading.Thread(target=self._run, name="MicroBatcher", daemon=True)
        self._worker.start()

    def submit(self, tag, samples):
        """Queue samples, shape (k, input_dim), to be delivered with tag, or predict them now (see the class).
        Returns how many inputs were dropped."""
        arrival = time.monotonic()
        with self._lock:
            gap, self._last_arrival = arrival - self._last_arrival, arrival
            self._mean_gap_s += (min(gap, 1.0) - self._mean_gap_s) / 8
            idle = not self._busy and not self._queue
            if not (self._inline and idle and gap > 2 * self._call_s and self._mean_gap_s > 4 * self._call_s):
                dropped = 0
                while len(self._queue) >= self.queue_size:
                    self._queue.popleft()
                    dropped += 1
                self._queue.append((tag, samples))
                self.dropped += dropped
                self._wakeup.notify()
                return dropped
            self._busy = True
        self._call_and_free([(tag, samples)], arrival)
        return 0

    def close(self):
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._worker.join(timeout=10)

    def _next_batch(self):
        """The oldest inputs whose samples add up to at most max_batch (always at least one input), once no call
        runs."""
        with self._wakeup:
            self._wakeup.wait_for(lambda: (self._queue and not self._busy) or self._closed)
            batch = [self._queue.popleft()] if self._queue else []
            total = sum(len(samples) for _, samples in batch)
            while self._queue and total + len(self._queue[0][1]) <= self.max_batch:
                batch.append(self._queue.popleft())
                total += len(batch[-1][1])
            self._busy = bool(batch)
            return batch

    def _run(self):
        while not self._closed:
            batch = self._next_batch()
            if batch:
                self._call_and_free(batch, time.monotonic())

    def _call_and_free(self, batch, start):
        """Predict and deliver a batch this thread holds (_busy) since start (monotonic), then let the next call
        run."""
        try:
            self._predict_and_deliver(batch)
        finally:
            with self._lock:
                self._call_s = time.monotonic() - start
                self._busy = False
                if self._queue:  # inputs that queued meanwhile; else the worker sleeps on (waking it cost latency)
                    self._wakeup.notify()

    def _predict_and_deliver(self, batch):
        """One call for the batch; if it fails, one call per input, so a bad input loses only its own rows."""
        try:
            rows = self._predict(batch[0][1] if len(batch) == 1 else np.concatenate([s for _, s in batch]))
        except Exception as error:  # noqa: BLE001 - the stream must outlive a failed call
            if len(batch) == 1:
                self._on_error(error)
            else:
                for one in batch:
                    self._predict_and_deliver([one])
            return
        deliveries, start = [], 0
        for tag, samples in batch:
            deliveries.append((tag, rows[start : start + len(samples)]))
            start += len(samples)
        self._deliver(deliveries)
