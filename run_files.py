"""The on-disk format of a training run, written by train.py and read by visualization.py.

For a model M in the output folder:
    all_M_embeddings.npy  float32 (epochs_completed + 1, n, embedding_dim); frame 0 is the untrained network
    all_M_labels.npy      int64 (n,); rows [0, n_train) are training samples, [n_train, n) validation
    all_M_meta.json       model, dataset, splits, epochs_completed, options and per-epoch history
    M_best.pth            the weights with the lowest val loss (torch.load(..., weights_only=True))
Every file is replaced atomically (written beside, then renamed), so a run stopped at any
moment leaves files that load. The meta file is written last: should a run stop between two
renames, the embeddings hold one frame more than the meta describes, and load_run drops it.
"""

import json
import os

import numpy as np


class RunFileError(Exception):
    """A run's files are missing or do not agree; the message says which and why."""


def run_paths(out_dir, model_name):
    return {
        "embeddings": os.path.join(out_dir, f"all_{model_name}_embeddings.npy"),
        "labels": os.path.join(out_dir, f"all_{model_name}_labels.npy"),
        "meta": os.path.join(out_dir, f"all_{model_name}_meta.json"),
        "checkpoint": os.path.join(out_dir, f"{model_name}_best.pth"),
    }


def atomic_write(path, write):
    """Calls write(file) on a temporary file beside `path`, then renames it over `path`."""
    tmp_path = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp_path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def save_run(out_dir, model_name, embeddings, labels, meta):
    paths = run_paths(out_dir, model_name)
    atomic_write(paths["embeddings"], lambda f: np.save(f, np.ascontiguousarray(embeddings, np.float32)))
    atomic_write(paths["labels"], lambda f: np.save(f, np.ascontiguousarray(labels, np.int64)))
    atomic_write(paths["meta"], lambda f: f.write(json.dumps(meta, indent=1).encode()))


def save_checkpoint(out_dir, model_name, checkpoint):
    import torch  # here, so that drawing a run does not import torch

    atomic_write(run_paths(out_dir, model_name)["checkpoint"], lambda f: torch.save(checkpoint, f))


def check_writable(out_dir):
    """Fails now, not after an hour of training, when results could not be saved."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write(os.path.join(out_dir, ".write_test"), lambda f: f.write(b"ok"))
        os.remove(os.path.join(out_dir, ".write_test"))
    except OSError as error:
        raise RunFileError(f"cannot write to output folder {out_dir}: {error.strerror or error}") from None


def load_run(out_dir, model_name):
    """Returns (embeddings, labels, meta) of a run, checked against each other."""
    paths = run_paths(out_dir, model_name)
    missing = [path for key, path in paths.items() if key != "checkpoint" and not os.path.exists(path)]
    if missing:
        runs = sorted(name[len("all_"):-len("_meta.json")] for name in os.listdir(out_dir)
                      if name.startswith("all_") and name.endswith("_meta.json")) if os.path.isdir(out_dir) else []
        found = f"; runs there: {', '.join(runs)}" if runs else ""
        raise RunFileError(f"no run of {model_name} in {out_dir} ({missing[0]} is missing){found}; make one with: "
                           f"python train.py --model {model_name} --out-dir {out_dir}")
    embeddings = load_npy(paths["embeddings"])
    labels = load_npy(paths["labels"])
    try:
        with open(paths["meta"]) as f:
            meta = json.load(f)
        n_frames = meta["epochs_completed"] + 1
        n_train, n = meta["splits"]["train"][1], meta["splits"]["val"][1]
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise RunFileError(f"{paths['meta']} is not a valid run description ({type(error).__name__}: {error})") from None
    if embeddings.ndim != 3 or not np.issubdtype(embeddings.dtype, np.floating):
        raise RunFileError(f"{paths['embeddings']} has shape {embeddings.shape} and dtype {embeddings.dtype}; "
                           "expected float (epochs + 1, n, dim)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise RunFileError(f"{paths['labels']} has shape {labels.shape} and dtype {labels.dtype}; expected int (n,)")
    if embeddings.shape[1] != len(labels):
        raise RunFileError(f"{paths['embeddings']} holds {embeddings.shape[1]} points per epoch "
                           f"but {paths['labels']} holds {len(labels)} labels")
    if len(labels) != n or not 0 <= n_train <= n:
        raise RunFileError(f"{paths['meta']} describes {n} points, the arrays hold {len(labels)}")
    if len(embeddings) < n_frames:
        raise RunFileError(f"{paths['meta']} says {meta['epochs_completed']} epochs were completed "
                           f"but {paths['embeddings']} holds only {len(embeddings)} frames")
    return embeddings[:n_frames], labels, meta


def load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise RunFileError(f"{path} holds pickled Python objects, which this project does not load "
                               "(loading a pickle can run code)") from None
        raise RunFileError(f"{path} is not a valid .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise RunFileError(f"{path} cannot be read ({error})") from None
