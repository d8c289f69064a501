"""Models on disk: atomic saves with a backup, and loading whatever a user brings."""

import hashlib
import os
import pathlib
import shutil
import zipfile

import keras

from ros_tensorflow.tf_free.files import ModelFileError, replace_atomically, tflite_path, unusable_path, write_file

__all__ = [
    "ModelFileError",
    "NotClassicModel",
    "backup_path",
    "export_tflite",
    "file_digest",
    "load_model",
    "save_model",
]


class NotClassicModel(ModelFileError):
    """A model that loads but is not one input -> one (k, outputs): served as a model a user brought (foreign);
    model: the Keras model, None for a SavedModel."""

    def __init__(self, message, model=None):
        super().__init__(message)
        self.model = model


def backup_path(path):
    """model.keras -> model.backup.keras: keeps the extension Keras loads by."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.backup{path.suffix}")


def file_digest(path):
    """SHA-256 of a file: recognises a model file this process loaded or wrote, without loading it again."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def save_model(model, path, known_good=()):
    """Save model to path (.keras or .h5) atomically; returns (the new file's digest, where the file that was at
    path was set aside, or None).

    The file it replaces becomes the backup only if it is a model: one whose digest is in known_good (loaded or
    saved before), or else one that loads now. Any other file (corrupt, or a user's model the node cannot use: two
    outputs, a custom layer) is renamed to <stem>.unusable-<date>-<time><ext> beside it, never overwritten: it may
    be someone's only copy, and the backup may be the only good model left.
    """
    path = pathlib.Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise ModelFileError(f"cannot save to {path}: the model path must end in .keras or .h5")
    set_aside = None
    try:
        if path.is_file():
            if _is_loadable(path, known_good):
                replace_atomically(lambda tmp: shutil.copyfile(path, tmp), backup_path(path))
            else:
                set_aside = unusable_path(path)
                os.link(path, set_aside)  # fails rather than replace a file of that name; path stays until the save
        replace_atomically(model.save, path)
        return file_digest(path), set_aside
    except OSError as error:
        raise ModelFileError(f"cannot save the model to {path}: {error}") from error


def export_tflite(flatbuffer, model_path):
    """Write flatbuffer as <model file stem>.tflite beside the model file, atomically; returns its path."""
    path = tflite_path(model_path)
    write_file(path, flatbuffer)
    return str(path)


def _is_loadable(path, known_good):
    if file_digest(path) in known_good:
        return True
    try:
        load_model(path)
    except ModelFileError:
        return False
    return True


def load_model(path):
    """(model, trainable) from a .keras/.h5 file or a SavedModel folder.

    Keras files load with safe_mode, so a Lambda layer cannot run code of the
    file's choosing. A SavedModel is wrapped for prediction only.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        _check_model_file(path)
    try:
        if path.is_dir():
            return _saved_model_for_prediction(path), False
        model = keras.models.load_model(path, safe_mode=True)
        if path.suffix == ".h5" and model.compiled:
            # Keras 3 builds a legacy .h5's optimizer for variables the loaded model does not have
            # ("Unknown variable"): a fresh optimizer of the same configuration trains it.
            model.compile_from_config(model.get_compile_config())
    except NotClassicModel:
        raise
    except zipfile.BadZipFile as error:  # e.g. a member that fails its CRC check
        raise ModelFileError(f"cannot load the model {path}: a corrupt zip archive ({error})") from error
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelFileError(f"cannot load the model {path}: {error}") from error
    check_model_shape(model, path)
    return model, True


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"


def _check_model_file(path):
    """Say what is wrong with a file Keras would only call 'not found'."""
    if not path.exists():
        raise ModelFileError(f"cannot load the model {path}: no such file or folder")
    if path.suffix not in (".keras", ".h5"):
        raise ModelFileError(f"cannot load the model {path}: expected a .keras or .h5 file or a SavedModel folder")
    try:
        with open(path, "rb") as file:
            head = file.read(len(HDF5_SIGNATURE))
    except OSError as error:
        raise ModelFileError(f"cannot load the model {path}: the file cannot be read: {error.strerror}") from error
    if path.suffix == ".h5":
        if head != HDF5_SIGNATURE:
            raise ModelFileError(f"cannot load the model {path}: not an HDF5 file (it lacks the HDF5 signature)")
        return
    if not head.startswith(ZIP_SIGNATURE):
        raise ModelFileError(f"cannot load the model {path}: not a Keras file (a .keras file is a zip archive)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"cannot load the model {path}: a corrupt zip archive (truncated: no central directory)")
    # The central directory only: each member's CRC is checked as Keras reads it (BadZipFile, in load_model).
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"cannot load the model {path}: a corrupt zip archive: {error}") from error
    if "config.json" not in names:
        raise ModelFileError(f"cannot load the model {path}: a zip archive, but not a Keras model (no config.json)")


def _saved_model_for_prediction(path):
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    args, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = [*args, *kwargs.values()]
    if len(specs) != 1:
        raise NotClassicModel(f"{path}: the serving_default signature has {len(specs)} inputs, expected one")
    spec = specs[0]
    inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise NotClassicModel(f"{path}: the serving_default signature has {len(outputs)} outputs, expected one")
        outputs = next(iter(outputs.values()))
    model = keras.Model(inputs, outputs)
    try:
        check_model_shape(model, path)
    except NotClassicModel as error:
        raise NotClassicModel(str(error)) from None  # served from the SavedModel itself, not this wrapper
    return model


def check_model_shape(model, path):
    """The node feeds (k, *sample shape) and reads (k, outputs): refuse anything else clearly. What the outputs
    mean (ModelWrapper's task) is checked by the keeper."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise NotClassicModel(f"{path}: expected a model with one input and one output", model)
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) < 2 or None in in_shape[1:] or len(out_shape) != 2 or out_shape[1] is None:
        raise NotClassicModel(
            f"{path}: expected input (k, *sample shape), every size known, and output (k, outputs),"
            f" got {in_shape} -> {out_shape}",
            model,
        )
