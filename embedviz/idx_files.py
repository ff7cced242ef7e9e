"""torchvision's MNIST-shaped datasets (MNIST, Fashion-MNIST, KMNIST, EMNIST) from their IDX files, and
what guards reading them: archives recompressed elsewhere, damaged files named with their fault,
and downloads that fail or are stopped half way leaving nothing behind."""

import contextlib
import functools
import gzip
import io
import math
import os
import shutil
import struct
import zlib

from embedviz.datasets import DATASET_CLASSES, TORCHVISION_DATASETS, Dataset, DatasetError


class DatasetMissing(Exception):
    """Files absent and not downloadable; load_dataset turns it into a fallback or a DatasetError."""

    def __init__(self, raw_folder, reason, files):
        super().__init__(reason)
        self.raw_folder, self.reason, self.files = raw_folder, reason, files


def load_torchvision(name, data_dir):
    """Official train split for training, official test split for validation, in the torchvision layout."""
    dataset_class = torchvision_dataset(name)
    raw_folder = os.path.join(data_dir, TORCHVISION_DATASETS[name], "raw")
    files = [os.path.join(raw_folder, file) for file in idx_files(name, dataset_class)]
    unpack_archives(files)
    check_idx_files(files, DATASET_CLASSES[name])
    splits = {}
    for train in (True, False):
        try:  # no network access when the files are already there
            splits[train] = dataset_class(data_dir, train=train, download=False)
        except RuntimeError:
            splits[train] = download(dataset_class, data_dir, train, raw_folder,
                                     ", ".join(f"{os.path.basename(file)}.gz" for file in files))
    class_names = [str(i) for i in range(10)] if name == "mnist" else list(splits[True].classes)
    images = {train: split.data.transpose(1, 2).contiguous() if name == "emnist" else split.data  # EMNIST's are
              for train, split in splits.items()}  # stored transposed
    return Dataset(
        train_images=images[True], train_labels=splits[True].targets.long(),
        val_images=images[False], val_labels=splits[False].targets.long(),
        name=name, source=f"IDX files in {raw_folder}", class_names=class_names,
    )


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


def download(dataset_class, data_dir, train, raw_folder, files):
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
        raise DatasetMissing(raw_folder, reasons[-1] if reasons else str(error).splitlines()[0], files) from None
    finally:
        if not done and os.path.isdir(raw_folder):
            for name in set(os.listdir(raw_folder)) - present:
                if os.path.isfile(path := os.path.join(raw_folder, name)):
                    os.remove(path)
