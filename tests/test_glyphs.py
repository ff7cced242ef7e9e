"""--dataset glyphs: characters drawn from matplotlib's fonts, the same on every machine, built in
seconds and cached; many classes, some of them held out."""

import numpy as np
import pytest
import torch

import train
from conftest import call_main
from embedviz import glyphs
from embedviz.datasets import DATASET_CLASSES, load_dataset
from embedviz.run_files import load_run


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
    run = trained(monkeypatch, tmp_path, "--unseen-classes", "100-132")
    assert run["head_weight"].shape == (100, 3) and run["targets"] == set(range(100))
    assert run["meta"]["unseen_classes"] == list(range(100, 133))
    assert run["meta"]["dataset_details"]["classes"] == len(glyphs.CLASSES) == DATASET_CLASSES["glyphs"]
    unseen = slice(*run["meta"]["splits"]["unseen"])
    assert set(run["labels"][unseen].tolist()) == set(range(100, 133))


def test_a_run_uses_only_the_classes_it_names(small_glyphs, tmp_path, monkeypatch):
    """The sweep's runs: 25 classes trained, the same 33 held out, the 75 others left out of everything."""
    run = trained(monkeypatch, tmp_path, "--classes", "0-24", "100-132", "--unseen-classes", "100-132")
    assert run["head_weight"].shape == (25, 3) and run["meta"]["seen_classes"] == list(range(25))
    assert run["targets"] == set(range(25))  # the targets, here the classes themselves
    assert set(run["labels"].tolist()) == set(range(25)) | set(range(100, 133))
    assert run["meta"]["classes"] == [*range(25), *range(100, 133)]


def trained(monkeypatch, tmp_path, *options):
    """One epoch of glyphs in this process: the head's weights, the targets it trained to, the meta file
    and the saved points' labels."""
    targets, train_step = set(), train.train_step

    def recording_step(model, optimizer, scaler, images, batch_targets, precision):
        targets.update(batch_targets.tolist())
        return train_step(model, optimizer, scaler, images, batch_targets, precision)

    monkeypatch.setattr(train, "train_step", recording_step)
    out_dir = tmp_path / "out"
    result = call_main(train.main, "--dataset", "glyphs", "--data-dir", tmp_path, "--out-dir", out_dir,
                       "--train-points", "0", "--epochs", "1", "--batch-size", "256", "--device", "cpu", *options)
    assert result.returncode == 0, result.stderr
    _, labels, meta = load_run(str(out_dir), "vgg8_arcface")
    head_weight = torch.load(out_dir / "vgg8_arcface_last.pth", weights_only=True)["model_state"]["head.weight"]
    return {"head_weight": head_weight, "targets": targets, "meta": meta, "labels": labels}
