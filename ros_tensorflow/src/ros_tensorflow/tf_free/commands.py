"""Values to and from ROS messages by field name: the targets a recording pairs with each camera frame (a teleop's
Twist, a joystick's axes, a Float64) and the command a regression model's prediction becomes. Plain attribute
access on message objects: no rospy here."""

TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
TARGET_TYPES = {  # what ~target_topic may carry, and the values a message of it gives by default (None: all of it)
    "geometry_msgs/Twist": TWIST_FIELDS,
    "std_msgs/Float32": ("data",),
    "std_msgs/Float64": ("data",),
    "std_msgs/Float32MultiArray": None,
    "std_msgs/Float64MultiArray": None,
    "sensor_msgs/Joy": None,
}
_SEQUENCE_FIELD = {  # the array a message's values are in
    "std_msgs/Float32MultiArray": "data",
    "std_msgs/Float64MultiArray": "data",
    "sensor_msgs/Joy": "axes",
}
COMMAND_TYPES = ("geometry_msgs/Twist", "std_msgs/Float64MultiArray")


def check_fields(msg_type, fields, what):
    """ValueError unless each field names a value of msg_type: 'angular.z' in a Twist, 'axes.0' in a Joy, 'data'
    (or 'data.<i>' in an array)."""
    if msg_type not in TARGET_TYPES:
        raise ValueError(f"{what}: the type {msg_type} is none of {', '.join(TARGET_TYPES)}")
    if not isinstance(fields, list) or not all(isinstance(field, str) for field in fields):
        raise ValueError(f"{what} must be a list of field names, got {fields!r}")
    sequence = _SEQUENCE_FIELD.get(msg_type)
    for field in fields:
        head, _, index = field.partition(".")
        if sequence:
            ok = head == sequence and index.isdigit()
            example = f"{sequence}.0"
        else:
            ok = field in TARGET_TYPES[msg_type]
            example = ", ".join(TARGET_TYPES[msg_type])
        if not ok:
            raise ValueError(f"{what}: {field!r} is not a field of {msg_type} (fields: {example})")


def field_values(msg, msg_type, fields):
    """The values of msg's fields as floats, in order ([]: the type's default, all of an array's); ValueError for
    an index beyond a message's array."""
    if not fields:
        fields = TARGET_TYPES[msg_type]
        if fields is None:
            return [float(value) for value in getattr(msg, _SEQUENCE_FIELD[msg_type])]
    values = []
    for field in fields:
        head, _, tail = field.partition(".")
        if head in _SEQUENCE_FIELD.values() and tail:
            array = getattr(msg, head)
            if int(tail) >= len(array):
                raise ValueError(f"{field} is beyond the message's {len(array)} values")
            values.append(float(array[int(tail)]))
        else:
            value = getattr(msg, head)
            values.append(float(getattr(value, tail) if tail else value))
    return values


def fill_twist(twist, fields, outputs):
    """twist with fields (TWIST_FIELDS names) set to the outputs in order, every other field 0."""
    for field in TWIST_FIELDS:
        part, axis = field.split(".")
        setattr(getattr(twist, part), axis, 0.0)
    for field, value in zip(fields, outputs, strict=False):
        part, axis = field.split(".")
        setattr(getattr(twist, part), axis, float(value))
    return twist
