"""Signed models without a master: keys, signatures, and the serving node's model holder with ~trusted_keys refusing
forged, tampered and replayed models while the served one stays, byte for byte."""

import os
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_tflite_serving import message

from ros_tensorflow.tf_free.settings import Settings
from ros_tensorflow.tf_free.signing import Signer, SigningError, generate_key_pair, load_trusted_keys
from ros_tensorflow.tf_free.tflite_serving import ModelRefused, TfliteKeeper
from ros_tensorflow.with_tf.conversion import to_tflite
from ros_tensorflow.with_tf.model import build_classifier
from ros_tensorflow.with_tf.model_keeper import ModelKeeper


@pytest.fixture(scope="module")
def flatbuffers():
    return [to_tflite(build_classifier()) for _ in range(3)]


def signed(signer, flatbuffer, signed_version, sequence, **changes):
    """A Model message as the trainer signs it; changes: fields altered after signing."""
    msg = message(flatbuffer, version=signed_version, class_names=["neg", "pos"])
    fields = {"format": "tflite", "version": signed_version, "sequence": sequence, "sha256": msg.sha256}
    fields.update(input_shape=msg.input_shape, output_dim=msg.output_dim, class_names=msg.class_names)
    fields["source"] = msg.source
    msg.signature, msg.key_id, msg.sequence = signer.sign(fields), signer.key_id, sequence
    vars(msg).update(changes)
    return msg


def pair(folder, name):
    generate_key_pair(folder / name)
    return Signer(folder / name), folder / f"{name}.pub"


def keygen(path):
    """`tfctl keygen PATH`, as a user runs it: no master needed."""
    return subprocess.run(["rosrun", "ros_tensorflow", "tfctl", "keygen", path], capture_output=True, text=True)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    made = keygen(tmp_path / "k")
    assert made.returncode == 0 and "(mode 600: the trainer's ~signing_key)" in made.stdout, made.stderr
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    assert Signer(tmp_path / "k").key_id in load_trusted_keys([tmp_path / "k.pub"])
    again = keygen(tmp_path / "k")
    assert again.returncode == 1
    assert again.stderr == f"tfctl: keygen: {tmp_path / 'k'} exists: a key is never overwritten\n"


def test_key_files_with_bad_permissions_or_formats_are_clear_errors(tmp_path):
    generate_key_pair(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(SigningError, match=r"mode 644 lets others read the private key \(chmod 600 "):
        Signer(tmp_path / "k")
    (tmp_path / "junk").write_bytes(os.urandom(64))
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(SigningError, match="junk: not an unencrypted PEM private key"):
        Signer(tmp_path / "junk")
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    pem = ecdsa.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ecdsa").write_bytes(pem)
    os.chmod(tmp_path / "ecdsa", 0o600)
    with pytest.raises(SigningError, match="expected an Ed25519 key"):
        Signer(tmp_path / "ecdsa")
    with pytest.raises(SigningError, match="missing: No such file or directory"):
        Signer(tmp_path / "missing")
    with pytest.raises(SigningError, match="junk: not a PEM public key"):
        load_trusted_keys([tmp_path / "junk"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SigningError, match=r"a folder without public keys \(\*\.pub\)"):
        load_trusted_keys([tmp_path / "empty"])


def test_only_models_the_operator_signed_are_served_and_the_served_file_stays_byte_identical(tmp_path, flatbuffers):
    operator, operator_pub = pair(tmp_path, "operator")
    intruder, _ = pair(tmp_path, "intruder")
    keeper = TfliteKeeper(tmp_path / "robot" / "model.tflite", trusted_keys=load_trusted_keys([operator_pub]))
    first, second, third = flatbuffers
    keeper.accept(signed(operator, first, 1, 1))
    on_disk = {path.name: path.read_bytes() for path in (tmp_path / "robot").iterdir()}
    forged = {
        "no signature": (message(second, version=2), "it is not signed"),
        "another key": (signed(intruder, second, 2, 2), f"signed by key '{intruder.key_id}', which is not one of"),
        "data changed": (
            signed(operator, second, 2, 2, data=third, sha256=message(third).sha256),
            "its signature does not match its data and metadata",
        ),
        "metadata changed": (signed(operator, second, 2, 2, class_names=["pos", "neg"]), "does not match"),
        "version changed": (signed(operator, second, 2, 2, version=9), "does not match"),
        "replayed": (signed(operator, first, 1, 1), "signed with sequence 1, not above the served model's 1"),
    }
    for name, (msg, reason) in forged.items():
        with pytest.raises(ModelRefused, match=reason.replace("(", r"\(")):
            keeper.accept(msg)
        assert keeper.model.version == 1 and keeper.model.flatbuffer == first, name
        assert {path.name: path.read_bytes() for path in (tmp_path / "robot").iterdir()} == on_disk, name
    assert keeper.refused == len(forged)


def test_an_old_version_comes_back_only_as_a_rollback_the_trainer_signed(tmp_path, flatbuffers):
    operator, operator_pub = pair(tmp_path, "operator")
    keeper = TfliteKeeper(tmp_path / "model.tflite", trusted_keys=load_trusted_keys([tmp_path]))
    first, second, _ = flatbuffers
    old = signed(operator, first, 1, 1)
    keeper.accept(old)
    keeper.accept(signed(operator, second, 2, 2))
    with pytest.raises(ModelRefused, match="signed with sequence 1, not above the served model's 2: a replayed"):
        keeper.accept(old)  # captured and sent again
    assert keeper.model.version == 2
    keeper.accept(signed(operator, first, 1, 3))  # ~activate_version 1 on the trainer
    assert keeper.model.version == 1 and keeper.model.sequence == 3
    restarted = TfliteKeeper(tmp_path / "model.tflite", trusted_keys=load_trusted_keys([operator_pub]))
    assert restarted.model.version == 1 and restarted.model.sequence == 3  # checked again at start-up
    with pytest.raises(ModelRefused, match="not above the served model's 3"):
        restarted.accept(signed(operator, second, 2, 2))


def test_a_model_changed_on_disk_is_refused_at_start_up_and_the_signed_fallback_served(tmp_path, flatbuffers):
    operator, operator_pub = pair(tmp_path, "operator")
    trusted = load_trusted_keys([operator_pub])
    keeper = TfliteKeeper(tmp_path / "model.tflite", trusted_keys=trusted)
    first, second, third = flatbuffers
    keeper.accept(signed(operator, first, 1, 1))
    keeper.accept(signed(operator, second, 2, 2))
    (tmp_path / "model.tflite").write_bytes(third)  # a valid model, but not the one signed
    restarted = TfliteKeeper(tmp_path / "model.tflite", trusted_keys=trusted)
    assert restarted.model.flatbuffer == first and restarted.model.version == 1  # model.previous.tflite, signed
    (tmp_path / "model.previous.classes.txt").write_text("pos\nneg\n")  # its metadata changed too
    alone = TfliteKeeper(tmp_path / "model.tflite", trusted_keys=trusted)
    assert alone.model is None and "its signature does not match its data and metadata" in alone.load_error
    assert TfliteKeeper(tmp_path / "model.tflite").model.flatbuffer == third  # without ~trusted_keys: as before


def test_the_trainer_signs_each_model_it_announces_and_a_rollback_under_a_higher_sequence(tmp_path):
    operator, operator_pub = pair(tmp_path, "operator")
    keeper = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), versions_dir=tmp_path / "versions")
    keeper.signer = operator
    announced = []
    keeper.on_export = announced.append
    for _ in range(2):
        keeper.write()
        keeper.export_tflite().result(120)
    keeper.activate(1)  # a rollback the operator decides
    deadline = time.monotonic() + 60
    while len(announced) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(m.info["version"], m.sequence, m.key_id) for m in announced] == [
        (1, 1, operator.key_id),
        (2, 2, operator.key_id),
        (1, 3, operator.key_id),
    ]
    robot = TfliteKeeper(tmp_path / "robot" / "model.tflite", trusted_keys=load_trusted_keys([operator_pub]))
    for exported in announced:  # as the robots receive them on ~model
        msg = message(exported.flatbuffer, version=exported.info["version"], class_names=exported.class_names)
        msg.signature, msg.key_id, msg.sequence = exported.signature, exported.key_id, exported.sequence
        msg.source = exported.info["source"]
        robot.accept(msg)
    assert robot.model.version == 1 and robot.model.sequence == 3
    keeper.close()
    restarted = ModelKeeper(tmp_path / "model.keras", Settings().fresh_model(), versions_dir=tmp_path / "versions")
    restarted.signer, later = operator, []
    restarted.on_export = later.append
    restarted.announce_at_startup()
    assert later[0].sequence == 4  # the sequence survives a restart: never reused
    restarted.close()
