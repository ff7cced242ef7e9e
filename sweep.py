"""Where a margin pays: a grid of runs, heads x embedding sizes x numbers of seen classes x seeds,
measured on the classes they never saw, summarised with the mean and 95% interval over the seeds.

    python sweep.py --dataset glyphs --seen 25 50 100 --epochs 20
    python sweep.py --dataset fashion-mnist --seen 6 --jobs 4

Every run is train.py's, in OUT_DIR/DATASET-seenN/HEAD-dDIM-sSEED/, the seen classes the dataset's
first N, the unseen ones the same in every run (--unseen-classes; default: those after the largest N).
Runs go side by side, --jobs at a time; a finished run is not trained again and a stopped one is
resumed. Written: the tables (OUT_DIR/margin_sweep.md, also printed: each head's figures, and each
head's difference from the first head's, seed by seed) and the figure (--figure).
"""

import json
import math
import os
import sys
import time

import numpy as np

from embedviz.cli import ArgumentParser, class_indices, int_from, non_negative_float, positive
from embedviz.sweep_backends import Local
from embedviz.held_out import check_classes

HEADS = ("vgg8_softmax", "vgg8_normface", "vgg8_cosface", "vgg8_arcface")
DIMS = (2, 3, 8, 32, 128)
METRICS = (  # (title, path of keys into the last epoch, better: "higher" or "lower")
    ("unseen TAR at FAR 1e-3", ("verification", "unseen", "tar_at_far", "0.001"), "higher"),
    ("unseen EER", ("verification", "unseen", "eer"), "lower"),
    ("open-set AUROC", ("open_set_auroc",), "higher"),
    ("unseen CDNV", ("cdnv_unseen",), "lower"),
)


def parse_args(argv=None):
    import train  # its dataset names and class ranges; imported here, so that --help is quick

    p = ArgumentParser(prog="sweep.py", description=__doc__)
    p.add_argument("--dataset", default="glyphs", choices=[d for d in train.DATASET_CLASSES],
                   help="a dataset of train.py with classes enough to hold some out")
    p.add_argument("--seen", type=int_from(2), nargs="+", default=[25, 50, 100],
                   help="numbers of seen classes: the dataset's first N, not held out")
    p.add_argument("--unseen-classes", type=class_indices, nargs="+", metavar="CLASS",
                   help="the classes held out of every run (default: those after the largest --seen)")
    p.add_argument("--heads", nargs="+", default=list(HEADS), help="train.py --model names")
    p.add_argument("--dims", type=int_from(2, train.MAX_EMBEDDING_DIM), nargs="+", default=list(DIMS),
                   help="embedding sizes")
    p.add_argument("--seeds", type=int_from(0), nargs="+", default=[0, 1, 2, 3, 4], help="one run a seed")
    p.add_argument("--epochs", type=int_from(1), default=20, help="epochs a run")
    p.add_argument("--batch-size", type=int_from(2), default=128, help="training batch size")
    p.add_argument("--train-points", type=int_from(0), default=1000, help="training images saved a run")
    p.add_argument("--data-dir", default="data", help="as train.py's")
    p.add_argument("--out-dir", default="data/sweep", help="the runs' folders, and the table")
    p.add_argument("--figure", default="docs/margin_sweep.png", help="the figure's path")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="as train.py's")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"),
                   help="every run's, as train.py's; auto lets each run choose, and a CPU chooses by a timing, so "
                        "that two runs of one grid may train in different precisions")
    p.add_argument("--jobs", type=positive(int),
                   help="local: runs side by side (default: 1 on a CPU, whose cores one run uses, or the cores over "
                        "--cpus-per-run; 4 on a GPU); slurm: runs of the job array at once")
    cluster = p.add_argument_group("clusters (pip install -r requirements-cluster.txt)")
    cluster.add_argument("--backend", default="local", choices=("local", "ray", "slurm"),
                         help="local: train.py subprocesses here; ray: Ray tasks; slurm: a job array through submitit")
    cluster.add_argument("--ray-address",
                         help="a running Ray cluster to join (auto, or HOST:PORT; default: start Ray on this machine)")
    cluster.add_argument("--cpus-per-run", type=positive(int),
                         help="CPUs (and threads) a run (default: ray and slurm 1; local all of them)")
    cluster.add_argument("--gpus-per-run", type=non_negative_float, default=0.0,
                         help="GPUs a run, a fraction allowed with ray (0.1: ten runs share a GPU, each held to a "
                              "tenth of its memory)")
    cluster.add_argument("--max-return-mb", type=positive(float), default=200,
                         help="the largest run folder a worker sends back (ray, slurm)")
    cluster.add_argument("--shared-dir", action="store_true",
                         help="--out-dir is on a disk every node shares: runs write there, nothing is sent back")
    cluster.add_argument("--slurm-partition", help="the partition of the job array")
    cluster.add_argument("--slurm-minutes", type=positive(int), default=240, help="the time limit of a run")
    args = p.parse_args(argv)
    num_classes = train.DATASET_CLASSES[args.dataset]
    unseen = sorted({c for classes in args.unseen_classes or [range(max(args.seen), num_classes)] for c in classes})
    try:
        for seen in args.seen:
            if set(range(seen)) & set(unseen):
                raise ValueError(f"--seen {seen}: its classes 0-{seen - 1} include held-out ones")
            check_classes(unseen, num_classes, [*range(seen), *unseen])
    except ValueError as error:
        p.error(str(error))
    args.unseen_classes = unseen
    if args.backend == "local" and (args.ray_address or args.gpus_per_run or args.shared_dir):
        p.error("--ray-address, --gpus-per-run and --shared-dir are for --backend ray or slurm")
    if args.backend != "local":  # the same path on every node, not one relative to this folder
        args.data_dir = os.path.abspath(args.data_dir)
        if args.device == "cuda" and not args.gpus_per_run:
            p.error(f"--device cuda with --backend {args.backend} needs --gpus-per-run")
    return args


# ---------------------------------------------------------------- the grid and its runs

def grid(args):
    """[(folder, train.py arguments)], one a run, in the order they are trained."""
    runs = []
    unseen = " ".join(map(str, args.unseen_classes))
    for seen in args.seen:
        for seed in args.seeds:
            for dim in args.dims:
                for head in args.heads:
                    folder = os.path.join(args.out_dir, f"{args.dataset}-seen{seen}", f"{head}-d{dim}-s{seed}")
                    runs.append((folder, [
                        "--model", head, "--dataset", args.dataset, "--data-dir", args.data_dir, "--out-dir", folder,
                        "--classes", f"0-{seen - 1}", *unseen.split(), "--unseen-classes", *unseen.split(),
                        "--embedding-dim", str(dim), "--seed", str(seed), "--epochs", str(args.epochs),
                        "--batch-size", str(args.batch_size), "--train-points", str(args.train_points),
                        "--device", args.device, "--precision", args.precision]))
    return runs


def option(argv, name):
    return argv[argv.index(name) + 1]


def trained_on(folder, model):
    """The dataset the run's meta file names (train.py falls back from a missing MNIST to mnist-sample)."""
    with open(os.path.join(folder, f"all_{model}_meta.json")) as f:
        return json.load(f)["dataset"]


def state(folder, model, epochs, dataset):
    """"done", "stopped" (a checkpoint to resume from) or "new" (also a run of another dataset)."""
    meta = os.path.join(folder, f"all_{model}_meta.json")
    if os.path.exists(meta):
        with open(meta) as f:
            meta = json.load(f)
        if meta["dataset"] != dataset:
            return "new"
        if meta["epochs_completed"] >= epochs:
            return "done"
    return "stopped" if os.path.exists(os.path.join(folder, f"{model}_last.pth")) else "new"


def train_all(runs, epochs, backend):
    """Trains the runs not done yet on `backend` (sweep_backends), resuming the stopped ones, and collects
    them as they finish; returns the folders of those that failed. Ctrl-C cancels the runs still out."""
    from tqdm import tqdm

    todo = []
    for folder, argv in runs:
        status = state(folder, option(argv, "--model"), epochs, option(argv, "--dataset"))
        if status != "done":
            todo.append((folder, [*argv, "--resume"] if status == "stopped" else argv, status == "stopped"))
    print(f"{len(runs) - len(todo)} of {len(runs)} runs done; training {len(todo)} {backend.describe()}", flush=True)
    arguments = dict(runs)
    failed, finished, start, waiting, shown = [], 0, time.perf_counter(), list(todo), None
    bar = tqdm(total=len(todo), unit="run", leave=False, disable=not todo)
    try:
        while finished < len(todo):
            while waiting and backend.has_room():
                backend.start(*waiting.pop(0))
            for folder, outcome in backend.finished(timeout=1.0):
                finished += 1
                model, dataset = option(arguments[folder], "--model"), option(arguments[folder], "--dataset")
                line = "done"
                if outcome.status != 0:
                    line = f"failed on {outcome.node}: {outcome.reason()}"
                elif (trained := trained_on(folder, model)) != dataset:  # a grid of one dataset, whatever a node holds
                    line = f"failed on {outcome.node}: no {dataset} there, it trained on {trained}"
                if line != "done":
                    failed.append(folder)
                bar.update()
                bar.write(f"{finished}/{len(todo)} {folder}: {line} ({time.perf_counter() - start:.0f} s)")
            counts = {"running": min(len(todo) - finished - len(waiting), backend.at_once), "failed": len(failed)}
            if counts != shown:
                bar.set_postfix(counts)
                shown = counts
    except BaseException as error:  # Ctrl-C, or a run that cannot be written back: nothing left running
        backend.cancel()
        bar.close()
        if isinstance(error, KeyboardInterrupt):
            raise SystemExit(f"stopped: {finished} of {len(todo)} runs finished and kept; the same command trains "
                             "the rest") from None
        raise
    finally:
        bar.close()
        backend.close()
    return failed


def make_backend(args):
    if args.backend == "local":
        cores = os.cpu_count() or 1
        default = 4 if args.device != "cpu" and cuda_available() else max(1, cores // args.cpus_per_run) \
            if args.cpus_per_run else 1
        return Local(args.jobs or default, args.cpus_per_run)
    from embedviz import sweep_backends

    options = {"out_dir": args.out_dir, "max_return_mb": args.max_return_mb, "shared_dir": args.shared_dir}
    cpus = args.cpus_per_run or 1
    if args.backend == "ray":
        return sweep_backends.Ray(args.ray_address, cpus, args.gpus_per_run, **options)
    return sweep_backends.Slurm(os.path.join(args.out_dir, "slurm"), cpus, args.gpus_per_run, args.slurm_partition,
                                args.slurm_minutes, args.jobs, **options)


# ---------------------------------------------------------------- the summary

def value_at(entry, path):
    for key in path:
        entry = entry.get(key) if isinstance(entry, dict) else None
    return entry


def interval(values):
    """(mean, half-width of the 95% interval of the mean: Student's t, n - 1 degrees of freedom, times the
    standard error) of the values that are not None; NaN where there are none (or one, for the width)."""
    from scipy.stats import t

    values = np.array([v for v in values if v is not None], float)
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def collect(args):
    """{(seen, head, dim): {metric title: {seed: value}}} from the last epoch of the finished runs."""
    values = {}
    for seen in args.seen:
        for head in args.heads:
            for dim in args.dims:
                lasts = {}
                for seed in args.seeds:
                    folder = os.path.join(args.out_dir, f"{args.dataset}-seen{seen}", f"{head}-d{dim}-s{seed}")
                    if state(folder, head, args.epochs, args.dataset) == "done":
                        with open(os.path.join(folder, f"all_{head}_meta.json")) as f:
                            lasts[seed] = json.load(f)["history"][args.epochs]
                values[seen, head, dim] = {title: {seed: value_at(entry, path) for seed, entry in lasts.items()}
                                           for title, path, _ in METRICS}
    return values


def summarise(values):
    """{cell: {metric title: (mean, half-width, seeds)}}: each head on its own."""
    return {cell: {title: (*interval(list(by_seed.values())), len(by_seed)) for title, by_seed in figures.items()}
            for cell, figures in values.items()}


def differences(values, baseline):
    """{cell: {metric title: (mean, half-width, seeds)}} of each other head minus `baseline`, seed by seed
    (a seed's runs share their data order and held-out classes, so the pairs are matched), over the seeds
    where both finished and have the figure."""
    paired = {}
    for (seen, head, dim), figures in values.items():
        if head == baseline:
            continue
        paired[seen, head, dim] = {}
        for title, by_seed in figures.items():
            base = values[seen, baseline, dim][title]
            diffs = [value - base[seed] for seed, value in by_seed.items()
                     if value is not None and base.get(seed) is not None]
            paired[seen, head, dim][title] = (*interval(diffs), len(diffs))
    return paired


def table(cells, caption, head_label="head"):
    """Cells as Markdown: a row a cell, each figure as mean ± half-width of its 95% interval."""
    lines = [caption, "", f"| seen classes | {head_label} | dim | seeds | "
             + " | ".join(title for title, _, _ in METRICS) + " |", "|---" * (4 + len(METRICS)) + "|"]
    sign = "" if head_label == "head" else "+"  # differences show theirs
    for (seen, head, dim), figures in cells.items():
        seeds = max(n for _, _, n in figures.values())
        shown = [f"{mean:{sign}.3f} ± {half:.3f}"
                 if not math.isnan(half) else f"{mean:.3f}" if not math.isnan(mean) else "-"
                 for mean, half, _ in figures.values()]
        lines.append(f"| {seen} | `{head}` | {dim} | {seeds} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def report(values, args):
    """The two tables: each head's figures, then each head's difference from the first head's."""
    held_out = f"held out: classes {args.unseen_classes[0]}-{args.unseen_classes[-1]}"
    baseline = args.heads[0]
    text = table(summarise(values), f"{args.dataset}, {args.epochs} epochs, {held_out}; mean ± 95% interval "
                 "over the seeds")
    if len(args.heads) > 1:
        text += "\n" + table(differences(values, baseline), f"Each head minus `{baseline}`, seed by seed: mean "
                              "± 95% interval of the differences (an interval that holds 0 shows no difference)",
                              head_label=f"head − {baseline.removeprefix('vgg8_')}")
    return text


def figure(cells, args, path):
    """A panel a number of seen classes (rows) and a metric (columns): each head's mean against the
    embedding size, with its 95% interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.seen), len(METRICS), figsize=(3.6 * len(METRICS), 2.9 * len(args.seen) + 0.6),
                             dpi=100, squeeze=False, sharex=True)
    for row, seen in enumerate(args.seen):
        for column, (title, _, better) in enumerate(METRICS):
            ax = axes[row, column]
            for index, head in enumerate(args.heads):
                means, halves = (np.array([cells[seen, head, dim][title][k] for dim in args.dims]) for k in (0, 1))
                offset = 1 + 0.04 * (index - (len(args.heads) - 1) / 2)  # side by side, the bars apart
                ax.errorbar(np.array(args.dims) * offset, means, yerr=np.nan_to_num(halves),
                            marker="o", markersize=3, capsize=2, linewidth=1.2, label=head.removeprefix("vgg8_"))
            ax.set_xscale("log", base=2)
            if title.endswith("CDNV"):
                ax.set_yscale("log")
            ax.set_xticks(args.dims, [str(d) for d in args.dims])
            ax.set_title(f"{title}\n({better} is better), {seen} seen classes", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(args.seen) - 1:
                ax.set_xlabel("embedding size")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{args.dataset}: classes {args.unseen_classes[0]}-{args.unseen_classes[-1]} never seen in "
                 f"training; {len(args.seeds)} seeds, {args.epochs} epochs: mean and 95% interval", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None, backend=None):
    args = parse_args(argv)
    failed = train_all(grid(args), args.epochs, backend or make_backend(args))
    values = collect(args)
    text = report(values, args)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "margin_sweep.md"), "w") as f:
        f.write(text)
    print(text)
    figure(summarise(values), args, args.figure)
    print(f"wrote {os.path.join(args.out_dir, 'margin_sweep.md')}, {args.figure}")
    if failed:
        raise SystemExit(f"error: {len(failed)} runs failed, their train.log says why: {', '.join(failed)}")
    return 0


def cuda_available():
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
