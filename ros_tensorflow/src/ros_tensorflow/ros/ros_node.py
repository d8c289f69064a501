"""What both nodes share around their faces: parameters, /diagnostics, dynamic_reconfigure, a master restart."""

import os

import diagnostic_updater
import rospkg
import rospy
from diagnostic_msgs.msg import DiagnosticArray
from dynamic_reconfigure.server import Server as ReconfigureServer

from ros_tensorflow.ros.master_watch import MasterWatch
from ros_tensorflow.ros.serving_face import resolved
from ros_tensorflow.tf_free.settings import Settings, parameters_of


def read_settings(node):
    """The node's ('train' or 'serve') parameters from the parameter server; ValueError names a bad one."""
    return Settings(lambda name, default: rospy.get_param(f"~{name}", default), resolved, node)


def data_dir_of(settings):
    return settings.data_dir or os.path.join(rospkg.get_ros_home(), "ros_tensorflow")


class _Updater(diagnostic_updater.Updater):
    """Names each status '<node name>: <task>', with the leading slash the node's status always had."""

    def publish(self, msg):
        statuses = msg if isinstance(msg, list) else [msg]
        for status in statuses:
            status.name = f"{rospy.get_name()}: {status.name}"
        array = DiagnosticArray(status=statuses)
        array.header.stamp = rospy.Time.now()
        self.publisher.publish(array)


def _filled(status, level, message, values):
    status.summary(level, message)
    for key, value in values.items():
        status.add(key, value)
    return status


class NodeBase:
    """Holds `settings` (replaced whole by a reconfigure); publishes statuses each second; registers the node again
    with a master that restarted. Subclasses call start() once their faces exist."""

    def __init__(self, node):
        self.node = node
        self.settings = read_settings(node)

    def start(self, config_type, statuses, counters):
        """statuses: (task name, function giving (level, message, values)); counters: the serving face's."""
        updater = _Updater()
        updater.setHardwareID(rospy.get_name())
        for name, status_of in statuses:
            updater.add(name, lambda status, status_of=status_of: _filled(status, *status_of()))

        def publish(_event):
            counters.close_window()
            updater.force_update()

        self._diagnostics_timer = rospy.Timer(rospy.Duration(1.0), publish)
        self._live = [name for name, parameter in parameters_of(self.node).items() if parameter.reconfigurable]
        self._reconfigure_server = ReconfigureServer(config_type, self._reconfigure)
        self._master_watch = MasterWatch(on_return=lambda: rospy.set_param("~", self.settings.as_dict()))

    def apply(self, old, new):
        """A reconfigure changed the settings from old to new: pass the change on to the parts that keep a copy."""

    def _reconfigure(self, config, _level):
        """dynamic_reconfigure: apply the changes if every value keeps its rule, else refuse them all."""
        for unknown in set(config) - {*self._live, "groups"}:  # dynamic_reconfigure would keep and publish
            del config[unknown]  # any name sent, for good: a client sending new names would grow the node
        try:
            settings = self.settings.replace(resolved, **{name: config[name] for name in self._live})
        except ValueError as error:
            rospy.logwarn("reconfigure refused: %s", error)
            config.update({name: getattr(self.settings, name) for name in self._live})
            return config
        old, self.settings = self.settings, settings
        self.apply(old, settings)
        changed = {k: v for k, v in settings.as_dict().items() if v != getattr(old, k)}
        if changed:
            rospy.loginfo("reconfigured: %s", changed)
        # The values as checked: a double given as 0 in YAML is 0.0 here, and published under doubles, not ints.
        config.update({name: getattr(settings, name) for name in self._live})
        return config
