"""The pairs' angles, as face recognition papers draw them (ArcFace's Fig. 6): per epoch, the share
of the pairs of validation images at each angle, for genuine pairs (two images of one class) and
impostor pairs (two classes), of the seen classes and, with classes held out, of the unseen ones;
and the angles between the class means at one epoch."""

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from embedviz.metrics import angle_deg, class_means  # noqa: E402
from embedviz.render import literal, write_gif  # noqa: E402
from embedviz.verification import ANGLE_BINS  # noqa: E402

KINDS = {"genuine": ("tab:green", "genuine pairs (one class)"), "impostor": ("tab:red", "impostor pairs (two classes)")}
PANEL_INCHES = (4.8, 2.4)  # width, height of one run's panel for one group of classes
ANNOTATED_CLASSES = 20  # the class-angle matrix writes its angles up to this many classes
NAMED_CLASSES = 60  # and names its classes up to this many


def has_pair_angles(meta):
    return any("pair_angles" in entry for entry in meta["history"])


def shares(entry, group):
    """{"genuine": (ANGLE_BINS,) share of the pairs at each angle, "impostor": ...} of one epoch; None
    when the epoch has no pairs of that group."""
    counts = entry.get("pair_angles", {}).get(group)
    if counts is None:
        return None
    return {kind: np.asarray(counts[kind], float) / max(sum(counts[kind]), 1) for kind in KINDS}


class ScoreFigure:
    """One column per run, one row per group of classes, built once: a frame changes the heights of
    the histograms and the titles, on axes fixed for every frame."""

    def __init__(self, names, groups, top):
        width, height = PANEL_INCHES
        self.fig, axes = plt.subplots(len(groups), len(names), figsize=(width * len(names), height * len(groups)),
                                      dpi=100, squeeze=False)
        edges = np.linspace(0, 180, ANGLE_BINS + 1)
        self.panels = {}
        for column, name in enumerate(names):
            for row, group in enumerate(groups):
                ax = axes[row, column]
                stairs = {kind: ax.stairs(np.zeros(ANGLE_BINS), edges, fill=True, alpha=0.55, color=color, label=label)
                          for kind, (color, label) in KINDS.items()}
                ax.set(xlim=(0, 180), ylim=(0, top), xticks=range(0, 181, 30))
                ax.set_ylabel(f"{group} classes\nshare of pairs", fontsize=9)
                if row == len(groups) - 1:
                    ax.set_xlabel("angle between the two images, degrees", fontsize=9)
                ax.grid(alpha=0.3)
                self.panels[column, row] = (ax, stairs, name, group)
        axes[0, 0].legend(fontsize=8, loc="upper right")
        self.title = self.fig.suptitle(" ")
        self.fig.tight_layout()  # once: the frames change no size

    def render(self, entries, title):
        """entries: one history entry per run -> (H, W, 3) uint8."""
        for (column, _), (ax, stairs, name, group) in self.panels.items():
            entry = entries[column]
            values = shares(entry, group)
            for kind, artist in stairs.items():
                artist.set_data(np.zeros(ANGLE_BINS) if values is None else values[kind])
            ax.set_title(f"{name}, epoch {entry['epoch']}" if group == "seen" else "", fontsize=10)
        self.title.set_text(title)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self):
        plt.close(self.fig)


def plot_scores(runs, gif_path, png_path, fps):
    """runs: [(name, meta)] -> the animation of every epoch (a shorter run holds its last) and the last
    epoch as a picture; the same axes in every frame and panel, so runs and epochs compare, their
    height set by the later half of the epochs (early ones, whose pairs crowd at a few angles, clip)."""
    groups = ["seen"] + (["unseen"] if any("unseen" in meta["splits"] for _, meta in runs) else [])
    histories = [meta["history"] for _, meta in runs]
    later = [entry for history in histories for entry in history[len(history) // 2:]]  # early on, the pairs
    top = max(values[kind].max() for entry in later for group in groups  # crowd at a few angles, off the top
              if (values := shares(entry, group)) is not None for kind in KINDS)
    figure = ScoreFigure([name for name, _ in runs], groups, top * 1.05)
    frames = []
    for frame in range(max(len(history) for history in histories)):
        entries = [history[min(frame, len(history) - 1)] for history in histories]
        frames.append(figure.render(entries, "angles of the pairs of validation images"))
    figure.close()
    palette = Image.fromarray(frames[-1]).quantize(64, method=Image.Quantize.FASTOCTREE)  # one for every frame
    indexed = [np.asarray(Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE))
               for frame in frames]
    write_gif(gif_path, indexed, np.asarray(palette.getpalette()[:192], np.uint8).reshape(64, 3), fps)
    iio.imwrite(png_path, frames[-1])


def plot_class_angles(embeddings, labels, meta, epoch, path):
    """The angle between every two class means of one epoch's validation images (and the unseen
    classes' images), in degrees: how far apart the classes sit, and the unseen ones among them."""
    groups = ["val"] + (["unseen"] if "unseen" in meta["splits"] else [])
    rows = np.concatenate([np.arange(*meta["splits"][group]) for group in groups])
    names = [str(name) for name in meta["class_names"]]
    means = class_means(embeddings[rows], labels[rows], len(names))
    present = np.flatnonzero(~np.isnan(means).any(1))
    unseen = set(meta.get("unseen_classes", []))
    angles = angle_deg(means[present][:, None], means[present][None, :])
    np.fill_diagonal(angles, np.nan)
    size = min(max(4.0, 0.45 * len(present) + 2), 12.0)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    image = ax.imshow(angles, cmap="viridis", vmin=0, vmax=180)
    if len(present) <= NAMED_CLASSES:
        labels_shown = [literal(names[c]) + (" (unseen)" if c in unseen else "") for c in present]
        ax.set_xticks(range(len(present)), labels_shown, rotation=90, fontsize=8)
        ax.set_yticks(range(len(present)), labels_shown, fontsize=8)
    else:
        held_out = f" ({len(unseen)} unseen)" if unseen else ""
        ax.set(xlabel=f"{len(present)} classes in dataset order{held_out}", ylabel="class")
    if len(present) <= ANNOTATED_CLASSES:
        for i, j in zip(*np.nonzero(~np.isnan(angles))):
            ax.text(j, i, f"{angles[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if angles[i, j] < 110 else "black")
    fig.colorbar(image, ax=ax, label="degrees", fraction=0.046)
    ax.set_title(f"{meta['model']}: angles between class means, epoch {epoch}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
