"""ROS-free core of ros_tensorflow: settings, input checks, the model and its life, training, datasets,
the sample store, model files, micro-batching and status (README: Architecture).

Nothing in this package imports rospy except ros_interface, so the core imports and unit-tests
without a ROS master; samples, settings and datasets import no TensorFlow either.
"""
