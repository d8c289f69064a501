"""Files written the safe way, and the small files that travel beside a model; no TensorFlow, so the serving node
uses them too."""

import itertools
import json
import os
import pathlib
import secrets
import time


class ModelFileError(RuntimeError):
    """A model file that cannot be loaded or saved; the message names it and the cause."""


def replace_atomically(write, path):
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


def write_file(path, data):
    """Write bytes to path atomically (as models are); ModelFileError says why not."""
    try:
        replace_atomically(lambda tmp: pathlib.Path(tmp).write_bytes(data), path)
    except OSError as error:
        raise ModelFileError(f"cannot write {path}: {error}") from error


def unusable_path(path):
    """<stem>.unusable-<date>-<time><ext> beside path, a name not taken: where a file at a model's path that the node
    cannot use is kept (it may be someone's only copy), never overwritten."""
    path = pathlib.Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        candidate = path.with_name(f"{path.stem}.unusable-{stamp}{'' if n == 1 else f'-{n}'}{path.suffix}")
        if not candidate.exists():
            return candidate


def class_names_path(model_path):
    """<model file stem>.classes.txt beside the model: one class name per line."""
    return pathlib.Path(model_path).with_suffix(".classes.txt")


def save_class_names(names, model_path):
    """Write the model's class names beside it, atomically; none: remove a file an earlier model left."""
    path = class_names_path(model_path)
    if not names:
        path.unlink(missing_ok=True)
        return
    write_file(path, class_names_data(names))


def class_names_data(names):
    """The class-names file's contents: one name per line."""
    return "".join(f"{name}\n" for name in names).encode()


def load_class_names(model_path):
    """The class names saved beside a model, or [] if it has none."""
    try:
        return class_names_path(model_path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"cannot read {class_names_path(model_path)}: {error}") from error


def tflite_path(model_path):
    """<model file stem>.tflite beside the model: its export."""
    return pathlib.Path(model_path).with_suffix(".tflite")


def info_path(model_path):
    """<model file stem>.info.json beside the model: its version, where it came from and its metrics."""
    return pathlib.Path(model_path).with_suffix(".info.json")


def save_model_info(info, model_path):
    write_file(info_path(model_path), json.dumps(info, indent=1, sort_keys=True).encode())


def load_model_info(model_path):
    """The info saved beside a model, {} if none or unreadable (auxiliary: never a reason to refuse a model)."""
    try:
        info = json.loads(info_path(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def new_run_folder(parent):
    """A folder of its own for one goal's or evaluation's files: <time>, or <time>-2, -3... within the same second."""
    parent = os.path.expanduser(parent)
    os.makedirs(parent, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        run = os.path.join(parent, stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(run)  # fails if another took the name: then try the next
            return run
        except FileExistsError:
            continue
