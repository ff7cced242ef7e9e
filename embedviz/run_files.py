"""The on-disk format of a training run, written by train.py and read by visualization.py.

For a model M in the output folder:
    all_M_embeddings.npy  float32 (epochs_completed + 1, n, embedding_dim); frame 0 is the untrained network
    all_M_labels.npy      int64 (n,); the meta file's splits give the rows of the training sample, the
                          validation images and, when classes were held out of training, theirs ("unseen")
    all_M_meta.json       model, dataset, splits, epochs_completed, options and per-epoch history
    M_best.pth            the network with the lowest val loss so far, written when the val loss improves:
                          weights, model name, head configuration, embedding size, number of classes,
                          options, epoch and val loss, all on the CPU (models.load_model rebuilds it)
    M_last.pth            the same of the last completed epoch, with what resuming needs besides:
                          optimizer, gradient scaler, random states, history
The embeddings file grows by one frame an epoch, each frame written once (append_frame): the frame
goes after the last, then the header's count of frames is raised, one write of its fixed 128 bytes;
np.load reads as many frames as the header counts. Every other file is replaced atomically (written
beside, then renamed). So a run stopped at any moment leaves files that load. The meta file is
written last: should a run stop before it, the embeddings hold one frame more than the meta
describes, and load_run drops it. M_last.pth is written just before the meta file and is what
--resume trusts.
"""

import json
import os
import tempfile
import warnings

import numpy as np


class RunFileError(Exception):
    """A run's files are missing or do not agree; the message says which and why."""


def run_paths(out_dir, model_name):
    return {
        "embeddings": os.path.join(out_dir, f"all_{model_name}_embeddings.npy"),
        "labels": os.path.join(out_dir, f"all_{model_name}_labels.npy"),
        "meta": os.path.join(out_dir, f"all_{model_name}_meta.json"),
        "checkpoint": os.path.join(out_dir, f"{model_name}_best.pth"),
        "resume": os.path.join(out_dir, f"{model_name}_last.pth"),
        "images": os.path.join(out_dir, f"all_{model_name}_images.npy"),  # uint8, one image per saved point
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


NPY_HEADER_BYTES = 128  # the embeddings file's header, a fixed size, so that its count of frames is rewritten in place


def npy_header(shape):
    """An .npy (version 1.0) header of float32 C-ordered `shape`, padded to NPY_HEADER_BYTES."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    text = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"  # magic (6), version (2), length (2), then the text
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def append_frame(path, frame, epoch):
    """Writes frame (n, dim) as frame `epoch` of the embeddings file: a new file for epoch 0, else after
    frame epoch - 1, which the file must hold (frames beyond it, of a run stopped before its meta
    file was written, are cut). A file that is not one of these raises RunFileError."""
    frame = np.ascontiguousarray(frame, np.float32)
    if epoch == 0:
        atomic_write(path, lambda f: f.write(npy_header((1, *frame.shape)) + frame.tobytes()))
        return
    with open(path, "r+b") as f:
        frames, n, dim = embeddings_shape(f, path)
        if (n, dim) != frame.shape or frames < epoch:
            raise RunFileError(f"{path} holds {frames} frames of ({n}, {dim}), not the frames 0-{epoch - 1} of "
                               f"{frame.shape} that epoch {epoch} follows")
        f.truncate(NPY_HEADER_BYTES + epoch * frame.nbytes)
        f.seek(0, os.SEEK_END)
        f.write(frame.tobytes())
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        f.write(npy_header((epoch + 1, *frame.shape)))
        f.flush()
        os.fsync(f.fileno())


def embeddings_shape(f, path):
    """(frames, n, dim) that an embeddings file's header counts; RunFileError for another kind of file."""
    try:
        version = np.lib.format.read_magic(f)
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f) if version == (1, 0) else ((), 0, 0)
    except ValueError as error:
        raise RunFileError(f"{path} is not a valid .npy file ({error})") from None
    if f.tell() != NPY_HEADER_BYTES or dtype != np.float32 or fortran_order or len(shape) != 3:
        raise RunFileError(f"{path} holds {shape} {dtype}, not the float32 frames of this project's embeddings")
    return shape


def save_run(out_dir, model_name, frame, epoch, labels, meta, resume_state):
    """The epoch's frame of embeddings and the labels first, then the state to resume from, then the meta file."""
    paths = run_paths(out_dir, model_name)
    append_frame(paths["embeddings"], frame, epoch)
    atomic_write(paths["labels"], lambda f: np.save(f, np.ascontiguousarray(labels, np.int64)))
    save_checkpoint(out_dir, model_name, "resume", resume_state)
    atomic_write(paths["meta"], lambda f: f.write(json.dumps(meta, indent=1).encode()))


def save_images(out_dir, model_name, get_images, replace):
    """The images of the saved points, in their rows' order: what a point shows. Written when a run
    starts (replace: a new run over an old one's files), and by a resumed run that lacks it;
    get_images() returns them, called only then (on a GPU, they are copied back only then)."""
    path = run_paths(out_dir, model_name)["images"]
    if replace or not os.path.exists(path):
        atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(get_images(), np.uint8)))


def load_images(out_dir, model_name, n_points):
    """The images behind a run's points, or None for a run made before they were saved."""
    path = run_paths(out_dir, model_name)["images"]
    if not os.path.exists(path):
        return None
    images = load_npy(path)
    if images.dtype != np.uint8 or len(images) != n_points or images.ndim not in (3, 4):
        raise RunFileError(f"{path} holds {images.shape} {images.dtype}, not the {n_points} uint8 images "
                           "of the run's points; delete it and train again")
    return images


def save_checkpoint(out_dir, model_name, kind, checkpoint):
    """kind: "checkpoint" (the best weights) or "resume" (everything needed to continue). Every tensor is
    saved on the CPU, so that it loads on a machine without the device it trained on."""
    import torch  # here, so that drawing a run does not import torch

    atomic_write(run_paths(out_dir, model_name)[kind], lambda f: torch.save(on_cpu(checkpoint), f))


def on_cpu(state):
    """Tensors copied to the CPU, in dicts, lists and tuples alike."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(value) for value in state)
    return state


def load_checkpoint(path, hint):
    """A checkpoint read with weights_only=True: tensors and plain containers, never arbitrary pickles."""
    import torch

    if not os.path.exists(path):
        raise RunFileError(f"no checkpoint {path}; {hint}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a damaged or unsafe file
        raise RunFileError(f"{path} cannot be read as a checkpoint ({type(error).__name__})") from None


def check_writable(out_dir):
    """Fails now, not after an hour of training, when results could not be saved."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):  # a name of its own: runs started together check side by side
            pass
    except OSError as error:
        raise RunFileError(f"cannot write to output folder {out_dir}: {error.strerror or error}") from None


def check_room(out_dir, model_name, frame_bytes, frames, other_bytes):
    """Fails now, not at epoch 70, when the run's files will not fit on the disk: `frames` frames of
    embeddings of frame_bytes each, and other_bytes more (the images, the checkpoints). A run's
    files of an earlier run are counted as free: they are replaced."""
    import shutil

    paths = run_paths(out_dir, model_name)
    replaced = sum(os.path.getsize(path) for key in ("embeddings", "images") if os.path.exists(path := paths[key]))
    need, free = frames * frame_bytes + other_bytes, shutil.disk_usage(out_dir).free + replaced
    if need > free:
        raise RunFileError(f"the run needs {size_text(need)} in {out_dir} ({frames} epochs of {size_text(frame_bytes)} "
                           f"of embeddings, and the images and checkpoints), and {size_text(free)} are free; save "
                           "fewer --train-points or --epochs, or choose another --out-dir")


def size_text(n_bytes):
    """1536 -> "1.5 KiB"; the unit that keeps the number below 1024."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


def load_run(out_dir, model_name):
    """Returns (embeddings, labels, meta) of a run, checked against each other."""
    paths = run_paths(out_dir, model_name)
    missing = [path for key in ("embeddings", "labels") if not os.path.exists(path := paths[key])]
    if missing:
        runs = sorted(name[len("all_"):-len("_meta.json")] for name in os.listdir(out_dir)
                      if name.startswith("all_") and name.endswith("_meta.json")) if os.path.isdir(out_dir) else []
        found = f"; runs there: {', '.join(runs)}" if runs else ""
        raise RunFileError(f"no run of {model_name} in {out_dir} ({missing[0]} is missing){found}; make one with: "
                           f"python train.py --model {model_name} --out-dir {out_dir}")
    embeddings = load_npy(paths["embeddings"], mmap=True)  # the seed repository's pickles stop here, before the meta
    labels = load_npy(paths["labels"])
    check_arrays(embeddings, labels, paths["embeddings"], paths["labels"])
    if not os.path.exists(paths["meta"]):
        raise RunFileError(f"{paths['meta']} is missing; make the run again with: "
                           f"python train.py --model {model_name} --out-dir {out_dir}")
    try:
        with open(paths["meta"], "rb") as f:
            meta = json.loads(f.read())
        # every field that drawing reads is read here, so that a damaged file fails with its name
        n_frames = int(meta["epochs_completed"]) + 1
        (train_start, n_train), (val_start, val_end) = ([int(i) for i in meta["splits"][split]]
                                                        for split in ("train", "val"))
        unseen_start, n = [int(i) for i in meta["splits"].get("unseen", (val_end, val_end))]
        history = [(int(entry["epoch"]), float(entry["val_accuracy"])) for entry in meta["history"][:n_frames]]
        class_names = [str(name) for name in meta["class_names"]]
        int(meta["options"]["epochs"]), str(meta["model"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise RunFileError(f"{paths['meta']} is not a valid run description "
                           f"({type(error).__name__}: {error})") from None
    if (len(labels) != n or train_start != 0 or val_start != n_train or unseen_start != val_end
            or not 0 <= n_train <= val_end <= n):
        raise RunFileError(f"{paths['meta']} describes {n} points split at {n_train}, "
                           f"the arrays hold {len(labels)}")
    if n_frames < 1 or len(embeddings) < n_frames or len(history) < n_frames:
        raise RunFileError(f"{paths['meta']} says {n_frames - 1} epochs were completed but "
                           f"{paths['embeddings']} holds {len(embeddings)} frames and the history {len(history)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise RunFileError(f"{paths['labels']} holds labels outside 0-{len(class_names) - 1}, "
                           f"the classes that {paths['meta']} names")
    return embeddings[:n_frames], labels, meta


def drawn_rows(meta, split):
    """The rows that a picture of split ("train" or "val") shows: the validation picture also shows
    the classes held out of training, whose rows follow the validation rows."""
    start, stop = meta["splits"][split]
    if split == "val" and "unseen" in meta["splits"]:
        stop = meta["splits"]["unseen"][1]
    return start, stop


def check_arrays(embeddings, labels, embeddings_path, labels_path):
    if embeddings.ndim != 3 or not np.issubdtype(embeddings.dtype, np.floating) or len(embeddings) == 0:
        raise RunFileError(f"{embeddings_path} has shape {embeddings.shape} and dtype {embeddings.dtype}; "
                           "expected float (epochs + 1, n, dim)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise RunFileError(f"{labels_path} has shape {labels.shape} and dtype {labels.dtype}; expected int (n,)")
    if embeddings.shape[1] != len(labels):
        raise RunFileError(f"{embeddings_path} holds {embeddings.shape[1]} points per epoch "
                           f"but {labels_path} holds {len(labels)} labels")


class PickledFile(RunFileError):
    """A .npy file that holds pickled objects (the seed repository's layout)."""


def load_npy(path, mmap=False):
    """The array of an .npy file; mmap: left on disk, read where it is used (a large run's embeddings)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as error:
        if "pickle" in str(error) or "Python objects" in str(error):  # numpy's words, loaded or memory-mapped
            raise PickledFile(f"{path} holds pickled Python objects, which are not loaded by default because "
                              "loading a pickle can run code; --allow-pickle reads it if you trust the file") from None
        raise RunFileError(f"{path} is not a valid .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise RunFileError(f"{path} cannot be read ({error})") from None
