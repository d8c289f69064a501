"""No TensorFlow, no rospy: what the serving node, tfctl and clients load (a robot never imports TensorFlow)."""
