"""TensorFlow and Keras, no rospy: the model, its life on disk, training and conversion, tested without a master."""
