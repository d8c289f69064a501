"""What /diagnostics says about the node, decided without ROS: levels, messages and key/value pairs."""

import time
from datetime import UTC, datetime

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


class Counters:
    """Messages counted so far, and the stream's counts over the last window (between two statuses)."""

    def __init__(self, inputs_dropped=lambda: 0, images_dropped=lambda: 0):
        """inputs_dropped() and images_dropped() count what was dropped so far (their MicroBatchers')."""
        self.inputs_received = self.inputs_rejected = self.predictions_published = self.samples_rejected = 0
        self.images_received = self.images_rejected = 0
        self.inputs_dropped, self.images_dropped = inputs_dropped, images_dropped
        self._window_start = self._totals()
        self.last_window = {"received": 0, "published": 0, "dropped": 0, "seconds": 0.0}

    def _totals(self):
        return {
            "time": time.monotonic(),
            "received": self.inputs_received,
            "published": self.predictions_published,
            "dropped": self.inputs_dropped(),
        }

    def close_window(self):
        now = self._totals()
        self.last_window = {key: now[key] - self._window_start[key] for key in ("received", "published", "dropped")}
        self.last_window["seconds"] = now["time"] - self._window_start["time"]
        self._window_start = now


def model_status(keeper, trainer, counters, samples_stored):
    """ERROR while a corrupt model file forced a fallback, WARN while inputs are dropped, else OK."""
    epoch = trainer.epoch
    if keeper.fallback_error:
        level, message = ERROR, f"not using {keeper.path}: {keeper.fallback_error}"
    elif counters.last_window["dropped"]:
        level, message = WARN, f"dropping ~input: {counters.last_window['dropped']} in the last window"
    else:
        level, message = OK, "idle" if epoch is None else f"training epoch {epoch}"
    values = {
        "state": "idle" if epoch is None else "training",
        "epoch": "" if epoch is None else str(epoch),
        "model": keeper.source,
        "task": keeper.wrapper.task,
        "committed_at": datetime.fromtimestamp(keeper.wrapper.committed_at, UTC).isoformat(),
        "predictions_served": str(keeper.predictions_served),
        "inputs_dropped": str(counters.inputs_dropped()),
        "inputs_rejected": str(counters.inputs_rejected),
        "samples_stored": str(samples_stored),
        "samples_rejected": str(counters.samples_rejected),
        "images_received": str(counters.images_received),
        "images_rejected": str(counters.images_rejected),
        "images_dropped": str(counters.images_dropped()),
        "serving": keeper.wrapper.serving,
        "inputs_received": str(counters.inputs_received),
        "predictions_published": str(counters.predictions_published),
        "model_version": str(keeper.wrapper.version),
        "last_published_version": str(keeper.exported.info["version"] if keeper.exported else 0),
    }
    litert = keeper.wrapper.litert
    if litert and litert.conversion_seconds is not None:
        values["litert_conversion_ms"] = f"{litert.conversion_seconds * 1e3:.0f}"
        values["commit_to_litert_ms"] = f"{litert.commit_to_serving_seconds * 1e3:.0f}"
    values.update(card_values(keeper.wrapper))
    return level, message, values


def card_values(model):
    """A model's card (any_model.model_card), one key a line: what /diagnostics shows of its tensors."""
    return {f"card_{i}": line for i, line in enumerate(getattr(model, "card", None) or [])}


def serving_status(keeper, counters):
    """The serving node's model: ERROR while it has none, WARN while inputs are dropped, else OK; says which version
    it serves, where it came from, and the models it refused."""
    model = keeper.model
    if model is None:
        level, message = ERROR, f"no model to serve: {keeper.load_error}"
    elif counters.last_window["dropped"]:
        level, message = WARN, f"dropping ~input: {counters.last_window['dropped']} in the last window"
    else:
        level, message = OK, f"serving version {model.version} from {model.source}"
    values = {
        "model": str(keeper.path),
        "model_version": str(model.version if model else 0),
        "task": model.task if model else "",
        "model_source": model.source if model else "",
        "model_sha256": model.sha256 if model else "",
        "models_refused": str(keeper.refused),
        "last_refusal": keeper.last_refusal,
        "predictions_served": str(model.predictions_served if model else 0),
        "inputs_received": str(counters.inputs_received),
        "inputs_rejected": str(counters.inputs_rejected),
        "inputs_dropped": str(counters.inputs_dropped()),
        "predictions_published": str(counters.predictions_published),
        "images_received": str(counters.images_received),
        "images_rejected": str(counters.images_rejected),
        "images_dropped": str(counters.images_dropped()),
        "serving": "litert",
    }
    values.update(card_values(model))
    return level, message, values


def stream_status(counters):
    """~input -> ~prediction over the last window: rates, and WARN while inputs are dropped."""
    window = counters.last_window
    seconds = window["seconds"] or 1.0
    if window["dropped"]:
        level, message = WARN, f"{window['dropped']} ~input messages dropped in the last window"
    else:
        level, message = OK, "no ~input dropped in the last window"
    values = {
        "~input rate (Hz)": f"{window['received'] / seconds:.1f}",
        "~prediction rate (Hz)": f"{window['published'] / seconds:.1f}",
        "inputs dropped in window": str(window["dropped"]),
        "window (s)": f"{seconds:.2f}",
    }
    return level, message, values
