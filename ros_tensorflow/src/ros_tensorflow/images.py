"""Camera images to model input: the common encodings, in the model's channels (RGB order), size and scale.

Works on the fields of sensor_msgs/Image and CompressedImage messages with numpy and OpenCV; no rospy.
"""

import cv2
import numpy as np

from ros_tensorflow.samples import as_samples

# encoding: (channels, channel order as OpenCV's colour conversions name it, value type)
ENCODINGS = {
    "mono8": (1, "GRAY", np.uint8),
    "8UC1": (1, "GRAY", np.uint8),
    "mono16": (1, "GRAY", np.uint16),
    "16UC1": (1, "GRAY", np.uint16),
    "32FC1": (1, "GRAY", np.float32),
    "rgb8": (3, "RGB", np.uint8),
    "bgr8": (3, "BGR", np.uint8),
    "rgba8": (4, "RGBA", np.uint8),
    "bgra8": (4, "BGRA", np.uint8),
    "rgb16": (3, "RGB", np.uint16),
    "bgr16": (3, "BGR", np.uint16),
}


class ImageError(ValueError):
    """An image that cannot be converted; says why."""


def default_scale(dtype):
    """What values are multiplied by when ~input_scale is 0: 8-bit to [0, 1], 16-bit to [0, 1], float as it is."""
    return {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(np.dtype(dtype), 1.0)


def decode(image):
    """A sensor_msgs/Image as an (height, width, channels) array in RGB order (grey: 1 channel).

    Read with numpy rather than cv_bridge: Debian's cv_bridge (1.16) ignores `step` and reads the
    padding at the end of each row as pixels.
    """
    if image.encoding not in ENCODINGS:
        raise ImageError(f"unknown encoding {image.encoding!r} (known: {', '.join(ENCODINGS)})")
    if image.height == 0 or image.width == 0:
        raise ImageError(f"image of size {image.width} x {image.height}")
    channels, order, value_type = ENCODINGS[image.encoding]
    dtype = np.dtype(value_type).newbyteorder(">" if image.is_bigendian else "<")
    row_bytes = image.width * channels * dtype.itemsize
    if image.step < row_bytes or image.step * image.height > len(image.data):
        raise ImageError(
            f"{image.encoding} image of {image.width} x {image.height} with step {image.step} needs"
            f" {max(image.step, row_bytes) * image.height} bytes of data, got {len(image.data)}"
        )
    rows = np.frombuffer(bytes(image.data), np.uint8, image.step * image.height).reshape(image.height, image.step)
    pixels = np.ascontiguousarray(rows[:, :row_bytes]).view(dtype).astype(value_type, copy=False)
    return _in_rgb_order(pixels.reshape(image.height, image.width, channels), order)


def decode_compressed(image):
    """A sensor_msgs/CompressedImage (jpeg, png) as an (height, width, channels) array in RGB order."""
    array = cv2.imdecode(np.frombuffer(bytes(image.data), np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageError(f"the {image.format or 'compressed'} image cannot be decoded ({len(image.data)} bytes)")
    return _decoded_in_rgb_order(array)


def decode_file(path):
    """A .png or .jpg file as an (height, width, channels) array in RGB order."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageError("cannot be read as an image (not a readable .png or .jpg)")
    return _decoded_in_rgb_order(array)


def _decoded_in_rgb_order(array):
    """OpenCV decodes to grey, BGR or BGRA."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    return _in_rgb_order(array, {1: "GRAY", 3: "BGR", 4: "BGRA"}[channels])


def _in_rgb_order(array, order):
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if order in ("BGR", "BGRA"):
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if order == "BGR" else cv2.COLOR_BGRA2RGBA)
    return array


def to_model_input(array, input_shape, scale=0.0):
    """An RGB(A)/grey image array as one sample of input_shape (height, width, 1 or 3 channels): channels
    converted (colour to grey by luminance, grey repeated to RGB, alpha dropped), resized, multiplied by
    scale (0: default_scale of its depth), as float64."""
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ImageError(f"models of images take 1 (grey) or 3 (RGB) channels, this one takes {channels}")
    if array.shape[2] == 4:
        array = np.ascontiguousarray(array[:, :, :3])
    if channels == 1 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)[:, :, np.newaxis]
    elif channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[:2] != (height, width):
        shrinking = array.shape[0] > height or array.shape[1] > width
        resized = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        array = resized.reshape(height, width, channels)
    return array.astype(np.float64) * (scale or default_scale(array.dtype))


def decode_message(image):
    """A sensor_msgs/Image or CompressedImage as an (height, width, channels) array in RGB order."""
    return decode_compressed(image) if hasattr(image, "format") else decode(image)


def image_sample(image, input_shape, scale=0.0):
    """One sample, shape (1, *input_shape), of a decoded image array (decode_message) or a sensor_msgs/Image
    or CompressedImage; ImageError says why not."""
    if len(input_shape) != 3:
        raise ImageError(
            f"the model takes samples of shape {list(input_shape)}, not images (height, width, channels):"
            " set ~input_shape, e.g. [28, 28, 1], for a fresh model"
        )
    array = image if isinstance(image, np.ndarray) else decode_message(image)
    try:
        return as_samples(to_model_input(array, input_shape, scale)[np.newaxis], input_shape)
    except ImageError:
        raise
    except ValueError as error:  # NaN or Inf, e.g. a depth image's missing values
        raise ImageError(str(error)) from error


def annotated(array, text):
    """An rgb8 copy of a decoded image with text drawn at its top left, for people to look at."""
    if array.dtype != np.uint8:  # 16-bit or float: stretched to 0-255 to be seen
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (np.nan_to_num(array, nan=low) - low) * (255 / (high - low or 1))
    rgb = np.ascontiguousarray(np.broadcast_to(array[:, :, :3], (*array.shape[:2], 3)).astype(np.uint8))
    scale = max(0.4, rgb.shape[1] / 640)
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 0), 1)):  # a dark outline, then the text
        cv2.putText(rgb, text, (5, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, colour, thickness)
    return rgb
