"""Per-epoch curves of the geometry metrics (metrics.py) of one or more runs, as one PNG."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = [  # (history key, title, y label)
    ("val_accuracy", "val accuracy (argmax of the head, no label)", "accuracy"),
    ("ncm_accuracy", "nearest-class-mean accuracy", "accuracy"),
    ("intra_class_deg", "intra-class spread: mean angle to the class mean", "degrees"),
    ("min_inter_class_deg", "inter-class separation: smallest angle between class means", "degrees"),
    ("weight_to_mean_deg", "mean angle between class mean and class weight", "degrees"),
]


def has_metrics(meta):
    return all("ncm_accuracy" in entry for entry in meta["history"])


def series(history, key):
    """(epochs, values) of one metric; lists (one value per class) are averaged, missing values are NaN."""
    values = []
    for entry in history:
        value = entry.get(key)
        if isinstance(value, list):
            value = np.nanmean([np.nan if v is None else v for v in value]) if value else None
        values.append(np.nan if value is None else value)
    return [entry["epoch"] for entry in history], np.array(values, float)


def plot_metrics(metas, path):
    """One panel per metric, one line per run."""
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7, 2.4 * len(PANELS)), sharex=True, dpi=100)
    for ax, (key, title, unit) in zip(axes, PANELS):
        for index, meta in enumerate(metas):
            epochs, values = series(meta["history"], key)
            if not np.isnan(values).all():  # a run keeps its color in every panel
                ax.plot(epochs, values, label=meta["model"], color=f"C{index}", linewidth=1.5)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(len(metas), 3))
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
