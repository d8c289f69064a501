#!/usr/bin/env python3
"""Label a camera's frames for the node: republish every Nth frame of `image` as an ImageSample.

Point the camera at an object of class 2 and run, for ten seconds:
rosrun ros_tensorflow record_images.py image:=/camera/image_raw _label:=2 _every:=5
"""

import rospy
from ros_tensorflow_msgs.msg import ImageSample
from sensor_msgs.msg import Image


def main():
    rospy.init_node("record_images", anonymous=True)
    label, every = rospy.get_param("~label"), rospy.get_param("~every", 1)
    if not isinstance(label, int) or label < 0 or not isinstance(every, int) or every < 1:
        rospy.logfatal("~label must be an int >= 0 and ~every an int >= 1, got %r and %r", label, every)
        raise SystemExit(1)
    pub = rospy.Publisher("ros_tensorflow/image_samples", ImageSample, queue_size=100)
    seen = [0]

    def republish(image):
        if seen[0] % every == 0:
            pub.publish(ImageSample(image=image, label=label))
        seen[0] += 1

    rospy.loginfo("waiting for a subscriber of %s (the node)", pub.resolved_name)
    while pub.get_num_connections() == 0 and not rospy.is_shutdown():  # frames sent before would be lost
        rospy.sleep(0.1)
    rospy.Subscriber("image", Image, republish, queue_size=None, buff_size=2**26)
    rospy.loginfo("recording every %d. frame of %s as class %d", every, rospy.resolve_name("image"), label)
    rospy.spin()


if __name__ == "__main__":
    main()
