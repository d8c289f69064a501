"""tfctl: the training node from a terminal. `rosrun ros_tensorflow tfctl --help`.

train and evaluate show a progress bar (tqdm) from the actions' feedback; Ctrl-C cancels the goal and waits for the
node to confirm. The exit status is 0 only for a goal that SUCCEEDED or an answered prediction.
"""

import argparse
import math
import pathlib
import signal
import sys
import threading
import time

import actionlib
import numpy as np
import rosgraph.names
import rospy
from actionlib_msgs.msg import GoalStatus
from ros_tensorflow_msgs.msg import EvaluateAction, EvaluateGoal, TrainAction, TrainGoal
from ros_tensorflow_msgs.srv import ActivateVersion, ListVersions, Predict, PredictImage
from sensor_msgs.msg import Image
from tqdm import tqdm

from ros_tensorflow.tf_free.images import decode_file
from ros_tensorflow.tf_free.samples import request_limit
from ros_tensorflow.tf_free.signing import SigningError, generate_key_pair
from ros_tensorflow.tf_free.tasks import METRICS

STATES = {value: name for name, value in vars(GoalStatus).items() if isinstance(value, int) and name.isupper()}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _names(node):
    """(the node's namespace, its own name): train, evaluate and predict live in the namespace."""
    node = rosgraph.names.make_global_ns(node).rstrip("/")
    return rosgraph.names.namespace(node), node


TRAINING_ONLY = ("train", "evaluate", "list_versions", "activate_version")


def _wait_for_node(node, needs, timeout):
    """Until `node` is registered and offers each of needs ((kind, name): 'action' or 'service', the name resolved):
    the node named must be the one used, not another that has the same names in its namespace. SystemExit says at
    once that a serving node has no training interface, and after timeout seconds what is missing."""
    master = rosgraph.Master(rospy.get_name())
    deadline = time.monotonic() + timeout
    while True:
        _, subscribers, services = master.getSystemState()
        offered = {("action", name.removesuffix("/goal")): nodes for name, nodes in subscribers}
        offered.update({("service", name): nodes for name, nodes in services})
        registered = {n for nodes in offered.values() for n in nodes}
        missing = [name for kind, name in needs if node not in offered.get((kind, name), [])]
        if not missing:
            return
        if node in registered and _is_serving_node(node) and any(n.endswith(TRAINING_ONLY) for n in missing):
            raise SystemExit(
                f"tfctl: {node} is a serving node (serve_node.py): it answers predictions only; train, evaluate,"
                " versions and activate need the training node (node.py)"
            )
        if time.monotonic() > deadline:
            if node not in registered:
                known = sorted(n for n in registered if not n.startswith("/tfctl"))
                raise SystemExit(f"tfctl: no node {node} is running (running: {', '.join(known) or 'none'}; --node)")
            raise SystemExit(f"tfctl: {node} offers no {' and no '.join(missing)} (is it a ros_tensorflow node?)")
        time.sleep(0.1)


def _is_serving_node(node):
    """Only the serving node has ~model_topic."""
    try:
        return rospy.has_param(f"{node}/model_topic")
    except (OSError, rospy.ROSException):
        return False


class SimpleActionClient(actionlib.SimpleActionClient):
    """actionlib's, without its race: a goal's first transitions can arrive before send_goal has stored the goal's
    handle, and were dropped ("a goal handle that we're not tracking"); a goal the node refused at once then
    never ended for the client. They now wait for send_goal to return."""

    def __init__(self, *args, **kwargs):
        self._sending = threading.RLock()
        super().__init__(*args, **kwargs)

    def send_goal(self, *args, **kwargs):
        with self._sending:
            super().send_goal(*args, **kwargs)

    def _handle_transition(self, gh):
        with self._sending:
            super()._handle_transition(gh)

    def _handle_feedback(self, gh, feedback):
        with self._sending:
            super()._handle_feedback(gh, feedback)


def _client(node, name, action, timeout):
    _wait_for_node(node, [("action", name)], timeout)
    client = SimpleActionClient(name, action)
    if not client.wait_for_server(rospy.Duration(timeout)):
        raise SystemExit(f"tfctl: the action server {name} of {node} does not answer")
    return client


def _run_goal(client, goal, on_feedback):
    """Send goal and wait for its result; Ctrl-C cancels it and waits for the node to end it. Returns the state.
    Ctrl-C only sets a flag: a KeyboardInterrupt raised inside actionlib's waiting could leave its lock held, and
    tfctl hung there with the goal still running."""
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        client.send_goal(goal, feedback_cb=on_feedback)
        while not client.wait_for_result(rospy.Duration(0.1)):
            if interrupted.is_set():
                tqdm.write("tfctl: cancelling the goal (Ctrl-C) ...", file=sys.stderr)
                client.cancel_goal()
                client.wait_for_result(rospy.Duration(60))
                break
    finally:
        signal.signal(signal.SIGINT, previous)
    return client.get_state()


def _metrics(values):
    return " ".join(f"{name} {value:.4f}" for name, value in values.items() if not math.isnan(value))


def train(args):
    namespace, node = _names(args.node)
    client = _client(node, namespace + "train", TrainAction, args.timeout)
    bar = tqdm(unit="batch", dynamic_ncols=True, desc=f"0/{args.epochs} epochs")

    def on_feedback(feedback):
        """Epoch feedback: i_epoch just finished (batch == batches_per_epoch); progress: batches of the next."""
        per_epoch, finished = max(feedback.batches_per_epoch, 1), feedback.i_epoch + 1
        bar.total = args.epochs * per_epoch
        bar.update(finished * per_epoch + feedback.batch % per_epoch - bar.n)
        bar.set_description(f"{finished}/{args.epochs} epochs")
        if finished:
            bar.set_postfix_str(_metrics({k: getattr(feedback, k) for k in METRICS}))

    goal = TrainGoal(args.epochs, args.batch_size, args.validation_split, args.dataset)
    state = _run_goal(client, goal, on_feedback)
    bar.close()
    result = client.get_result()
    print(f"{STATES.get(state, state)}: {result.message if result else ''}")
    if result:
        metrics = {k: getattr(result, k) for k in METRICS}
        if result.epochs_completed:  # a goal that trained no epoch has no metrics to show
            best = f", best epoch {result.best_epoch}" if result.best_epoch >= 0 else ""
            print(f"epochs completed {result.epochs_completed}{best}: {_metrics(metrics)}")
        kept = f"version {result.version}, {'promoted' if result.promoted else 'not served'}" if result.version else ""
        print(f"model: {result.model_path or '(not saved)'}{f', {kept}' if kept else ''}")
    return 0 if state == GoalStatus.SUCCEEDED else 1


def evaluate(args):
    if not 0 <= args.version < 2**32:
        raise SystemExit(
            f"tfctl: evaluate: --version must be 0 (the model served) or a version number, got {args.version}"
        )
    namespace, node = _names(args.node)
    client = _client(node, namespace + "evaluate", EvaluateAction, args.timeout)
    bar = tqdm(unit="sample", dynamic_ncols=True, desc="evaluating")

    def on_feedback(feedback):
        bar.total = feedback.samples_total
        bar.update(feedback.samples_done - bar.n)

    state = _run_goal(client, EvaluateGoal(args.dataset, args.version), on_feedback)
    bar.close()
    result = client.get_result()
    print(f"{STATES.get(state, state)}: {result.message if result else ''}")
    if state != GoalStatus.SUCCEEDED:
        return 1
    if result.output_mae:  # a regression model's
        print(f"\n{'output':>6}  {'MAE':>10}  {'R2':>7}")
        for i, (mae, r2) in enumerate(zip(result.output_mae, result.output_r2, strict=True)):
            print(f"{i:6d}  {mae:10.4g}  {r2:7.4f}")
        print(f"\nMAE {result.mae:.4g}, RMSE {result.rmse:.4g}, R2 {result.r2:.4f}, {result.samples} samples, model"
              f" version {result.version}")  # fmt: skip
        print(f"predicted against true: {pathlib.Path(result.report_dir) / 'predicted_vs_true.png'}")
        return 0
    width = max(len(name) for name in result.class_names + ["class"])
    print(f"\n{'class':<{width}}  precision  recall     f1  support")
    for row in zip(result.class_names, result.precision, result.recall, result.f1, result.support, strict=True):
        print(f"{row[0]:<{width}}  {row[1]:9.3f}  {row[2]:6.3f}  {row[3]:5.3f}  {row[4]:7d}")
    print(f"\naccuracy {result.accuracy:.4f}, loss {result.loss:.4f}, {result.samples} samples, model version"
          f" {result.version}")  # fmt: skip
    print(f"confusion matrix: {pathlib.Path(result.report_dir) / 'confusion.png'}")
    return 0


def versions(args):
    _, node = _names(args.node)
    response = _call(node, node + "/list_versions", ListVersions, None, args)
    print(f"{'':1} {'version':>7}  {'trained':19}  {'task':14}  {'dataset':20}  {'samples':>7}  {'epochs':>6}"
          f"  {'val_acc':>7}  {'val_mae':>9}")  # fmt: skip
    for v in response.versions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.stamp.to_sec()))
        val_acc = "-" if math.isnan(v.val_acc) else f"{v.val_acc:.4f}"
        val_mae = "-" if math.isnan(v.val_mae) else f"{v.val_mae:.4g}"
        print(f"{'*' if v.served else ' '} {v.version:7d}  {when}  {v.task:14}  {v.dataset[:20]:20}  {v.samples:7d}"
              f"  {v.epochs:6d}  {val_acc:>7}  {val_mae:>9}")  # fmt: skip
    print(f"served: {response.served or 'a model that is no version yet (fresh)'}")
    return 0


def activate(args):
    if not 1 <= args.version < 2**32:
        raise SystemExit(
            f"tfctl: activate: the version must be a number >= 1 (tfctl versions lists them), got {args.version}"
        )
    _, node = _names(args.node)
    response = _call(node, node + "/activate_version", ActivateVersion, args.version, args)
    print(response.message, file=sys.stdout if response.success else sys.stderr)
    return 0 if response.success else 1


def _samples(path):
    """The samples of a .npy, .npz (array x) or .csv file (one sample a row) as a (k, values) float array; SystemExit
    names the file and the rule it breaks."""
    try:
        if path.suffix == ".csv":
            data = np.loadtxt(path, delimiter=",", ndmin=2)
        elif path.suffix in (".npy", ".npz"):
            data = np.load(path, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                if "x" not in data.files:
                    raise ValueError(f"no array 'x' of samples (it has {', '.join(data.files) or 'none'})")
                data = data["x"]
        else:
            raise ValueError(f"expected samples in a .npy, .npz or .csv file, or images ({', '.join(IMAGE_SUFFIXES)})")
    except OSError as error:
        raise SystemExit(f"tfctl: {path}: {error.strerror or error}") from None
    except ValueError as error:  # numpy's word for a file it cannot read as numbers
        rule = " (.csv: numbers only, comma-separated, one sample a row, no header)" if path.suffix == ".csv" else ""
        raise SystemExit(f"tfctl: {path}: {str(error).splitlines()[0]}{rule}") from None
    if not np.issubdtype(data.dtype, np.number) or data.size == 0:
        raise SystemExit(
            f"tfctl: {path}: expected numbers, at least one sample, got {data.dtype} of shape {data.shape}"
        )
    return data.reshape(1, -1) if data.ndim == 1 else data.reshape(len(data), -1)  # 1-D: one sample


def _max_request_samples(node, values_per_sample):
    """The node's ~max_request_samples, as it applies it (samples.request_limit)."""
    try:
        asked = rospy.get_param(f"{node}/max_request_samples", 0)
    except (OSError, rospy.ROSException):
        asked = 0
    return request_limit(asked if isinstance(asked, int) else 0, (values_per_sample,))


def predict(args):
    namespace, node = _names(args.node)
    images = [path for path in args.files if path.suffix.lower() in IMAGE_SUFFIXES]
    if images and len(images) != len(args.files):
        raise SystemExit("tfctl: give either image files or sample files, not both")
    service = namespace + ("predict_image" if images else "predict")
    files = [(str(path), [_image(path)]) for path in images] or [(str(path), _samples(path)) for path in args.files]
    _wait_for_node(node, [("service", service)], args.timeout)
    call = rospy.ServiceProxy(service, PredictImage if images else Predict)
    versions = set()
    for name, samples in files:
        chunk = len(samples) if images else _max_request_samples(node, samples.shape[1])
        for start in range(0, len(samples), chunk):
            part = samples[start : start + chunk]
            try:
                response = call(part if images else part.ravel().tolist())
            except rospy.ServiceException as error:
                print(f"tfctl: {name}: the node refused: {error}", file=sys.stderr)
                return 1
            if not response.classes:  # a regression model's: values only
                values = np.reshape(response.output, (len(part), -1))
                for i, row in zip(range(start, start + len(part)), values, strict=True):
                    print(f"{name if images else f'{name} sample {i}'}: {' '.join(f'{v:.6g}' for v in row)}")
                versions.add(response.model_version)
                continue
            if len(response.classes) != len(part):  # the node took its values as samples of another size
                raise SystemExit(
                    f"tfctl: {name}: its samples have {part[0].size} values each, the node's model takes"
                    f" {part.size // max(len(response.classes), 1)}"
                )
            for i, cls, confidence, label in zip(
                range(start, start + len(part)), response.classes, response.confidences, response.labels, strict=True
            ):
                what = name if images else f"{name} sample {i}"
                print(f"{what}: class {cls}{f' ({label})' if label else ''}, confidence {confidence:.3f}")
            versions.add(response.model_version)
    print(f"model version {', '.join(str(v) for v in sorted(versions))}")
    return 0


def _call(node, service, service_type, data, args):
    _wait_for_node(node, [("service", service)], args.timeout)
    proxy = rospy.ServiceProxy(service, service_type)
    return proxy() if data is None else proxy(data)


def _image(path):
    try:
        rgb = decode_file(path)
    except (OSError, ValueError) as error:  # ImageError is a ValueError
        raise SystemExit(f"tfctl: {path}: {error}") from None
    channels = rgb.shape[2]
    encoding = {1: "mono8", 3: "rgb8", 4: "rgba8"}[channels]
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * channels,
                 data=np.ascontiguousarray(rgb, np.uint8).tobytes())  # fmt: skip


def keygen(args):
    """A key pair for signing models: no node, no master."""
    try:
        key = generate_key_pair(args.path)
    except (SigningError, OSError) as error:
        raise SystemExit(f"tfctl: keygen: {error}") from None
    print(f"key {key}: private key {args.path} (mode 600: the trainer's ~signing_key), public key {args.path}.pub"
          " (the robots' ~trusted_keys)")  # fmt: skip
    return 0


def parser():
    top = argparse.ArgumentParser(
        prog="tfctl", description="Train, evaluate and predict with the ros_tensorflow node from a terminal."
    )
    top.add_argument("--node", default="/ros_tensorflow", help="the node's name (default: /ros_tensorflow)")
    top.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node (default: 30)")
    commands = top.add_subparsers(dest="command", required=True)
    command = commands.add_parser("train", help="send a train goal, with a progress bar; Ctrl-C cancels it")
    command.add_argument("--epochs", type=int, default=10, help="default: 10")
    command.add_argument("--batch-size", type=int, default=0, help="0 (default): the node's ~batch_size")
    command.add_argument("--validation-split", type=float, default=0.0, help="0 <= v < 1 (default: 0, none)")
    command.add_argument("--dataset", default="", help="'' (default): the node's ~dataset")
    command.set_defaults(run=train)
    command = commands.add_parser("evaluate", help="evaluate the served model, print a report per class")
    command.add_argument("--dataset", default="", help="'' (default): the node's ~dataset")
    command.add_argument("--version", type=int, default=0, help="0 (default): the model being served")
    command.set_defaults(run=evaluate)
    command = commands.add_parser("predict", help="classify the samples (.npy, .npz, .csv) or images (.png, .jpg)")
    command.add_argument("files", nargs="+", type=pathlib.Path)
    command.set_defaults(run=predict)
    command = commands.add_parser("versions", help="list the versions kept; * marks the one served")
    command.set_defaults(run=versions)
    command = commands.add_parser("activate", help="serve a version now (and after a restart): roll back or forward")
    command.add_argument("version", type=int)
    command.set_defaults(run=activate)
    command = commands.add_parser("keygen", help="write a key pair that signs models: PATH (private), PATH.pub")
    command.add_argument("path", metavar="PATH", type=pathlib.Path)
    command.set_defaults(run=keygen)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    if args.run is keygen:
        return keygen(args)
    rospy.init_node("tfctl", anonymous=True, disable_signals=True)  # Ctrl-C is ours: it cancels the goal
    return args.run(args)
