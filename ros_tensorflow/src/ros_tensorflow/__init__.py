"""ros_tensorflow: a TensorFlow/Keras model as a ROS1 node's, in three layers whose names say what they may import
(README: Architecture; `make lint` checks the rules with import-linter):

- tf_free: samples, images, datasets, files, LiteRT's interpreter, streaming, status, versions, evaluation, plots,
  the serving node's model, settings. Neither TensorFlow nor rospy: what robots, tfctl and clients load.
- with_tf: the Keras model, its keeper, training, callbacks, model files, the TFLite converter. TensorFlow, no rospy:
  the core imports and unit-tests without a master.
- ros: the ROS layer (the faces, both nodes, tfctl): it only translates between ROS and the two below.
"""
