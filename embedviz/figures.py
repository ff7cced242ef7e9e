"""What visualization.py draws besides the animations, each from the runs it has loaded: the interactive
pages (--html), the projector's files (--projector), and the still figures (--figures, on by default):
metric and ROC curves, score distributions, class angles, misfits and outliers."""

import os
import sys

from tqdm import tqdm

from embedviz.render import MAX_GIF_FPS, SPLIT_TITLES, SUFFIX


def draw(args, runs, splits):
    """What args ask for besides the animations; returns the paths written."""
    written = write_pages(args, runs, splits) if args.html else []
    if args.figures:
        written += draw_curves(args, runs) + draw_scores(args, runs) + draw_images(args, runs)
    if args.projector is not None:
        written += write_projectors(args, runs)
    return written


def write_pages(args, runs, splits):
    """The interactive page of each 3-D run, one per split, named like the animations; returns the paths."""
    from embedviz.interactive import write_html  # plotly: imported only when pages are asked for

    for run in runs:
        if run.dim == 2:
            print(f"warning: {run.model} has 2-D embeddings; the interactive page is for 3-D ones", file=sys.stderr)
    pages = [(run, split) for run in runs if run.dim >= 3 for split in splits]
    written = []
    for run, split in tqdm(pages, desc="interactive pages", unit="page", leave=False):
        name = f"{run.model}_{SPLIT_TITLES[split]}_Embeddings{SUFFIX[args.space]}.html"
        path = os.path.join(args.out_dir, name)
        meta = {**run.meta, "history": [{**entry, "class_weights": weights}  # the weights in the view
                                         for entry, weights in zip(run.history, run.weights)]}
        size = write_html(path, run.drawn, run.labels_of_rows, meta, split, args.html_points,
                          space=args.space, images=run.images)
        print(f"{path}: {size / 1e6:.1f} MB")
        written.append(path)
    return written


def write_projectors(args, runs):
    """The projector files of each run, in M_projector/: one epoch, every point, its image in the sprite."""
    from embedviz.projector import write_projector

    written = []
    for run in runs:
        epoch = args.projector if args.projector >= 0 else len(run.history) - 1
        folder = os.path.join(args.out_dir, f"{run.model}_projector")
        write_projector(folder, run.embeddings[epoch], run.labels_of_rows, run.meta, run.images,
                        f"{run.model} epoch {run.history[epoch]['epoch']}")
        written.append(folder + os.sep)
    return written


def draw_images(args, runs):
    """The pictures of the images behind the points, at --epoch or the last: M_misfits.png of every
    run, and M_outliers.png of each Sub-center ArcFace run."""
    from embedviz.gallery import MAX_MISFITS, misfits, plot_misfits, plot_outliers, subcenter_outliers

    written = []
    for run in runs:
        frame = len(run.history) - 1 if args.epoch is None else args.epoch
        images = run.images
        if images is None:
            print(f"warning: {run.model}'s run has no images file; train it again to see its images", file=sys.stderr)
            continue
        embeddings, entry = run.embeddings[frame], run.history[frame]
        found = misfits(embeddings, run.labels_of_rows, run.meta)
        path = os.path.join(args.out_dir, f"{run.model}_misfits.png")
        if not found and os.path.exists(path):  # an earlier drawing's, of another epoch
            os.remove(path)
        if found:
            plot_misfits(images, found, run.meta, f"{run.model}, epoch {entry['epoch']}: {len(found)} validation "
                         "images nearer another class's mean than their own (true → nearest), farthest from their "
                         "own first" + (f"; the first {MAX_MISFITS}" if len(found) > MAX_MISFITS else ""), path)
            written.append(path)
        if "subcenters" in entry:
            outliers = subcenter_outliers(embeddings, run.labels_of_rows, run.meta, entry)
            path = os.path.join(args.out_dir, f"{run.model}_outliers.png")
            if not outliers:
                print(f"{run.model}: no outliers at epoch {entry['epoch']}")
                if os.path.exists(path):  # an earlier drawing's, of another epoch
                    os.remove(path)
                continue
            count = sum(len(found) for found in outliers.values())
            plot_outliers(images, outliers, run.meta, f"{run.model}, epoch {entry['epoch']}: {count} of the saved "
                          f"training images lie farther than {run.meta['outlier_deg']:.0f}° from their class's "
                          "dominant sub-centre (farthest first)", path)
            written.append(path)
    return written


def figure_name(runs):
    """The name a figure of these runs goes by: the run's model, or "comparison" for several."""
    return runs[0].model if len(runs) == 1 else "comparison"


def draw_curves(args, runs):
    """The metrics of every epoch (M_metrics.png) and the ROC curves of the last (M_roc.png) of the runs
    that recorded them; comparison_... for several runs."""
    from embedviz.curves import has_metrics, plot_metrics, plot_roc
    from embedviz.verification import roc_curves

    written = []
    with_metrics = [run for run in runs if has_metrics(run.meta)]
    if with_metrics:
        name = figure_name(with_metrics)
        path = os.path.join(args.out_dir, f"{name}_metrics.png")
        plot_metrics([run.meta for run in with_metrics], path)
        written.append(path)
    with_verification = [run for run in with_metrics if "verification" in run.history[-1]]
    if with_verification:
        name = figure_name(with_verification)
        path = os.path.join(args.out_dir, f"{name}_roc.png")
        plot_roc([(run.model, roc_curves(run.embeddings[-1], run.labels_of_rows, run.meta["splits"]))
                  for run in with_verification], path)
        written.append(path)
    return written


def draw_scores(args, runs):
    """The angles of the pairs of every epoch (M_scores.gif, and the last epoch M_scores.png; comparison_...
    for several runs) of the runs that recorded them, and each run's angles between its class means at
    --epoch or the last (M_class_angles.png)."""
    from embedviz.scores import has_pair_angles, plot_class_angles, plot_scores

    written = []
    with_angles = [run for run in runs if has_pair_angles(run.meta)]
    if with_angles:
        name = figure_name(with_angles)
        gif, png = (os.path.join(args.out_dir, f"{name}_scores.{ext}") for ext in ("gif", "png"))
        plot_scores([(run.model, run.meta) for run in with_angles], gif, png, min(args.fps, MAX_GIF_FPS))
        written += [gif, png]
    for run in runs:
        frame = len(run.history) - 1 if args.epoch is None else args.epoch
        path = os.path.join(args.out_dir, f"{run.model}_class_angles.png")
        plot_class_angles(run.embeddings[frame], run.labels_of_rows, run.meta, run.history[frame]["epoch"], path)
        written.append(path)
    return written
