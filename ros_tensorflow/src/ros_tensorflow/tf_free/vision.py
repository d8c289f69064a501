"""Frames to a detection or segmentation model's input and its outputs back to the source frame: preprocessing
(~input_mean, ~input_std, ~channel_order, ~resize), boxes and masks in source pixels, and the annotated picture.
No rospy, no TensorFlow."""

import dataclasses
import math

import cv2
import numpy as np

from ros_tensorflow.tf_free.images import ImageError, default_scale

PALETTE = np.array(  # class id -> colour of the overlay; fixed, so a class keeps its colour across frames and nodes
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [170, 255, 195],
        [128, 128, 0],
        [255, 215, 180],
        [0, 0, 128],
    ],
    np.uint8,
)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes the model's input: x = (pixel * scale - mean) / std per channel (scale 0: 1/255 for
    8-bit), channels in channel_order, resized by stretching or letterboxing. A uint8 input takes the pixels as
    they are (a quantized detector's way)."""

    scale: float = 0.0
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    channel_order: str = "rgb"
    resize: str = "stretch"

    @classmethod
    def of(cls, settings):
        return cls(
            settings.input_scale,
            tuple(settings.input_mean),
            tuple(settings.input_std),
            settings.channel_order,
            settings.resize,
        )


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the source frame (width, height) lies in the model's input: scaled by (sx, sy), offset by (dx, dy)
    pixels of the input (width, height)."""

    source: tuple
    model: tuple
    sx: float
    sy: float
    dx: float
    dy: float

    def boxes_in_source(self, boxes):
        """(n, 4) boxes [ymin, xmin, ymax, xmax] normalised to the model's input as (n, 4) [x_min, y_min, width,
        height] in source pixels, clipped to the frame."""
        width, height = self.model
        x = ((boxes[:, [1, 3]] * width - self.dx) / self.sx).clip(0, self.source[0])
        y = ((boxes[:, [0, 2]] * height - self.dy) / self.sy).clip(0, self.source[1])
        return np.stack([x[:, 0], y[:, 0], x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]], axis=1)


def prepare(frame, spec, preprocessing):
    """(input of one frame, shape (1, height, width, channels), of spec's dtype, and its Placement). frame: an
    (h, w, c) array in RGB order (images.decode_message)."""
    _, height, width, channels = spec.shape
    if height == -1 or width == -1:  # a model of any size (the Object Detection API's): the frame's own
        height, width = frame.shape[:2]
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if channels == 1 and frame.shape[2] == 3:
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)[:, :, np.newaxis]
    elif channels == 3 and frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    if preprocessing.channel_order == "bgr" and channels == 3:
        frame = frame[:, :, ::-1]
    source_h, source_w = frame.shape[:2]
    if preprocessing.resize == "letterbox":
        s = min(width / source_w, height / source_h)
        new_w, new_h = max(1, round(source_w * s)), max(1, round(source_h * s))
        dx, dy = (width - new_w) // 2, (height - new_h) // 2
        canvas = np.zeros((height, width, channels), frame.dtype)
        canvas[dy : dy + new_h, dx : dx + new_w] = _resized(frame, new_w, new_h)
        placement = Placement((source_w, source_h), (width, height), new_w / source_w, new_h / source_h, dx, dy)
    else:
        canvas = _resized(frame, width, height)
        placement = Placement((source_w, source_h), (width, height), width / source_w, height / source_h, 0, 0)
    stored = spec.stored or spec.dtype
    if stored == "uint8" and frame.dtype == np.uint8:
        return canvas[np.newaxis], placement
    # (x * scale - mean) / std as x * (scale / std) - mean / std: two passes over the pixels, not four
    std = np.asarray(preprocessing.std, np.float32)
    values = np.multiply(canvas, np.float32(preprocessing.scale or default_scale(frame.dtype)) / std, dtype=np.float32)
    if any(preprocessing.mean):
        values -= np.asarray(preprocessing.mean, np.float32) / std
    wanted = spec.dtype if spec.dtype.startswith("float") else "float32"
    return values[np.newaxis].astype(wanted, copy=False), placement


def _resized(frame, width, height):
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    shrinking = frame.shape[0] > height or frame.shape[1] > width
    resized = cv2.resize(
        np.ascontiguousarray(frame), (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return resized.reshape(height, width, frame.shape[2])


def check_preprocessing(preprocessing, channels):
    """ImageError if ~input_mean or ~input_std do not fit a model of channels channels."""
    for name, values in (("~input_mean", preprocessing.mean), ("~input_std", preprocessing.std)):
        if len(values) not in (1, channels):
            raise ImageError(
                f"{name} has {len(values)} values for a model of {channels} channels: give 1 or {channels}"
            )
    if any(value == 0 for value in preprocessing.std):
        raise ImageError("~input_std must not be 0")


def detections(outputs, roles, placement, score_threshold=0.5, max_detections=100, label_offset=0):
    """[(class_id, score, x_min, y_min, width, height)] of one frame, best first: the outputs of a detection model
    (roles: boxes, classes, scores, count positions) for boxes [ymin, xmin, ymax, xmax] normalised to its input."""
    scores = np.asarray(outputs[roles["scores"]]).reshape(-1)
    count = len(scores)
    if "count" in roles:  # the entries beyond it are whatever the op's buffers held
        given = float(np.asarray(outputs[roles["count"]]).reshape(-1)[0])
        count = min(count, int(given)) if math.isfinite(given) else 0
    scores = scores[:count].astype(np.float64)  # a NaN score is below every threshold
    boxes = np.asarray(outputs[roles["boxes"]]).reshape(-1, 4)[:count].astype(np.float64)
    classes = np.asarray(outputs[roles["classes"]]).reshape(-1)[:count].astype(np.float64)
    kept = (scores >= score_threshold) & np.isfinite(boxes).all(axis=1) & np.isfinite(classes)
    best = np.flatnonzero(kept)[np.argsort(-scores[kept], kind="stable")][:max_detections]
    placed = placement.boxes_in_source(boxes[best])
    ids = classes[best].astype(np.int64) + label_offset
    return [(c, s, *box) for c, s, box in zip(ids.tolist(), scores[best].tolist(), placed.tolist(), strict=True)]


def class_mask(output, placement):
    """A segmentation model's output for one frame, (1, h, w, classes) scores or (1, h, w) ids, as a uint8 mask of
    class ids at the source frame's size (nearest neighbour, the letterbox's padding cut away)."""
    output = np.asarray(output)[0]
    if output.ndim == 3:
        ids = output.argmax(axis=2) if output.shape[2] > 1 else (output[:, :, 0] > 0.5)
    else:
        ids = output
    ids = np.clip(ids, 0, 255).astype(np.uint8)
    width, height = placement.model
    ids = cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)
    x0, y0 = int(placement.dx), int(placement.dy)
    x1 = x0 + max(1, round(placement.source[0] * placement.sx))
    y1 = y0 + max(1, round(placement.source[1] * placement.sy))
    return cv2.resize(ids[y0:y1, x0:x1], placement.source, interpolation=cv2.INTER_NEAREST)


def draw_detections(rgb, found, label_of):
    """rgb (uint8, drawn on) with each box, its label and score."""
    scale = max(0.4, rgb.shape[1] / 640)
    for class_id, score, x, y, w, h in found:
        colour = tuple(
            int(c) for c in PALETTE[3 + class_id % (len(PALETTE) - 3)]
        )  # yellow, blue, ...: not red or green
        cv2.rectangle(rgb, (round(x), round(y)), (round(x + w), round(y + h)), colour, max(1, round(2 * scale)))
        text = f"{label_of(class_id) or f'class {class_id}'} {score:.2f}"
        origin = (round(x) + 2, max(round(y) - 4, int(14 * scale)))
        for ink, thickness in (((0, 0, 0), 3), (colour, 1)):
            cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, ink, thickness)
    return rgb


def overlay_mask(rgb, mask):
    """rgb blended with the palette colour of each pixel's class (class 0, background, left as it is)."""
    colours = PALETTE[mask % len(PALETTE)]
    blended = (rgb.astype(np.uint16) + colours) // 2
    return np.where(mask[:, :, np.newaxis] > 0, blended, rgb).astype(np.uint8)
