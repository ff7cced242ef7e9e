"""Draw every saved epoch of a run as points on the unit sphere and stitch the frames into a GIF.

    python visualization.py --model vgg8_arcface
    python visualization.py --model vgg8_softmax --split val --format mp4 --rotate
    python visualization.py --compare vgg8_arcface vgg8_softmax
    python visualization.py --model vgg8_arcface --html
    python visualization.py --compare vgg8_softmax vgg8_arcface vgg8_magface --space raw
"""

import os
import re
import sys
from argparse import BooleanOptionalAction

import imageio.v3 as iio
import numpy as np

from embedviz import render, run_files
from embedviz.cli import ArgumentParser, finite_float, non_negative_int, positive

MAX_GIF_FPS, SUFFIX = render.MAX_GIF_FPS, render.SUFFIX
RAW_TITLE = {"sphere": "", "raw": " (raw, before normalisation)"}


def parse_args(argv=None):
    p = ArgumentParser(prog="visualization.py", description=__doc__)
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--model", nargs="+", default=["vgg8_arcface"],
                      help="the runs to draw, each on its own, as named by train.py --model")
    runs.add_argument("--compare", nargs="+", metavar="MODEL",
                      help="draw these runs side by side, one panel each, in one animation")
    p.add_argument("--split", default="both", choices=("train", "val", "both"), help="which points to draw")
    p.add_argument("--space", default="sphere", choices=("sphere", "raw"),
                   help="sphere: the directions, on the unit sphere; raw: the embeddings as they are, before "
                        "normalisation, in one box per run that the last epoch fills (files named ..._raw)")
    p.add_argument("--out-dir", default="data", help="folder holding the runs; what is drawn goes there too")
    p.add_argument("--format", default="gif", choices=("gif", "mp4"), help="animation file type")
    p.add_argument("--fps", type=positive(float), default=8.0,
                   help=f"frames a second, at most {MAX_GIF_FPS} in a GIF; 8: 125 ms a frame")
    p.add_argument("--elev", type=finite_float, default=render.ELEVATION, help="camera elevation, degrees")
    p.add_argument("--azim", type=finite_float, default=render.AZIMUTH, help="camera azimuth, degrees")
    p.add_argument("--rotate", type=finite_float, nargs="?", const=2.0, default=0.0, metavar="DEGREES",
                   help="turn the camera this much every frame, 2 when given alone")
    p.add_argument("--html", action="store_true", help="also write an interactive 3-D page per run and split")
    p.add_argument("--html-points", type=positive(int), default=2000,
                   help="class-balanced points per frame of the interactive page")
    p.add_argument("--workers", type=positive(int), default=min(os.cpu_count() or 1, 4),
                   help="processes rendering frames in parallel; 1: all in this process")
    p.add_argument("--keep-frames", action="store_true", help="also write every frame as a PNG")
    p.add_argument("--figures", action=BooleanOptionalAction, default=True,
                   help="also draw the still figures: metric curves, ROC, score distributions, class angles, "
                        "misfits and outliers; --no-figures: the animations only (and what --html or --projector ask)")
    p.add_argument("--projector", type=non_negative_int, nargs="?", const=-1, metavar="EPOCH",
                   help="also write the files of TensorBoard's projector for this epoch (the last when given alone) "
                        "in data/M_projector/: tensorboard --logdir data/M_projector")
    p.add_argument("--epoch", type=non_negative_int,
                   help="the epoch of the images pictures (M_misfits.png, M_outliers.png); default: the last")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read the seed repository's pickled .npy layout (only for files you trust)")
    args = p.parse_args(argv)
    for model in args.compare or args.model:
        if not re.fullmatch(r"[\w.-]+", model):
            p.error(f"{model!r} is not a run name (letters, digits, '_', '-', '.')")
    if args.format == "gif" and args.fps > MAX_GIF_FPS:
        p.error(f"--fps {args.fps:g}: a GIF shows at most {MAX_GIF_FPS} frames a second (use --format mp4)")
    return args


# ---------------------------------------------------------------- runs

class Run:
    """One run, ready to draw: its points as placed in the view (render.placed), labels per frame (-1: not
    drawn), the class weights of every epoch. Beyond three dimensions, the frames show a fixed 3-D view
    (projection.py), which `view` names; the measures (misfits, ROC, class angles, projector) use the
    embeddings themselves."""

    def __init__(self, model, embeddings, labels, meta, space="sphere", images=None):
        self.model, self.meta, self.images = model, meta, images  # images: None for a run made before they were saved
        self.embeddings, self.labels_of_rows, self.dim = embeddings, labels, embeddings.shape[-1]  # (frames, n, dim)
        self.history = meta["history"][:len(embeddings)]
        self.weights = [entry.get("class_weights") for entry in self.history]  # per class, None for Softmax
        self.subcenters, self.drawn, self.view = [None] * len(self.history), embeddings, ""
        if self.dim > 3 or any("subcenters" in entry for entry in self.history):  # a view of the principal
            # directions; Sub-center ArcFace's other sub-centres
            from embedviz.projection import fixed_view

            self.drawn, self.weights, self.subcenters, self.view = fixed_view(embeddings, meta, self.weights, space)
        self.points, valid, self.box = render.placed(self.drawn, space)  # (frames, n, 2 or 3)
        self.labels = np.where(valid, labels[None, :], -1)  # (frames, n)
        self.invalid = int(np.count_nonzero(~valid))

    def split(self, split):
        start, stop = run_files.drawn_rows(self.meta, split)
        return self.points[:, start:stop], self.labels[:, start:stop]

    def epoch_title(self, frame):
        entry = self.history[frame]
        accuracy = "" if entry["val_accuracy"] is None else f" - val acc {entry['val_accuracy']:.1%}"
        return f"epoch {entry['epoch']}/{self.meta['options']['epochs']}{accuracy}"


def load(out_dir, model, allow_pickle, space="sphere"):
    """A Run of this project's files, or of the seed's pickled files when allowed."""
    try:
        try:
            embeddings, labels, meta = run_files.load_run(out_dir, model)
        except run_files.PickledFile:
            if not allow_pickle:
                raise
            from embedviz.old_formats import load_seed_run

            print("warning: reading pickled files, which can run code: only do this with files you trust",
                  file=sys.stderr)
            embeddings, labels, meta = load_seed_run(out_dir, model)
        images = run_files.load_images(out_dir, model, len(labels))  # read once: misfits, pages, projector
    except run_files.RunFileError as error:
        raise SystemExit(f"error: {error}")
    if embeddings.shape[-1] < 2:
        raise SystemExit(f"error: {model} has {embeddings.shape[-1]}-D embeddings; 2-D ones and more are drawn")
    run = Run(model, embeddings, labels, meta, space, images)
    if run.invalid:
        print(f"warning: {run.invalid:,} of {run.labels.size:,} points (all frames) of {model} are not finite "
              "or are zero vectors; they are left out", file=sys.stderr)
    return run


# ---------------------------------------------------------------- drawing

def animate(args, runs, split, name):
    """Renders runs (one panel each) frame by frame and writes the animation; returns the paths."""
    n_frames = max(len(run.points) for run in runs)
    split_points = [run.split(split) for run in runs]  # per run: (frames, n, dim) points, (frames, n) labels
    jobs = []
    for frame in range(n_frames):
        panels, epoch_titles = [], []
        for run, (points, labels) in zip(runs, split_points):
            held = min(frame, len(run.points) - 1)  # a shorter run holds its last frame
            title = run.epoch_title(held)
            panels.append((points[held], labels[held], run.weights[held], run.subcenters[held],
                           f"{run.model} - {title}" if len(runs) > 1 else None))
            epoch_titles.append(title)
        title = (f"{render.SPLIT_TITLES[split]} embeddings{RAW_TITLE[args.space]} - epoch {frame}" if len(runs) > 1
                 else f"{runs[0].model} - {render.SPLIT_TITLES[split]}{RAW_TITLE[args.space]} - {epoch_titles[0]}")
        views = "; ".join(f"{run.model}: {run.view}" if len(runs) > 1 else run.view for run in runs if run.view)
        title += f"\n{views}" if views else ""
        jobs.append((panels, title, args.azim + args.rotate * frame if args.rotate else None))
    class_names = runs[0].meta["class_names"]
    palette = render.gif_palette(len(class_names))
    figure_options = {"class_names": class_names, "point_size": render.point_size(split_points[0][0].shape[1]),
                      "dim": min(runs[0].dim, 3), "panels": len(runs), "elevation": args.elev, "azimuth": args.azim,
                      "show_weights": any(weights is not None for run in runs for weights in run.weights),
                      "unseen_classes": sorted({c for run in runs for c in run.meta.get("unseen_classes", [])}),
                      "boxes": [run.box for run in runs] if args.space == "raw" else None,
                      "show_subcenters": any(others is not None for run in runs for others in run.subcenters)}
    frames = render.render_frames(jobs, figure_options, palette, args.workers, f"{name} {render.SPLIT_TITLES[split]}")
    path = os.path.join(args.out_dir,
                        f"{name}_{render.SPLIT_TITLES[split]}_Embeddings{SUFFIX[args.space]}.{args.format}")
    (render.write_gif if args.format == "gif" else render.write_mp4)(path, frames, palette, args.fps)
    written = [path]
    if args.keep_frames:
        frame_dir = os.path.join(args.out_dir, f"{name}_{render.SPLIT_TITLES[split]}{SUFFIX[args.space]}_frames")
        os.makedirs(frame_dir, exist_ok=True)
        for epoch, frame in enumerate(frames):
            iio.imwrite(os.path.join(frame_dir, f"epoch_{epoch:03d}.png"), palette[frame])
        written.append(frame_dir + os.sep)
    return written


def main(argv=None):
    args = parse_args(argv)
    models = args.compare or args.model
    runs = [load(args.out_dir, model, args.allow_pickle, args.space) for model in models]
    if args.compare and len({tuple(run.meta["class_names"]) for run in runs}) > 1:
        raise SystemExit("error: the runs to compare were made on datasets with different classes")
    if args.compare and len({run.dim for run in runs}) > 1:
        raise SystemExit("error: the runs to compare have embeddings of different sizes")
    for run in runs:  # before anything is drawn
        for flag, epoch in (("--epoch", args.epoch), ("--projector", args.projector)):
            if epoch is not None and epoch >= len(run.history):
                raise SystemExit(f"error: {flag} {epoch}: {run.model} has epochs 0-{len(run.history) - 1}")
    splits = ("train", "val") if args.split == "both" else (args.split,)
    written = []
    for split in splits:
        if args.compare:
            written += animate(args, runs, split, "comparison")
        else:
            for run in runs:
                written += animate(args, [run], split, run.model)
    if args.html or args.figures or args.projector is not None:  # the pages and still figures: embedviz/figures.py
        from embedviz import figures

        written += figures.draw(args, runs, splits)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
