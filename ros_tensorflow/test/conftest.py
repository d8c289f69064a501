"""Fixtures for the integration tests: a real master and the node started by roslaunch.

Unit tests need none of this; rospy is only imported when a test asks for it.
"""

import os
import signal
import socket
import subprocess
import time

import pytest


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout, what):
    """Poll condition() until it is true; fail the test with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def ros_master(tmp_path_factory):
    """A roscore of the tests' own, on a free port, and this process as a rospy node."""
    port = _free_port()
    os.environ["ROS_MASTER_URI"] = f"http://127.0.0.1:{port}"
    os.environ["ROS_HOME"] = str(tmp_path_factory.mktemp("ros_home"))
    os.environ.setdefault("ROS_HOSTNAME", "127.0.0.1")
    core = subprocess.Popen(
        ["roscore", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    import rosgraph
    import rospy

    wait_for(lambda: rosgraph.is_master_online(), 60, "roscore")
    rospy.init_node("integration_tests", anonymous=True, disable_signals=True)
    yield os.environ["ROS_MASTER_URI"]
    rospy.signal_shutdown("tests done")
    os.killpg(core.pid, signal.SIGINT)
    core.wait(timeout=30)


class LaunchedNode:
    """`roslaunch ros_tensorflow node.launch` with the given args, its output kept in a log file."""

    def __init__(self, log_dir, **args):
        self.log_path = log_dir / "roslaunch.log"
        argv = ["roslaunch", "ros_tensorflow", "node.launch", "loop_rate:=0"]
        argv += [f"{name}:={value}" for name, value in args.items()]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_ready(self, timeout=120):
        import actionlib
        import rospy
        from ros_tensorflow_msgs.msg import TrainAction

        wait_for(lambda: self._serves_predict() or self.process.poll() is not None, timeout, "the node's services")
        assert self.process.poll() is None, f"roslaunch exited:\n{self.log()}"
        client = actionlib.SimpleActionClient("train", TrainAction)
        assert client.wait_for_server(rospy.Duration(timeout)), "no train action server"
        return client

    @staticmethod
    def _serves_predict():
        import rosservice

        try:
            return rosservice.get_service_node("/predict") is not None
        except rosservice.ROSServiceIOException:
            return False

    def log(self):
        return self.log_path.read_text()[-5000:]

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        wait_for(lambda: not self._serves_predict(), 30, "the node to unregister")


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
