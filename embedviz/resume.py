"""--resume: continuing a run from what train.py saved of its last completed epoch (M_last.pth), refused
in one line where the stopped run was made otherwise than this one, so that a resumed run ends with
the numbers of one never stopped, bit for bit."""

import numpy as np
import torch

from embedviz import run_files
from embedviz.devices import PrecisionError, choose_precision, hardware, make_scaler
from embedviz.old_formats import head_config

MUST_MATCH = ("model", "seed", "batch_size", "lr", "train_points", "embedding_dim", "unseen_classes", "image_size",
              "classes")  # the options of a run that its files depend on
KEYS = ("model_state", "head", "options", "epoch", "optimizer_state", "scaler_state", "rng_states", "history",
        "best_val_loss", "dataset", "precision")


def set_rng_states(states, generator, device):
    torch.set_rng_state(states["torch"])
    generator.set_state(states["shuffle"])
    if device.type == "cuda" and states["cuda"] is not None:  # None: the run so far was on the CPU
        torch.cuda.set_rng_state(states["cuda"], device)


def restore(args, meta, model, optimizer, generator, device, precision, points_labels):
    """Loads the last completed epoch of the run in --out-dir into model, optimizer and generator; returns
    (first epoch to train, best val loss so far, precision, gradient scaler). --precision auto goes on
    in the run's own precision where this device runs it. Raises RunFileError, naming the difference,
    for a run made with other options, head, dataset or precision, or whose files do not agree."""
    paths = run_files.run_paths(args.out_dir, args.model)
    state = run_files.load_checkpoint(paths["resume"], f"start one with: python train.py --model {args.model}")
    if not isinstance(state, dict):
        raise run_files.RunFileError(f"{paths['resume']} is not a checkpoint to resume from")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise run_files.RunFileError(f"{paths['resume']} lacks {', '.join(missing)}: it was written by another "
                                     "version of train.py; start the run again without --resume")
    if args.precision == "auto" and state["precision"] != precision:
        try:
            precision = choose_precision(state["precision"], *hardware(device))
            meta["precision"] = precision
        except PrecisionError:
            pass  # refused below, the difference named
    saved = {"image_size": 28, "classes": [], **state["options"]}  # runs made before these options had their defaults
    differences = [f"--{key.replace('_', '-')} {describe(saved.get(key))} (now {describe(getattr(args, key))})"
                   for key in MUST_MATCH if saved.get(key) != getattr(args, key)]
    for name, then, now in (("dataset", state["dataset"], meta["dataset"]),
                            ("classes", state.get("class_names", meta["class_names"]), meta["class_names"]),
                            ("head", head_config(state["head"], type(model.head).__name__), model.head.config()),
                            ("precision", state["precision"], precision)):
        if then != now:
            differences.append(f"{name} {describe(then)} (now {describe(now)})")
    if differences:
        raise run_files.RunFileError(f"cannot resume: the run in {args.out_dir} was made with "
                                     f"{', '.join(differences)}")
    if state["epoch"] >= args.epochs:
        raise run_files.RunFileError(f"nothing to resume: the run already has {state['epoch']} epochs; "
                                     "raise --epochs to train longer")
    embeddings = run_files.load_npy(paths["embeddings"], mmap=True)  # its shape: the frames stay on disk
    labels = run_files.load_npy(paths["labels"])
    first_epoch, points_shape = state["epoch"] + 1, (len(points_labels), args.embedding_dim)
    if embeddings.ndim != 3 or embeddings.shape[1:] != points_shape or len(embeddings) < first_epoch:
        raise run_files.RunFileError(
            f"cannot resume: {paths['embeddings']} has shape {embeddings.shape}, but this run needs "
            f"({first_epoch} or more, {', '.join(map(str, points_shape))})")
    if not np.array_equal(labels, points_labels.numpy()):
        raise run_files.RunFileError(f"cannot resume: {paths['labels']} does not hold the labels of this "
                                     "run's points")
    scaler = make_scaler(device, precision)
    model.load_state_dict(state["model_state"])
    optimizer.load_state_dict(state["optimizer_state"])
    for group in optimizer.param_groups:  # a state saved by a run whose step was a CUDA graph goes on eagerly
        group["capturable"] = False      # (cuda_graph.GraphedStep sets it again where the step is captured)
    scaler.load_state_dict(state["scaler_state"])
    set_rng_states(state["rng_states"], generator, device)
    meta["history"] = state["history"]
    return first_epoch, state["best_val_loss"], precision, scaler


def describe(value):
    """{"class": "ArcFace", "s": 15.0} -> "class=ArcFace s=15.0", [6, 7] -> "6 7" ([]: "none"); else as it is."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)
