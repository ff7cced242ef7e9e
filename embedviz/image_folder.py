"""Any labelled image folder, in torchvision's ImageFolder layout, as in-memory uint8 tensors:

    PATH/<class>/<image>                  split 80/20 per class, seeded
    PATH/train/<class>/<image>, PATH/val/<class>/<image>     split as given

Images are decoded in parallel worker processes, resized to image_size x image_size (squeezed to
a square, not cropped), and kept as one uint8 file beside the data, which the next run reads at
once; the file records every image's path, size and modification time, and a change to any of
them makes it stale. Grey images give 1 channel; if any image has colour, all have 3.
"""

import contextlib
import hashlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

MIN_CLASSES, MAX_CLASSES = 2, 1000
VAL_FRACTION = 0.2  # of each class, when the folder has no train/ and val/
CACHE_FILE = ".vgg8-cache-{size}px.npz"  # beside the data, one per image size
CHUNK = 512  # images a worker decodes at a time


class ImageFolderError(Exception):
    """A folder that cannot be read as labelled images; the message says what to change."""


def load_image_folder(root, image_size, seed, warn=print, workers=None):
    """(train images, train labels, val images, val labels, class names, how it was split) as numpy
    arrays: images (N, S, S) uint8 for grey folders, (N, S, S, 3) for colour ones."""
    if not os.path.isdir(root):
        raise ImageFolderError(f"{root} {'is not a folder' if os.path.exists(root) else 'does not exist'}; "
                               "--data-dir names the folder of class folders")
    splits = {"train": os.path.join(root, "train"), "val": os.path.join(root, "val")}
    given = all(os.path.isdir(path) for path in splits.values())
    class_names = class_folders(splits["train"] if given else root)
    if given and class_folders(splits["val"]) != class_names:
        raise ImageFolderError(f"{splits['val']} and {splits['train']} must hold the same class folders")
    files = [(split, path, label) for split, folder in (splits.items() if given else [("all", root)])
             for label, name in enumerate(class_names) for path in image_files(os.path.join(folder, name))]
    images, keep = cached_or_decoded(root, [path for _, path, _ in files], image_size, warn, workers)
    skipped = [path for (_, path, _), ok in zip(files, keep) if not ok]
    if skipped:  # stray files (notes, thumbnails) are common in real folders: one warning, not a refusal
        warn(f"warning: skipped {len(skipped):,} file(s) that are not images, e.g. {skipped[0]}")
    files, images = [file for file, ok in zip(files, keep) if ok], images[keep]
    labels = np.array([label for _, _, label in files], np.int64)
    empty = [name for label, name in enumerate(class_names) if not (labels == label).any()]
    if empty:
        raise ImageFolderError(f"class folder {os.path.join(root, empty[0])} holds no image")
    if given:
        train = np.array([split == "train" for split, _, _ in files])
        how = "its train/ and val/ folders"
    else:
        train = stratified_train_mask(labels, seed)
        how = f"a class-stratified {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} split seeded with {seed}"
    return images[train], labels[train], images[~train], labels[~train], class_names, how


def class_folders(folder):
    """The sorted names of the sub-folders of folder: one per class."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise ImageFolderError(f"cannot read {folder} ({error.strerror or error})") from None
    if len(names) < MIN_CLASSES:
        raise ImageFolderError(f"{folder} holds {len(names)} class folder(s); it needs at least {MIN_CLASSES}, "
                               "one per class, each holding that class's images")
    if len(names) > MAX_CLASSES:
        raise ImageFolderError(f"{folder} holds {len(names)} class folders; at most {MAX_CLASSES} are drawn")
    return names


def image_files(folder):
    """Every visible file under folder, sorted."""
    try:
        return sorted(os.path.join(base, name) for base, dirs, names in os.walk(folder, onerror=raise_error)
                      for name in names if not name.startswith("."))
    except OSError as error:
        raise ImageFolderError(f"cannot read {folder} ({error.strerror or error})") from None


def raise_error(error):
    raise error


def stratified_train_mask(labels, seed):
    """True for the training rows: a seeded VAL_FRACTION of each class goes to validation (at least
    one image of a class of two or more)."""
    rng = np.random.default_rng(seed)
    train = np.ones(len(labels), bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(round(VAL_FRACTION * len(rows)), 1) if len(rows) > 1 else 0
        train[rows[:n_val]] = False
    return train


def fingerprint(paths, image_size):
    """Changes when any image is added, removed, renamed, rewritten or touched, or the size changes."""
    digest = hashlib.sha256(f"{image_size}\n".encode())
    for path in paths:
        status = os.stat(path)
        digest.update(os.fsencode(path) + f"\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_or_decoded(root, paths, image_size, warn, workers):
    """(images, mask of the paths that are images): from the cache when it is current, else decoded."""
    cache = os.path.join(root, CACHE_FILE.format(size=image_size))
    key = fingerprint(paths, image_size)
    try:
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return saved["images"], saved["keep"]
    except (OSError, KeyError, ValueError):  # none yet, or unreadable: decode again
        pass
    images, keep = decode_all(paths, image_size, workers)
    tmp = f"{cache}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, images=images, keep=keep, key=np.array(key))
        os.replace(tmp, cache)
    except OSError as error:
        warn(f"warning: cannot keep the decoded images in {cache} ({error.strerror or error}); "
             "the next run decodes them again")
    finally:  # also when stopped half way
        if os.path.exists(tmp):
            os.remove(tmp)
    return images, keep


def decode_all(paths, image_size, workers=None):
    """(N, S, S) uint8 if every image is grey, else (N, S, S, 3); and the mask of the paths decoded.
    Chunks of paths are decoded in worker processes: small images cost more in Python than in the
    decoder, so threads would wait on each other."""
    chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    rgb = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
    keep = np.zeros(len(paths), bool)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(
                "fork" if sys.platform == "linux" else "spawn")))
            decoded = pool.map(decode_chunk, chunks, [image_size] * len(chunks))
        else:
            decoded = (decode_chunk(chunk, image_size) for chunk in chunks)
        progress = stack.enter_context(tqdm(total=len(paths), desc="decoding images", unit="image", leave=False,
                                            disable=len(paths) < 1000, file=sys.stderr))
        for index, (images, ok) in enumerate(decoded):
            rgb[index * CHUNK:index * CHUNK + len(ok)], keep[index * CHUNK:index * CHUNK + len(ok)] = images, ok
            progress.update(len(ok))
    grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return (np.ascontiguousarray(rgb[..., 0]) if grey else rgb), keep


def decode_chunk(paths, image_size):
    """(len(paths), S, S, 3) uint8 images, zeros where a file is not an image, and the mask of those that are."""
    images = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    for row, path in enumerate(paths):
        image = decode(path, image_size)
        if image is not None:
            images[row], ok[row] = image, True
    return images, ok


def decode(path, image_size):
    """One image as (S, S, 3) uint8, or None when the file is not an image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Pillow reports a damaged PNG chunk as a SyntaxError
        return None
