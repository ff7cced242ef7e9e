"""Frames of embeddings on the unit sphere (3-D) or the unit circle (2-D), or as they are before
normalisation in a box (the raw view), and the files made of them.

One matplotlib figure is built once per process, with one panel per run; each frame only
moves the points, the class weights, the titles and, when turning, the camera. Frames are
rendered in parallel worker processes and mapped to one fixed palette, which the GIF keeps.
"""

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from embedviz.metrics import unit  # noqa: E402

SPLIT_TITLES = {"train": "Training", "val": "Validation"}
SUFFIX = {"sphere": "", "raw": "_raw"}  # of the files of each view
MAX_GIF_FPS = 50  # GIF delays are in 10 ms units, and browsers show delays under 20 ms as about 100 ms
PANEL_INCHES = 6.4    # at DPI 100: 640 x 640 pixels a panel, a multiple of 16 as video encoders want
DPI = 100
LAST_FRAME_MS = 3000  # the last frame holds so the final state can be read
ELEVATION, AZIMUTH = 20, -60  # default camera, degrees


def on_unit_sphere(points):
    """L2-normalised rows in the points' dtype, and a mask of the rows that could be normalised (finite,
    non-zero); the others are zero."""
    points = np.asarray(points)
    norms = np.linalg.norm(points, axis=-1)
    valid = np.isfinite(points).all(axis=-1) & (norms > 0) & np.isfinite(norms)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(valid[..., None], unit(points, points.dtype), 0.0), valid


def placed(embeddings, space):
    """(frames, n, dim) embeddings -> (points, mask of the rows drawn, half-width of the box drawn).
    "sphere": L2-normalised, on the unit sphere. "raw": as they are, before normalisation, in one box
    for every frame, the one that the last frame's points fill."""
    if space == "sphere":
        points, valid = on_unit_sphere(embeddings)
        return points, valid, 1.0
    valid = np.isfinite(embeddings).all(axis=-1)
    points = np.where(valid[..., None], embeddings, 0.0)
    extent = np.abs(points[-1][valid[-1]])
    return points, valid, float(extent.max()) * 1.05 if extent.size and extent.max() > 0 else 1.0


LEGEND_MAX_CLASSES = 20  # beyond, the classes are named in the interactive page's legend only


def literal(text):
    """text as matplotlib shows it: a class name with "$" signs is not mathtext."""
    return str(text).replace("$", r"\$")


def class_colors(num_classes):
    """tab10's colors, tab20's for up to 20 classes, else evenly spaced hues in two brightnesses."""
    if num_classes <= 20:
        cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
        return [cmap(i) for i in range(num_classes)]
    hues = np.arange(num_classes) / num_classes
    return [(*matplotlib.colors.hsv_to_rgb((h, 0.75, 0.95 if i % 2 else 0.65)), 1.0) for i, h in enumerate(hues)]


def point_size(n_points):
    return float(np.clip(10000 / max(n_points, 1), 1, 10))


# ---------------------------------------------------------------- the figure

class EmbeddingFigure:
    """A figure with one panel per run, drawn once; render() changes only what moves."""

    def __init__(self, class_names, point_size, dim=3, panels=1, elevation=ELEVATION, azimuth=AZIMUTH,
                 show_weights=False, unseen_classes=(), boxes=None, show_subcenters=False):
        """show_weights: the legend has a "class weight" entry (for runs whose head has class weights);
        unseen_classes: classes held out of training, drawn as hollow rings and named "(unseen)";
        boxes: per panel, the half-width of the box of the raw view (placed()), None: the unit sphere;
        show_subcenters: the legend has an entry for the sub-centres that are not a class's dominant one."""
        self.dim, self.elevation = dim, elevation
        self.fig = plt.figure(figsize=(PANEL_INCHES * panels, PANEL_INCHES), dpi=DPI)
        colors = class_colors(len(class_names))
        self.boxes = boxes or [None] * panels
        self.axes, self.scatters, self.weight_markers, self.subcenter_markers = [], [], [], []
        for index, box in enumerate(self.boxes):
            if dim == 3:
                ax = self.fig.add_subplot(1, panels, index + 1, projection="3d", computed_zorder=False)
                draw_sphere(ax, elevation, azimuth) if box is None else draw_box(ax, box, elevation, azimuth)
                empty = ([], [], [])
            else:
                ax = self.fig.add_subplot(1, panels, index + 1)
                draw_circle(ax) if box is None else draw_square(ax, box)
                empty = ([], [])
            self.axes.append(ax)
            self.scatters.append([ax.scatter(*empty, s=point_size * (2.5 if c in unseen_classes else 1),
                                             **({"facecolors": "none", "edgecolors": color, "linewidths": 0.6}
                                                if c in unseen_classes else {"color": color, "linewidths": 0}),
                                             **({"depthshade": False} if dim == 3 else {}))
                                  for c, color in enumerate(colors)])
            # class weights of the cosine heads: stars on the sphere, in the class colors
            self.weight_markers.append([ax.scatter(*empty, s=110, marker="*", color=color, edgecolors="black",
                                                   linewidths=0.6, **({"depthshade": False} if dim == 3 else {}))
                                        for color in colors])
            # Sub-center ArcFace: a class's other sub-centres, smaller stars
            self.subcenter_markers.append([ax.scatter(*empty, s=40, marker="*", color=color, edgecolors="black",
                                                      linewidths=0.4, **({"depthshade": False} if dim == 3 else {}))
                                           for color in colors])
        marker_scale = 4 / max(point_size, 0.1) ** 0.5  # legend dots of one size, whatever the points' size
        handles, labels = [], []
        if len(class_names) <= LEGEND_MAX_CLASSES:
            handles = [*self.scatters[0]]
            labels = [f"{name} (unseen)" if c in unseen_classes else name
                      for c, name in enumerate(map(literal, class_names))]
        else:
            self.fig.text(0.01, 0.01, f"{len(class_names)} classes: their names are in the interactive page "
                          "(visualization.py --html)", fontsize=8, color="0.3")
        if show_weights:  # the star at 10 points, after the scale that the legend applies to every marker
            handles.append(Line2D([], [], marker="*", markersize=10 / marker_scale, color="white",
                                  markeredgecolor="black", linestyle=""))
            labels.append("class weight" if not show_subcenters else "dominant sub-centre")
        if show_subcenters:
            handles.append(Line2D([], [], marker="*", markersize=6 / marker_scale, color="white",
                                  markeredgecolor="black", linestyle=""))
            labels.append("other sub-centres")
        if handles:
            self.fig.legend(handles=handles, labels=labels, loc="upper left", markerscale=marker_scale, fontsize=8,
                            frameon=False)
        self.title = self.fig.suptitle("", fontsize=11)
        self.fig.subplots_adjust(left=0.02 if dim == 3 else 0.12, right=0.98, bottom=0.02 if dim == 3 else 0.08,
                                 top=0.9 if panels > 1 else 0.95, wspace=0.05)

    def render(self, panels, title, azimuth=None):
        """panels: per panel (points (n, dim) as placed(), labels (n,) with -1 for not drawn, class
        weights (classes, dim) unit vectors or None, other sub-centres (classes, k, dim) or None, panel
        title or None) -> (H, W, 3) uint8. In a raw view's box the stars show directions, at its edge."""
        for ax, scatters, markers, small_markers, box, (points, labels, weights, subcenters, panel_title) in zip(
                self.axes, self.scatters, self.weight_markers, self.subcenter_markers, self.boxes, panels):
            scale = 1.0 if box is None else box / 1.05
            for class_index, (scatter, marker, small) in enumerate(zip(scatters, markers, small_markers)):
                set_points(scatter, points[labels == class_index], self.dim)
                has_weight = weights is not None and weights[class_index] is not None  # None: a class held out
                weight = np.asarray(weights[class_index])[None] if has_weight else np.zeros((0, self.dim))
                set_points(marker, weight * scale, self.dim)
                others = subcenters[class_index] if subcenters is not None else None
                set_points(small, np.zeros((0, self.dim)) if others is None else np.asarray(others) * scale, self.dim)
            ax.set_title(panel_title or "", fontsize=10)
            if azimuth is not None and self.dim == 3:
                ax.view_init(elev=self.elevation, azim=azimuth)
        self.title.set_text(title)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def draw_sphere(ax, elevation, azimuth):
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.6", alpha=0.25,
                      linewidth=0.5)
    ticks = (-1, 0, 1)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xlabel="x", ylabel="y", zlabel="z",
           xticks=ticks, yticks=ticks, zticks=ticks)
    ax.set_box_aspect((1, 1, 1))
    ax.grid(False)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_pane_color((1, 1, 1, 0))
    ax.view_init(elev=elevation, azim=azimuth)


def draw_box(ax, half_width, elevation, azimuth):
    """The raw view's 3-D box, with faint axes through the origin, where the spokes start."""
    for axis in np.eye(3):
        ax.plot(*np.stack([-axis, axis]).T * half_width, color="0.6", alpha=0.4, linewidth=0.6)
    ticks = (-half_width / 1.05, 0, half_width / 1.05)
    ax.set(xlim=(-half_width, half_width), ylim=(-half_width, half_width), zlim=(-half_width, half_width),
           xlabel="x", ylabel="y", zlabel="z", xticks=ticks, yticks=ticks, zticks=ticks)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_formatter("{x:.2g}")
        axis.set_pane_color((1, 1, 1, 0))
    ax.set_box_aspect((1, 1, 1))
    ax.grid(False)
    ax.view_init(elev=elevation, azim=azimuth)


def draw_square(ax, half_width):
    ax.axhline(0, color="0.6", alpha=0.4, linewidth=0.6)
    ax.axvline(0, color="0.6", alpha=0.4, linewidth=0.6)
    ax.set(xlim=(-half_width, half_width), ylim=(-half_width, half_width), xlabel="x", ylabel="y")
    ax.set_aspect("equal")


def draw_circle(ax):
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.6", alpha=0.5, linewidth=0.8))
    ax.set(xlim=(-1.15, 1.15), ylim=(-1.15, 1.15), xlabel="x", ylabel="y", xticks=(-1, 0, 1), yticks=(-1, 0, 1))
    ax.set_aspect("equal")


def set_points(scatter, points, dim):
    if dim == 3:
        scatter._offsets3d = (points[:, 0], points[:, 1], points[:, 2])
    else:
        scatter.set_offsets(points[:, :2])


# ---------------------------------------------------------------- palette

def gif_palette(num_classes):
    """(colors, 3) uint8: each class color blended towards white in 8 steps, and 64 greys.

    Every frame is mapped to this one palette, so a class keeps its exact color in every
    frame (a per-frame adaptive palette lets colors drift) and the GIF is written without
    quantizing each frame again.
    """
    colors = np.array(class_colors(min(num_classes, 256 - 64)))[:, :3] * 255  # beyond, classes share the nearest hue
    steps = max(1, min(8, (256 - 64) // num_classes))  # a GIF holds 256 colors: fewer blends for many classes
    blends = [color + (255 - color) * t for color in colors for t in np.arange(steps) / steps]
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


# ---------------------------------------------------------------- rendering in parallel

# Worker processes each build the figure once (initializer), then render the frames they are sent.
# Forked workers start in milliseconds with matplotlib already imported; where fork is unsafe
# (macOS) or missing (Windows) they are spawned, which costs about a second each.
START_METHOD = os.environ.get("RENDER_START_METHOD", "fork" if sys.platform == "linux" else "spawn")
_worker_figure, _worker_palette = None, None


def _init_worker(figure_options, palette):
    global _worker_figure, _worker_palette
    _worker_figure, _worker_palette = EmbeddingFigure(**figure_options), palette


def _render_one(job):
    return to_palette(_worker_figure.render(*job), _worker_palette)


def render_frames(jobs, figure_options, palette, workers=1, progress=None):
    """jobs: per frame (panels, title, azimuth or None), as EmbeddingFigure.render takes them;
    figure_options: EmbeddingFigure's arguments -> list of (H, W) palette indices."""
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            _init_worker(figure_options, palette)
            stack.callback(plt.close, _worker_figure.fig)  # pyplot would keep it as long as this process lives
            rendered = map(_render_one, jobs)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context(START_METHOD),
                initializer=_init_worker, initargs=(figure_options, palette)))
            rendered = pool.map(_render_one, jobs)
        return list(tqdm(rendered, total=len(jobs), desc=progress, unit="frame", leave=False))


# ---------------------------------------------------------------- files

def gif_durations(n_frames, frame_ms, last_ms=LAST_FRAME_MS):
    """Per-frame milliseconds in the GIF's unit, 10 ms, without drift.

    Frame k starts at k * frame_ms rounded to 10 ms, so 125 ms frames alternate 130 and 120
    and the animation keeps 8 frames a second exactly; the last frame holds last_ms.
    """
    starts = [int(k * frame_ms / 10 + 0.5) * 10 for k in range(n_frames)]
    return [b - a for a, b in zip(starts, starts[1:])] + [last_ms]


def write_gif(path, frames, palette, fps):
    """(H, W) palette-index frames, fps frames a second, the last one held; loops forever."""
    padded = np.zeros((256, 3), np.uint8)
    padded[:len(palette)] = palette
    iio.imwrite(path, np.stack(frames), extension=".gif", mode="L", palette=padded.tobytes(),
                duration=gif_durations(len(frames), 1000 / fps), loop=0)


def write_mp4(path, frames, palette, fps):
    """H.264 video at fps frames a second; the last frame is repeated to hold LAST_FRAME_MS."""
    hold = [frames[-1]] * max(round(LAST_FRAME_MS / 1000 * fps) - 1, 0)
    iio.imwrite(path, palette[np.stack([*frames, *hold])], plugin="FFMPEG", fps=fps, codec="libx264",
                quality=5, macro_block_size=16)
