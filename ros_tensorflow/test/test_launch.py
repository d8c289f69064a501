"""The launch files as roslaunch reads them, and the training node's entry point where TensorFlow is missing."""

import os
import subprocess

import pytest

SERVE_PYTHON = os.environ.get("SERVE_PYTHON", "")


def launched_nodes(launch_file, *args, namespace=None):
    env = {name: value for name, value in os.environ.items() if name != "ROS_NAMESPACE"}
    if namespace:
        env["ROS_NAMESPACE"] = namespace
    listed = subprocess.run(
        ["roslaunch", "--nodes", "ros_tensorflow", launch_file, *args], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


@pytest.mark.parametrize("launch_file", ["node.launch", "serve.launch"])
def test_both_launch_files_run_in_the_callers_namespace_or_the_one_given(launch_file):
    assert launched_nodes(launch_file) == ["/ros_tensorflow"]
    assert launched_nodes(launch_file, namespace="robot1") == ["/robot1/ros_tensorflow"]
    assert launched_nodes(launch_file, "ns:=lab") == ["/lab/ros_tensorflow"]
    assert launched_nodes(launch_file, "ns:=/lab", namespace="robot1") == ["/lab/ros_tensorflow"]


def test_the_training_node_without_tensorflow_says_to_build_it(ros_master):
    assert SERVE_PYTHON, "SERVE_PYTHON names the serving venv's python (make test sets it)"
    node = subprocess.run(
        [SERVE_PYTHON, "ros_tensorflow/nodes/node.py", "__name:=no_tensorflow"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.join(os.path.dirname(__file__), "..", ".."),
    )
    assert node.returncode == 1
    assert "TensorFlow cannot be imported" in node.stderr + node.stdout and "make build" in node.stderr + node.stdout
    assert "Traceback" not in node.stderr
