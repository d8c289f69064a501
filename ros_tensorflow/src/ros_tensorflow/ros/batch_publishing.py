"""Publishing a batch of messages in one socket write per subscriber.

rospy's Publisher.publish writes every message to every subscriber's socket at once: a syscall per message. The
~input stream publishes a Prediction per input, a batch of them after each model call, from one thread; in a flood
of inputs those writes were three quarters of that thread's time (py-spy) and the node's limit, where a
hand-written node writes from both of its receiving threads. Written together, a batch costs one write. TCPROS
frames every message with its length, so a subscriber reads them as if written one by one.
"""

import contextlib
import logging

from rospy.core import is_shutdown
from rospy.msg import serialize_message

_logger = logging.getLogger("rospy.topics")


def publish_all(publisher, messages):
    """Publishes each message of the iterable messages as publisher.publish would (its header's seq set), written
    to each subscriber in one go. Each message is serialised as it comes, so an iterable may yield one message
    object filled in again for each. Nothing is serialised while no one subscribes. Not for latched topics."""
    impl = publisher.impl
    if impl is None or impl.closed or not impl.connections:  # unregistered, closed at shutdown, or no subscriber
        for _ in messages:
            pass
        return
    with impl.publock:  # rospy's publishing lock: the seq numbers in order, no other write in between
        buffer = impl.buff
        try:
            for message in messages:
                impl.seq += 1
                serialize_message(buffer, impl.seq, message)
            data = buffer.getvalue()
        finally:
            buffer.seek(0)
            buffer.truncate(0)
        if data:
            _write(impl, data)


def _write(impl, data):
    """data to every connection, as rospy's _PublisherImpl.publish writes it: a connection that fails is closed."""
    failed = []
    for connection in impl.connections:
        try:
            if not is_shutdown():
                connection.write_data(data)
        except Exception:  # noqa: BLE001 - as rospy: a subscriber gone must not stop the others
            _logger.debug("publisher connection to [%s] terminated", connection.endpoint_id, exc_info=True)
            failed.append(connection)
    impl.message_data_sent += len(data)
    for connection in failed:
        with contextlib.suppress(Exception):
            connection.close()
