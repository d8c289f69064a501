"""A synthetic camera for the tests: 640 x 480 rgb8 frames of one drawn shape (the class) on a noisy background."""

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle")
WIDTH, HEIGHT = 640, 480


def frame(shape, rng):
    """One frame: a dim background of noise, and the shape drawn filled in a bright colour, at a random size and
    place, as an object stands out in front of a camera."""
    image = rng.normal(60, 30, (HEIGHT, WIDTH, 3)).clip(0, 255).astype(np.uint8)
    size = int(rng.integers(80, 150))
    cx, cy = int(rng.integers(size, WIDTH - size)), int(rng.integers(size, HEIGHT - size))
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    if shape == "circle":
        cv2.circle(image, (cx, cy), size, colour, -1)
    elif shape == "square":
        cv2.rectangle(image, (cx - size, cy - size), (cx + size, cy + size), colour, -1)
    else:
        points = np.array([(cx, cy - size), (cx - size, cy + size), (cx + size, cy + size)], np.int32)
        cv2.fillPoly(image, [points], colour)
    return image
