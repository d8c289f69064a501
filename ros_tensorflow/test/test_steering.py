"""The README's "Teach the robot to steer" walk-through, run as its commands say: a synthetic camera whose frame
shows a bright vertical line at a horizontal position x, and a teleop whose angular.z steers towards it
(angular.z = 1 - 2x). Frames are recorded with the teleop's commands, a regression CNN trained and evaluated, then
the node (and a TensorFlow-free serving node) drive from live frames, and stop when the camera does.
"""

import os
import subprocess
import threading

import numpy as np
import pytest
import rospy
import rosservice
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from geometry_msgs.msg import Twist
from ros_processes import Diagnostics, node_sends_to, stop_process_group
from ros_tensorflow_msgs.msg import EvaluateActionResult, Prediction, TrainActionResult
from sensor_msgs.msg import Image
from synthetic_camera import HEIGHT, WIDTH
from test_walkthrough import forget_parameters, start, wait_for_node

NODE = ["rosrun", "ros_tensorflow", "node.py", "~image:=/camera/image_raw", "_task:=regression", "_output_dim:=1"]
README_NODE = [*NODE, "_input_shape:=[32, 64, 3]", "_loop_rate:=0"]
RECORDER = ["rosrun", "ros_tensorflow", "record_images.py", "image:=/camera/image_raw", "_target_topic:=/cmd_vel"]
RECORDER += ["_target_fields:=[angular.z]", "_every:=2"]
DRIVER = [*NODE, "_command_topic:=/cmd_vel", "_loop_rate:=0"]
ROBOT = ["rosrun", "--prefix", os.environ.get("SERVE_PYTHON", "python3"), "ros_tensorflow", "serve_node.py"]
ROBOT += ["__ns:=robot", "~image:=/camera/image_raw", "_model_topic:=/ros_tensorflow/model"]
ROBOT += ["_command_topic:=/robot/cmd_vel"]
RANGE = 1.8  # of angular.z = 1 - 2x over the path of the line, x from 0.05 to 0.95


def steering(x):
    return 1.0 - 2.0 * x


def line_frame(x, rng):
    image = rng.normal(60, 25, (HEIGHT, WIDTH, 3)).clip(0, 255).astype(np.uint8)
    centre = int(40 + x * (WIDTH - 80))
    image[:, centre - 20 : centre + 20] = (230, 230, 90)
    return image


def line_path(t):
    """Where the line is t seconds into a drive: a smooth sweep over the frame, as a road curves."""
    return 0.5 + 0.3 * np.sin(2 * np.pi * t / 7.0) + 0.15 * np.sin(2 * np.pi * t / 2.3)


class Scene:
    """A camera (30 Hz) showing the line on its path, and a teleop steering towards it, each command published
    just before the frame it belongs to (as a driver reacts to what they see)."""

    def __init__(self):
        self.camera = rospy.Publisher("/camera/image_raw", Image, queue_size=10)
        self.teleop = None
        self.started = None  # when the drive began; None: no frames
        self.shown = {}  # stamp -> x
        self._rng = np.random.default_rng(2027)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def drive_by_hand(self, on):
        if on and self.teleop is None:
            self.teleop = rospy.Publisher("/cmd_vel", Twist, queue_size=10)
        elif not on and self.teleop is not None:
            self.teleop.unregister()
            self.teleop = None

    def _run(self):
        rate = rospy.Rate(30)
        while not self._stop.is_set():
            started, teleop = self.started, self.teleop
            if started is not None:
                x = float(line_path(rospy.get_time() - started))
                if teleop is not None:
                    teleop.publish(Twist(angular=type(Twist().angular)(z=steering(x))))
                msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
                msg.data = line_frame(x, self._rng).tobytes()
                msg.header.stamp, msg.header.frame_id = rospy.Time.now(), "camera"
                self.shown[msg.header.stamp] = x
                self.camera.publish(msg)
            rate.sleep()

    def drive(self, frames=None):
        """Frames on (and, with frames, wait until that many more are shown)."""
        shown = len(self.shown)
        if self.started is None:
            self.started = rospy.get_time()
        if frames:
            wait_for(lambda: len(self.shown) >= shown + frames, 120, f"{frames} frames")

    def close(self):
        self._stop.set()
        self._thread.join()
        self.drive_by_hand(False)
        self.camera.unregister()


@pytest.fixture
def scene(ros_master):
    scene = Scene()
    yield scene
    scene.close()


def _result(topic, result_type, goal_type, goal, timeout):
    results = []
    sub = rospy.Subscriber(topic + "/result", result_type, results.append)
    wait_for(lambda: node_sends_to(sub), 30, topic)
    subprocess.run(["rostopic", "pub", "--once", topic + "/goal", goal_type, goal], check=True)
    wait_for(lambda: results, timeout, f"{topic}'s result")
    sub.unregister()
    return results[0]


def test_the_steering_walk_through_as_written_learns_to_steer_and_stops_on_a_stale_camera(scene, tmp_path):
    forget_parameters()
    processes = [start(README_NODE, tmp_path)]
    try:
        wait_for_node()
        diagnostics = Diagnostics()
        diagnostics.wait_until(lambda s: s["task"] == "regression", "the regression task on /diagnostics")
        scene.drive_by_hand(True)
        scene.drive()
        processes.append(start(RECORDER, tmp_path))
        diagnostics.wait_until(lambda s: int(s["samples_stored"]) >= 200, "200 frames recorded", 180)
        stop_process_group(processes.pop())
        scene.started = None
        scene.drive_by_hand(False)

        goal = "goal: {epochs: 25, validation_split: 0.2, dataset: recorded}"
        trained = _result("/train", TrainActionResult, "ros_tensorflow_msgs/TrainActionGoal", goal, 900)
        assert trained.status.status == GoalStatus.SUCCEEDED, trained.result.message
        assert np.isnan(trained.result.acc) and trained.result.val_mae < 0.1 * RANGE, trained.result
        goal = "goal: {dataset: recorded}"
        evaluated = _result("/evaluate", EvaluateActionResult, "ros_tensorflow_msgs/EvaluateActionGoal", goal, 300)
        assert evaluated.status.status == GoalStatus.SUCCEEDED, evaluated.result.message
        assert evaluated.result.mae < 0.1 * RANGE and len(evaluated.result.output_mae) == 1
        assert os.path.isfile(os.path.join(evaluated.result.report_dir, "predicted_vs_true.png"))
        print(f"evaluation: {evaluated.result.message}, report in {evaluated.result.report_dir}")

        stop_process_group(processes.pop())  # the trained node restarts to drive: the model comes back from disk
        forget_parameters()
        processes.append(start(DRIVER, tmp_path))
        wait_for_node()
        processes.append(start(ROBOT, tmp_path))
        wait_for(lambda: _serves("/robot/predict"), 120, "the robot's serving node")
        commands = {"/cmd_vel": [], "/robot/cmd_vel": []}
        subs = [rospy.Subscriber(topic, Twist, received.append) for topic, received in commands.items()]
        predictions = {"/ros_tensorflow/prediction": [], "/robot/ros_tensorflow/prediction": []}
        subs += [rospy.Subscriber(topic, Prediction, received.append) for topic, received in predictions.items()]
        for sub in subs:
            node = "/robot/ros_tensorflow" if sub.resolved_name.startswith("/robot/") else "/ros_tensorflow"
            wait_for(lambda sub=sub, node=node: node_sends_to(sub, node=node), 60, sub.resolved_name)
        scene.drive(frames=150)
        scene.started = None  # the camera stops: each node publishes one zero command, then nothing
        for topic, received in commands.items():
            wait_for(lambda received=received: received and received[-1].angular.z == 0.0, 10, f"{topic} stop")
        stopped = {topic: len(received) for topic, received in commands.items()}
        rospy.sleep(1.5)  # silence can only be seen over time: two command timeouts
        assert {topic: len(received) for topic, received in commands.items()} == stopped
        for sub in subs:
            sub.unregister()

        for (topic, predicted), received in zip(predictions.items(), commands.values(), strict=True):
            live = [p for p in predicted if p.header.stamp in scene.shown]
            # under load a node drops frames (the newest wins): enough for the MAE, not every frame
            assert len(live) >= 30 and not live[0].classes and live[0].output, topic
            errors = [abs(p.output[0] - steering(scene.shown[p.header.stamp])) for p in live]
            assert np.mean(errors) < 0.1 * RANGE, f"{topic}: live MAE {np.mean(errors):.3f} over {len(live)} frames"
            print(f"{topic}: live MAE {np.mean(errors):.4f} over {len(live)} frames")  # the README quotes it
            by_value = {round(p.output[0], 5): steering(scene.shown[p.header.stamp]) for p in live}
            driven = [c for c in received[:-1] if round(c.angular.z, 5) in by_value]
            assert len(driven) >= 0.9 * len(live), f"{topic}: a command for each frame predicted"
            assert all(c.linear.x == 0.0 for c in driven)
            command_errors = [abs(c.angular.z - by_value[round(c.angular.z, 5)]) for c in driven]
            assert np.mean(command_errors) < 0.1 * RANGE
    finally:
        for process in processes:
            stop_process_group(process)
        forget_parameters()


def _serves(service):
    try:
        return rosservice.get_service_node(service) is not None
    except rosservice.ROSServiceIOException:
        return False
