"""The README's camera walk-through, run as its commands say, against a synthetic camera of drawn shapes on noise.

The node and record_images.py are started with the README's own command lines; the goal is sent with its
`rostopic pub`. Only the camera is ours: /camera/image_raw, 640 x 480 rgb8 at 30 Hz, showing whichever shape the
test points it at (as a user points the camera at the cup, then at the ball).
"""

import os
import subprocess
import threading

import numpy as np
import pytest
import rosgraph
import rospy
from actionlib_msgs.msg import GoalStatus
from conftest import wait_for
from ros_processes import Diagnostics, node_sends_to, stop_process_group
from ros_tensorflow_msgs.msg import Prediction, TrainActionResult
from ros_tensorflow_msgs.srv import PredictImage
from sensor_msgs.msg import Image
from synthetic_camera import HEIGHT, WIDTH, frame

NODE = ["rosrun", "ros_tensorflow", "node.py", "~image:=/camera/image_raw"]
README_NODE = [*NODE, "_input_shape:=[64, 64, 3]", "_output_dim:=2", "_class_names:=[cup, ball]", "_loop_rate:=0"]
CLASSES = ("circle", "square")  # the README's cup (0) and ball (1)
FRAMES_A_CLASS = 60  # every 5th frame for ten seconds of a 30 Hz camera


class Camera:
    """Publishes a frame of the shape it is pointed at, 30 times a second; remembers what each stamp showed."""

    def __init__(self):
        self.pub = rospy.Publisher("/camera/image_raw", Image, queue_size=10)
        self.pointed_at = None  # an index into CLASSES, or None: no frames
        self.shown = {}  # stamp -> class
        self._rng = np.random.default_rng(2026)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        rate = rospy.Rate(30)
        while not self._stop.is_set():
            label = self.pointed_at
            if label is not None:
                pixels = frame(CLASSES[label], self._rng)
                msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=pixels.tobytes())
                msg.header.stamp, msg.header.frame_id = rospy.Time.now(), "camera"
                self.shown[msg.header.stamp] = label
                self.pub.publish(msg)
            rate.sleep()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.pub.unregister()


def start(argv, ros_home):
    """A command as a user types it, in a shell whose ROS_HOME is ros_home (the node's data in ros_tensorflow/)."""
    return subprocess.Popen(argv, env={**os.environ, "ROS_HOME": str(ros_home)}, start_new_session=True)


def forget_parameters():
    """The shared test master keeps `_param:=` values between runs, as a real one does between restarts."""
    master = rosgraph.Master("/tests")
    if master.hasParam("/ros_tensorflow"):
        master.deleteParam("/ros_tensorflow")


def wait_for_node():
    rospy.wait_for_service("/predict_image", 120)


@pytest.fixture
def camera(ros_master):
    camera = Camera()
    yield camera
    camera.close()


def test_the_camera_walk_through_as_written_gives_a_classifier_that_works_live(camera, tmp_path):
    forget_parameters()
    node = start(README_NODE, tmp_path)
    processes = [node]
    try:
        wait_for_node()
        subscriptions = dict(rosgraph.Master("/tests").getSystemState()[1])
        assert "/ros_tensorflow" in subscriptions.get("/camera/image_raw/compressed", []), "follows the ~image remap"
        diagnostics = Diagnostics()
        for label in range(len(CLASSES)):  # point the camera at the cup, record; then at the ball
            camera.pointed_at = label
            recorder = start(
                ["rosrun", "ros_tensorflow", "record_images.py", "image:=/camera/image_raw", f"_label:={label}"]
                + ["_every:=5"],
                tmp_path,
            )
            processes.append(recorder)
            want = FRAMES_A_CLASS * (label + 1)
            diagnostics.wait_until(lambda s, want=want: int(s["samples_stored"]) >= want, f"{want} frames", 120)
            camera.pointed_at = None
            stop_process_group(recorder)

        results = []
        sub = rospy.Subscriber("/train/result", TrainActionResult, results.append)
        wait_for(lambda: node_sends_to(sub), 30, "/train/result")
        goal = "goal: {epochs: 20, dataset: recorded}"
        subprocess.run(["rostopic", "pub", "--once", "/train/goal", "ros_tensorflow_msgs/TrainActionGoal", goal])
        wait_for(lambda: results, 600, "the goal's result")
        assert results[0].status.status == GoalStatus.SUCCEEDED, results[0].result.message
        sub.unregister()

        predictions = []
        sub = rospy.Subscriber("/ros_tensorflow/prediction", Prediction, predictions.append)
        wait_for(lambda: node_sends_to(sub), 30, "~prediction")
        rng = np.random.default_rng(7)
        for label in rng.integers(0, len(CLASSES), 20):  # the live scene changes every few frames
            camera.pointed_at = int(label)
            shown = len(camera.shown)
            wait_for(lambda shown=shown: len(camera.shown) >= shown + 5, 30, "five frames")
        camera.pointed_at = None
        wait_for(lambda: predictions and predictions[-1].header.stamp == max(camera.shown), 60, "the last frame")
        sub.unregister()
        live = [p for p in predictions if p.header.stamp in camera.shown]
        assert len(live) >= 50, "most frames predicted (the newest frame wins while the model is busy)"
        accuracy = np.mean([p.classes[0] == camera.shown[p.header.stamp] for p in live])
        assert accuracy >= 0.9, f"live accuracy {accuracy:.3f} over {len(live)} frames"
        assert {p.labels[0] for p in live} <= {"cup", "ball"}

        stop_process_group(node)
        forget_parameters()  # restarted without _class_names: the model and its names come back from ~data_dir
        node = start(NODE, tmp_path)
        processes.append(node)
        wait_for_node()
        camera.pointed_at = 1
        frames = []
        sub = rospy.Subscriber("/camera/image_raw", Image, frames.append)
        wait_for(lambda: len(frames) >= 10, 30, "ten camera frames")
        camera.pointed_at = None
        sub.unregister()
        answer = rospy.ServiceProxy("/predict_image", PredictImage)(frames[:10])
        assert list(answer.labels) == [("cup", "ball")[c] for c in answer.classes]
        assert np.mean(np.array(answer.classes) == 1) >= 0.9
    finally:
        for process in processes:
            stop_process_group(process)
        forget_parameters()
