"""--dataset glyphs: characters drawn from matplotlib's fonts, the same on every machine, built in
seconds and cached; many classes, some of them held out."""

import numpy as np
import pytest

import train
from embedviz import glyphs
from embedviz.datasets import load_dataset


def test_the_glyph_set_has_its_classes_once_each_and_enough_images():
    assert len(glyphs.CLASSES) >= 120 and len(set(glyphs.CLASSES)) == len(glyphs.CLASSES)
    assert not {"Α", "А", "Β", "В", "О", "Ο", "Р", "Ρ", "Х", "Χ"} & set(glyphs.CLASSES)  # Greek and Cyrillic Latin
    assert glyphs.IMAGES_PER_CLASS >= 300 and 0 < glyphs.TRAIN_PER_CLASS < glyphs.IMAGES_PER_CLASS
    assert len(glyphs.font_paths()) == len(glyphs.FONTS)  # every font this matplotlib ships


def test_a_build_is_the_same_whichever_processes_draw_it():
    paths = list(glyphs.font_paths().values())
    one = glyphs.build(paths, workers=1, images_per_class=12, train_per_class=10)
    two = glyphs.build(paths, workers=2, images_per_class=12, train_per_class=10)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    train_images, train_labels, val_images, val_labels = one
    assert train_images.shape == (10 * len(glyphs.CLASSES), 28, 28) and train_images.dtype == np.uint8
    assert np.bincount(val_labels).tolist() == [2] * len(glyphs.CLASSES)  # a fixed split in every class
    assert train_images.reshape(len(glyphs.CLASSES), 10, -1).max(2).min() > 100  # every image draws its character
    assert len({image.tobytes() for image in train_images}) == len(train_images)  # each rendering jittered apart


@pytest.fixture
def small_glyphs(monkeypatch):
    monkeypatch.setattr(glyphs, "IMAGES_PER_CLASS", 10)
    monkeypatch.setattr(glyphs, "TRAIN_PER_CLASS", 8)


def test_glyphs_are_cached_and_a_run_holds_out_a_range_of_them(small_glyphs, tmp_path, monkeypatch):
    data = load_dataset("glyphs", str(tmp_path), seed=0)
    assert len(data.class_names) == len(glyphs.CLASSES) and len(data.train_labels) == 8 * len(glyphs.CLASSES)
    assert data.details["fonts"] == sorted(glyphs.FONTS) and data.details["images_per_class"] == 10
    (cache,) = (tmp_path / "glyphs").iterdir()
    monkeypatch.setattr(glyphs, "build", lambda *args, **kwargs: pytest.fail("built again, not read from the cache"))
    again = load_dataset("glyphs", str(tmp_path), seed=0)
    assert np.array_equal(again.val_images.numpy(), data.val_images.numpy())
    args = train.parse_args(["--dataset", "glyphs", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"),
                             "--unseen-classes", "100-132", "--train-points", "0"])
    training = train.set_up(args)
    assert training.model.head.weight.shape == (100, 3) and training.train_labels.max().item() == 99
    assert training.meta["unseen_classes"] == list(range(100, 133))
    assert training.meta["dataset_details"]["classes"] == len(glyphs.CLASSES)
    unseen = slice(*training.splits["unseen"])
    assert set(training.points_labels[unseen].tolist()) == set(range(100, 133))


def test_a_run_uses_only_the_classes_it_names(small_glyphs, tmp_path):
    """The sweep's runs: 25 classes trained, the same 33 held out, the 75 others left out of everything."""
    args = train.parse_args(["--dataset", "glyphs", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"),
                             "--classes", "0-24", "100-132", "--unseen-classes", "100-132", "--train-points", "0"])
    training = train.set_up(args)
    assert training.model.head.weight.shape == (25, 3) and training.meta["seen_classes"] == list(range(25))
    assert set(training.train_labels.tolist()) == set(range(25))  # head rows, here the classes themselves
    assert set(training.points_labels.tolist()) == set(range(25)) | set(range(100, 133))
    assert training.meta["classes"] == [*range(25), *range(100, 133)]
