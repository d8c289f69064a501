"""`make bench ROWS=any_model`: models a user brings, in the serving node, each against a minimal hand-written LiteRT
program of the same model run beside it: a detector on 640 x 480 camera frames, and predict_tensors."""

import os
import pathlib
import subprocess
import tempfile

import numpy as np
import rospy
from bench_common import TopicProbe, alternating_p50s_ms, row
from ros_processes import node_pid, stop_process_group, wait_for
from ros_tensorflow_msgs.msg import Tensor
from ros_tensorflow_msgs.srv import PredictTensors
from serving_bench import SERVE_PYTHON, start_serving

from ros_tensorflow.ros.serving_face import rgb_image
from ros_tensorflow.with_tf.demo_models import (
    frame_with_squares,
    postprocess_detector_tflite,
    tflite_of_keras,
    two_in_two_out_model,
)

HERE = pathlib.Path(__file__).resolve().parent
CPU_RATE_HZ = 200
OVERLOAD_HZ = 600  # over twice what either node does on 2 cores: each runs at its own limit
OVERLOAD_RUNS = 3


def detection_rows(work_dir):
    model_path = work_dir / "detector.tflite"
    model_path.write_bytes(postprocess_detector_tflite())
    serving = start_serving("bench_detect", work_dir, f"_model_path:={model_path}", "_image_queue_size:=1000")
    minimal = subprocess.Popen(
        [SERVE_PYTHON, str(HERE / "minimal_detector_node.py"), f"_model_path:={model_path}"], start_new_session=True
    )
    frame = rgb_image(frame_with_squares([(1, 3, 0), (5, 0, 1)])[0])
    try:
        wait_for(lambda: _serves("/bench_detect/ros_tensorflow/set_parameters"), 60, "the serving node")
        ours = TopicProbe(
            "/bench_detect/ros_tensorflow",
            "/bench_detect/ros_tensorflow/image",
            "/bench_detect/ros_tensorflow/detections",
            frame,
        )
        reference = TopicProbe("/minimal_detector", "/minimal_detector/input", "/minimal_detector/output", frame)
        rates = {"ours": [], "minimal": []}
        for _ in range(OVERLOAD_RUNS):  # alternating, so that both meet the same moments of the machine
            for name, probe in (("ours", ours), ("minimal", reference)):
                rates[name].append(probe.overloaded_rate(OVERLOAD_HZ))
        our_cpu = ours.cpu_per_message(node_pid("/bench_detect/ros_tensorflow"), CPU_RATE_HZ)
        floor_cpu = reference.cpu_per_message(minimal.pid, CPU_RATE_HZ)
        ours.close()
        reference.close()
    finally:
        stop_process_group(serving)
        stop_process_group(minimal)
    if None in rates["ours"] + rates["minimal"] or not (our_cpu and floor_cpu):
        return [row("any_model", "detector: a node lost frames (its queue overflowed)", "", "")]
    out, floor = (float(np.median([rate for rate, _ in rates[name]])) for name in ("ours", "minimal"))
    sent = min(sent for name in rates for _, sent in rates[name])
    limit = "" if sent > 1.1 * max(out, floor) else " (NOT its limit: the sender was)"
    return [
        row("any_model", f"detector on 640x480 frames, serving node: frames/s out while sent {sent:.0f}/s{limit}",
            out, "frames/s", floor, out / floor, ">= 0.9 x minimal LiteRT loop", out / floor >= 0.9 and not limit),
        row("any_model", f"  its CPU per frame at {CPU_RATE_HZ} Hz, as frames/s of one core", 1 / our_cpu,
            "frames/s", 1 / floor_cpu, floor_cpu / our_cpu),
    ]  # fmt: skip


def _serves(service):
    import rosservice

    try:
        return rosservice.get_service_node(service) is not None
    except rosservice.ROSServiceIOException:
        return False


def tensors_rows(work_dir):
    model_path = work_dir / "two.tflite"
    model_path.write_bytes(tflite_of_keras(two_in_two_out_model()))
    serving = start_serving("bench_tensors", work_dir, f"_model_path:={model_path}")
    minimal = subprocess.Popen(
        [SERVE_PYTHON, str(HERE / "minimal_tensors_server.py"), f"_model_path:={model_path}"], start_new_session=True
    )
    request = [Tensor("", [1, 4], "", [1.0, 2.0, 3.0, 4.0]), Tensor("", [1, 3], "", [5.0, 6.0, 7.0])]
    try:
        wait_for(lambda: _serves("/bench_tensors/predict_tensors") and _serves("/minimal_tensors_predict"), 60,
                 "the services")  # fmt: skip
        proxies = {
            name: rospy.ServiceProxy(service, PredictTensors, persistent=True)
            for name, service in (("ours", "/bench_tensors/predict_tensors"), ("minimal", "/minimal_tensors_predict"))
        }
        pids = [os.getpid(), node_pid("/bench_tensors/ros_tensorflow"), minimal.pid]
        p50s = alternating_p50s_ms(proxies, request, pids)
    finally:
        stop_process_group(serving)
        stop_process_group(minimal)
    ours, floor = p50s["ours"], p50s["minimal"]
    return [
        row("any_model", "serving node predict_tensors p50, 2 inputs 2 outputs (on one core)", ours, "ms", floor,
            ours / floor, "<= 1.2 x minimal LiteRT service", ours / floor <= 1.2),
    ]  # fmt: skip


def any_model_rows():
    if not SERVE_PYTHON:
        return [row("any_model", "rows skipped: SERVE_PYTHON is not set (make bench sets it)", "", "")]
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_any_model_"))
    return [*detection_rows(work_dir), *tensors_rows(work_dir)]
