"""SampleStore: recorded samples in SQLite, without a master."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ros_tensorflow.tf_free.datasets import make_synthetic
from ros_tensorflow.tf_free.sample_store import SampleStore

X, Y = make_synthetic(n_samples=60, seed=5)


def test_store_appends_loads_counts_and_clears_across_reopening(tmp_path):
    store = SampleStore(tmp_path / "s.sqlite")
    store.append(X[:10], Y[:10])
    store.append(X[10:25], Y[10:25])
    store.close()
    store = SampleStore(tmp_path / "s.sqlite")
    assert len(store) == 25
    x, y = store.load(10)
    np.testing.assert_array_equal(x, X[:25])
    np.testing.assert_array_equal(y, Y[:25])
    with pytest.raises(
        ValueError, match=r"holds samples of shape \[10\], recorded for another model: this one takes \[4\]"
    ):
        store.load(4)
    store.clear()
    assert len(store) == 0 and store.load(10)[0].shape == (0, 10)


def test_store_keeps_every_committed_sample_through_sigkill(tmp_path):
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import numpy as np
            from ros_tensorflow.tf_free.sample_store import SampleStore
            store = SampleStore({str(tmp_path / "s.sqlite")!r})
            for i in range(100000):
                store.append(np.full((3, 10), float(i)), [0, 1, 0])
                print(len(store), flush=True)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(300):
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    x, y = SampleStore(tmp_path / "s.sqlite").load(10)
    assert len(x) >= acknowledged and len(x) % 3 == 0, "a record is missing or half-written"
    np.testing.assert_array_equal(x[::3, 0], np.arange(len(x) // 3))


def test_samples_keep_their_shape_and_a_store_made_before_shapes_still_loads(tmp_path):
    images = np.arange(2 * 4 * 3 * 1, dtype=np.float64).reshape(2, 4, 3, 1)
    store = SampleStore(tmp_path / "images.sqlite")
    store.append(images, [0, 1])
    x, y = store.load((4, 3, 1))
    np.testing.assert_array_equal(x, images) and np.testing.assert_array_equal(y, [0, 1])
    with pytest.raises(ValueError, match=r"shape \[4, 3, 1\], recorded for another model: this one takes \[3, 4, 1\]"):
        store.load((3, 4, 1))  # the same number of values, another shape

    legacy = sqlite3.connect(tmp_path / "legacy.sqlite")
    legacy.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY, data BLOB NOT NULL, label INTEGER NOT NULL)")
    legacy.execute("INSERT INTO samples (data, label) VALUES (?, ?)", (np.ones(10).tobytes(), 1))
    legacy.commit()
    legacy.close()
    x, y = SampleStore(tmp_path / "legacy.sqlite").load(10)
    assert x.shape == (1, 10) and y.tolist() == [1]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a database at all, just text" * 100, "is not a readable SQLite database"),
        (b"SQLite format 3\x00" + bytes(4080), "is not a readable SQLite database"),  # a header, then garbage
        (None, "is another program's database"),
    ],
)
def test_a_file_that_is_not_a_sample_store_is_moved_aside_and_the_store_starts_empty(tmp_path, content, why):
    path = tmp_path / "samples.sqlite"
    if content is None:  # a healthy SQLite file of another program's
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE contacts (name TEXT)")
        db.close()
        content = path.read_bytes()
    else:
        path.write_bytes(content)
    store, note = SampleStore.open_in(tmp_path)
    assert len(store) == 0 and why in note and "moved it to" in note
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("samples.sqlite.unusable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content, "moved, never changed or deleted"
    store.append(np.ones((1, 10)), [1])
    assert len(SampleStore(path)) == 1


def test_a_healthy_store_opens_without_a_note(tmp_path):
    store, note = SampleStore.open_in(tmp_path)
    store.append(np.ones((2, 10)), [0, 1])
    store.close()
    store, note = SampleStore.open_in(tmp_path)
    assert len(store) == 2 and note is None


def test_a_full_disk_refuses_the_append_that_does_not_fit_and_keeps_every_sample_before_it(tmp_path):
    """A file-size limit stands for the full disk: writes fail with EFBIG, as with ENOSPC."""
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import resource, signal
            import numpy as np
            from ros_tensorflow.tf_free.sample_store import SampleStore, StoreError
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as the node does: a failed write, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
            store = SampleStore({str(tmp_path / "s.sqlite")!r})
            for i in range(100000):
                try:
                    store.append(np.full((3, 10), float(i)), [0, 1, 0])
                except StoreError as error:
                    print(len(store), error)
                    break
            """),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stored, message = writer.stdout.split(" ", 1)
    assert int(stored) > 0 and "cannot store 3 samples in" in message
    x, _ = SampleStore(tmp_path / "s.sqlite").load(10)
    assert len(x) == int(stored)
    np.testing.assert_array_equal(x[::3, 0], np.arange(len(x) // 3))
