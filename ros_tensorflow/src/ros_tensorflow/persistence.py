"""Models on disk: atomic saves with a backup, and loading whatever a user brings."""

import os
import pathlib
import shutil
import tempfile

import keras


class ModelFileError(RuntimeError):
    """A model file that cannot be loaded or saved; the message names it and the cause."""


def backup_path(path):
    """model.keras -> model.backup.keras: keeps the extension Keras loads by."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.backup{path.suffix}")


def _replace_atomically(write, path):
    """write(tmp_path) in path's folder, then rename over path: a reader sees the old file or the new, whole."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_model(model, path):
    """Save model to path (.keras or .h5) atomically; the file it replaces becomes the backup."""
    path = pathlib.Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise ModelFileError(f"cannot save to {path}: the model path must end in .keras or .h5")
    try:
        if path.is_file():
            _replace_atomically(lambda tmp: shutil.copyfile(path, tmp), backup_path(path))
        _replace_atomically(model.save, path)
    except OSError as error:
        raise ModelFileError(f"cannot save the model to {path}: {error}") from error


def load_model(path):
    """(model, trainable) from a .keras/.h5 file or a SavedModel folder.

    Keras files load with safe_mode, so a Lambda layer cannot run code of the
    file's choosing. A SavedModel is wrapped for prediction only.
    """
    path = pathlib.Path(path)
    try:
        if path.is_dir():
            return _saved_model_for_prediction(path), False
        model = keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelFileError(f"cannot load the model {path}: {error}") from error
    check_classifier_shape(model, path)
    return model, True


def _saved_model_for_prediction(path):
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    args, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = [*args, *kwargs.values()]
    if len(specs) != 1:
        raise ModelFileError(f"{path}: the serving_default signature has {len(specs)} inputs, expected one")
    spec = specs[0]
    inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ModelFileError(f"{path}: the serving_default signature has {len(outputs)} outputs, expected one")
        outputs = next(iter(outputs.values()))
    model = keras.Model(inputs, outputs)
    check_classifier_shape(model, path)
    return model


def check_classifier_shape(model, path):
    """The node feeds (k, input_dim) and reads (k, output_dim): refuse other shapes with a clear message."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(f"{path}: expected a model with one input and one output")
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 2 or len(out_shape) != 2 or in_shape[1] is None or out_shape[1] is None:
        raise ModelFileError(
            f"{path}: expected input (k, input_dim) and output (k, output_dim), got {in_shape} -> {out_shape}"
        )
