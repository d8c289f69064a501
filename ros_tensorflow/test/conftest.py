"""Fixtures for the integration tests: a real master and the node started by roslaunch.

Unit tests need none of this: the master starts only when a test asks for it.
"""

import os

import pytest
import rospy
from ros_processes import LaunchedNode, Master, ServingNode, WaitTimeout
from ros_processes import wait_for as _wait_for


def wait_for(condition, timeout, what):
    """Poll condition() until it is true; fail the test naming `what` after timeout seconds."""
    try:
        _wait_for(condition, timeout, what)
    except WaitTimeout as timeout_error:
        pytest.fail(str(timeout_error))


@pytest.fixture(scope="session")
def ros_master(tmp_path_factory):
    """A roscore of the tests' own, on a free port, and this process as a rospy node."""
    master = Master(tmp_path_factory.mktemp("ros_home"))
    rospy.init_node("integration_tests", anonymous=True, disable_signals=True)
    yield master
    rospy.signal_shutdown("tests done")
    master.stop()


@pytest.fixture
def launch_node(ros_master, tmp_path):
    """Factory: launch_node(**roslaunch_args) -> (LaunchedNode, train action client)."""
    launched = []

    def launch(**args):
        node = LaunchedNode(tmp_path, **args)
        launched.append(node)
        return node, node.wait_until_ready()

    yield launch
    for node in launched:
        node.stop()


@pytest.fixture
def node(launch_node):
    """The node with its default parameters, and a train action client."""
    return launch_node()


@pytest.fixture
def serving(ros_master, tmp_path):
    """Factory: serving(yaml="settings", **serve.launch args) -> ServingNode in /robot1 (or ns=...), ready."""
    assert os.environ.get("SERVE_PYTHON"), "SERVE_PYTHON names the serving venv's python (make test sets it)"
    started = []

    def start(yaml="", **args):
        if yaml:
            (tmp_path / "serve.yaml").write_text(yaml)
            args["config"] = tmp_path / "serve.yaml"
        node = ServingNode(tmp_path, **args)
        started.append(node)
        node.wait_until_ready()
        return node

    yield start
    for node in started:
        node.stop()
