"""What the benchmark's modules share: timing, pinning to one core, a probe of a node's topics, the rows."""

import contextlib
import gc
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import rospy
from ros_processes import node_sends_to, stop_process_group, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

from ros_tensorflow.tf_free.images import image_sample
from ros_tensorflow.tf_free.litert import LiteRtModel

SAMPLE = [0.5] * 10
SUSTAINED_RATES = (*range(10000, 60001, 5000), 70000, 80000, 100000, 120000, 150000)  # msg/s
FLOOD_SENDERS = 2  # flood.py processes: together they send more than a node takes
HERE = pathlib.Path(__file__).resolve().parent


def percentiles_ms(seconds):
    return {f"p{q}": float(np.percentile(seconds, q) * 1e3) for q in (50, 90, 99)}


def p50_ms(seconds):
    return percentiles_ms(seconds)["p50"]


def timed(function, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def no_collection_here():
    """This process's own garbage collector kept out of a timed phase: a full collection in a process that imported
    TensorFlow holds the GIL for ~150 ms, which could land in a cancel's round trip and count as the node's. (A
    collection just before it starves this process's receiving threads instead: it is only switched off.)"""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def on_one_core(pids):
    """Every thread of the processes pids runs on one core, then anywhere again.

    On a VM a round trip between two processes costs ~0.02 ms when both run on
    one core and ~0.05 ms when one wakes the other across cores, which
    connection gets which is chance: pinned, the node and its floor are
    measured on equal terms.
    """

    def pin(cpus):
        for pid in pids:
            for thread in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(thread), cpus)

    cpus = os.sched_getaffinity(0)
    pin({min(cpus)})
    try:
        yield
    finally:
        pin(cpus)


def alternating_p50s_ms(proxies, request, pids, n=3000):
    """p50 of each persistent service proxy, called in turn on one core so that every one meets the same noise."""
    times = {name: [] for name in proxies}
    with on_one_core(pids):
        for proxy in proxies.values():
            timed(lambda proxy=proxy: proxy(request), 200)
        for _ in range(n):
            for name, proxy in proxies.items():
                times[name] += timed(lambda proxy=proxy: proxy(request), 1)
    for proxy in proxies.values():
        proxy.close()
    return {name: p50_ms(seconds) for name, seconds in times.items()}


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def alternating_latencies(probes, rate_hz=200, n=1000, block=100):
    """Each TopicProbe's latencies (s) at rate_hz, `block` messages at a time in turn, so that every node meets the
    machine's drift alike (measured one after the other, the echo's own p50 moved 0.15-0.26 ms between runs)."""
    times = {name: [] for name in probes}
    for _ in range(n // block):
        for name, probe in probes.items():
            times[name].extend(probe.latency(rate_hz, block))
    return times


class TopicProbe:
    """Publishes to a node's input topic and times what comes back on its output topic."""

    def __init__(self, node, input_topic, output_topic, message=None):
        """node: the node probed; message: what is sent (default: one sample as a Float64MultiArray). Outputs are
        timed as they arrive, not deserialised: a reference's output and the node's are of different types, and
        turning a Prediction into Python objects in this process cost more than an echo's array (the latency rows
        measured that as the node's)."""
        self.message = message or Float64MultiArray(data=SAMPLE)
        self.received = []
        self.sub = rospy.Subscriber(output_topic, rospy.AnyMsg, lambda _: self.received.append(time.perf_counter()))
        self.pub = rospy.Publisher(input_topic, type(self.message), queue_size=100000)
        wait_for(lambda: self.pub.get_num_connections() and node_sends_to(self.sub, node=node), 30, output_topic)

    def keeps_up(self, rate_hz, duration=1.0, drain=5.0):
        """Sends for duration s at rate_hz, or as fast as this process can if slower.

        Returns the rate achieved (msg/s) if every input came back out within drain s, else None.
        """
        self.received.clear()
        msg = self.message
        n = int(rate_hz * duration)
        start = time.perf_counter()
        sent = 0
        while sent < n:
            due = min(n, int((time.perf_counter() - start) * rate_hz) + 1)
            for _ in range(due - sent):
                self.pub.publish(msg)
            sent = due
            time.sleep(0.001)
        achieved = n / (time.perf_counter() - start)
        try:
            wait_for(lambda: len(self.received) >= n, drain, "all outputs")
        except AssertionError:
            return None
        return achieved

    def floods_keep_up(self, rate_hz, duration=2.0, drain=0.5, kind="sample", senders=FLOOD_SENDERS):
        """keeps_up, sent by `senders` flood.py processes instead of this one: the rate they achieved together,
        if every input came back out within drain s of the last one sent, else None."""
        self.received.clear()
        sent, last_sent = self._flood(kind, senders, duration, rate_hz)
        try:
            wait_for(lambda: len(self.received) >= sent, last_sent + drain - time.time(), "all outputs")
        except AssertionError:
            return None
        return sent / duration

    def sustained_rate(self, rates=SUSTAINED_RATES, senders=FLOOD_SENDERS, halvings=3):
        """The highest rate (msg/s) that `senders` flood.py processes achieved together with every input coming
        back out by half a second after the last was sent (floods_keep_up): a node that falls behind, queueing
        what it cannot answer yet, does not keep up. And whether the senders were the limit rather than the node.
        Rates are tried in turn up to the first the node misses, then halfway between that and the last it kept
        up with, `halvings` times: the steps between rates are wider than the differences measured."""
        kept_up, missed, best = 0.0, None, 0.0
        steps = iter(rates)
        while True:
            if missed is None:  # stepping up the rates
                rate = next(steps, None)
                if rate is None:
                    return best, True
            elif halvings:
                rate, halvings = (kept_up + missed) / 2, halvings - 1
            else:
                return best, False
            achieved = self.floods_keep_up(rate, senders=senders)
            if achieved is None:
                missed = rate
                continue
            kept_up, best = rate, max(best, achieved)
            if achieved < 0.9 * rate:
                return best, True

    def overloaded_rate(self, rate_hz, duration=2.0):
        """(outputs/s, inputs/s sent) while sent more than the node can do: its own limit, not the sender's, as
        long as the rate sent is above the rate out. None if an output is missing (the node's queue overflowed)."""
        n = int(rate_hz * duration)
        achieved = self.keeps_up(rate_hz, duration, drain=60.0)
        if achieved is None:
            return None
        return (n - 1) / (self.received[n - 1] - self.received[0]), achieved

    def _flood(self, kind, senders, duration, rate=0.0):
        """(messages sent, wall-clock time of the last) by `senders` flood.py processes, started together, each at
        rate/senders msg/s (0: as fast as the node's sockets take them)."""
        argv = [sys.executable, str(HERE / "flood.py"), f"_topic:={self.pub.resolved_name}", f"_kind:={kind}"]
        argv += [f"_duration:={duration}", f"_rate:={rate / senders}", f"_start_at:={time.time() + 3.0}"]
        floods = [subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True) for _ in range(senders)]
        counts_and_ends = [flood.communicate(timeout=60)[0].split() for flood in floods]
        return sum(int(count) for count, _ in counts_and_ends), max(float(end) for _, end in counts_and_ends)

    def _drained(self):
        """The outputs once no more come for a second (the node's queue drains), within a minute."""
        count, deadline = -1, time.monotonic() + 60.0
        while count != len(self.received) and time.monotonic() < deadline:
            count = len(self.received)
            time.sleep(1.0)
        return count

    def flooded(self, pid, kind="image", senders=FLOOD_SENDERS, duration=3.0):
        """(outputs/s, CPU seconds of the process pid per output) while `senders` flood.py processes send `kind`
        messages (image: camera frames, sample: the MLP's samples) as fast as the node's sockets take them: the
        node's own limit, not a sender's. The rate is that of the outputs that came while the senders sent, once
        the first tenth had come: what a node queued to answer later does not count."""
        self.received.clear()
        before = cpu_seconds(pid)
        sent, last_sent = self._flood(kind, senders, duration)
        last_sent += time.perf_counter() - time.time()  # as the outputs' times
        count = self._drained()
        cpu = cpu_seconds(pid) - before
        steady = [t for t in self.received[count // 10 :] if t <= last_sent]
        assert len(steady) > 20 and sent > count / 2, f"{sent} sent, {count} answers, {len(steady)} while sending"
        return (len(steady) - 1) / (steady[-1] - steady[0]), cpu / count

    def cpu_per_message(self, pid, rate_hz=1000, duration=5.0):
        """CPU seconds (user + system, all threads, from /proc) the process pid spends per message at rate_hz."""
        before = cpu_seconds(pid)
        if self.keeps_up(rate_hz, duration) is None:
            return None
        return (cpu_seconds(pid) - before) / (rate_hz * duration)

    def latency(self, rate_hz=200, n=1000):
        self.received.clear()
        msg = self.message
        sent = []
        with no_collection_here():
            for _ in range(n):
                sent.append(time.perf_counter())
                self.pub.publish(msg)
                time.sleep(max(0.0, sent[-1] + 1.0 / rate_hz - time.perf_counter()))
            wait_for(lambda: len(self.received) >= n, 30, "all outputs")
        return np.array(self.received[:n]) - np.array(sent)

    def close(self):
        self.sub.unregister()
        self.pub.unregister()


@contextlib.contextmanager
def minimal_sample_node(python, model_path):
    """A TopicProbe of the stream's minimal hand-written node, and its pid: bench/echo_node.py run by python with
    the .tflite model_path, which receives a sample, calls the model and publishes its output; no checks, no
    batching."""
    argv = [python, str(HERE / "echo_node.py"), "__name:=sample_model_echo", f"_model_path:={model_path}"]
    node = subprocess.Popen(argv, start_new_session=True)
    try:
        probe = TopicProbe("/sample_model_echo", "/sample_model_echo/input", "/sample_model_echo/output")
        yield probe, node.pid
        probe.close()
    finally:
        stop_process_group(node)


def camera_frame():
    """A 640 x 480 rgb8 frame, as a camera driver publishes one."""
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    return Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=pixels.tobytes())


def bare_camera_call(flatbuffer, shape):
    """Preprocessing and the model call of one frame in this process, as the nodes make them (LiteRT)."""
    litert = LiteRtModel(flatbuffer)
    frame = camera_frame()
    return lambda: litert.predict(image_sample(frame, shape).astype(np.float32))


def flooded_camera_rows(backend, name, ours, our_pid, minimal, minimal_pid, bare_s):
    """The node and the minimal node (bench/echo_node.py with the same model) each flooded by FLOOD_SENDERS senders:
    frames/s answered and CPU per frame, side by side; and the bare preprocessing + call in this process (no
    transport), for what the transport and rospy cost."""
    (rate, cpu), (minimal_rate, minimal_cpu) = ours.flooded(our_pid), minimal.flooded(minimal_pid)
    ratio = rate / minimal_rate
    return [
        row(backend, f"{name}: 640x480 rgb8 -> 96x96x3 CNN, flooded by {FLOOD_SENDERS} senders", rate, "frames/s",
            minimal_rate, ratio, ">= 0.9 x minimal node (receive, preprocess, call, publish)", ratio >= 0.9),
        row(backend, f"{name}: CPU per frame, flooded", cpu * 1e3, "ms", minimal_cpu * 1e3, cpu / minimal_cpu),
        row(backend, f"{name}: against the bare preprocessing + call (no transport)", rate, "frames/s", 1 / bare_s,
            rate * bare_s),
    ]  # fmt: skip


def row(backend, name, value, unit, reference=None, ratio=None, target="", met=None):
    print(f"  measured: {backend} {name}", flush=True)
    return dict(
        backend=backend, name=name, value=value, unit=unit, reference=reference, ratio=ratio, target=target, met=met
    )
