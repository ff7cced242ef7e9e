"""Per-epoch curves of the metrics of one or more runs (metrics.py, verification.py), as one PNG."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TAR_AT_1E3 = ("tar_at_far", "0.001")
PANEL_HEIGHT = 2.4  # inches a metric
PANELS = [  # (title, y label, lines: (history key, or path of keys into an entry, line style))
    ("val accuracy (argmax of the head, no label)", "accuracy", [("val_accuracy", "-")]),
    ("nearest-class-mean accuracy", "accuracy", [("ncm_accuracy", "-")]),
    ("intra-class spread: mean angle to the class mean", "degrees", [("intra_class_deg", "-")]),
    ("inter-class separation: smallest angle between class means\n(dashed: the most that geometry allows)",
     "degrees", [("min_inter_class_deg", "-")]),
    ("mean angle between class mean and class weight", "degrees", [("weight_to_mean_deg", "-")]),
    ("verification: TAR at FAR 1e-3, seen classes (solid) and unseen (dashed)", "TAR",
     [(("verification", "seen", *TAR_AT_1E3), "-"), (("verification", "unseen", *TAR_AT_1E3), "--")]),
    ("open set: AUROC of seen against unseen images", "AUROC", [("open_set_auroc", "-")]),
    ("CDNV: class-distance-normalised variance, seen classes (solid) and unseen (dashed);\nlow: tight and apart",
     "CDNV, log scale", [("cdnv_seen", "-"), ("cdnv_unseen", "--")]),
    ("norm before normalisation: correctly (solid) and wrongly (dashed) classified val images", "norm",
     [("norm_correct", "-"), ("norm_wrong", "--")]),
    ("AdaCos: the scale s, re-estimated at every step", "s", [(("head_state", "s"), "-")]),
    ("CurricularFace: t, the running mean target cosine", "t", [(("head_state", "t"), "-")]),
    ("AdaFace: running mean (solid) and standard deviation (dashed) of the batches' norms", "norm",
     [(("head_state", "batch_mean"), "-"), (("head_state", "batch_std"), "--")]),
    ("Sub-center ArcFace: outliers, training points far from their class's dominant sub-centre", "points",
     [(("subcenters", "outliers"), "-")]),
]


def run_color(index, n_runs):
    """The index-th run's color: matplotlib's ten, or tab20's twenty for more runs (the twelve heads)."""
    return f"C{index}" if n_runs <= 10 else plt.get_cmap("tab20")(index % 20)


def has_metrics(meta):
    return all("ncm_accuracy" in entry for entry in meta["history"])


def value_at(entry, key):
    """entry[key], or for a path of keys entry[k1][k2]...; None where any is missing."""
    for part in (key,) if isinstance(key, str) else key:
        entry = entry.get(part) if isinstance(entry, dict) else None
    return entry


def series(history, key):
    """(epochs, values) of one metric; lists (one value per class) are averaged, missing values are NaN."""
    values = []
    for entry in history:
        value = value_at(entry, key)
        if isinstance(value, list):
            value = np.nanmean([np.nan if v is None else v for v in value]) if value else None
        values.append(np.nan if value is None else value)
    return [entry["epoch"] for entry in history], np.array(values, float)


def panels_of(metas):
    """The PANELS of which some run has some value."""
    return [(title, unit, lines) for title, unit, lines in PANELS
            if any(not np.isnan(series(meta["history"], key)[1]).all() for meta in metas for key, _ in lines)]


def plot_metrics(metas, path):
    """One panel per metric that some run has, one color per run."""
    panels = panels_of(metas)
    height = PANEL_HEIGHT * len(panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, height), sharex=True, dpi=100, squeeze=False)
    # margins of 0.5 inch at the top and 0.55 at the bottom, whatever the number of panels
    fig.subplots_adjust(left=0.11, right=0.98, top=1 - 0.5 / height, bottom=0.55 / height, hspace=0.42)
    axes = axes[:, 0]
    for ax, (title, unit, lines) in zip(axes, panels):
        for index, meta in enumerate(metas):  # a run keeps its color in every panel
            for key, style in lines:
                epochs, values = series(meta["history"], key)
                if not np.isnan(values).all():
                    ax.plot(epochs, values, style, label=meta["model"] if style == "-" else None,
                            color=run_color(index, len(metas)), linewidth=1.5)
            if lines[0][0] == "min_inter_class_deg" and meta.get("separation_bound_deg") is not None:
                ax.axhline(meta["separation_bound_deg"], color=run_color(index, len(metas)), linestyle="--",
                           linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if unit.endswith("log scale"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(len(metas), 3))
    axes[-1].set_xlabel("epoch")
    fig.savefig(path)
    plt.close(fig)


def plot_roc(named_curves, path):
    """named_curves: [(run name, {"seen": (far, tar), "unseen": (far, tar)})] -> one figure, the false
    accept rate on a log axis, one color per run, seen classes solid and unseen dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=100)
    for index, (name, curves) in enumerate(named_curves):
        for group, style in (("seen", "-"), ("unseen", "--")):
            if group in curves:
                far, tar = curves[group]
                shown = far > 0  # the log axis has no 0
                ax.plot(far[shown], tar[shown], style, color=run_color(index, len(named_curves)), linewidth=1.5,
                        label=f"{name}, {group} classes")
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate (impostor pairs accepted)", ylabel="true accept rate (genuine pairs accepted)",
           ylim=(0, 1.01), title="verification at the last epoch: all pairs of validation images")
    for far in (1e-3, 1e-2):
        ax.axvline(far, color="0.7", linewidth=0.8, linestyle=":")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
