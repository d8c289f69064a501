"""A client that starts after the master did, as a new process: it finds the node only through the master.

Prints one JSON object: when (time.time()) /predict answered, ~prediction arrived for an ~input, and a train goal
succeeded; None for what did not work.
"""

import json
import time

import actionlib
import rospy
from actionlib_msgs.msg import GoalStatus
from ros_tensorflow_msgs.msg import Prediction, TrainAction, TrainGoal
from ros_tensorflow_msgs.srv import Predict
from std_msgs.msg import Float64MultiArray

when = {}
rospy.init_node("fresh_client", anonymous=True)
rospy.wait_for_service("/predict", 60)
rospy.ServiceProxy("/predict", Predict)([0.5] * 10)
when["predict"] = time.time()

predictions = []
sub = rospy.Subscriber("/ros_tensorflow/prediction", Prediction, predictions.append)
pub = rospy.Publisher("/ros_tensorflow/input", Float64MultiArray, queue_size=10)
deadline = time.monotonic() + 60
while not predictions and time.monotonic() < deadline:
    if pub.get_num_connections():
        pub.publish(Float64MultiArray(data=[0.5] * 10))
    time.sleep(0.1)
when["stream"] = time.time() if predictions else None

client = actionlib.SimpleActionClient("train", TrainAction)
if client.wait_for_server(rospy.Duration(60)):
    client.send_goal_and_wait(TrainGoal(epochs=1), rospy.Duration(120))
    when["train"] = time.time() if client.get_state() == GoalStatus.SUCCEEDED else None
print(json.dumps(when), flush=True)
