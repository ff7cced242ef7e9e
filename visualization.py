"""Draw every saved epoch of a run as points on the unit sphere and stitch the frames into a GIF.

    python visualization.py --model vgg8_arcface
    python visualization.py --model vgg8_softmax --split val
"""

import contextlib
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import run_files  # noqa: E402
from curves import has_metrics, plot_metrics  # noqa: E402
from cli import ArgumentParser, positive  # noqa: E402

SPLIT_TITLES = {"train": "Training", "val": "Validation"}
FRAME_MS = 125        # every frame but the last
LAST_FRAME_MS = 3000  # the last frame holds so the final state can be read
FIGURE_INCHES = 6.0
DPI = 100             # 600 x 600 pixel frames
ELEVATION, AZIMUTH = 20, -60  # camera, degrees


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", nargs="+", default=["vgg8_arcface"],
                   help="the runs to draw, as named by train.py --model; their metrics share one figure")
    p.add_argument("--split", default="both", choices=("train", "val", "both"), help="which points to draw")
    p.add_argument("--out-dir", default="data", help="folder holding the run; the GIFs are written there too")
    p.add_argument("--workers", type=positive(int), default=min(os.cpu_count() or 1, 4),
                   help="processes rendering frames in parallel (1: in this process)")
    p.add_argument("--keep-frames", action="store_true", help="also write every frame as a PNG")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read the seed repository's pickled .npy layout (only for files you trust)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- geometry

def on_unit_sphere(points):
    """L2-normalised rows, and a mask of the rows that could be normalised (finite, non-zero)."""
    norms = np.linalg.norm(points, axis=-1, keepdims=True)
    valid = np.isfinite(points).all(axis=-1) & (norms[..., 0] > 0) & np.isfinite(norms[..., 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid[..., None], points / norms, 0.0), valid


# ---------------------------------------------------------------- drawing

def class_colors(num_classes):
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(num_classes)]


class SphereFigure:
    """One figure built once; each frame only moves the points and changes the title."""

    def __init__(self, class_names, point_size):
        self.fig = plt.figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=DPI)
        self.ax = self.fig.add_subplot(projection="3d", computed_zorder=False)
        ax = self.ax
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v),
                          color="0.6", alpha=0.25, linewidth=0.5)
        ticks = (-1, 0, 1)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xlabel="x", ylabel="y", zlabel="z",
               xticks=ticks, yticks=ticks, zticks=ticks)
        ax.set_box_aspect((1, 1, 1))
        ax.grid(False)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_pane_color((1, 1, 1, 0))
        ax.view_init(elev=ELEVATION, azim=AZIMUTH)
        self.scatters = [
            ax.scatter([], [], [], s=point_size, color=color, label=name, depthshade=False, linewidths=0)
            for name, color in zip(class_names, class_colors(len(class_names)))
        ]
        # class weights of the cosine heads: stars on the sphere, in the class colors
        self.weight_markers = [
            ax.scatter([], [], [], s=110, marker="*", color=color, edgecolors="black", linewidths=0.6,
                       depthshade=False)
            for color in class_colors(len(class_names))
        ]
        star = Line2D([], [], marker="*", markersize=10, color="white", markeredgecolor="black", linestyle="")
        ax.legend(handles=[*self.scatters, star], labels=[*class_names, "class weight"], loc="upper left",
                  bbox_to_anchor=(0.0, 1.0), markerscale=4 / max(point_size, 0.1) ** 0.5, fontsize=8,
                  frameon=False)
        self.title = self.fig.suptitle("", fontsize=11)
        self.fig.subplots_adjust(left=0, right=1, bottom=0, top=0.95)

    def render(self, points, labels, title, weights=None):
        """(n, 3) unit vectors, (n,) labels and (classes, 3) unit class weights or None -> (H, W, 3) uint8."""
        for class_index, scatter in enumerate(self.scatters):
            members = points[labels == class_index]
            scatter._offsets3d = (members[:, 0], members[:, 1], members[:, 2])
        for class_index, marker in enumerate(self.weight_markers):
            weight = np.zeros((0, 3)) if weights is None else np.asarray(weights)[class_index:class_index + 1]
            marker._offsets3d = (weight[:, 0], weight[:, 1], weight[:, 2])
        self.title.set_text(title)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def gif_palette(num_classes):
    """(colors, 3) uint8: each class color blended towards white in 8 steps, and 64 greys.

    Every frame is mapped to this one palette, so a class keeps its exact color in every
    frame (a per-frame adaptive palette lets colors drift) and the GIF is written without
    quantizing each frame again.
    """
    colors = np.array(class_colors(num_classes))[:, :3] * 255
    blends = [color + (255 - color) * t for color in colors for t in np.arange(8) / 8]
    greys = [[g, g, g] for g in np.linspace(0, 255, 64)]
    return np.round(np.array(blends + greys)).astype(np.uint8)


def to_palette(image, palette):
    """(H, W, 3) uint8 -> (H, W) indices of the nearest palette colors.

    Pillow's search is fast but approximate (white can become 251 grey), so the pixels whose
    color is in the palette, background and class colors, are then looked up exactly.
    """
    palette_image = Image.new("P", (1, 1))
    palette_image.putpalette(palette.tobytes())
    indices = np.array(Image.fromarray(image).quantize(palette=palette_image, dither=Image.Dither.NONE))
    keys, palette_keys = rgb_keys(image), rgb_keys(palette)
    order = np.argsort(palette_keys)
    position = np.searchsorted(palette_keys[order], keys).clip(max=len(palette) - 1)
    exact = palette_keys[order][position] == keys
    indices[exact] = order[position[exact]]
    return indices


def rgb_keys(colors):
    colors = colors.astype(np.int32)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]


def point_size(n_points):
    return float(np.clip(10000 / max(n_points, 1), 1, 10))


# Worker processes each build the figure once (initializer), then render the frames they are sent.
# Forked workers start in milliseconds with matplotlib already imported; where fork is unsafe
# (macOS) or missing (Windows) they are spawned, which costs about a second each.
START_METHOD = os.environ.get("RENDER_START_METHOD", "fork" if sys.platform == "linux" else "spawn")
_worker_figure, _worker_palette = None, None


def _init_worker(class_names, size, palette):
    global _worker_figure, _worker_palette
    _worker_figure, _worker_palette = SphereFigure(class_names, size), palette


def _render_one(job):
    return to_palette(_worker_figure.render(*job), _worker_palette)


def render_frames(frames_points, frames_labels, titles, class_names, palette, workers=1, progress=None,
                  frames_weights=None):
    """(frames, n, 3) unit vectors, (frames, n) labels (-1: not drawn), and per frame the (classes, 3)
    class weights or None -> list of (H, W) palette indices."""
    size = point_size(frames_points.shape[1])
    frames_weights = [None] * len(titles) if frames_weights is None else frames_weights
    jobs = list(zip(frames_points, frames_labels, titles, frames_weights))
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            _init_worker(class_names, size, palette)
            rendered = map(_render_one, jobs)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context(START_METHOD),
                initializer=_init_worker, initargs=(class_names, size, palette)))
            rendered = pool.map(_render_one, jobs)
        return list(tqdm(rendered, total=len(jobs), desc=progress, unit="frame", leave=False))


def gif_durations(n_frames, frame_ms=FRAME_MS, last_ms=LAST_FRAME_MS):
    """Per-frame milliseconds in the GIF's unit, 10 ms, without drift.

    Frame k starts at k * frame_ms rounded to 10 ms, so 125 ms frames alternate 130 and 120
    and the animation keeps 8 frames a second exactly; the last frame holds last_ms.
    """
    starts = [int(k * frame_ms / 10 + 0.5) * 10 for k in range(n_frames)]
    return [b - a for a, b in zip(starts, starts[1:])] + [last_ms]


def write_gif(path, frames, palette):
    """(H, W) palette-index frames; every frame FRAME_MS, the last LAST_FRAME_MS; loops forever."""
    padded = np.zeros((256, 3), np.uint8)
    padded[:len(palette)] = palette
    iio.imwrite(path, np.stack(frames), extension=".gif", mode="L", palette=padded.tobytes(),
                duration=gif_durations(len(frames)), loop=0)


# ---------------------------------------------------------------- main

def frame_titles(meta, split):
    planned_epochs = meta["options"]["epochs"]
    titles = []
    for entry in meta["history"]:
        accuracy = "" if entry["val_accuracy"] is None else f" - val acc {entry['val_accuracy']:.1%}"
        titles.append(f"{meta['model']} - {SPLIT_TITLES[split]} - epoch {entry['epoch']}/{planned_epochs}{accuracy}")
    return titles


def load(out_dir, model, allow_pickle):
    """(embeddings, labels, meta) of this project's runs, or of the seed's pickled files if allowed."""
    try:
        return run_files.load_run(out_dir, model)
    except run_files.PickledFile:
        if not allow_pickle:
            raise
    print("warning: reading pickled files, which can run code: only do this with files you trust",
          file=sys.stderr)
    return run_files.load_seed_run(out_dir, model)


def draw_run(args, model):
    """Writes the GIFs of one run; returns (paths written, meta)."""
    try:
        embeddings, labels, meta = load(args.out_dir, model, args.allow_pickle)
    except run_files.RunFileError as error:
        raise SystemExit(f"error: {error}")
    if embeddings.shape[-1] != 3:
        raise SystemExit(f"error: {model} has {embeddings.shape[-1]}-D embeddings; only 3-D ones are drawn")
    points, valid = on_unit_sphere(embeddings)
    if not valid.all():
        print(f"warning: {np.count_nonzero(~valid):,} of {valid.size:,} points (all frames) of {model} are not "
              "finite or are zero vectors; they are left out", file=sys.stderr)
    history = meta["history"][:len(points)]
    weights = [entry.get("class_weights") for entry in history]
    palette = gif_palette(len(meta["class_names"]))
    written = []
    for split in ("train", "val") if args.split == "both" else (args.split,):
        start, stop = meta["splits"][split]
        split_labels = np.where(valid[:, start:stop], labels[start:stop], -1)  # -1: not drawn
        frames = render_frames(points[:, start:stop], split_labels, frame_titles(meta, split)[:len(points)],
                               meta["class_names"], palette, args.workers, f"{model} {SPLIT_TITLES[split]} frames",
                               weights)
        path = os.path.join(args.out_dir, f"{model}_{SPLIT_TITLES[split]}_Embeddings.gif")
        write_gif(path, frames, palette)
        written.append(path)
        if args.keep_frames:
            frame_dir = os.path.join(args.out_dir, f"{model}_{SPLIT_TITLES[split]}_frames")
            os.makedirs(frame_dir, exist_ok=True)
            for epoch, frame in enumerate(frames):
                iio.imwrite(os.path.join(frame_dir, f"epoch_{epoch:03d}.png"), palette[frame])
            written.append(frame_dir + os.sep)
    return written, meta


def main(argv=None):
    args = parse_args(argv)
    for model in args.model:
        if not re.fullmatch(r"[\w.-]+", model):
            raise SystemExit(f"error: --model {model!r} is not a run name (letters, digits, '_', '-', '.')")
    written, metas = [], []
    for model in args.model:
        paths, meta = draw_run(args, model)
        written += paths
        metas.append(meta)
    with_metrics = [meta for meta in metas if has_metrics(meta)]
    if with_metrics:
        name = with_metrics[0]["model"] if len(with_metrics) == 1 else "comparison"
        path = os.path.join(args.out_dir, f"{name}_metrics.png")
        plot_metrics(with_metrics, path)
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
