"""The images behind the points: the outliers that Sub-center ArcFace sets aside, as one PNG."""

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metrics import dominant_subcenters  # noqa: E402

MAX_PER_CLASS = 12  # images shown of a class's outliers, farthest first


def subcenter_outliers(embeddings, labels, meta, entry):
    """{dataset class: [(row, angle in degrees), ...] farthest first}: the saved training points of one
    epoch (entry, from the history) that lie farther than meta["outlier_deg"] from their class's
    dominant sub-centre."""
    start, stop = meta["splits"]["train"]
    centres = np.asarray(entry["subcenters"]["weights"])
    classes = list(meta.get("seen_classes", range(len(centres))))  # head row -> dataset class
    head_rows = np.array([classes.index(c) for c in labels[start:stop]], int)
    _, angles = dominant_subcenters(embeddings[start:stop], head_rows, centres)
    outliers = {}
    for row in np.flatnonzero(angles > meta["outlier_deg"])[np.argsort(-angles[angles > meta["outlier_deg"]])]:
        outliers.setdefault(int(labels[start + row]), []).append((start + int(row), float(angles[row])))
    return dict(sorted(outliers.items()))


def plot_outliers(images, outliers, meta, title, path):
    """One row per class that has outliers, its images farthest first, each captioned with its angle."""
    columns = min(MAX_PER_CLASS, max(6, *(len(found) for found in outliers.values())))  # 6: room for the title
    fig, axes = plt.subplots(len(outliers), columns, figsize=(1.1 * columns + 1.2, 1.25 * len(outliers) + 0.6),
                             dpi=100, squeeze=False)
    for ax_row, (c, found) in zip(axes, outliers.items()):
        for column, ax in enumerate(ax_row):
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(column < len(found))
            if column < len(found):
                row, angle = found[column]
                ax.imshow(images[row], cmap="gray" if images[row].ndim == 2 else None, vmin=0, vmax=255)
                ax.set_title(f"{angle:.0f}°", fontsize=8)
        ax_row[0].set_ylabel(f"{meta['class_names'][c]}\n({len(found)})", fontsize=9, rotation=0, ha="right",
                             va="center")
    width = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(title, int(width * 13)), fontsize=10)  # about 13 characters an inch at 10 points
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
