"""`make bench`'s rows for the serving node (serve_node.py, run by SERVE_PYTHON: the serving venv, no TensorFlow),
each against its reference measured in the same run: the training node, a trivial service, a minimal LiteRT
service, an echo node that runs the bare preprocessing and call, and the trainer's publish of a model."""

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import roslib.packages
import rospy
import rosservice
from bench_common import (
    FLOOD_SENDERS,
    SAMPLE,
    TopicProbe,
    alternating_p50s_ms,
    bare_camera_call,
    camera_frame,
    flooded_camera_rows,
    minimal_sample_node,
    p50_ms,
    percentiles_ms,
    row,
    timed,
)
from ros_processes import Diagnostics, node_pid, stop_process_group, wait_for
from ros_tensorflow_msgs.msg import Model
from ros_tensorflow_msgs.srv import Predict

from ros_tensorflow.tf_free.signing import Signer, generate_key_pair, load_trusted_keys, model_fields, verify
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import build_classifier

HERE = pathlib.Path(__file__).resolve().parent
SERVE_PYTHON = os.environ.get("SERVE_PYTHON", "")
SERVING_NODES = 8  # for the model swap
CAMERA_SHAPE = (96, 96, 3)


def _node_script(name):
    return roslib.packages.find_node("ros_tensorflow", name)[0]


def start_serving(ns, work_dir, *params):
    """serve_node.py in namespace ns, started directly (no roslaunch), its data in work_dir/ns."""
    argv = [SERVE_PYTHON, _node_script("serve_node.py"), f"__ns:={ns}", f"_data_dir:={work_dir / ns}", *params]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def answers(service, sample=SAMPLE):
    """Whether service exists and answers a prediction of sample (one without a model refuses)."""
    try:
        if rosservice.get_service_uri(service) is None:
            return False
        rospy.ServiceProxy(service, Predict)(sample)
        return True
    except (rosservice.ROSServiceIOException, rospy.ServiceException):
        return False


def start_to_predict(argv, service):
    """(seconds from the process's start to its first answered prediction, the process)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: answers(service), 120, service)
    return time.monotonic() - started, process


def rss_mb(pid):
    """Resident memory of a process and all its descendants (the training node's converter), in MB."""
    total, pids = 0, [pid]
    while pids:
        current = pids.pop()
        status = pathlib.Path(f"/proc/{current}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        # Children of every thread: the training node's converter is started by its export thread, and
        # /proc/<pid>/task/<pid>/children lists only the main thread's (the README once gave 750 MB, not 1.6 GB).
        for children in pathlib.Path(f"/proc/{current}/task").glob("*/children"):
            pids += [int(child) for child in children.read_text().split()]
    return total / 1024


def memory_and_start_rows(work_dir, model_path):
    """The serving node and the training node, each alone, serving the tutorial's MLP."""
    serving_s, serving = start_to_predict(
        [SERVE_PYTHON, _node_script("serve_node.py"), "__ns:=bench_serve", f"_model_path:={model_path}"],
        "/bench_serve/predict",
    )
    training_s, training = start_to_predict(
        [sys.executable, _node_script("node.py"), "__ns:=bench_train", "_loop_rate:=0", f"_data_dir:={work_dir}/t"],
        "/bench_train/predict",
    )
    try:
        Diagnostics("/bench_train/ros_tensorflow: model", "/bench_train/ros_tensorflow").wait_until(
            lambda s: s["serving"].startswith("litert"), "the training node's converter done", 120
        )
        for service in ("/bench_serve/predict", "/bench_train/predict"):
            timed(lambda service=service: rospy.ServiceProxy(service, Predict)(SAMPLE), 100)
        serving_mb = rss_mb(node_pid("/bench_serve/ros_tensorflow"))
        training_mb = rss_mb(node_pid("/bench_train/ros_tensorflow"))
    finally:
        stop_process_group(serving)
        stop_process_group(training)
    return [
        row("serve", "serving node: resident memory, all it starts", serving_mb, "MB", training_mb,
            serving_mb / training_mb, "<= 200 MB", serving_mb <= 200),
        row("serve", "serving node: start to first /predict answer", serving_s, "s", training_s,
            serving_s / training_s, "<= 1.5 s", serving_s <= 1.5),
    ]  # fmt: skip


def predict_rows(work_dir, model_path):
    """/predict p50 of the serving node, the trivial service and the minimal LiteRT service, called in turn."""
    serving = start_serving("bench_serve", work_dir, f"_model_path:={model_path}")
    minimal = subprocess.Popen(
        [SERVE_PYTHON, str(HERE / "minimal_litert_server.py"), f"_model_path:={model_path}"], start_new_session=True
    )
    try:
        wait_for(lambda: answers("/bench_serve/predict") and answers("/minimal_litert_predict"), 60, "the services")
        proxies = {
            name: rospy.ServiceProxy(service, Predict, persistent=True)
            for name, service in (
                ("ours", "/bench_serve/predict"),
                ("trivial", "/trivial_predict"),
                ("minimal", "/minimal_litert_predict"),
            )
        }
        pids = [os.getpid(), node_pid("/bench_serve/ros_tensorflow"), minimal.pid]
        pids += [node_pid(name) for name in ("/trivial_predict_server",)]
        p50s = alternating_p50s_ms(proxies, SAMPLE, pids)
    finally:
        stop_process_group(serving)
        stop_process_group(minimal)
    ours, trivial, floor = (p50s[name] for name in ("ours", "trivial", "minimal"))
    return [
        row("serve", "serving node /predict p50 (on one core)", ours, "ms", floor, ours / floor,
            "<= 1.2 x minimal LiteRT service", ours / floor <= 1.2),
        row("serve", "  against the trivial service", ours, "ms", trivial, ours / trivial),
    ]  # fmt: skip


def stream_rows(work_dir, model_path):
    """~input's sustained rate from FLOOD_SENDERS sender processes (TopicProbe.sustained_rate): the serving node,
    keeping every input as the minimal node does, against the minimal node (bench/echo_node.py in the same venv,
    the same model)."""
    serving = start_serving("bench_stream", work_dir, f"_model_path:={model_path}", "_queue_size:=100000")
    try:
        wait_for(lambda: answers("/bench_stream/predict"), 60, "the serving node")
        ours = TopicProbe(
            "/bench_stream/ros_tensorflow",
            "/bench_stream/ros_tensorflow/input",
            "/bench_stream/ros_tensorflow/prediction",
        )
        with minimal_sample_node(SERVE_PYTHON, model_path) as (minimal, _):
            (rate, _), (minimal_rate, _) = ours.sustained_rate(), minimal.sustained_rate()
        ours.close()
    finally:
        stop_process_group(serving)
    return [
        row("serve", f"serving node topic: sustained rate from {FLOOD_SENDERS} sender processes", rate, "msg/s",
            minimal_rate, rate / minimal_rate, ">= 0.9 x minimal node (receive, call, publish)",
            rate / minimal_rate >= 0.9),
    ]  # fmt: skip


def camera_rows(work_dir):
    """640 x 480 rgb8 frames into a 96 x 96 x 3 CNN: the serving node against the minimal node (bench/echo_node.py
    with the same model: receive, bare preprocessing + call, publish), each flooded by senders of their own
    (flooded_camera_rows). Both keep every frame (the node's ~image_queue_size as deep as the minimal node's socket):
    with the default, 1, the node drops a frame whenever two arrive during one prediction, as a camera's consumer
    should."""
    model_path = work_dir / "camera.tflite"
    model_path.write_bytes(to_tflite(build_classifier(CAMERA_SHAPE, 2)))
    serving = start_serving("bench_camera", work_dir, f"_model_path:={model_path}", "_image_queue_size:=1000")
    minimal = subprocess.Popen(
        [SERVE_PYTHON, str(HERE / "echo_node.py"), "__name:=model_echo", "_type:=image", f"_model_path:={model_path}"],
        start_new_session=True,
    )
    try:
        frame_values = [0.0] * int(np.prod(CAMERA_SHAPE))
        wait_for(lambda: answers("/bench_camera/predict", frame_values), 60, "the serving node")
        ours = TopicProbe(
            "/bench_camera/ros_tensorflow",
            "/bench_camera/ros_tensorflow/image",
            "/bench_camera/ros_tensorflow/prediction",
            camera_frame(),
        )
        reference = TopicProbe("/model_echo", "/model_echo/input", "/model_echo/output", camera_frame())
        bare_s = float(np.median(timed(bare_camera_call(model_path.read_bytes(), CAMERA_SHAPE), 200)))
        rows = flooded_camera_rows(
            "serve",
            "serving node camera",
            ours,
            node_pid("/bench_camera/ros_tensorflow"),
            reference,
            minimal.pid,
            bare_s,
        )
        ours.close()
        reference.close()
    finally:
        stop_process_group(serving)
        stop_process_group(minimal)
    return rows


def _model_message(flatbuffer, version):
    import hashlib

    return Model(
        version=version,
        source="/bench",
        format="tflite",
        data=flatbuffer,
        sha256=hashlib.sha256(flatbuffer).hexdigest(),
        input_shape=[10],
        output_dim=2,
        class_names=[],
    )


def swap_rows(work_dir):
    """The trainer's publish of a new model to SERVING_NODES serving nodes all answering with it, while a client
    calls one of them without a pause: the time to the last node, that client's p99, and its errors."""
    flatbuffers = [to_tflite(build_classifier()) for _ in range(2)]
    publisher = rospy.Publisher("/bench/model", Model, queue_size=1, latch=True)
    nodes = [start_serving(f"robot{i}", work_dir, "_model_topic:=/bench/model") for i in range(SERVING_NODES)]
    services = [f"/robot{i}/predict" for i in range(SERVING_NODES)]
    try:
        wait_for(lambda: all(rosservice.get_service_uri(s) for s in services), 120, "the serving nodes")
        proxies = [rospy.ServiceProxy(service, Predict) for service in services]

        def version_of(proxy):
            try:
                return proxy(SAMPLE).model_version
            except rospy.ServiceException:
                return -1

        publisher.publish(_model_message(flatbuffers[0], 1))
        wait_for(lambda: all(version_of(proxy) == 1 for proxy in proxies), 120, "version 1 everywhere")
        calls, errors, stop = [], [0], threading.Event()

        def client():
            proxy = rospy.ServiceProxy(services[0], Predict, persistent=True)
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    proxy(SAMPLE)
                except rospy.ServiceException:
                    errors[0] += 1
                calls.append(time.perf_counter() - started)
            proxy.close()

        thread = threading.Thread(target=client)
        thread.start()
        swaps = []
        for version in range(2, 7):
            published = time.monotonic()
            publisher.publish(_model_message(flatbuffers[version % 2], version))
            waiting = list(proxies)
            while waiting:
                waiting = [proxy for proxy in waiting if version_of(proxy) != version]
            swaps.append(time.monotonic() - published)
        stop.set()
        thread.join()
    finally:
        for node in nodes:
            stop_process_group(node)
        publisher.unregister()
    worst, p99 = max(swaps), percentiles_ms(calls)["p99"]
    return [
        row("serve", f"model swap: publish to {SERVING_NODES} nodes answering with it, worst of 5", worst, "s",
            target="<= 2 s", met=worst <= 2),
        row("serve", "  /predict p99 during the swaps", p99, "ms"),
        row("serve", "  /predict errors during the swaps", errors[0], f"of {len(calls)}", target="0",
            met=errors[0] == 0),
    ]  # fmt: skip


def signing_rows(work_dir):
    """What ~trusted_keys adds to a model's arrival: its signature checked (signed_payload and Ed25519 over the data's
    sha256), against the sha256 of the data that every arrival computes anyway, for models of 1 MB and 20 MB."""
    generate_key_pair(work_dir / "bench_key")
    signer, trusted = Signer(work_dir / "bench_key"), load_trusted_keys([work_dir / "bench_key.pub"])
    rows = []
    for megabytes in (1, 20):
        data = np.random.default_rng(megabytes).bytes(megabytes << 20)
        fields = model_fields(1, 1, hashlib.sha256(data).hexdigest(), [10], 2, ["a", "b"], "/bench")
        signature = signer.sign(fields)

        def check(data=data, fields=fields, signature=signature):
            verify(trusted, {**fields, "sha256": hashlib.sha256(data).hexdigest()}, signature, signer.key_id)

        checked = p50_ms(timed(check, 50))
        hashed = p50_ms(timed(lambda data=data: hashlib.sha256(data).hexdigest(), 50))
        rows.append(row("serve", f"signed model checked (sha256 + Ed25519), {megabytes} MB, p50", checked, "ms",
                        hashed, checked / hashed, "", None))  # fmt: skip
    return rows


def serving_rows():
    if not SERVE_PYTHON:
        return [row("serve", "serving node rows skipped: SERVE_PYTHON is not set (make bench sets it)", "", "")]
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model_path = work_dir / "model.tflite"
    model_path.write_bytes(to_tflite(build_classifier()))
    return [
        *memory_and_start_rows(work_dir, model_path),
        *predict_rows(work_dir, model_path),
        *stream_rows(work_dir, model_path),
        *camera_rows(work_dir),
        *swap_rows(work_dir),
        *signing_rows(work_dir),
    ]
