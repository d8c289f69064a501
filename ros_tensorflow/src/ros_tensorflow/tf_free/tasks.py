"""What a model's output means: one idea of a task shared by both nodes, the messages, the datasets and the files.

classification: one probability per class (a softmax), trained on integer labels; regression: output_dim values in
the user's own units, trained on float targets. detection, segmentation and tensors: a model a user brings
(tensors: any other signature), served and never trained (any_model recognises them). A model brings its task (its
compiled loss, its outputs, or the task saved beside it); ~task names the task a fresh model gets and checks a
loaded one.
"""

CLASSIFICATION, REGRESSION = "classification", "regression"
DETECTION, SEGMENTATION, TENSORS = "detection", "segmentation", "tensors"
TRAINABLE_TASKS = (CLASSIFICATION, REGRESSION)
TASKS = (*TRAINABLE_TASKS, DETECTION, SEGMENTATION, TENSORS)
REGRESSION_LOSSES = ("mse", "mae", "huber")
METRICS = ("loss", "acc", "val_loss", "val_acc", "mae", "val_mae")  # a goal's, as Train's feedback and result
_LOSS_TASKS = {
    "mse": REGRESSION,
    "mean_squared_error": REGRESSION,
    "meansquarederror": REGRESSION,
    "mae": REGRESSION,
    "mean_absolute_error": REGRESSION,
    "meanabsoluteerror": REGRESSION,
    "huber": REGRESSION,
    "huber_loss": REGRESSION,
}


class TaskError(ValueError):
    """A model whose task is not the one asked for, or not one the node knows; says both."""


def task_of_loss(loss_name):
    """The task a compiled loss trains for (cross-entropies: classification; squared, absolute, Huber: regression),
    None for a loss the node does not know."""
    name = str(loss_name).lower()
    if "crossentropy" in name:
        return CLASSIFICATION
    return _LOSS_TASKS.get(name)


def resolve_task(wanted, found, what="the model"):
    """The task to use: found (the model's own, None if it does not say), else wanted (~task), else classification;
    TaskError when both are known and differ."""
    found = found if found in TASKS else None
    if found and wanted and found != wanted:
        raise TaskError(f"~task is {wanted}, but {what} is a {found} model: set ~task to {found} or '' (the model's)")
    return found or wanted or CLASSIFICATION
