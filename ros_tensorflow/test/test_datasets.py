"""Datasets: built-in, recorded and file datasets, and every way a file can be wrong."""

import os

import cv2
import numpy as np
import pytest
import rosbag
from ros_tensorflow_msgs.msg import ImageSample, Sample
from sensor_msgs.msg import Image
from sklearn.datasets import load_digits
from std_msgs.msg import String

from ros_tensorflow.tf_free.datasets import DatasetError, Datasets, make_synthetic
from ros_tensorflow.tf_free.sample_store import SampleStore

X, Y = make_synthetic(n_samples=60, seed=5)


@pytest.fixture
def datasets(tmp_path):
    store = SampleStore(tmp_path / "samples.sqlite")
    return Datasets(tmp_path, 10, 2, store, bag_topic="/ros_tensorflow/samples")


def test_synthetic_and_recorded(datasets):
    assert datasets.load("synthetic")[0].shape == (1000, 10)
    with pytest.raises(DatasetError, match="'recorded' is empty"):
        datasets.load("recorded")
    datasets.sample_store.append(X, Y)
    x, y = datasets.load("recorded")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_npz_csv_and_bag_files_load(datasets, tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("# ten features, then the label\n")
        np.savetxt(f, np.column_stack([X, Y]), delimiter=",")
    with rosbag.Bag(str(tmp_path / "d.bag"), "w") as bag:
        for start in range(0, len(X), 20):
            msg = Sample(data=X[start : start + 20].ravel().tolist(), labels=Y[start : start + 20].tolist())
            bag.write("/ros_tensorflow/samples", msg)
        bag.write("/other", Sample(data=[1.0] * 10, labels=[5]))
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x=X, y=Y)
    for name in ("d.npz", "d.csv", "d.bag", "sub/d.npz", str(tmp_path / "d.npz")):
        x, y = datasets.load(name)
        np.testing.assert_allclose(x, X)
        np.testing.assert_array_equal(y, Y)


def write_bytes(path, data):
    path.write_bytes(data)
    return path.name


def test_bad_dataset_files_give_one_clear_error(datasets, tmp_path):
    np.savez(tmp_path / "good.npz", x=X, y=Y)
    cases = {
        "../outside.npz": "outside the data folder",
        "/etc/passwd.csv": "outside the data folder",
        "sub/../../x.npz": "outside the data folder",
        "missing.npz": "missing.npz not found",
        "data.txt": r"unknown dataset 'data.txt' \(known: .*, a .npz, .csv or .bag file, or a folder of images",
        "a" * 5000 + ".npz": r"dataset 'a{80}\.\.\. \(5004 characters\)' cannot be a file: File name too long",
        "\x00.npz": "cannot be a file: embedded null byte",
        write_bytes(tmp_path / "trunc.npz", (tmp_path / "good.npz").read_bytes()[:200]): "trunc.npz is not a readable",
        write_bytes(tmp_path / "junk.csv", b"1,2,3\nfoo,bar\n"): "junk.csv cannot be used",
        write_bytes(tmp_path / "junk.bag", b"not a bag"): "junk.bag is not a rosbag file",
    }
    np.savez(tmp_path / "no_y.npz", x=X)
    cases["no_y.npz"] = r"lacks the arrays \['y'\]"
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object), y=Y[:1])
    cases["pickled.npz"] = "pickled.npz cannot be used"
    np.savez(tmp_path / "labels.npz", x=X, y=Y + 5)
    cases["labels.npz"] = r"labels.npz cannot be used: labels must be in \[0, 2\)"
    np.savetxt(tmp_path / "cols.csv", X, delimiter=",")
    cases["cols.csv"] = "has 10 columns, expected 10 features and a label"
    np.savez(tmp_path / "y2d.npz", x=X, y=Y[:, None])
    cases["y2d.npz"] = r"expected labels of shape \(60,\), one per sample, got shape \(60, 1\)"
    np.save(tmp_path / "single.npy", X)
    cases[write_bytes(tmp_path / "single.npz", (tmp_path / "single.npy").read_bytes())] = "a single .npy array"
    np.savez(tmp_path / "strings.npz", x=X.astype(str), y=Y)
    cases["strings.npz"] = "array x must be numbers, got strings"
    np.savez(tmp_path / "big.npz", x=X * 1e300, y=Y)
    cases["big.npz"] = "outside float32's range"
    cases[write_bytes(tmp_path / "binary.csv", bytes(range(128, 256)) * 8)] = "not a text CSV file: byte 0"
    cases[write_bytes(tmp_path / "empty.csv", b"")] = "has no data rows"
    cases[write_bytes(tmp_path / "random.bag", bytes(range(128, 256)) * 8)] = "not a rosbag file"
    with rosbag.Bag(str(tmp_path / "strings.bag"), "w") as bag:
        bag.write("/ros_tensorflow/samples", String(data="hello"))
    cases["strings.bag"] = (
        "holds std_msgs/String messages on topic /ros_tensorflow/samples, expected ros_tensorflow_msgs/Sa"
    )
    with rosbag.Bag(str(tmp_path / "elsewhere.bag"), "w") as bag:
        bag.write("/other", Sample(data=[1.0] * 10, labels=[1]))
    cases["elsewhere.bag"] = r"no Sample messages on topic /ros_tensorflow/samples \(its topics: /other"
    for name, reason in cases.items():
        with pytest.raises(DatasetError, match=reason):
            datasets.load(name)


DIGITS = load_digits()


def write_digit_folders(root, classes=(0, 1, 2), per_class=5):
    """<root>/<name>/<i>.png of real 8 x 8 digit images, one folder per class, named as a user would."""
    names = {0: "zero", 1: "one", 2: "two"}
    for digit in classes:
        folder = root / names[digit]
        folder.mkdir(parents=True)
        for i, array in enumerate(DIGITS.images[DIGITS.target == digit][:per_class]):
            cv2.imwrite(str(folder / f"{i}.png"), (array * 255 / 16).astype(np.uint8))
    (root / "one" / "notes.txt").write_text("not an image: skipped")


def test_an_image_folder_gives_samples_labels_in_folder_order_and_class_names(tmp_path):
    write_digit_folders(tmp_path / "digits")
    loader = Datasets(tmp_path, (16, 16, 1), 3)
    x, y = loader.load("digits")
    assert x.shape == (15, 16, 16, 1) and 0 <= x.min() and x.max() <= 1
    assert loader.class_names == ["one", "two", "zero"] and y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    expected = cv2.resize((DIGITS.images[DIGITS.target == 1][0] * 255 / 16).astype(np.uint8), (16, 16)) / 255
    np.testing.assert_allclose(x[0, :, :, 0], expected)


@pytest.mark.parametrize(
    "damage, shape, classes, reason",
    [
        ("corrupt", (16, 16, 1), 3, r"dataset image .*/zero/0.png: the file cannot be decoded"),
        (None, (16, 16, 1), 2, r"has 3 class folders \(one, two, zero\), the model has 2 classes"),
        (None, (10,), 3, r"is a folder of images, the model takes samples of shape \[10\]"),
    ],
)
def test_a_bad_image_folder_says_which_file_and_why(tmp_path, damage, shape, classes, reason):
    write_digit_folders(tmp_path / "digits")
    if damage == "corrupt":
        (tmp_path / "digits" / "zero" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DatasetError, match=reason):
        Datasets(tmp_path, shape, classes).load("digits")


def test_a_bag_of_image_samples_loads_as_prediction_sees_them(tmp_path):
    frame = (DIGITS.images[0] * 255 / 16).astype(np.uint8)
    image = Image(height=8, width=8, encoding="mono8", step=8, data=frame.tobytes())
    for name, bad in (("good.bag", []), ("frames.bag", [Image(encoding="yuv422")])):
        with rosbag.Bag(str(tmp_path / name), "w") as bag:
            for i, msg in enumerate([image, image, image, *bad]):
                bag.write("/ros_tensorflow/samples", ImageSample(image=msg, label=min(i, 1)))
    loader = Datasets(tmp_path, (8, 8, 1), 2, bag_topic="/ros_tensorflow/samples")
    x, y = loader.load("good.bag")
    assert y.tolist() == [0, 1, 1]
    np.testing.assert_allclose(x[2, :, :, 0], frame / 255)
    with pytest.raises(DatasetError, match=r"frames.bag: ImageSample 3 on /ros_tensorflow/samples: unknown encoding"):
        loader.load("frames.bag")


def test_names_that_leave_the_data_folder_or_name_no_regular_file_are_refused_without_being_opened(datasets, tmp_path):
    """A FIFO would block the reader forever and /dev/zero never ends: reaching the end of this test proves
    neither was opened."""
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "passwd.csv").symlink_to("/etc/passwd")
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    (tmp_path / "up").symlink_to(tmp_path.parent)
    images = tmp_path / "frames" / "cat"
    images.mkdir(parents=True)
    os.mkfifo(images / "0.png")
    linked = tmp_path / "linked" / "cat"
    linked.mkdir(parents=True)
    (linked / "0.png").symlink_to("/dev/zero")
    cases = {
        "fifo.npz": "fifo.npz is not a regular file",
        "passwd.csv": "outside the data folder",
        "zero.npz": "outside the data folder",
        "/dev/zero": "outside the data folder",
        "up/elsewhere.npz": "outside the data folder",
        "../../../../../../../../etc/shadow.csv": "outside the data folder",
    }
    for name, reason in cases.items():
        with pytest.raises(DatasetError, match=reason):
            datasets.load(name)
    image_datasets = Datasets(tmp_path, [16, 16, 1], 2)
    with pytest.raises(DatasetError, match="0.png is not a regular file"):
        image_datasets.load("frames")
    with pytest.raises(DatasetError, match="outside the data folder"):
        image_datasets.load("linked")


def test_an_image_folder_with_names_that_are_not_utf8_loads_or_is_refused_and_never_crashes(tmp_path):
    """OpenCV's imread died of SIGSEGV on a file name holding the byte 0xff; such a file is read now. A class
    folder of such a name would become a class name, which no ROS string can carry: refused, its bytes shown."""
    write_digit_folders(tmp_path / "digits")
    frame = (DIGITS.images[0] * 255 / 16).astype(np.uint8)
    (tmp_path / "digits" / "zero" / os.fsdecode(b"\xff.png")).write_bytes(cv2.imencode(".png", frame)[1].tobytes())
    loader = Datasets(tmp_path, (8, 8, 1), 3)
    x, y = loader.load("digits")
    assert len(x) == 16 and y.tolist().count(2) == 6
    np.testing.assert_allclose(x[15, :, :, 0], frame / 255)  # sorted after zero/0-4.png
    (tmp_path / "digits" / os.fsdecode(b"caf\xe9")).mkdir()
    with pytest.raises(DatasetError, match=r"the class folder name 'caf\\xe9' is not UTF-8 text: rename it"):
        Datasets(tmp_path, (8, 8, 1), 4).load("digits")


def test_an_image_larger_than_max_image_pixels_is_refused_from_its_header(tmp_path):
    write_digit_folders(tmp_path / "digits")
    with pytest.raises(DatasetError, match=r"one/0.png: image of 8 x 8 = 64 pixels, more than ~max_image_pixels"):
        Datasets(tmp_path, (8, 8, 1), 3, max_image_pixels=63).load("digits")


def test_synthetic_is_the_same_samples_for_the_same_seed_and_sizes(tmp_path):
    first, again = (Datasets(tmp_path, 10, 2, seed=0).load("synthetic") for _ in range(2))
    other = Datasets(tmp_path, 10, 2, seed=1).load("synthetic")
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
