"""The ROS layer, the only one that imports rospy: it translates between ROS and tf_free/with_tf, nothing more."""
