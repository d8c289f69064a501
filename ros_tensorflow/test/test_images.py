"""Camera images to model input: every encoding, channel change, resize and scale, on real images."""

import cv2
import numpy as np
import pytest
from png_bomb import png_bomb
from sensor_msgs.msg import CompressedImage, Image
from sklearn.datasets import load_digits

from ros_tensorflow.tf_free.images import (
    ImageError,
    decode,
    decode_compressed,
    default_scale,
    pixel_limit,
    to_model_input,
)

DIGIT = (load_digits().images[0] * (255 / 16)).astype(np.uint8)  # a real 8 x 8 grey image: a handwritten 0
RGB = np.stack([DIGIT, 255 - DIGIT, DIGIT // 2], axis=2)  # three different channels, in RGB order


def image(array, encoding):
    """A sensor_msgs/Image of the array, as a camera driver fills one in."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return Image(height=height, width=width, encoding=encoding, step=array.strides[0], data=array.tobytes())


@pytest.mark.parametrize(
    "encoding, array",
    [
        ("mono8", DIGIT),
        ("mono16", DIGIT.astype(np.uint16) * 257),
        ("32FC1", DIGIT.astype(np.float32) / 255),
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.dstack([RGB, np.full(DIGIT.shape, 255, np.uint8)])),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(DIGIT.shape, 7, np.uint8)])),
    ],
)
def test_each_encoding_gives_the_same_rgb_or_grey_sample_scaled_to_one(encoding, array):
    decoded = decode(image(array, encoding))
    colour = decoded.shape[2] >= 3
    sample = to_model_input(decoded, (8, 8, 3 if colour else 1))
    expected = RGB / 255 if colour else DIGIT[:, :, np.newaxis] / 255
    np.testing.assert_allclose(sample, expected, atol=1e-6)
    assert sample.dtype == np.float64


def test_colour_becomes_grey_by_luminance_and_grey_becomes_rgb():
    grey = to_model_input(decode(image(RGB, "rgb8")), (8, 8, 1))
    np.testing.assert_allclose(grey[:, :, 0], cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY) / 255)
    rgb = to_model_input(decode(image(DIGIT, "mono8")), (8, 8, 3))
    assert all((rgb[:, :, c] == DIGIT / 255).all() for c in range(3))


def test_images_are_resized_to_the_model_and_scale_is_applied():
    sample = to_model_input(decode(image(DIGIT, "mono8")), (16, 24, 1), scale=2.0)
    assert sample.shape == (16, 24, 1) and sample.max() <= 2 * 255 and sample.max() > 255
    blocks = cv2.resize(DIGIT, (64, 64), interpolation=cv2.INTER_NEAREST)  # each pixel an 8 x 8 block
    shrunk = to_model_input(decode(image(blocks, "mono8")), (8, 8, 1))  # averaged back over each block
    np.testing.assert_allclose(shrunk[:, :, 0], DIGIT / 255)
    assert default_scale(np.uint16) == 1 / 65535 and default_scale(np.float32) == 1.0


def test_a_row_padded_image_is_read_by_its_step():
    padded = np.zeros((8, 12), np.uint8)
    padded[:, :8] = DIGIT
    msg = Image(height=8, width=8, encoding="mono8", step=12, data=padded.tobytes())
    np.testing.assert_array_equal(decode(msg)[:, :, 0], DIGIT)


def test_compressed_jpeg_and_png_decode_in_rgb_order():
    png = CompressedImage(format="png", data=cv2.imencode(".png", RGB[:, :, ::-1])[1].tobytes())
    np.testing.assert_array_equal(decode_compressed(png), RGB)
    jpeg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", cv2.resize(RGB, (64, 64)))[1].tobytes())
    assert decode_compressed(jpeg).shape == (64, 64, 3)


@pytest.mark.parametrize(
    "msg, reason",
    [
        (Image(height=8, width=8, encoding="yuv422", step=16, data=bytes(128)), "unknown encoding 'yuv422'"),
        (Image(height=8, width=8, encoding="mono8", step=8, data=bytes(60)), "needs 64 bytes of data, got 60"),
        (Image(height=8, width=8, encoding="rgb8", step=8, data=bytes(64)), "with step 8 needs"),
        (Image(height=0, width=8, encoding="mono8", step=8, data=b""), "image of size 8 x 0"),
    ],
)
def test_images_that_cannot_be_converted_say_why(msg, reason):
    with pytest.raises(ImageError, match=reason):
        decode(msg)


def test_a_corrupt_jpeg_and_a_model_of_four_channels_are_refused():
    data = cv2.imencode(".jpg", RGB)[1].tobytes()
    with pytest.raises(ImageError, match=r"the jpeg image \(242 bytes\) cannot be decoded"):
        decode_compressed(CompressedImage(format="jpeg", data=data[: len(data) // 3]))
    with pytest.raises(ImageError, match="take 1 \\(grey\\) or 3 \\(RGB\\) channels, this one takes 4"):
        to_model_input(RGB, (8, 8, 4))


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding():
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError, match=r"image of 20000 x 20000 = 400000000 pixels, more than ~max_image_pixels"):
        decode_compressed(CompressedImage(format="png", data=bomb), max_pixels=pixel_limit(0))
    with pytest.raises(ImageError, match=r"image of 8 x 8 = 64 pixels, more than ~max_image_pixels allows \(63\)"):
        decode(image(DIGIT, "mono8"), max_pixels=63)
    assert pixel_limit(0) < 400_000_000 and pixel_limit(5) == 5


def test_an_empty_or_unknown_compressed_image_is_an_image_error():
    for data, reason in ((b"", "not a jpeg or png image"), (b"GIF89a" + bytes(20), "cannot be decoded")):
        with pytest.raises(ImageError, match=reason):
            decode_compressed(CompressedImage(format="jpeg", data=data))
