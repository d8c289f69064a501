#!/usr/bin/env python3
"""Demo models to bring (README: Bring your own model), and a camera for them.

demo_models.py write FOLDER   detector.tflite (TFLite_Detection_PostProcess), detector_int8.tflite,
                              detector_saved_model/ (the Object Detection API's outputs), segmenter.tflite,
                              two_inputs.tflite and graph.pb (a TF1 frozen graph), the detectors' class names
demo_models.py camera         publishes 640 x 480 rgb8 frames on `image` (remap it) at ~rate (10 Hz): a red
                              and a green square that move from cell to cell of the detector's 8 x 8 grid
"""

import sys

import rospy
from sensor_msgs.msg import Image

from ros_tensorflow.ros.serving_face import rgb_image


def camera():
    from ros_tensorflow.with_tf.demo_models import GRID, frame_with_squares  # noqa: PLC0415 - TensorFlow: seconds

    rospy.init_node("demo_camera")
    publisher = rospy.Publisher("image", Image, queue_size=1)
    rate, step = rospy.Rate(rospy.get_param("~rate", 10.0)), 0
    while not rospy.is_shutdown():
        cells = [(1 + step // 10 % 3, step // 10 % GRID, 0), (5, (3 + step // 10) % GRID, 1)]
        message = rgb_image(frame_with_squares(cells)[0])
        message.header.frame_id = "demo_camera"
        publisher.publish(message)
        step += 1
        rate.sleep()


if __name__ == "__main__":
    argv = rospy.myargv()
    if len(argv) == 3 and argv[1] == "write":
        from ros_tensorflow.with_tf.demo_models import write_all

        for path in write_all(argv[2]):
            print(path)
    elif len(argv) == 2 and argv[1] == "camera":
        try:
            camera()
        except rospy.ROSInterruptException:
            pass
    else:
        sys.exit(__doc__)
