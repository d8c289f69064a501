"""MicroBatcher with a real ModelWrapper and with a predict function the test holds back. The tests of the worker's
queue turn inline prediction off (inline=False): their first input must wait in the worker, not in the test."""

import threading
import time

import numpy as np
import pytest
from conftest import wait_for

from ros_tensorflow.tf_free.samples import prediction_rows
from ros_tensorflow.tf_free.streaming import MicroBatcher
from ros_tensorflow.with_tf.model import ModelWrapper


class Collector:
    """deliver() target: keeps (tag, rows) in order, and the number of inputs of each delivery, and lets a test wait
    for a count."""

    def __init__(self):
        self.items = []
        self.deliveries = []
        self._changed = threading.Condition()

    def deliver(self, deliveries):
        with self._changed:
            self.items.extend(deliveries)
            self.deliveries.append(len(deliveries))
            self._changed.notify_all()

    def wait_for(self, count):
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.items) >= count, timeout=60), self.items
        return self.items


class GatedPredict:
    """predict() that blocks until the test opens the gate, recording every batch it is given."""

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches = []

    def __call__(self, x):
        self.started.set()
        self.gate.wait(timeout=60)
        self.batches.append(x.copy())
        return x * 2


@pytest.fixture
def batcher_factory():
    batchers = []

    def make(predict, deliver, **kwargs):
        batchers.append(MicroBatcher(predict, deliver, **kwargs))
        return batchers[-1]

    yield make
    for batcher in batchers:
        batcher.close()


def test_inputs_queued_during_a_call_share_the_next_and_come_back_in_order(batcher_factory):
    predict, out = GatedPredict(), Collector()
    batcher = batcher_factory(predict, out.deliver, max_batch=256, queue_size=100, inline=False)
    batcher.submit("first", np.full((1, 2), 1.0))
    assert predict.started.wait(timeout=60)
    for i in range(10):
        batcher.submit(i, np.full((i % 3 + 1, 2), float(i)))
    predict.gate.set()
    items = out.wait_for(11)
    assert [tag for tag, _ in items] == ["first", *range(10)]
    for tag, rows in items[1:]:
        np.testing.assert_array_equal(rows, np.full((tag % 3 + 1, 2), 2.0 * tag))
    assert len(predict.batches) == 2, "the ten queued inputs went through in one call"
    assert out.deliveries == [1, 10], "and were delivered together"
    assert batcher.dropped == 0


def test_a_batch_holds_at_most_max_batch_samples(batcher_factory):
    predict, out = GatedPredict(), Collector()
    batcher = batcher_factory(predict, out.deliver, max_batch=5, queue_size=100, inline=False)
    batcher.submit(-1, np.zeros((1, 1)))
    assert predict.started.wait(timeout=60)
    for i in range(6):
        batcher.submit(i, np.full((2, 1), float(i)))
    batcher.submit("big", np.zeros((9, 1)))  # more than max_batch alone still goes, by itself
    predict.gate.set()
    out.wait_for(8)
    assert [len(batch) for batch in predict.batches] == [1, 4, 4, 4, 9]


def test_a_full_queue_drops_the_oldest_inputs_and_counts_them(batcher_factory):
    predict, out = GatedPredict(), Collector()
    batcher = batcher_factory(predict, out.deliver, queue_size=3, inline=False)
    batcher.submit("busy", np.zeros((1, 1)))
    assert predict.started.wait(timeout=60)
    dropped = [batcher.submit(i, np.full((1, 1), float(i))) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    predict.gate.set()
    items = out.wait_for(4)
    assert [tag for tag, _ in items] == ["busy", 2, 3, 4]
    assert batcher.dropped == 2


def test_a_failing_call_is_reported_and_the_stream_goes_on(batcher_factory):
    errors, out = [], Collector()

    def predict(x):
        if (x < 0).any():
            raise ValueError("negative")
        return x

    batcher = batcher_factory(predict, out.deliver, max_batch=1, on_error=errors.append)
    batcher.submit("bad", -np.ones((1, 1)))
    batcher.submit("good", np.ones((1, 1)))
    assert [tag for tag, _ in out.wait_for(1)] == ["good"]
    assert [str(e) for e in errors] == ["negative"]


def test_a_bad_input_in_a_batch_loses_only_its_own_rows(batcher_factory):
    errors, out = [], Collector()
    predict = GatedPredict()

    def fails_on_negatives(x):
        if (x < 0).any():
            raise ValueError("negative")
        return predict(x)

    batcher = batcher_factory(fails_on_negatives, out.deliver, on_error=errors.append, inline=False)
    batcher.submit("busy", np.ones((1, 1)))
    assert predict.started.wait(timeout=60)
    for tag, value in (("before", 1.0), ("bad", -1.0), ("after", 2.0)):
        batcher.submit(tag, np.full((1, 1), value))
    predict.gate.set()
    items = out.wait_for(3)
    assert [tag for tag, _ in items] == ["busy", "before", "after"]
    assert [rows.tolist() for _, rows in items] == [[[2.0]], [[2.0]], [[4.0]]]
    assert [str(e) for e in errors] == ["negative"]


def test_with_a_real_model_each_input_gets_its_own_prediction_rows(batcher_factory):
    wrapper, out = ModelWrapper(), Collector()
    batcher = batcher_factory(lambda x: prediction_rows(wrapper.predict(x)), out.deliver)
    rng = np.random.default_rng(0)
    inputs = [rng.random((k, 10)) for k in (1, 3, 2, 5, 1)]
    for i, samples in enumerate(inputs):
        batcher.submit(i, samples)
    items = out.wait_for(len(inputs))
    assert [tag for tag, _ in items] == list(range(len(inputs)))
    for (_, rows), samples in zip(items, inputs, strict=True):
        expected = wrapper.predict(samples)
        assert [row[0] for row in rows] == np.argmax(expected, axis=1).tolist()
        np.testing.assert_allclose([row[1] for row in rows], expected.max(axis=1), atol=1e-6)
        np.testing.assert_allclose([row[2] for row in rows], expected, atol=1e-6)


class ThreadCollector(Collector):
    """Collector that also keeps the name of the thread each input was delivered on."""

    def __init__(self):
        super().__init__()
        self.threads = []

    def deliver(self, deliveries):
        self.threads.extend([threading.current_thread().name] * len(deliveries))
        super().deliver(deliveries)


def test_a_slow_stream_is_predicted_on_the_submitting_thread(batcher_factory):
    out = ThreadCollector()
    batcher = batcher_factory(lambda x: x * 2, out.deliver)
    for i in range(3):
        batcher.submit(i, np.full((1, 2), float(i)))
        assert [tag for tag, _ in out.items] == list(range(i + 1)), "delivered before submit returned"
        time.sleep(0.01)  # inputs 10 ms apart: a model call of microseconds is far shorter
    assert out.threads == [threading.current_thread().name] * 3
    np.testing.assert_array_equal(out.items[2][1], [[4.0, 4.0]])


def test_inputs_that_arrive_during_a_call_on_a_submitting_thread_wait_for_it_in_order(batcher_factory):
    predict, out = GatedPredict(), ThreadCollector()
    batcher = batcher_factory(predict, out.deliver)
    first = threading.Thread(target=batcher.submit, args=("first", np.ones((1, 1))), name="receiver")
    first.start()
    assert predict.started.wait(timeout=60)
    for i in range(3):
        assert batcher.submit(i, np.full((1, 1), float(i))) == 0
    predict.gate.set()
    items = out.wait_for(4)
    first.join()
    assert [tag for tag, _ in items] == ["first", 0, 1, 2]
    assert out.threads == ["receiver", "MicroBatcher", "MicroBatcher", "MicroBatcher"]
    assert [len(batch) for batch in predict.batches] == [1, 3], "the three waited and went in one call"


def test_inputs_closer_than_twice_the_last_call_go_to_the_worker_and_the_newest_win(batcher_factory):
    def slow_model(x):
        time.sleep(0.05)  # a model call of 50 ms
        return x

    out = ThreadCollector()
    batcher = batcher_factory(slow_model, out.deliver, queue_size=1)
    batcher.submit("first", np.ones((1, 1)))  # nothing before it: predicted at once
    for i in range(3):  # right behind it, as frames that waited in the socket
        batcher.submit(i, np.full((1, 1), float(i)))
    wait_for(lambda: len(out.items) - 1 + batcher.dropped == 3, 60, "each input delivered or dropped")
    items = out.items
    assert items[0][0] == "first" and items[-1][0] == 2, "the newest is never dropped"
    assert out.threads == [threading.current_thread().name] + ["MicroBatcher"] * (len(items) - 1)
