"""SampleStore: labelled samples recorded by the robot, kept in SQLite."""

import math
import os
import sqlite3
import threading
import time

import numpy as np

from ros_tensorflow.tf_free.samples import shape_of
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, REGRESSION

COLUMNS = {"id", "data", "label", "shape", "targets"}
NO_LABEL = -1  # the label of a row that has targets (a regression model's)


class StoreError(ValueError):
    """The store cannot take or give samples (a full disk, a corrupt file); the message says why."""


class SampleStore:
    """An append-only table of (data, label) rows in one SQLite file; a regression model's rows have targets
    (float64 values) instead of a label.

    Each append is one transaction, committed before append returns: a killed
    process loses nothing it was handed, and SQLite's journal guarantees a
    half-written transaction is never read back.
    """

    def __init__(self, path):
        """StoreError if the file is not a sample store: not SQLite, damaged, or another program's database."""
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._check()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreError(f"{self.path} is not a readable SQLite database ({error})") from error
        except StoreError:
            self._db.close()
            raise
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, data BLOB NOT NULL, label INTEGER NOT NULL)"
        )
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(samples)")]
        if "shape" not in columns:  # stores made before samples had shapes: NULL, a flat row of its length
            self._db.execute("ALTER TABLE samples ADD COLUMN shape TEXT")
        if "targets" not in columns:  # stores made before regression: every row has a label
            self._db.execute("ALTER TABLE samples ADD COLUMN targets BLOB")
        self._count = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def _check(self):
        if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise StoreError(f"{self.path} is damaged (SQLite's quick_check fails)")
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
        if tables - {"samples"} or not columns <= COLUMNS:
            raise StoreError(f"{self.path} is another program's database (tables {sorted(tables)}), not a sample store")

    @classmethod
    def open_in(cls, data_dir):
        """(store, note): the store <data_dir>/samples.sqlite, the folder made if needed; ValueError if it cannot
        be used. A file that is not a sample store is moved aside, never deleted, and the store starts empty;
        note says so (else None)."""
        path = os.path.join(data_dir, "samples.sqlite")
        try:
            os.makedirs(data_dir, exist_ok=True)
            try:
                return cls(path), None
            except StoreError as error:
                aside = f"{path}.unusable-{time.strftime('%Y%m%d-%H%M%S')}"
                for suffix in ("", "-wal", "-shm"):  # SQLite's journal files belong to the file they journal
                    if os.path.exists(path + suffix):
                        os.replace(path + suffix, aside + suffix)
                return cls(path), f"{error}: moved it to {aside} and started with no recorded samples"
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"{data_dir} is not usable: {error}") from error

    def __len__(self):
        return self._count

    def append(self, x, labels):
        """Store the samples of x (k, *shape) with their k labels (ints), or targets (k, outputs floats), all or
        none."""
        shape = ",".join(str(size) for size in np.shape(x)[1:])
        labels = np.asarray(labels)
        if labels.ndim > 1:  # targets
            rows = [
                (np.asarray(sample, np.float64).tobytes(), NO_LABEL, shape, np.asarray(row, np.float64).tobytes())
                for sample, row in zip(x, labels, strict=True)
            ]
        else:
            rows = [
                (np.asarray(sample, np.float64).tobytes(), int(label), shape, None)
                for sample, label in zip(x, labels, strict=True)
            ]
        with self._lock:
            try:
                with self._db:  # one transaction
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT INTO samples (data, label, shape, targets) VALUES (?, ?, ?, ?)", rows)
            except sqlite3.Error as error:  # e.g. a full disk: the transaction is rolled back, the store stays whole
                raise StoreError(f"cannot store {len(rows)} samples in {self.path}: {error}") from error
            self._count += len(rows)

    def load(self, input_shape, task=CLASSIFICATION):
        """All samples as (x, y): labels (k,) for a classifier, targets (k, outputs) for a regression model;
        ValueError, naming both shapes or tasks, if some were recorded for another model."""
        wanted = shape_of(input_shape)
        with self._lock:
            rows = self._db.execute("SELECT data, label, shape, targets FROM samples ORDER BY id").fetchall()
        x = [np.frombuffer(data, np.float64) for data, _, _, _ in rows]
        with_targets = sum(targets is not None for *_, targets in rows)
        if with_targets != (len(rows) if task == REGRESSION else 0):
            recorded = f"{with_targets} with targets (regression) and {len(rows) - with_targets} with labels"
            raise ValueError(
                f"{self.path} holds samples recorded for another model ({recorded}): this one is a {task} model"
                " (clear them with ~clear_samples)"
            )
        for sample, (_, _, shape, _) in zip(x, rows, strict=True):
            recorded = tuple(int(size) for size in shape.split(",")) if shape else (len(sample),)
            if recorded != wanted or len(sample) != math.prod(wanted):
                raise ValueError(
                    f"{self.path} holds samples of shape {list(recorded)}, recorded for another model:"
                    f" this one takes {list(wanted)} (clear them with ~clear_samples)"
                )
        x = np.array(x).reshape(-1, *wanted)
        if task == REGRESSION:
            return x, np.array([np.frombuffer(targets, np.float64) for *_, targets in rows])
        return x, np.array([label for _, label, _, _ in rows], dtype=np.int64)

    def clear(self):
        with self._lock:
            self._db.execute("DELETE FROM samples")
            self._count = 0

    def close(self):
        with self._lock:
            self._db.close()
