"""Models on disk: atomic saves with a backup, and loading whatever a user brings."""

import hashlib
import os
import pathlib
import secrets
import shutil
import zipfile

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
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}{path.suffix}")
    # Created as open() would (0666 less the umask), not mkstemp's 0600: the model keeps a normal file's mode.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
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


def _write_file(path, data):
    """Write bytes to path atomically (as models are); ModelFileError says why not."""
    try:
        _replace_atomically(lambda tmp: pathlib.Path(tmp).write_bytes(data), path)
    except OSError as error:
        raise ModelFileError(f"cannot write {path}: {error}") from error


def class_names_path(model_path):
    """<model file stem>.classes.txt beside the model: one class name per line."""
    return pathlib.Path(model_path).with_suffix(".classes.txt")


def save_class_names(names, model_path):
    """Write the model's class names beside it, atomically; none: remove a file an earlier model left."""
    path = class_names_path(model_path)
    if not names:
        path.unlink(missing_ok=True)
        return
    _write_file(path, "".join(f"{name}\n" for name in names).encode())


def load_class_names(model_path):
    """The class names saved beside a model, or [] if it has none."""
    try:
        return class_names_path(model_path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"cannot read {class_names_path(model_path)}: {error}") from error


def file_digest(path):
    """SHA-256 of a file: recognises a model file this process loaded or wrote, without loading it again."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def save_model(model, path, known_good=()):
    """Save model to path (.keras or .h5) atomically; returns the new file's digest.

    The file it replaces becomes the backup only if it is a model: one whose
    digest is in known_good (loaded or saved before), or else one that loads
    now. A corrupt file never replaces the backup, which may be the only good
    model left.
    """
    path = pathlib.Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise ModelFileError(f"cannot save to {path}: the model path must end in .keras or .h5")
    try:
        if path.is_file() and _is_loadable(path, known_good):
            _replace_atomically(lambda tmp: shutil.copyfile(path, tmp), backup_path(path))
        _replace_atomically(model.save, path)
        return file_digest(path)
    except OSError as error:
        raise ModelFileError(f"cannot save the model to {path}: {error}") from error


def export_tflite(flatbuffer, model_path):
    """Write flatbuffer as <model file stem>.tflite beside the model file, atomically; returns its path."""
    path = pathlib.Path(model_path).with_suffix(".tflite")
    _write_file(path, flatbuffer)
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
    except zipfile.BadZipFile as error:  # e.g. a member that fails its CRC check
        raise ModelFileError(f"cannot load the model {path}: a corrupt zip archive ({error})") from error
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelFileError(f"cannot load the model {path}: {error}") from error
    check_classifier_shape(model, path)
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
    if len(in_shape) < 2 or None in in_shape[1:] or len(out_shape) != 2 or out_shape[1] is None:
        raise ModelFileError(
            f"{path}: expected input (k, *sample shape), every size known, and output (k, classes),"
            f" got {in_shape} -> {out_shape}"
        )
