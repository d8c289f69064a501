"""Datasets a train goal can name: built-in, recorded, or a file under the data folder."""

import math
import pathlib
import warnings
import zipfile

import numpy as np

from ros_tensorflow.tf_free.samples import as_labelled_samples, as_target_samples, numeric_array, shape_of
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, REGRESSION

SAMPLE_TYPE = "ros_tensorflow_msgs/Sample"
IMAGE_SAMPLE_TYPE = "ros_tensorflow_msgs/ImageSample"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BAG_HEADER = b"#ROSBAG V2.0\n"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says which and why."""


def make_synthetic(n_samples=1000, input_dim=10, output_dim=2, n_draws=20, seed=None):
    """The tutorial's data: each sample is an input_dim-bin histogram of n_draws
    draws from a Gaussian whose mean depends on the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, output_dim, n_samples)
    means = (np.arange(output_dim) + 0.5) * input_dim / output_dim
    draws = rng.normal(means[y][:, None], input_dim / (3.0 * output_dim), size=(n_samples, n_draws))
    bins = np.clip(np.floor(draws), 0, input_dim - 1).astype(int)
    x = np.zeros((n_samples, input_dim))
    np.add.at(x, (np.repeat(np.arange(n_samples), n_draws), bins.ravel()), 1.0)
    return x, y


def make_synthetic_regression(n_samples=1000, input_dim=10, output_dim=1, seed=None):
    """A regression task of the same sizes: standard normal samples, each output a smooth function of them (a
    linear part and a sine), on a scale of tens far from 0 (targets the model must rescale, as real ones are)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, input_dim))
    weights = rng.normal(size=(input_dim, output_dim)) / np.sqrt(input_dim)
    projected = x @ weights
    return x, 50.0 + 20.0 * projected + 5.0 * np.sin(2.0 * projected)


def _shortened(name, limit=80):
    """A name fit for a message: hostile names can be thousands of characters long, and a file name's bytes need
    not be UTF-8 (Python keeps those as surrogates, which no ROS string can carry: shown as \\xff)."""
    name = str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def _is_utf8(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Datasets:
    """Resolves a goal's dataset name to (x, y).

    `synthetic` and `recorded` are built in; any other name is a .npz, .csv or
    .bag file, or a folder of images with one sub-folder per class, inside data_dir. Names that
    resolve outside data_dir are refused.
    """

    def __init__(
        self,
        data_dir,
        input_shape,
        output_dim,
        sample_store=None,
        bag_topic="samples",
        input_scale=0.0,
        max_image_pixels=0,
        seed=0,
        task=CLASSIFICATION,
    ):
        """input_shape: the model's sample shape (an int: input_dim); input_scale and max_image_pixels: for images
        (~input_scale, ~max_image_pixels); seed: synthetic's (~seed), so that every goal and evaluation of the same
        sizes sees the same samples; task: the model's: labels (classification) or targets (regression)."""
        self.task = task
        self.data_dir = pathlib.Path(data_dir).resolve()
        self.input_shape = shape_of(input_shape)
        self.input_dim = math.prod(self.input_shape)  # values per sample
        self.output_dim = output_dim
        self.sample_store = sample_store
        self.bag_topic = bag_topic
        self.input_scale = input_scale
        self.max_image_pixels = max_image_pixels
        self.seed = seed
        self.class_names = None  # set by loading an image folder: its sub-folders' names

    def load(self, name):
        if name == "synthetic":
            if len(self.input_shape) != 1:
                raise DatasetError(f"dataset 'synthetic' is for samples of rank 1, not shape {list(self.input_shape)}")
            make = make_synthetic_regression if self.task == REGRESSION else make_synthetic
            return self._checked(*make(input_dim=self.input_dim, output_dim=self.output_dim, seed=self.seed))
        if name == "recorded":
            return self._recorded()
        path = self._resolve(name)
        try:
            is_folder = path.is_dir()
        except OSError as error:  # a name longer than the file system allows
            raise DatasetError(f"dataset '{_shortened(name)}' cannot be a file: {error.strerror}") from None
        if is_folder:
            return self._image_folder(path)
        loader = {".npz": self._npz, ".csv": self._csv, ".bag": self._bag}.get(path.suffix)
        if loader is None:
            raise DatasetError(
                f"unknown dataset '{name}' (known: synthetic, recorded, a .npz, .csv or .bag file, or a folder of"
                f" images with one sub-folder per class, in {self.data_dir})"
            )
        if not path.exists():
            raise DatasetError(f"dataset file {path} not found")
        if not path.is_file():  # a FIFO would block the reader, a device would never end: neither is opened
            raise DatasetError(f"dataset {path} is not a regular file")
        try:
            x, y = loader(path)
            return self._checked(x, y)
        except DatasetError:
            raise
        except Exception as error:  # noqa: BLE001 - any unreadable file must become one clear message
            raise DatasetError(f"dataset file {path} cannot be used: {error}") from error

    def _checked(self, x, y):
        """(x, y) for the model: labels of a classifier, targets (n, output_dim) of a regression model."""
        if self.task == REGRESSION:
            return as_target_samples(x, y, self.input_shape, self.output_dim)
        return as_labelled_samples(x, y, self.input_shape, self.output_dim)

    def _resolve(self, name):
        """The path of name with every symlink followed; DatasetError, before anything is opened, outside data_dir."""
        try:
            path = (self.data_dir / name).resolve()
        except (OSError, ValueError) as error:  # a NUL byte, a symlink loop
            raise DatasetError(f"dataset '{_shortened(name)}' cannot be a file: {error}") from None
        if not path.is_relative_to(self.data_dir):
            raise DatasetError(f"dataset '{_shortened(name)}' is outside the data folder {self.data_dir}")
        return path

    def _recorded(self):
        if self.sample_store is None or len(self.sample_store) == 0:
            raise DatasetError("dataset 'recorded' is empty: publish Sample messages on ~samples first")
        try:
            x, y = self.sample_store.load(self.input_shape, self.task)
        except ValueError as error:
            raise DatasetError(str(error)) from error
        return self._checked(x, y)

    @staticmethod
    def _npz(path):
        try:
            arrays = np.load(path, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise DatasetError(f"dataset file {path} is not a readable .npz: {error}") from error
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise DatasetError(f"dataset file {path} is a single .npy array, not a .npz archive of arrays x and y")
        try:
            with arrays:
                missing = {"x", "y"} - set(arrays.files)
                if missing:
                    raise DatasetError(f"dataset file {path} lacks the arrays {sorted(missing)} (needs x and y)")
                return numeric_array(arrays["x"], "array x"), numeric_array(arrays["y"], "array y")
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise DatasetError(f"dataset file {path} is not a readable .npz: {error}") from error

    def _csv(self, path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": said below
                table = np.loadtxt(path, delimiter=",", ndmin=2, comments="#")
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"dataset file {path} is not a text CSV file: byte {error.start} is not UTF-8 text"
            ) from error
        if len(self.input_shape) != 1:
            raise DatasetError(
                f"dataset file {path}: .csv holds samples of rank 1 only, the model takes shape"
                f" {list(self.input_shape)} (use a .npz, a .bag or an image folder)"
            )
        targets = self.output_dim if self.task == REGRESSION else 1
        wanted = f"{self.input_dim} features and {f'{targets} targets' if self.task == REGRESSION else 'a label'}"
        if table.size == 0:
            raise DatasetError(f"dataset file {path} has no data rows (expected {wanted})")
        if table.shape[1] != self.input_dim + targets:
            raise DatasetError(f"dataset file {path} has {table.shape[1]} columns, expected {wanted}")
        if self.task == REGRESSION:
            return table[:, : self.input_dim], table[:, self.input_dim :]
        return table[:, :-1], table[:, -1]

    def _bag(self, path):
        import rosbag  # only bag files need ROS's Python libraries

        with open(path, "rb") as file:
            if file.read(len(BAG_HEADER)) != BAG_HEADER:
                raise DatasetError(f"dataset file {path} is not a rosbag file (it lacks the '#ROSBAG V2.0' header)")
        try:
            bag = rosbag.Bag(str(path))
        except (rosbag.ROSBagException, ValueError, OSError) as error:
            raise DatasetError(f"dataset file {path} is not a readable rosbag file: {error!r}") from error
        with bag:
            topics = bag.get_type_and_topic_info().topics
            found = topics.get(self.bag_topic)
            if found is None:
                held = ", ".join(f"{topic} ({info.msg_type})" for topic, info in sorted(topics.items())) or "none"
                raise DatasetError(
                    f"dataset file {path} has no Sample messages on topic {self.bag_topic} (its topics: {held})"
                )
            if found.msg_type == IMAGE_SAMPLE_TYPE:
                return self._image_samples(path, bag)
            if found.msg_type != SAMPLE_TYPE:
                raise DatasetError(
                    f"dataset file {path} holds {found.msg_type} messages on topic {self.bag_topic},"
                    f" expected {SAMPLE_TYPE} or {IMAGE_SAMPLE_TYPE}"
                )
            data, labels = [], []
            for i, (_, msg, _) in enumerate(bag.read_messages(topics=[self.bag_topic])):
                try:
                    x, y = self._checked(*self._sample_fields(msg))
                except ValueError as error:
                    raise DatasetError(f"dataset file {path}: Sample {i} on {self.bag_topic}: {error}") from error
                data.append(x)
                labels.append(y)
        if not data:
            raise DatasetError(f"dataset file {path} has no Sample messages on topic {self.bag_topic}")
        return np.concatenate(data), np.concatenate(labels)

    def _sample_fields(self, msg):
        """(data, labels or targets) of a Sample message; the other field must be empty."""
        wanted, other = ("targets", "labels") if self.task == REGRESSION else ("labels", "targets")
        if len(getattr(msg, other, ())):  # a bag recorded before targets has no such field
            raise DatasetError(f"it has {other} but the model is a {self.task} model: send {wanted} ({other} empty)")
        return msg.data, getattr(msg, wanted, ())

    def _image_samples(self, path, bag):
        """x, y of the ImageSample messages on bag_topic, each image converted as for prediction."""
        from ros_tensorflow.tf_free.images import image_sample, pixel_limit  # only image datasets need OpenCV

        max_pixels = pixel_limit(self.max_image_pixels)
        data, labels = [], []
        for i, (_, msg, _) in enumerate(bag.read_messages(topics=[self.bag_topic])):
            try:
                data.append(image_sample(msg.image, self.input_shape, self.input_scale, max_pixels))
            except ValueError as error:
                raise DatasetError(f"dataset file {path}: ImageSample {i} on {self.bag_topic}: {error}") from error
            labels.append(list(msg.targets) if self.task == REGRESSION else msg.label)
        return np.concatenate(data), np.array(labels)

    def _image_folder(self, path):
        """x, y of <path>/<class>/<image>.png|jpg, classes in the sorted order of their folders' names (the
        order keras.utils.image_dataset_from_directory gives them); their names become the model's."""
        from ros_tensorflow.tf_free.images import ImageError, decode_file, pixel_limit, to_model_input

        if self.task == REGRESSION:
            raise DatasetError(
                f"dataset {path} is a folder of images, which names classes: a regression model learns targets"
                " (record ImageSample messages with targets, or use a .npz of x and float y)"
            )
        if len(self.input_shape) != 3:
            raise DatasetError(
                f"dataset {path} is a folder of images, the model takes samples of shape"
                f" {list(self.input_shape)}: set ~input_shape, e.g. [28, 28, 1], for a fresh model"
            )
        classes = sorted(entry.name for entry in path.iterdir() if entry.is_dir())
        for name in classes:
            if not _is_utf8(name):  # it would become a class name, published in ROS strings
                raise DatasetError(
                    f"dataset folder {path}: the class folder name '{_shortened(name)}' is not UTF-8 text: rename it"
                )
        if not 0 < len(classes) <= self.output_dim:
            raise DatasetError(
                f"dataset folder {path} has {len(classes)} class folders ({', '.join(classes) or 'none'}),"
                f" the model has {self.output_dim} classes"
            )
        max_pixels = pixel_limit(self.max_image_pixels)
        data, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((path / name).iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                file = self._resolve(file)
                if not file.is_file():
                    raise DatasetError(f"dataset image {_shortened(file, 4096)} is not a regular file")
                try:
                    data.append(to_model_input(decode_file(file, max_pixels), self.input_shape, self.input_scale))
                except ImageError as error:
                    raise DatasetError(f"dataset image {_shortened(file, 4096)}: {error}") from error
                labels.append(label)
        if not data:
            raise DatasetError(f"dataset folder {path} holds no .png or .jpg images in {', '.join(classes)}")
        self.class_names = classes
        return as_labelled_samples(np.array(data), labels, self.input_shape, self.output_dim)
