#!/usr/bin/env python3
"""`make bench`: the node's speed against floors measured side by side in the same run.

Starts its own master, a trivial Predict server and an echo node, then the node (roslaunch) once
per serving backend, prints a table and writes it to bench_results/bench.json.
Not a test: it checks no correctness and fails on nothing. It shares ros_processes.py with the
integration tests: `make bench` puts ros_tensorflow/test on PYTHONPATH.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time

import actionlib
import numpy as np
import rospy
import tensorflow as tf
from actionlib_msgs.msg import GoalStatus
from any_model_bench import any_model_rows
from bench_common import (
    FLOOD_SENDERS,
    SAMPLE,
    TopicProbe,
    alternating_latencies,
    bare_camera_call,
    camera_frame,
    flooded_camera_rows,
    minimal_sample_node,
    no_collection_here,
    on_one_core,
    p50_ms,
    percentiles_ms,
    row,
    timed,
)
from dynamic_reconfigure.client import Client
from regression_bench import regression_rows
from ros_processes import Diagnostics, LaunchedNode, Master, node_pid, stop_process_group
from ros_tensorflow_msgs.msg import EvaluateAction, EvaluateGoal, TrainGoal
from ros_tensorflow_msgs.srv import Predict
from serving_bench import serving_rows

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.evaluation import CHUNK
from ros_tensorflow.tf_free.litert import LiteRtModel
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import build_classifier

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "bench_results"


def model_call_alone():
    """The model's call alone, batch 1, numpy in and out, by each backend as the node makes it."""
    model = build_classifier()
    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([None, 10], tf.float32)
    )
    litert = LiteRtModel(to_tflite(model))
    x = np.array([SAMPLE], np.float32)
    return {"tensorflow": lambda: forward(tf.constant(x)).numpy(), "litert": lambda: litert.predict(x)}


def service_latency(n=3000):
    """/predict and the trivial server in turn, so both see the same machine state: their times in s by name."""
    predict = rospy.ServiceProxy("/predict", Predict, persistent=True)
    trivial = rospy.ServiceProxy("/trivial_predict", Predict, persistent=True)
    calls = {"ours": lambda: predict(SAMPLE), "trivial": lambda: trivial(SAMPLE)}
    for call in calls.values():
        timed(call, 200)
    times = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            times[name] += timed(call, 1)
    predict.close()
    trivial.close()
    return times


def predict_256_samples_per_s(n=300):
    predict = rospy.ServiceProxy("/predict", Predict, persistent=True)
    data = make_synthetic(n_samples=256, seed=0)[0].ravel().tolist()
    return 256 * n / sum(timed(lambda: predict(data), n))


def train_goal(client, goal, feedback_cb=None):
    client.send_goal(goal, feedback_cb=feedback_cb)
    client.wait_for_result()
    assert client.get_state() == GoalStatus.SUCCEEDED, client.get_goal_status_text()


def training_samples_per_s(client, epochs=20, batch_size=32, n=1000, rounds=5):
    """The /train action against a bare model.fit on the same data, alternated over rounds.

    Both are warmed up by a first fit; each round times one of each. Returns
    the medians over the rounds and the seconds of one bare batch.
    """
    x, y = make_synthetic(n_samples=n, seed=1)
    model = build_classifier()
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    train_goal(client, TrainGoal(epochs=1, batch_size=batch_size))
    ours, bare = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
        bare.append(epochs * n / (time.perf_counter() - start))
        start = time.perf_counter()
        train_goal(client, TrainGoal(epochs=epochs, batch_size=batch_size))
        ours.append(epochs * n / (time.perf_counter() - start))
    return float(np.median(ours)), float(np.median(bare)), batch_size / float(np.median(bare))


def during_training(client, n=2000):
    """/predict latency while a training runs, then cancel latencies (request to PREEMPTED)."""
    predict = rospy.ServiceProxy("/predict", Predict, persistent=True)
    started = threading.Event()
    client.send_goal(TrainGoal(epochs=100000, batch_size=32), feedback_cb=lambda f: started.set())
    started.wait(60)
    times = timed(lambda: predict(SAMPLE), n)
    cancels = []
    for _ in range(5):
        if client.get_state() not in (GoalStatus.ACTIVE, GoalStatus.PENDING):
            started.clear()
            client.send_goal(TrainGoal(epochs=100000, batch_size=32), feedback_cb=lambda f: started.set())
            started.wait(60)
        with no_collection_here():
            start = time.perf_counter()
            client.cancel_goal()
            client.wait_for_result(rospy.Duration(30))  # woken by the result itself: polling made 20 ms steps
            cancels.append(time.perf_counter() - start)
        assert client.get_state() == GoalStatus.PREEMPTED, client.get_goal_status_text()
    return times, cancels


def evaluation_rows(data_dir, n=200_000, rounds=3):
    """The evaluate action (goal sent to result: loading the .npz, predicting, the metrics, report and picture)
    against model.evaluate of the same data and model, same batch size, in this process; then /predict while
    evaluations run."""
    x, y = make_synthetic(n_samples=n, seed=2)
    np.savez(data_dir / "eval.npz", x=x, y=y)
    client = actionlib.SimpleActionClient("evaluate", EvaluateAction)
    client.wait_for_server(rospy.Duration(30))
    model = build_classifier()
    model.evaluate(x, y, batch_size=CHUNK, verbose=0)
    ours, bare = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        model.evaluate(x, y, batch_size=CHUNK, verbose=0)
        bare.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        client.send_goal_and_wait(EvaluateGoal(dataset="eval.npz"))
        ours.append(n / (time.perf_counter() - start))
        assert client.get_state() == GoalStatus.SUCCEEDED, client.get_goal_status_text()
    predict = rospy.ServiceProxy("/predict", Predict, persistent=True)
    times = []
    while len(times) < 2000:
        client.send_goal(EvaluateGoal(dataset="eval.npz"))
        while client.get_state() in (GoalStatus.PENDING, GoalStatus.ACTIVE):
            times += timed(lambda: predict(SAMPLE), 1)
    ours, bare = float(np.median(ours)), float(np.median(bare))
    p99 = percentiles_ms(times)["p99"]
    return [
        row("litert", f"evaluate action, {n} samples (median of {rounds})", ours, "samples/s", bare, ours / bare,
            ">= 0.8 x model.evaluate", ours / bare >= 0.8),
        row("litert", "/predict p99 during evaluations", p99, "ms"),
    ]  # fmt: skip


CAMERA_SHAPE = (96, 96, 3)


def camera_rows():
    """640 x 480 rgb8 frames into a 96 x 96 x 3 CNN (LiteRT): the training node flooded against the minimal node;
    the latency against an echo of the Image plus the bare preprocessing + call."""
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_camera_"))
    flatbuffer = to_tflite(build_classifier(CAMERA_SHAPE, 2))
    (work_dir / "camera.tflite").write_bytes(flatbuffer)
    helpers = [
        subprocess.Popen([sys.executable, str(HERE / "echo_node.py"), *args], start_new_session=True)
        for args in (
            ["__name:=image_echo", "_type:=image"],
            ["__name:=model_echo", "_type:=image", f"_model_path:={work_dir / 'camera.tflite'}"],
        )
    ]
    config = work_dir / "config.yaml"
    config.write_text("input_shape: [96, 96, 3]\nimage_queue_size: 1000\n")  # every frame kept, as the minimal node
    node = LaunchedNode(work_dir, config=config)
    try:
        node.wait_until_ready()
        Diagnostics().wait_until(lambda s: s["serving"].startswith("litert,"), "LiteRT serving the CNN")
        bare_s = float(np.median(timed(bare_camera_call(flatbuffer, CAMERA_SHAPE), 200)))
        ours = TopicProbe("/ros_tensorflow", "/ros_tensorflow/image", "/ros_tensorflow/prediction", camera_frame())
        minimal = TopicProbe("/model_echo", "/model_echo/input", "/model_echo/output", camera_frame())
        rows = flooded_camera_rows(
            "litert", "camera", ours, node_pid("/ros_tensorflow"), minimal, node_pid("/model_echo"), bare_s
        )
        echo = TopicProbe("/image_echo", "/image_echo/input", "/image_echo/output", camera_frame())
        latencies = alternating_latencies({"ours": ours, "echo": echo}, rate_hz=10, n=100, block=20)
        our_p50, floor = p50_ms(latencies["ours"]), p50_ms(latencies["echo"]) + bare_s * 1e3
        rows.append(
            row(
                "litert",
                "camera: latency p50 at 10 Hz",
                our_p50,
                "ms",
                floor,
                our_p50 / floor,
                "<= 1.5 x echo + bare preprocessing + call",
                our_p50 / floor <= 1.5,
            )
        )
        for probe in (ours, minimal, echo):
            probe.close()
    finally:
        node.stop()
        for helper in helpers:
            stop_process_group(helper)
    return rows


def main(only):
    """only: ['serve'] (make bench ROWS=serve) measures the serving node's rows alone, ['training'] the training
    node's with LiteRT and its camera, ['camera'] the camera's alone, ['evaluate'] the evaluate action's,
    ['regression'] the regression rows, ['any_model'] those of models a user brings."""
    RESULTS.mkdir(exist_ok=True)
    master = Master(tempfile.mkdtemp(prefix="bench_ros_home_"))
    helpers = {
        name: subprocess.Popen([sys.executable, str(HERE / f"{name}.py")], start_new_session=True)
        for name in ("trivial_predict_server", "echo_node")
    }
    rows = []
    try:
        rospy.init_node("bench", disable_signals=True)
        rospy.wait_for_service("/trivial_predict", 60)
        if not only:
            for backend, call in model_call_alone().items():
                rows.append(row(backend, "model call alone, batch 1, p50", p50_ms(timed(call, 3000)), "ms"))
            for backend in ("litert", "tensorflow"):
                rows += run_backend(backend, helpers)
            rows += camera_rows()
        if only == ["training"]:
            rows += run_backend("litert", helpers) + camera_rows()
        if only == ["camera"]:
            rows += camera_rows()
        if only == ["evaluate"]:
            work_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
            node = LaunchedNode(work_dir)
            try:
                node.wait_until_ready()
                rows += evaluation_rows(work_dir / "data")
            finally:
                node.stop()
        if only in ([], ["serve"]):
            rows += serving_rows()
        if only in ([], ["regression"]):
            rows += regression_rows()
        if only in ([], ["any_model"]):
            rows += any_model_rows()
    finally:
        for helper in helpers.values():
            stop_process_group(helper)
        master.stop()
    report(rows)


def run_backend(backend, helpers):
    """Every row for a node serving from backend, each against its reference measured just before or with it."""
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"bench_{backend}_"))
    config = work_dir / "config.yaml"
    # every input kept, as the minimal node does (the flooded stream row; the default, 100, is measured after it)
    config.write_text(f"serving_backend: {backend}\nqueue_size: 100000\n")
    node = LaunchedNode(work_dir, config=config)
    try:
        client = node.wait_until_ready()
        diagnostics = Diagnostics()
        diagnostics.wait_until(lambda s: s["serving"].startswith(backend), f"{backend} serving")
        rows = measure(backend, client, diagnostics, [pid.pid for pid in helpers.values()], helpers["echo_node"].pid)
        return rows + (evaluation_rows(work_dir / "data") if backend == "litert" else [])
    finally:
        node.stop()


def measure(backend, client, diagnostics, helper_pids, echo_pid):
    rows = []

    def add(*args, **kwargs):
        rows.append(row(backend, *args, **kwargs))

    node = node_pid("/ros_tensorflow")
    with on_one_core([os.getpid(), node, *helper_pids]):
        pinned = service_latency()
    unpinned = service_latency()
    for how, times in (("on one core", pinned), ("unpinned", unpinned)):
        ours, trivial = percentiles_ms(times["ours"]), p50_ms(times["trivial"])
        ratio = ours["p50"] / trivial
        add(f"/predict 1 sample p50 ({how})", ours["p50"], "ms", trivial, ratio, "<= 1.5 x trivial", ratio <= 1.5)
        add(f"/predict 1 sample p99 ({how})", ours["p99"], "ms")
    add("/predict 256 samples", predict_256_samples_per_s(), "samples/s")

    echo = TopicProbe("/echo", "/echo/input", "/echo/output")
    stream = TopicProbe("/ros_tensorflow", "/ros_tensorflow/input", "/ros_tensorflow/prediction")
    echo_cpu, our_cpu = echo.cpu_per_message(echo_pid), stream.cpu_per_message(node)
    if echo_cpu and our_cpu:
        ratio = our_cpu / echo_cpu
        add("topic: CPU per message at 1 kHz", our_cpu * 1e6, "us", echo_cpu * 1e6, ratio, "<= 2 x echo", ratio <= 2)
    model_path = pathlib.Path(tempfile.mkdtemp(prefix="bench_minimal_")) / "mlp.tflite"
    model_path.write_bytes(to_tflite(build_classifier()))
    with minimal_sample_node(sys.executable, model_path) as (minimal, minimal_pid):
        (our_rate, ours_limited), (minimal_rate, minimal_limited) = stream.sustained_rate(), minimal.sustained_rate()
        ratio = our_rate / minimal_rate
        add(f"topic: sustained rate from {FLOOD_SENDERS} sender processes", our_rate, "msg/s", minimal_rate, ratio,
            ">= 0.9 x minimal node (receive, call, publish)", ratio >= 0.9)  # fmt: skip
        yes_no = {True: "yes", False: "no"}
        add("  senders were the limit", f"minimal {yes_no[minimal_limited]}, ours {yes_no[ours_limited]}", "")
        (our_rate, our_cpu), (minimal_rate, minimal_cpu) = (
            stream.flooded(node, "sample"),
            minimal.flooded(minimal_pid, "sample"),
        )
        add("topic: answered while flooded (as fast as the sockets take them)", our_rate, "msg/s", minimal_rate,
            our_rate / minimal_rate)  # fmt: skip
        add("topic: CPU per message, flooded", our_cpu * 1e6, "us", minimal_cpu * 1e6, our_cpu / minimal_cpu)
        Client("/ros_tensorflow", timeout=30).update_configuration({"queue_size": 100})
        add("topic: sustained rate, ~queue_size 100 (the default), no drops", stream.sustained_rate()[0], "msg/s")
        # the minimal node in turn with them: what a node that calls the model adds to the echo, for comparison
        latencies = alternating_latencies({"echo": echo, "ours": stream, "minimal": minimal})
    echo_latency, our_latency = percentiles_ms(latencies["echo"]), percentiles_ms(latencies["ours"])
    minimal_latency = percentiles_ms(latencies["minimal"])
    for q in ("p50", "p99"):
        ratio = our_latency[q] / echo_latency[q]
        add(f"topic latency {q} at 200 Hz", our_latency[q], "ms", echo_latency[q], ratio, "<= 1.5 x echo", ratio <= 1.5)
        add(f"  minimal node's latency {q} (against the echo)", minimal_latency[q], "ms", echo_latency[q],
            minimal_latency[q] / echo_latency[q])  # fmt: skip
        # the node against the bare model call: steadier than against the echo, which calls no model, as the
        # machine's speed moves from run to run (README: Benchmark)
        add(f"  node's latency {q} against the minimal node's", our_latency[q], "ms", minimal_latency[q],
            our_latency[q] / minimal_latency[q])  # fmt: skip
    echo.close()
    stream.close()

    ours, bare, batch_s = training_samples_per_s(client)
    add("training", ours, "samples/s", bare, ours / bare, ">= 0.9 x bare model.fit", ours / bare >= 0.9)
    times, cancels = during_training(client)
    p = percentiles_ms(times)
    add("/predict p99 during training", p["p99"], "ms", target="<= 10 ms", met=p["p99"] <= 10)
    add("/predict p50 during training", p["p50"], "ms")
    limit = (batch_s + 0.05) * 1e3
    worst = max(cancels) * 1e3
    add("cancel to PREEMPTED (worst of 5)", worst, "ms", limit, worst / limit, "<= 1 batch + 50 ms", worst <= limit)
    if backend == "litert":
        conversion, commit_to_serving = litert_conversions(client, diagnostics)
        add("TFLite conversion per commit, median of 5", conversion, "ms")
        add("commit to LiteRT serving it, median of 5", commit_to_serving, "ms")
    return rows


def litert_conversions(client, diagnostics, goals=5):
    """Median conversion time and commit-to-serving time (ms) the node reports after one-epoch goals."""
    conversions, commit_to_serving = [], []
    for _ in range(goals):
        before = diagnostics.latest["serving"]
        train_goal(client, TrainGoal(epochs=1, batch_size=32))
        status = diagnostics.wait_until(
            lambda s, before=before: s["serving"].startswith("litert,") and s["serving"] != before,
            "LiteRT serving the new weights",
        )
        conversions.append(float(status["litert_conversion_ms"]))
        commit_to_serving.append(float(status["commit_to_litert_ms"]))
    return float(np.median(conversions)), float(np.median(commit_to_serving))


def report(rows):
    def fmt(value):
        return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))

    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, TF {tf.__version__}"
    header = ["backend", "measure", "value", "unit", "floor/reference", "ratio", "target", "met"]
    table = [
        [
            r["backend"],
            r["name"],
            fmt(r["value"]),
            r["unit"],
            fmt(r["reference"]),
            fmt(r["ratio"]),
            r["target"],
            {True: "yes", False: "NO", None: ""}[r["met"]],
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    print(f"\nros_tensorflow benchmark ({machine})")
    for line in [header, ["-" * w for w in widths], *table]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
    (RESULTS / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"\nwritten to {RESULTS / 'bench.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
