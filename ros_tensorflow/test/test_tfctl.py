"""tfctl, run as users run it (rosrun), against a launched node."""

import signal
import subprocess
import threading

import dynamic_reconfigure.client
import numpy as np
import pytest
import rospy
from conftest import wait_for
from ros_tensorflow_msgs.srv import ListVersions, Predict


class Tfctl:
    """`rosrun ros_tensorflow tfctl ARGS` in a session of its own (Ctrl-C goes to its whole group, as a terminal's
    does), its output collected as it comes."""

    def __init__(self, *args):
        self.process = subprocess.Popen(
            ["rosrun", "ros_tensorflow", "tfctl", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.out, self.err = [], []
        self._readers = [
            threading.Thread(target=lambda s=stream, into=into: into.extend(iter(lambda: s.read1(4096), b"")))
            for stream, into in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    def text(self, which):
        return b"".join(self.out if which == "out" else self.err).decode()

    def wait(self, timeout=120):
        status = self.process.wait(timeout)
        for reader in self._readers:
            reader.join()
        return status, self.text("out"), self.text("err")


def write_samples(folder, k, values=10, name="samples.npy"):
    np.save(folder / name, np.random.default_rng(k).normal(size=(k, values)))
    return folder / name


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"]])
def test_each_command_has_its_help(command):
    status, out, _ = Tfctl(*command, "--help").wait()
    assert status == 0 and out.startswith(f"usage: tfctl {' '.join(command)}".rstrip())


def test_train_shows_progress_prints_the_result_and_ctrl_c_cancels(node):
    status, out, err = Tfctl("train", "--epochs", 3, "--validation-split", 0.2).wait()
    assert status == 0, out + err
    assert "SUCCEEDED: finished 3 epochs" in out and "best epoch" in out and "model: " in out
    assert "3/3 epochs" in err and "100%" in err and "val_acc" in err  # the tqdm bar, with the metrics

    # Ctrl-C cancels the goal, and the node keeps serving
    tfctl = Tfctl("train", "--epochs", 10000)
    wait_for(lambda: "1/10000 epochs" in tfctl.text("err"), 60, "the first epoch on the progress bar")
    tfctl.process.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground process group
    status, out, err = tfctl.wait()
    assert status == 1, out + err
    assert "cancelling the goal" in err and "PREEMPTED: cancelled after" in out
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).classes


def test_evaluate_and_predict_print_what_the_node_answered_or_why_not(node, tmp_path):
    status, out, err = Tfctl("evaluate", "--dataset", "synthetic").wait()
    assert status == 0, out + err
    assert "precision  recall     f1  support" in out and "class 0" in out and "class 1" in out
    picture = out.split("confusion matrix: ")[1].strip()
    assert picture.endswith("confusion.png") and open(picture, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "1000/1000" in err

    status, out, _ = Tfctl("evaluate", "--version", 9).wait()
    assert status == 1 and "ABORTED: version 9 cannot be evaluated" in out

    np.save(tmp_path / "three.npy", np.random.default_rng(0).normal(size=(3, 10)))
    status, out, err = Tfctl("predict", tmp_path / "three.npy").wait()
    assert status == 0, out + err
    assert [line.split(": ")[0] for line in out.splitlines()[:3]] == [
        f"{tmp_path / 'three.npy'} sample {i}" for i in range(3)
    ]
    assert "confidence" in out and "model version" in out

    np.savetxt(tmp_path / "wrong.csv", np.zeros((2, 12)), delimiter=",")
    status, _, err = Tfctl("predict", tmp_path / "wrong.csv").wait()
    assert status == 1 and "the node refused" in err and "10" in err


def test_versions_activate_and_evaluate_a_version_roll_back_and_forth(node):
    for _ in range(2):
        status, out, err = Tfctl("train", "--epochs", 1, "--validation-split", 0.2).wait()
        assert status == 0, out + err
    assert "version 2, promoted" in out
    status, out, _ = Tfctl("versions").wait()
    assert (
        status == 0
        and [line[:9].split() for line in out.splitlines()[1:3]] == [["1"], ["*", "2"]]
        and "served: 2" in out
    )
    listed = rospy.ServiceProxy("/ros_tensorflow/list_versions", ListVersions)()
    assert [v.version for v in listed.versions] == [1, 2] and listed.served == 2
    assert [v.served for v in listed.versions] == [False, True] and listed.versions[1].dataset == "synthetic"
    status, out, _ = Tfctl("activate", 1).wait()
    assert status == 0 and "serving version 1" in out
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).model_version == 1
    status, out, _ = Tfctl("versions").wait()
    assert [line[:9].split() for line in out.splitlines()[1:3]] == [["*", "1"], ["2"]]
    status, out, err = Tfctl("evaluate", "--version", 2).wait()  # a version not served: compared on the same data
    assert status == 0 and "model version 2" in out, out + err
    status, _, err = Tfctl("activate", 9).wait()
    assert status == 1 and "there is no version 9 (kept: [1, 2]); the current model stays" in err
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).model_version == 1
    # the README's way without tfctl
    answer = subprocess.run(
        ["rosservice", "call", "/ros_tensorflow/activate_version", "version: 2"], capture_output=True, text=True
    )
    assert answer.returncode == 0 and "success: True" in answer.stdout and "serving version 2" in answer.stdout
    assert rospy.ServiceProxy("/predict", Predict)([0.5] * 10).model_version == 2


def test_the_node_named_is_the_node_used_or_a_clear_error(node, tmp_path):
    samples = write_samples(tmp_path, 2)
    for name, command in (  # /train, /predict exist: the namespace's, not these nodes'
        ("/nonode", ["train", "--epochs", 1]),
        ("/nonode", ["evaluate"]),
        ("/lab/typo_name", ["predict", samples]),
        ("/lab/typo_name", ["versions"]),
        ("/nonode", ["activate", 1]),
    ):
        status, out, err = Tfctl("--node", name, "--timeout", 2, *command).wait()
        assert status == 1 and f"tfctl: no node {name} is running (running: " in err, out + err
        assert "/ros_tensorflow" in err and "Traceback" not in err
    listed = rospy.ServiceProxy("/ros_tensorflow/list_versions", ListVersions)()
    assert listed.versions == [] and listed.served == 0  # nothing trained


def test_predict_says_what_is_wrong_with_a_file_in_one_line_and_sends_large_ones_in_chunks(node, tmp_path):
    np.save(tmp_path / "fives.npy", np.zeros((8, 5)))  # 40 values: as many as 4 samples of the node's 10
    np.savez(tmp_path / "no_x.npz", samples=np.zeros((2, 10)))
    (tmp_path / "header.csv").write_text("a,b,c,d,e,f,g,h,i,j\n" + ",".join(["0"] * 10) + "\n")
    (tmp_path / "words.npy").write_text("not numpy")
    cases = {
        ("predict", tmp_path / "fives.npy"): "fives.npy: its samples have 5 values each, the node's model takes 10",
        ("predict", tmp_path / "missing.npy"): "missing.npy: No such file or directory",
        ("predict", tmp_path / "no_x.npz"): "no_x.npz: no array 'x' of samples (it has samples)",
        ("predict", tmp_path / "header.csv"): "header.csv: could not convert",
        ("predict", tmp_path / "words.npy"): "words.npy: ",
        ("predict", "/etc/passwd"): "/etc/passwd: expected samples in a .npy, .npz or .csv file",
        ("activate", -1): "activate: the version must be a number >= 1",
        ("evaluate", "--version", -1): "evaluate: --version must be 0 (the model served) or a version number",
    }
    for command, error in cases.items():
        status, out, err = Tfctl(*command).wait()
        assert status == 1 and err.startswith("tfctl: ") and error in err and err.count("\n") == 1, (command, err)
    reconfigure = dynamic_reconfigure.client.Client("/ros_tensorflow", timeout=30)
    reconfigure.update_configuration({"max_request_samples": 10})
    many, samples = write_samples(tmp_path, 25, name="many.npy"), write_samples(tmp_path, 2)
    status, out, err = Tfctl("predict", many, samples).wait()
    assert status == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 28 and lines[24].startswith(f"{many} sample 24: class ")
    assert lines[26].startswith(f"{samples} sample 1: class ") and lines[27] == "model version 0"
