"""Camera images to model input: the common encodings, in the model's channels (RGB order), size and scale.

Works on the fields of sensor_msgs/Image and CompressedImage messages with numpy, OpenCV and Pillow; no rospy.
"""

import io

import cv2
import numpy as np
import PIL
import PIL.Image

from ros_tensorflow.tf_free.samples import MEMORY_BYTES, as_samples

PIL.Image.MAX_IMAGE_PIXELS = None  # Pillow only reads headers here; ~max_image_pixels is the limit, with the size

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


def pixel_limit(max_image_pixels=0):
    """~max_image_pixels, or for 0 as many pixels as fill 1/128 of this machine's memory at 8 bytes each (16-bit
    RGBA): 25 million on 24 GiB, 4 million (a 1080p frame twice over) on 4 GiB. Decoding makes a few copies."""
    return max_image_pixels or max(1, MEMORY_BYTES // 128 // 8)


DEFAULT_PIXEL_LIMIT = pixel_limit()


def _check_size(width, height, max_pixels):
    if width * height > max_pixels:
        raise ImageError(
            f"image of {width} x {height} = {width * height} pixels, more than ~max_image_pixels allows ({max_pixels})"
        )


def default_scale(dtype):
    """What values are multiplied by when ~input_scale is 0: 8-bit to [0, 1], 16-bit to [0, 1], float as it is."""
    return {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(np.dtype(dtype), 1.0)


def decode(image, max_pixels=DEFAULT_PIXEL_LIMIT):
    """A sensor_msgs/Image as an (height, width, channels) array in RGB order (grey: 1 channel).

    Read with numpy rather than cv_bridge: Debian's cv_bridge (1.16) ignores `step` and reads the
    padding at the end of each row as pixels.
    """
    if image.encoding not in ENCODINGS:
        raise ImageError(f"unknown encoding {image.encoding!r} (known: {', '.join(ENCODINGS)})")
    if image.height == 0 or image.width == 0:
        raise ImageError(f"image of size {image.width} x {image.height}")
    _check_size(image.width, image.height, max_pixels)
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


def decode_compressed(image, max_pixels=DEFAULT_PIXEL_LIMIT):
    """A sensor_msgs/CompressedImage (jpeg, png) as an (height, width, channels) array in RGB order."""
    return _decoded(
        bytes(image.data), f"the {image.format or 'compressed'} image ({len(image.data)} bytes)", max_pixels
    )


def decode_file(path, max_pixels=DEFAULT_PIXEL_LIMIT):
    """A .png or .jpg file as an (height, width, channels) array in RGB order.

    Read by Python, decoded from memory: OpenCV's imread crashed the process (SIGSEGV) on a file name that is not
    UTF-8. A file larger than any image within max_pixels (8 bytes a pixel) is not read."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_pixels * 8 + 1)
    except OSError as error:
        raise ImageError(f"cannot be read: {error.strerror}") from None
    if len(data) > max_pixels * 8:
        raise ImageError(f"larger than any image of at most ~max_image_pixels ({max_pixels}) pixels")
    return _decoded(data, "the file", max_pixels)


def _declared_size(data, what):
    """(width, height) from the header alone: a 389 kB PNG can declare 20000 x 20000 pixels (1.6 GB decoded)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as header:  # reads the header, decodes nothing
            return header.size
    except PIL.UnidentifiedImageError:
        raise ImageError(f"{what} cannot be decoded: not a jpeg or png image") from None
    except (OSError, ValueError, SyntaxError) as error:  # UnidentifiedImageError is an OSError
        raise ImageError(f"{what} cannot be decoded: {error}") from None


def _decoded(data, what, max_pixels):
    _check_size(*_declared_size(data, what), max_pixels)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageError(f"{what} cannot be decoded: {error.err}") from None
    if array is None or array.size == 0:
        raise ImageError(f"{what} cannot be decoded")
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


def decode_message(image, max_pixels=DEFAULT_PIXEL_LIMIT):
    """A sensor_msgs/Image or CompressedImage as an (height, width, channels) array in RGB order."""
    return decode_compressed(image, max_pixels) if hasattr(image, "format") else decode(image, max_pixels)


def image_sample(image, input_shape, scale=0.0, max_pixels=DEFAULT_PIXEL_LIMIT):
    """One sample, shape (1, *input_shape), of a decoded image array (decode_message) or a sensor_msgs/Image
    or CompressedImage; ImageError says why not."""
    if len(input_shape) != 3:
        raise ImageError(
            f"the model takes samples of shape {list(input_shape)}, not images (height, width, channels):"
            " set ~input_shape, e.g. [28, 28, 1], for a fresh model"
        )
    array = image if isinstance(image, np.ndarray) else decode_message(image, max_pixels)
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
