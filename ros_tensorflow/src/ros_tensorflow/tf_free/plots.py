"""Pictures of a model's quality, drawn off-screen with matplotlib's Agg canvas: PNG bytes for files, RGB arrays
for sensor_msgs/Image. Figures are made with matplotlib.figure.Figure, not pyplot, whose global state is not
thread-safe; callers draw on their own (action) threads, never on one that answers predictions."""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def confusion_figure(confusion, class_names, title=""):
    """Counts in each cell, shaded by the row's share (recall per true class): a class with few samples reads as
    clearly as one with many. title: what was evaluated (version, dataset, accuracy), above the sample count."""
    confusion = np.asarray(confusion)
    n = len(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.5 * n, 16)
    figure = Figure(figsize=(size, size * 0.85), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    axes.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class")
    axes.set_xticklabels(class_names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    axes.set_yticklabels(class_names)
    if n <= 30:  # beyond, the numbers would not fit their cells
        for (row, column), count in np.ndenumerate(confusion):
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=9)
    axes.set_title(f"{title}\n" * bool(title) + f"confusion matrix, {int(confusion.sum())} samples")
    return figure


def predicted_vs_true_figure(predicted, true, output_mae, title=""):
    """One panel per output (up to 6): each sample's prediction against its true value, the identity line (a
    perfect model) drawn, the output's MAE in its title."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    n = min(predicted.shape[1], 6)
    figure = Figure(figsize=(3.6 * n + 0.6, 4.0), dpi=100, layout="constrained")
    figure.suptitle(f"{title}\n" * bool(title) + f"predicted against true, {len(true)} samples")
    for i, axes in enumerate(np.atleast_1d(figure.subplots(1, n))):
        low, high = min(true[:, i].min(), predicted[:, i].min()), max(true[:, i].max(), predicted[:, i].max())
        axes.plot([low, high], [low, high], color="grey", linestyle="--", label="identity")
        axes.scatter(true[:, i], predicted[:, i], s=6, alpha=0.5)
        axes.set(xlabel="true", ylabel="predicted", title=f"output {i}: MAE {output_mae[i]:.4g}")
        axes.legend(loc="upper left")
    return figure


def curves_figure(history, version=0, best_epoch=-1):
    """Loss and accuracy (a regression model's: MAE) per epoch, training and validation (history: one dict of
    metric fields per epoch), the epoch whose weights were kept marked (best_epoch; -1: the last), under a title
    naming the version."""
    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    figure.suptitle(f"version {version}" if version else "a model that is no version (not saved)")
    epochs = np.arange(len(history))
    kept = best_epoch if best_epoch >= 0 else len(history) - 1
    regression = not np.isnan([epoch.get("mae", np.nan) for epoch in history]).all()
    second = ("MAE", "mae", "val_mae") if regression else ("accuracy", "acc", "val_acc")
    for axes, (name, train, val) in zip(figure.subplots(1, 2), (("loss", "loss", "val_loss"), second), strict=True):
        for key, label in ((train, "training"), (val, "validation")):
            values = [epoch[key] for epoch in history]
            if not np.isnan(values).all():
                axes.plot(epochs, values, marker="o", label=label)
        axes.axvline(kept, color="grey", linestyle="--", label=f"weights kept (epoch {kept})")
        axes.set(xlabel="epoch (0-based)", ylabel=name, title=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name == "accuracy":
            axes.set_ylim(0, 1.02)
        axes.legend()
    return figure


def png_and_rgb(figure):
    """(PNG bytes, (height, width, 3) uint8 array) of a figure."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, :3])
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return png.getvalue(), rgb
