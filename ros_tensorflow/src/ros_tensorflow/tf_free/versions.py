"""Versions: ~data_dir/versions/<n>/, one folder per trained model, so that any of them can be evaluated, compared
and served again. No TensorFlow: files and their metadata only.

A folder appears whole (built under a temporary name, then renamed) and goes whole (renamed away, then deleted):
a killed node leaves no half version behind. Its files are named as beside ~model_path (model.keras,
model.classes.txt, model.info.json, model.tflite), plus meta.json and curves.png.
"""

import json
import math
import os
import pathlib
import secrets
import shutil

from ros_tensorflow.tf_free.files import ModelFileError, write_file


def _finite_or_none(meta):
    """JSON has no NaN: a metric that was not measured (no validation) is null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in meta.items()}


class Versions:
    def __init__(self, root):
        self.root = pathlib.Path(root)

    def numbers(self):
        """The versions kept, oldest first."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names if name.isdigit() and (self.root / name / "meta.json").is_file())

    def folder(self, number):
        return self.root / str(number)

    def model_file(self, number):
        """The model file of a version (model.keras, or the suffix ~model_path has); None if it has none."""
        found = sorted(self.folder(number).glob("model.*"))
        models = [path for path in found if path.suffix in (".keras", ".h5")]
        return models[0] if models else None

    def meta(self, number):
        try:
            return json.loads((self.folder(number) / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def add(self, number, files, meta):
        """Version number from files ({name in the folder: bytes}) and meta (written as meta.json); ModelFileError
        if it cannot be written (nothing is left behind then)."""
        partial = self.root / f".{number}.partial-{secrets.token_hex(4)}"
        try:
            partial.mkdir(parents=True)
            for name, data in files.items():
                (partial / name).write_bytes(data)
            (partial / "meta.json").write_text(json.dumps(_finite_or_none(meta), indent=1, sort_keys=True))
            os.replace(partial, self.folder(number))  # fails if it exists: a number is never reused
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelFileError(f"cannot keep version {number} in {self.root}: {error}") from error

    def add_file(self, number, name, data):
        """A file added to a version after it was made (its .tflite, its curves); atomically."""
        write_file(self.folder(number) / name, data)

    def update_meta(self, number, **fields):
        meta = {**self.meta(number), **fields}
        write_file(
            self.folder(number) / "meta.json", json.dumps(_finite_or_none(meta), indent=1, sort_keys=True).encode()
        )

    def prune(self, keep, protected):
        """Remove the oldest versions beyond the newest `keep` (0: keep all), never those in `protected` (numbers:
        the served one, the one a restart serves). Returns those removed."""
        numbers = self.numbers()
        if not keep or len(numbers) <= keep:
            return []
        removed = [n for n in numbers[:-keep] if n not in protected]
        for number in removed:
            doomed = self.root / f".{number}.removed-{secrets.token_hex(4)}"
            os.replace(self.folder(number), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        return removed
