"""Registers the node again when roscore restarts: rospy registers topics and services only once, at start-up,
so after a restart nothing could find them until the node itself was restarted."""

import logging
import threading
import time

import rosgraph
import rospy
from rospy.impl.registration import (
    Registration,
    RegManager,
    get_registration_listeners,
    get_service_manager,
    get_topic_manager,
)

_log = logging.getLogger("rosout")


def _registration_manager():
    return next(listener for listener in get_registration_listeners().listeners if isinstance(listener, RegManager))


def register_again():
    """Tell the master of every publisher, subscriber and service of this process, as rospy does at start-up;
    re-registering a subscriber also connects it to the topic's publishers. Returns how many."""
    manager = _registration_manager()
    registrations = [
        *((name, data_type, Registration.PUB) for name, data_type in get_topic_manager().get_publications()),
        *((name, data_type, Registration.SUB) for name, data_type in get_topic_manager().get_subscriptions()),
        *((name, uri, Registration.SRV) for name, uri in get_service_manager().get_services()),
    ]
    for registration in registrations:
        manager.reg_added(*registration)
    return len(registrations)


class MasterWatch:
    """Asks the master every `period` seconds whether it knows this node; a master that answers but does not
    (it restarted) gets every registration again, then on_return() runs (e.g. to set the parameters again)."""

    def __init__(self, on_return=lambda: None, period=1.0):
        self._on_return = on_return
        self._period = period
        self._master = rosgraph.Master(rospy.get_name())
        self._thread = threading.Thread(target=self._run, name="master_watch", daemon=True)
        self._thread.start()

    def _knows_this_node(self):
        """True, False, or None while the master cannot be reached."""
        try:
            self._master.lookupNode(rospy.get_name())
            return True
        except rosgraph.MasterError:  # "unknown node": a master that has not heard of us
            return False
        except (OSError, rosgraph.MasterException):
            return None

    def _run(self):
        # is_shutdown() turns true only after rospy has unregistered the node: between the two, the master does not
        # know the node, and registering it again would leave its topics and services behind at the master
        while not rospy.core.is_shutdown_requested():
            time.sleep(self._period)
            if self._knows_this_node() is False and not rospy.core.is_shutdown_requested():
                count = register_again()
                self._on_return()
                _log.warning("the ROS master restarted: registered %d topics and services with it again", count)
