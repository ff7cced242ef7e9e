"""Prints the last epoch's figures of finished runs as a Markdown table, one row per model: the
mean and standard deviation over the run folders given, one folder per seed.

    python summary.py data/open_set
    python summary.py data/open_set/seed0 data/open_set/seed1 data/open_set/seed2
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

from embedviz.curves import TAR_AT_1E3, value_at

COLUMNS = [  # (heading, path of keys into the last history entry, scale, unit, decimals)
    ("closed-set accuracy", ("val_accuracy",), 100, "%", 1),
    ("seen TAR @ FAR 1e-3", ("verification", "seen", *TAR_AT_1E3), 100, "%", 1),
    ("unseen TAR @ FAR 1e-3", ("verification", "unseen", *TAR_AT_1E3), 100, "%", 1),
    ("unseen EER", ("verification", "unseen", "eer"), 100, "%", 1),
    ("open-set AUROC", ("open_set_auroc",), 1, "", 3),
    ("unseen nearest-class-mean accuracy", ("unseen_ncm_accuracy",), 100, "%", 1),
]
MUST_MATCH = ("dataset", "class_names", "seen_classes", "unseen_classes")  # runs averaged together were made alike


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="summary.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders holding finished runs (train.py --out-dir)")
    p.add_argument("--model", nargs="+", help="the rows, in this order (default: every run found)")
    return p.parse_args(argv)


def load_metas(run_dirs, models):
    """{model: [meta of each folder]}; every model must have a run in every folder."""
    if models is None:
        found = {os.path.basename(path)[len("all_"):-len("_meta.json")]
                 for run_dir in run_dirs for path in glob.glob(os.path.join(run_dir, "all_*_meta.json"))}
        if not found:
            raise SystemExit(f"error: no runs (all_*_meta.json) in {', '.join(map(str, run_dirs))}")
        models = sorted(found)
    metas = {}
    for model in models:
        metas[model] = []
        for run_dir in run_dirs:
            path = os.path.join(run_dir, f"all_{model}_meta.json")
            try:
                with open(path) as f:
                    metas[model].append(json.load(f))
            except (OSError, ValueError) as error:
                raise SystemExit(f"error: cannot read the run {path} ({getattr(error, 'strerror', None) or error})")
    first = metas[models[0]][0]
    for model, runs in metas.items():
        for meta in runs:
            for key in MUST_MATCH:
                if meta.get(key) != first.get(key):
                    raise SystemExit(f"error: {model}'s run (seed {meta['options']['seed']}) has {key} "
                                     f"{meta.get(key)}, another {first.get(key)}: runs averaged together must match")
    return metas


def cell(values, scale, unit, decimals):
    """'mean ± standard deviation' of the values given, '-' when none is recorded."""
    values = np.array([v for v in values if v is not None], float) * scale
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}{unit}"
    return f"{values.mean():.{decimals}f} ± {values.std(ddof=1):.{decimals}f}{unit}"


def table(metas):
    """The Markdown table, and a line saying what its figures are."""
    runs = next(iter(metas.values()))
    seeds = sorted({meta["options"]["seed"] for runs in metas.values() for meta in runs})
    epochs = sorted({meta["history"][-1]["epoch"] for runs in metas.values() for meta in runs})
    spread = "mean ± standard deviation over" if len(runs) > 1 else "one run:"
    lines = [f"{runs[0]['dataset']}, last epoch ({', '.join(map(str, epochs))}), {spread} "
             f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}; unseen classes "
             f"{runs[0].get('unseen_classes') or 'none'}",
             "",
             "| head | " + " | ".join(heading for heading, *_ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for model, runs in metas.items():
        cells = [cell([value_at(meta["history"][-1], path) for meta in runs], *format_)
                 for _, path, *format_ in COLUMNS]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(table(load_metas(args.run_dirs, args.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
