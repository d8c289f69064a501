#!/usr/bin/env python3
"""Label a camera's frames for the node: republish every Nth frame of `image` as an ImageSample.

Classes: point the camera at an object of class 2 and run, for ten seconds:
rosrun ros_tensorflow record_images.py image:=/camera/image_raw _label:=2 _every:=5

Values (behaviour cloning): drive the robot by teleop while recording; each frame is paired with the latest
command on ~target_topic no older than ~max_target_age seconds (frames without one are skipped, and counted):
rosrun ros_tensorflow record_images.py image:=/camera/image_raw _target_topic:=/cmd_vel _target_fields:="[angular.z]"
"""

import rospy
import rostopic
from ros_tensorflow_msgs.msg import ImageSample
from sensor_msgs.msg import Image

from ros_tensorflow.tf_free.commands import check_fields, field_values


class LatestTarget:
    """The values of the latest message on a target topic, and when it came (messages such as Twist have no
    stamp: the time of arrival is their age)."""

    def __init__(self, topic, fields):
        rospy.loginfo("waiting for a publisher of %s to learn its type", rospy.resolve_name(topic))
        msg_class, resolved, _ = rostopic.get_topic_class(rospy.resolve_name(topic), blocking=True)
        if msg_class is None:  # shut down while waiting
            raise SystemExit(0)
        self.msg_type, self.fields = msg_class._type, fields
        check_fields(self.msg_type, fields, rospy.resolve_name("~target_fields"))
        self.values, self.received = None, None
        rospy.Subscriber(resolved, msg_class, self._handle, queue_size=10)
        rospy.loginfo("targets: %s of %s (%s)", ", ".join(fields) or "every value", resolved, self.msg_type)

    def _handle(self, msg):
        try:
            self.values, self.received = field_values(msg, self.msg_type, self.fields), rospy.get_rostime()
        except ValueError as error:
            rospy.logwarn_throttle(5, f"a target message that cannot be used: {error}")

    def fresh(self, max_age):
        """The latest values if no older than max_age seconds, else None."""
        if self.received is None or (rospy.get_rostime() - self.received).to_sec() > max_age:
            return None
        return self.values


def _parameters():
    target_topic, every = rospy.get_param("~target_topic", ""), rospy.get_param("~every", 1)
    label = rospy.get_param("~label", 0 if target_topic else None)
    fields, max_age = rospy.get_param("~target_fields", []), rospy.get_param("~max_target_age", 0.2)
    if not isinstance(label, int) or label < 0 or not isinstance(every, int) or every < 1:
        raise ValueError(f"~label must be an int >= 0 (or ~target_topic set) and ~every an int >= 1, got {label!r}"
                         f" and {every!r}")  # fmt: skip
    if not isinstance(max_age, (int, float)) or isinstance(max_age, bool) or not max_age > 0:
        raise ValueError(f"~max_target_age must be a number of seconds > 0, got {max_age!r}")
    if not isinstance(fields, list):
        raise ValueError(f"~target_fields must be a list, e.g. [angular.z], got {fields!r}")
    return target_topic, label, every, fields, float(max_age)


def main():
    rospy.init_node("record_images", anonymous=True)
    try:
        target_topic, label, every, fields, max_age = _parameters()
        target = LatestTarget(target_topic, fields) if target_topic else None
    except ValueError as error:
        rospy.logfatal("%s", error)
        raise SystemExit(1) from None
    pub = rospy.Publisher("ros_tensorflow/image_samples", ImageSample, queue_size=100)
    counts = {"seen": 0, "recorded": 0, "skipped": 0}

    def republish(image):
        counts["seen"] += 1
        if (counts["seen"] - 1) % every:
            return
        if target is None:
            pub.publish(ImageSample(image=image, label=label))
        else:
            values = target.fresh(max_age)
            if values is None:
                counts["skipped"] += 1
                rospy.logwarn_throttle(
                    5, f"skipped {counts['skipped']} frames so far: no target on {target_topic} newer than {max_age} s"
                )
                return
            pub.publish(ImageSample(image=image, label=0, targets=values))
        counts["recorded"] += 1

    rospy.loginfo("waiting for a subscriber of %s (the node)", pub.resolved_name)
    while pub.get_num_connections() == 0 and not rospy.is_shutdown():  # frames sent before would be lost
        rospy.sleep(0.1)
    rospy.Subscriber("image", Image, republish, queue_size=None, buff_size=2**26)
    what = f"with the targets of {target_topic}" if target else f"as class {label}"
    rospy.loginfo("recording every %d. frame of %s %s", every, rospy.resolve_name("image"), what)
    rospy.spin()
    rospy.loginfo("recorded %d frames, skipped %d without a fresh target", counts["recorded"], counts["skipped"])


if __name__ == "__main__":
    main()
