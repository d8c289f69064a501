"""The layers' import rules, as `make lint` checks them (import-linter, pyproject.toml): a copy of the package with
one planted import breaks the contract that protects against it."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"


def lint_imports(src):
    return subprocess.run(
        [LINT_IMPORTS, "--config", ROOT / "pyproject.toml", "--no-cache"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        cwd=src,
    )


def test_the_package_keeps_every_contract():
    checked = lint_imports(ROOT / "ros_tensorflow" / "src")
    assert checked.returncode == 0 and "Contracts: 4 kept, 0 broken." in checked.stdout, checked.stdout


@pytest.mark.parametrize(
    "module, planted, broken",
    [
        ("tf_free/images.py", "import tensorflow", "ros_tensorflow.ros.serve_interface is not allowed to import"),
        ("tf_free/files.py", "import keras", "ros_tensorflow.tf_free is not allowed to import keras"),
        ("tf_free/samples.py", "import rospy", "ros_tensorflow.tf_free is not allowed to import rospy"),
        ("with_tf/model.py", "import rospy", "ros_tensorflow.with_tf is not allowed to import rospy"),
        (
            "tf_free/status.py",
            "from ros_tensorflow.with_tf import model",
            "ros_tensorflow.tf_free.status -> ros_tensorflow",
        ),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path, module, planted, broken):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "ros_tensorflow" / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "ros_tensorflow" / module, "a") as file:
        file.write(f"\n{planted}  # noqa\n")
    checked = lint_imports(src)
    assert checked.returncode != 0 and broken in checked.stdout, checked.stdout
