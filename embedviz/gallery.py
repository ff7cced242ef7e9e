"""The images behind the points, as PNGs: the validation images that sit in another class's cap
(misfits), and the outliers that Sub-center ArcFace sets aside."""

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from embedviz.metrics import angle_deg, class_means, dominant_subcenters, unit  # noqa: E402
from embedviz.render import literal  # noqa: E402

MAX_PER_CLASS = 12  # images shown of a class's outliers, farthest first
MISFIT_COLUMNS, MAX_MISFITS = 8, 48  # a page of them


def misfits(embeddings, labels, meta):
    """[(row, true class, predicted class, angle to its own class's mean in degrees)], farthest first:
    the validation images of the trained classes whose nearest class mean, by cosine, is another
    class's. The means are those of the saved training points, the same rule for every head."""
    with np.errstate(invalid="ignore"):  # points that are not finite, or zero, are left out, as the frames do
        drawable = np.isfinite(embeddings).all(1) & (np.linalg.norm(embeddings, axis=1) > 0)
    (train_start, train_stop), (val_start, val_stop) = meta["splits"]["train"], meta["splits"]["val"]
    train = train_start + np.flatnonzero(drawable[train_start:train_stop])
    val = val_start + np.flatnonzero(drawable[val_start:val_stop])
    means = class_means(embeddings[train], labels[train], len(meta["class_names"]))  # NaN: a class held out
    directions = unit(embeddings[val])
    similarity = np.where(np.isnan(means).any(1), -np.inf, directions @ np.nan_to_num(means).T)
    predicted, true = similarity.argmax(1), labels[val]
    angles = angle_deg(directions, means[true])
    wrong = np.flatnonzero(predicted != true)
    wrong = wrong[np.argsort(-angles[wrong], kind="stable")]
    return [(int(val[r]), int(true[r]), int(predicted[r]), float(angles[r])) for r in wrong]


def plot_misfits(images, found, meta, title, path):
    """Up to MAX_MISFITS images in rows of MISFIT_COLUMNS, each captioned "true -> nearest" and its angle.
    One mosaic in one axes: a figure of 48 axes takes a second to draw."""
    shown = found[:MAX_MISFITS]
    side = images.shape[1]
    cell_w, cell_h = side + side // 6, side + side // 2  # room between the images, and for two caption lines
    rows, columns = -(-len(shown) // MISFIT_COLUMNS), min(len(shown), MISFIT_COLUMNS)
    mosaic = np.full((rows * cell_h, max(columns, 6) * cell_w, 3), 255, np.uint8)
    fig, ax = plt.subplots(figsize=(1.25 * mosaic.shape[1] / cell_w, 1.45 * rows + 0.7), dpi=100)
    names = [literal(str(name)[:12]) for name in meta["class_names"]]
    for index, (row, true, predicted, angle) in enumerate(shown):
        top, left = (index // MISFIT_COLUMNS) * cell_h + (cell_h - side), (index % MISFIT_COLUMNS) * cell_w
        image = images[row]
        mosaic[top:top + side, left:left + side] = image[..., None] if image.ndim == 2 else image
        ax.text(left + side / 2, top - 1, f"{names[true]} → {names[predicted]}\n{angle:.0f}° from its mean",
                ha="center", va="bottom", fontsize=7)
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    fig.suptitle(textwrap.fill(title, MISFIT_COLUMNS * 16), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
        ax_row[0].set_ylabel(f"{literal(meta['class_names'][c])}\n({len(found)})", fontsize=9, rotation=0, ha="right",
                             va="center")
    width = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(title, int(width * 13)), fontsize=10)  # about 13 characters an inch at 10 points
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
