#!/usr/bin/env python3
"""Example client: train through the `train` action, showing feedback, then call `predict`.

rosrun ros_tensorflow train_and_predict.py _epochs:=3
"""

import actionlib
import rospy
from ros_tensorflow_msgs.msg import TrainAction, TrainGoal
from ros_tensorflow_msgs.srv import Predict

from ros_tensorflow.tf_free.datasets import make_synthetic


def show_feedback(feedback):
    if feedback.batch == feedback.batches_per_epoch:
        rospy.loginfo(
            "epoch %d: loss %.4f acc %.3f val_loss %.4f val_acc %.3f",
            feedback.i_epoch,
            feedback.loss,
            feedback.acc,
            feedback.val_loss,
            feedback.val_acc,
        )


def main():
    rospy.init_node("train_and_predict")
    client = actionlib.SimpleActionClient("train", TrainAction)
    rospy.loginfo("waiting for the train action server")
    client.wait_for_server()
    goal = TrainGoal(epochs=rospy.get_param("~epochs", 3), validation_split=rospy.get_param("~validation_split", 0.2))
    client.send_goal(goal, feedback_cb=show_feedback)
    client.wait_for_result()
    result = client.get_result()
    rospy.loginfo("train: %s (loss %.4f, acc %.3f)", result.message, result.loss, result.acc)

    rospy.wait_for_service("predict")
    predict = rospy.ServiceProxy("predict", Predict)
    x, y = make_synthetic(n_samples=5)
    answer = predict(x.ravel().tolist())
    rospy.loginfo(
        "predict: classes %s (true %s), confidences %s",
        list(answer.classes),
        y.tolist(),
        [round(c, 3) for c in answer.confidences],
    )


if __name__ == "__main__":
    main()
