"""ROS-free core of ros_tensorflow: model, Keras callbacks and datasets.

Nothing in this package imports rospy except ros_interface, so the core
imports and unit-tests without a ROS master.
"""
