"""SampleStore: labelled samples recorded by the robot, kept in SQLite."""

import os
import sqlite3
import threading

import numpy as np


class SampleStore:
    """An append-only table of (data, label) rows in one SQLite file.

    Each append is one transaction, committed before append returns: a killed
    process loses nothing it was handed, and SQLite's journal guarantees a
    half-written transaction is never read back.
    """

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, data BLOB NOT NULL, label INTEGER NOT NULL)"
        )
        self._count = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    @classmethod
    def open_in(cls, data_dir):
        """The store <data_dir>/samples.sqlite, the folder made if needed; ValueError if it cannot be used."""
        try:
            os.makedirs(data_dir, exist_ok=True)
            return cls(os.path.join(data_dir, "samples.sqlite"))
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"{data_dir} is not usable: {error}") from error

    def __len__(self):
        return self._count

    def append(self, x, labels):
        """Store the rows of x (k, input_dim) with their k labels, all or none."""
        rows = [(np.asarray(row, np.float64).tobytes(), int(label)) for row, label in zip(x, labels, strict=True)]
        with self._lock:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO samples (data, label) VALUES (?, ?)", rows)
            self._count += len(rows)

    def load(self, input_dim):
        """All samples as (x, y); ValueError if some were recorded with another input_dim."""
        with self._lock:
            rows = self._db.execute("SELECT data, label FROM samples ORDER BY id").fetchall()
        x = [np.frombuffer(data, np.float64) for data, _ in rows]
        if any(len(row) != input_dim for row in x):
            raise ValueError(f"{self.path} holds samples whose size is not input_dim {input_dim}")
        return np.array(x).reshape(-1, input_dim), np.array([label for _, label in rows], dtype=np.int64)

    def clear(self):
        with self._lock:
            self._db.execute("DELETE FROM samples")
            self._count = 0

    def close(self):
        with self._lock:
            self._db.close()
