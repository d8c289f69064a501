"""Signed models: an Ed25519 signature (the cryptography library) over a model's flatbuffer and the metadata that
travels with it, so that a robot serves only what its operator's trainer signed. A sha256 proves that data arrived
whole; a signature proves who sent it. No TensorFlow: the serving node verifies with this alone.

What is signed (signed_payload): the format, version, sequence, sha256 of the data, input shape, output size, class
names and source, as canonical JSON. The sequence grows with every model a trainer publishes, also when it
publishes an older version again (a rollback it decided): a robot refuses a sequence at or below the one it serves,
so a captured old message cannot take it back.
"""

import base64
import binascii
import hashlib
import json
import os
import pathlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ros_tensorflow.tf_free.files import write_file
from ros_tensorflow.tf_free.tasks import CLASSIFICATION

SIGNED_FIELDS = (
    "format",
    "version",
    "sequence",
    "sha256",
    "input_shape",
    "output_dim",
    "class_names",
    "source",
    "task",
)


class SigningError(ValueError):
    """A key file that cannot be used, or a model whose signature does not hold; says which and why."""


def model_fields(version, sequence, sha256, input_shape, output_dim, class_names, source, task=""):
    """What is signed of a .tflite model (SIGNED_FIELDS), as the trainer signs it and a robot checks it. The task
    only where it is not a classifier's: what was signed before tasks stays valid, and a regression model cannot
    pass as a classifier, nor the other way round."""
    return {
        **({"task": task} if task and task != CLASSIFICATION else {}),
        "format": "tflite",
        "version": int(version),
        "sequence": int(sequence),
        "sha256": sha256,
        "input_shape": [int(size) for size in input_shape],
        "output_dim": int(output_dim),
        "class_names": list(class_names),
        "source": source,
    }


def signed_payload(fields):
    """The bytes signed: the metadata as canonical JSON (sorted keys, no spaces); the data through its sha256."""
    signed = {name: fields[name] for name in SIGNED_FIELDS if name in fields}
    return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key):
    """The first 16 hex digits of the sha256 of the raw public key: names a key in messages and logs."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signature_path(model_path):
    """<model file stem>.signature.json beside the model: its signature, key id and sequence."""
    return pathlib.Path(model_path).with_suffix(".signature.json")


def generate_key_pair(path):
    """path: a new Ed25519 private key (PEM, mode 0600, never over an existing file); path.pub: its public key.
    Returns the key id."""
    path = pathlib.Path(path)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise SigningError(f"{existing} exists: a key is never overwritten")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private)
    write_file(public_path, public)
    return key_id(key.public_key())


def _read_key_file(path):
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise SigningError(f"{path}: {error.strerror}") from None


class Signer:
    """Signs models with ~signing_key."""

    def __init__(self, path):
        """SigningError if path is not an Ed25519 private key that only its owner can read."""
        data = _read_key_file(path)
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise SigningError(f"{path}: mode {mode:o} lets others read the private key (chmod 600 {path})")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise SigningError(f"{path}: not an unencrypted PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path}: a {type(key).__name__}, expected an Ed25519 key (tfctl keygen makes one)")
        self._key = key
        self.key_id = key_id(key.public_key())

    def sign(self, fields):
        """The signature of fields (SIGNED_FIELDS), base64."""
        return base64.b64encode(self._key.sign(signed_payload(fields))).decode()


def load_trusted_keys(paths):
    """{key id: public key} of ~trusted_keys: PEM public key files, or folders of *.pub files; SigningError names a
    file that is not an Ed25519 public key, or a folder without one."""
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.pub"))
            if not found:
                raise SigningError(f"{path}: a folder without public keys (*.pub)")
            files += found
        else:
            files.append(path)
    trusted = {}
    for path in files:
        try:
            key = serialization.load_pem_public_key(_read_key_file(path))
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise SigningError(f"{path}: not a PEM public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"{path}: a {type(key).__name__}, expected an Ed25519 public key (tfctl keygen)")
        trusted[key_id(key)] = key
    return trusted


def verify(trusted, fields, signature, signer_id):
    """Nothing if fields (SIGNED_FIELDS) carry signature by the trusted key signer_id; else SigningError, why not."""
    if not signature:
        raise SigningError("it is not signed, and ~trusted_keys accepts only signed models")
    key = trusted.get(signer_id)
    if key is None:
        raise SigningError(
            f"it is signed by key {signer_id!r}, which is not one of ~trusted_keys ({', '.join(trusted)})"
        )
    try:
        key.verify(base64.b64decode(signature, validate=True), signed_payload(fields))
    except (InvalidSignature, ValueError, binascii.Error):
        raise SigningError(
            f"its signature does not match its data and metadata (changed after key {signer_id} signed it)"
        ) from None


def save_signature(model_path, signature, signer_id, sequence):
    write_file(
        signature_path(model_path),
        json.dumps({"signature": signature, "key_id": signer_id, "sequence": sequence}, sort_keys=True).encode(),
    )


def load_signature(model_path):
    """(signature, key id, sequence) saved beside a model; ('', '', 0) if none or unreadable."""
    try:
        saved = json.loads(signature_path(model_path).read_text(encoding="utf-8"))
        return str(saved["signature"]), str(saved["key_id"]), int(saved["sequence"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", "", 0
