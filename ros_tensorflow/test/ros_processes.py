"""Start a master and the launched node, for the integration tests and the benchmark."""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import xmlrpc.client

import rosgraph
import rosnode
import rospy
import rosservice
from diagnostic_msgs.msg import DiagnosticArray
from ros_tensorflow_msgs.msg import TrainAction

from ros_tensorflow.ros.tfctl import SimpleActionClient


class WaitTimeout(AssertionError):
    """A condition did not come true in time."""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout, what):
    """Poll condition() until it is true; raise WaitTimeout naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def node_sends_to(*subscribers, node="/ros_tensorflow"):
    """Whether the node publishes to each of our subscribers yet. Ours counts a connection once the node's
    header arrives, but the node adds it to its publisher only after sending that header: a message the
    node publishes in between is not sent to us."""
    if not all(subscriber.get_num_connections() for subscriber in subscribers):
        return False
    api = rosnode.get_api_uri(rosgraph.Master("/tests"), node, skip_cache=True)
    bus = xmlrpc.client.ServerProxy(api).getBusInfo("/tests")[2]
    me = rospy.get_name()
    to_us = {topic for _, destination, direction, _, topic, *_ in bus if destination == me and direction == "o"}
    return all(subscriber.resolved_name in to_us for subscriber in subscribers)


def node_receives_from_us(*topics, node="/ros_tensorflow"):
    """Whether the node has taken each topic from our publisher yet, asked of the node itself. Our publisher's own
    count is not enough after a relaunch: a connection to the node of the same name that stopped stays in it until
    we next write, and a goal sent then reaches only the dead node."""
    api = rosnode.get_api_uri(rosgraph.Master("/tests"), node, skip_cache=True)
    if api is None:
        return False
    bus = xmlrpc.client.ServerProxy(api).getBusInfo("/tests")[2]
    me = rospy.get_node_uri()
    from_us = {topic for _, source, direction, _, topic, *_ in bus if source == me and direction == "i"}
    return all(rospy.resolve_name(topic) in from_us for topic in topics)


def action_client(name, action, node="/ros_tensorflow", timeout=60):
    """A SimpleActionClient of the node's action `name`, once the node takes our goals and cancels."""
    client = SimpleActionClient(name, action)  # actionlib's without its race on goals refused at once
    assert client.wait_for_server(rospy.Duration(timeout)), f"no {name} action server"
    wait_for(lambda: node_receives_from_us(f"{name}/goal", f"{name}/cancel", node=node), timeout, f"{name}/goal")
    return client


def node_pid(name):
    """The process id of a running node, asked through its XML-RPC API."""
    api = rosnode.get_api_uri(rosgraph.Master("/tests"), name, skip_cache=True)  # a relaunched node has a new URI
    return xmlrpc.client.ServerProxy(api).getPid("/tests")[2]


class Master:
    """A roscore of our own on a free port; sets ROS_MASTER_URI and ROS_HOME for this process and its children."""

    def __init__(self, ros_home):
        self.port = free_port()
        os.environ["ROS_MASTER_URI"] = f"http://127.0.0.1:{self.port}"
        os.environ["ROS_HOME"] = str(ros_home)
        os.environ.setdefault("ROS_HOSTNAME", "127.0.0.1")
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["roscore", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(rosgraph.is_master_online, 60, "roscore")

    def stop(self):
        stop_process_group(self.process)

    def restart(self):
        """A new roscore on the same port, knowing nothing of the nodes, as after a crash of the old one."""
        # rosmaster itself: roscore starts it in a session of its own
        os.kill(rosgraph.Master("/tests").getPid(), signal.SIGKILL)
        stop_process_group(self.process)
        wait_for(lambda: not rosgraph.is_master_online(), 30, "the old roscore to be gone")
        self.start()


def process_status(pid):
    """(state, parent pid) of process pid, from /proc; OSError once it is gone."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    return fields[0], int(fields[1])


def running(pid):
    """Whether process pid runs (a zombie has ended: only its parent has not collected it yet)."""
    try:
        return process_status(pid)[0] != "Z"
    except OSError:
        return False


def ros_processes_running():
    """The ROS processes alive on this machine, for a failure's message: a node shut down because "a new node
    registered with same name" names the other one here."""
    lines = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            if any(arg.startswith("__name:=") or arg.endswith(("roslaunch", "rosmaster")) for arg in argv):
                lines.append(f"{cmdline.parent.name} {' '.join(argv)}")
    return "ROS processes running now:\n" + "\n".join(lines)


def stop_process_group(process, timeout=30):
    """SIGINT, as Ctrl-C would, then SIGKILL if it does not end in time."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class LaunchedNode:
    """`roslaunch ros_tensorflow node.launch` with the given args, its output kept in a log file.

    Its data_dir defaults to a folder of its own under work_dir, so no state leaks between launches.
    """

    node_pid = None  # the node's own process, once wait_until_ready has seen it

    def __init__(self, work_dir, **args):
        self.log_path = work_dir / "roslaunch.log"
        self.name = f"/{args.get('node_name', 'ros_tensorflow')}"
        args = {"loop_rate": 0, "data_dir": work_dir / "data", **args}
        # The master outlives launches: parameters an earlier launch set would otherwise leak into this one.
        with contextlib.suppress(rosgraph.masterapi.Error):
            rosgraph.Master("/tests").deleteParam(self.name)
        argv = ["roslaunch", "ros_tensorflow", "node.launch", *(f"{name}:={value}" for name, value in args.items())]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_ready(self, timeout=120):
        """Wait for /predict and the train action server; returns a train action client."""
        wait_for(lambda: self._serves_predict() or self.process.poll() is not None, timeout, "the node's services")
        assert self.process.poll() is None, f"roslaunch exited:\n{self.log()}\n{ros_processes_running()}"
        self.node_pid = node_pid(self.name)
        # /predict may be another node's of the same name (one still running): its tests would pass for this one
        assert process_status(self.node_pid)[1] == self.process.pid, (
            f"{self.name} (pid {self.node_pid}) is not this roslaunch's node\n{ros_processes_running()}"
        )
        return action_client("train", TrainAction, node=self.name, timeout=timeout)

    def _serves_predict(self):
        try:
            return rosservice.get_service_node("/predict") is not None
        except rosservice.ROSServiceIOException:
            return False

    def log(self):
        return self.log_path.read_text()[-5000:]

    def stop(self):
        if self.process.poll() is not None:
            return
        stop_process_group(self.process)
        wait_for(lambda: not self._serves_predict(), 30, "the node to unregister")
        # roslaunch started the node in a session of its own: were roslaunch killed, the node would live on,
        # and a node of the same name launched next would be shut down by the master once this one registers
        if self.node_pid is not None:
            wait_for(lambda: not running(self.node_pid), 30, f"the node (pid {self.node_pid}) to end")

    def kill_node(self, name="/ros_tensorflow"):
        """SIGKILL the node itself, as a power cut would; then end roslaunch and clear the master of it."""
        os.kill(node_pid(name), signal.SIGKILL)
        stop_process_group(self.process)
        rosnode.cleanup_master_blacklist(rosgraph.Master("/tests"), [name])
        wait_for(lambda: not self._serves_predict(), 30, "the killed node to be unregistered")


class ServingNode(LaunchedNode):
    """`roslaunch ros_tensorflow serve.launch` in namespace ns, run by SERVE_PYTHON (the serving venv, where
    TensorFlow cannot be imported; the Makefile sets it) unless python says otherwise."""

    def __init__(self, work_dir, ns="robot1", **args):
        self.ns = ns
        self.log_path = work_dir / f"{ns}.log"
        python = args.pop("python", os.environ.get("SERVE_PYTHON", ""))
        args = {"data_dir": work_dir / ns, "ns": ns, "launch_prefix": python, **args}
        with contextlib.suppress(rosgraph.masterapi.Error):
            rosgraph.Master("/tests").deleteParam(f"/{ns}/{args.get('node_name', 'ros_tensorflow')}")
        argv = ["roslaunch", "ros_tensorflow", "serve.launch", *(f"{name}:={value}" for name, value in args.items())]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _serves_predict(self):
        try:
            return rosservice.get_service_node(f"/{self.ns}/predict") is not None
        except rosservice.ROSServiceIOException:
            return False

    def wait_until_ready(self, timeout=60):
        """Until its last registration (~set_parameters) is there: a master killed before it would kill the node."""
        wait_for(lambda: self._serves("set_parameters") or self.process.poll() is not None, timeout, "the serving node")
        assert self.process.poll() is None, f"roslaunch exited:\n{self.log()}\n{ros_processes_running()}"

    def _serves(self, name):
        try:
            return rosservice.get_service_node(f"/{self.ns}/ros_tensorflow/{name}") is not None
        except rosservice.ROSServiceIOException:
            return False


class Diagnostics:
    """The latest of one of the node's statuses on /diagnostics, as a dict of its values plus _level and _message."""

    def __init__(self, name="/ros_tensorflow: model", hardware_id="/ros_tensorflow"):
        self.name, self.hardware_id = name, hardware_id
        self.latest = None
        self._updated = threading.Condition()
        self.sub = rospy.Subscriber("/diagnostics", DiagnosticArray, self._on_diagnostics)

    def _on_diagnostics(self, array):
        for status in array.status:
            if status.name == self.name and status.hardware_id == self.hardware_id:
                with self._updated:
                    self.latest = {kv.key: kv.value for kv in status.values}
                    self.latest.update(_level=status.level, _message=status.message)
                    self._updated.notify_all()

    def wait_until(self, condition, what, timeout=30):
        with self._updated:
            ok = self._updated.wait_for(lambda: self.latest is not None and condition(self.latest), timeout)
        assert ok, f"timed out waiting for {what}; last status {self.latest}"
        return self.latest
