"""Regression rows of `make bench`: a regression model's /predict against a classifier's of the same size, both
served by nodes running side by side, and its training against a bare model.fit of the same model and data."""

import os
import pathlib
import tempfile
import time

import actionlib
import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from bench_common import SAMPLE, alternating_p50s_ms, row
from ros_processes import Diagnostics, LaunchedNode, node_pid
from ros_tensorflow_msgs.msg import TrainAction, TrainGoal
from ros_tensorflow_msgs.srv import Predict

from ros_tensorflow.tf_free.datasets import make_synthetic_regression
from ros_tensorflow.with_tf.model import build_model, fit_target_scale


def _node(task, ns):
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"bench_{task}_"))
    config = work_dir / "config.yaml"
    config.write_text(f"task: {task}\noutput_dim: {1 if task == 'regression' else 2}\n")
    node = LaunchedNode(work_dir, config=config, ns=ns)
    rospy.wait_for_service(f"/{ns}/predict", 120)
    return node


def _train(client, goal):
    client.send_goal(goal)
    client.wait_for_result()
    assert client.get_state() == GoalStatus.SUCCEEDED, client.get_goal_status_text()


def regression_rows(n=3000, epochs=20, batch_size=32, rounds=5):
    nodes = [_node("classification", "cls"), _node("regression", "reg")]
    rows = []
    try:
        client = actionlib.SimpleActionClient("/reg/train", TrainAction)
        assert client.wait_for_server(rospy.Duration(120)), "no /reg/train"
        _train(client, TrainGoal(epochs=1, batch_size=batch_size))
        for ns in ("cls", "reg"):  # until LiteRT serves each node's weights (TensorFlow answers until then)
            status = Diagnostics(f"/{ns}/ros_tensorflow: model", f"/{ns}/ros_tensorflow")
            status.wait_until(lambda s: s["serving"].startswith("litert"), f"/{ns} served by LiteRT", 120)
            status.sub.unregister()
        calls = {name: rospy.ServiceProxy(f"/{name}/predict", Predict, persistent=True) for name in ("cls", "reg")}
        # on one core, as the other /predict rows: unpinned, which round trips crossed cores was chance (the same
        # code measured 1.07-1.76 x in three runs in a row)
        pids = [os.getpid(), *(node_pid(f"/{name}/ros_tensorflow") for name in calls)]
        p50s = alternating_p50s_ms(calls, SAMPLE, pids, n)
        ours, classifier = p50s["reg"], p50s["cls"]
        ratio = ours / classifier
        rows.append(row("litert", "regression /predict 1 sample p50", ours, "ms", classifier, ratio,
                        "<= 1.05 x classifier", ratio <= 1.05))  # fmt: skip

        x, y = make_synthetic_regression(1000, 10, 1, seed=0)
        model = build_model(10, 1, task="regression")
        fit_target_scale(model, y)
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
        ours, bare = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
            bare.append(epochs * len(x) / (time.perf_counter() - start))
            start = time.perf_counter()
            _train(client, TrainGoal(epochs=epochs, batch_size=batch_size))
            ours.append(epochs * len(x) / (time.perf_counter() - start))
        ours, bare = float(np.median(ours)), float(np.median(bare))
        rows.append(row("litert", "regression training", ours, "samples/s", bare, ours / bare,
                        ">= 0.9 x bare model.fit", ours / bare >= 0.9))  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
    return rows
