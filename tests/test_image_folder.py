"""--dataset imagefolder: any labelled image folder, grey or colour, of 2 to 1,000 classes, decoded in
parallel and cached beside the data; written here as real PNG and JPEG files of real digits."""

import colorsys
import os

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import train
from conftest import call_main
from embedviz import image_folder
from embedviz.datasets import load_dataset
from models import load_model, to_input

HUES = np.arange(12) / 12


def tinted(digit, c):
    """A white-on-black digit drawn in class c's colour: 12 classes of 10 digits, told apart by colour too."""
    rgb = np.array(colorsys.hsv_to_rgb(HUES[c], 0.9, 1.0))
    return (digit[..., None] * rgb).astype(np.uint8)


def write_folder(root, images_of_class, ext=".png"):
    for name, images in images_of_class.items():
        os.makedirs(root / name, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / name / f"{i:03d}{ext}")
    return root


@pytest.fixture(scope="module")
def digits_by_class(mnist_digits):
    images, labels = mnist_digits
    return {c: images[labels == c][:30] for c in range(10)}


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory, digits_by_class):
    """10 classes of 30 grey digits, no train/ and val/."""
    return write_folder(tmp_path_factory.mktemp("grey"), {f"digit_{c}": d for c, d in digits_by_class.items()})


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory, digits_by_class):
    """12 colour classes with train/ (24 a class) and val/ (6), one class folder of each holding a
    grey image, and sizes other than 28."""
    root = tmp_path_factory.mktemp("colour")
    for split, rows in (("train", slice(0, 24)), ("val", slice(24, 30))):
        write_folder(root / split, {f"class_{c:02d}": [tinted(d, c) for d in digits_by_class[c % 10][rows]]
                                    for c in range(12)})
    Image.fromarray(digits_by_class[0][0]).save(root / "train" / "class_00" / "grey.png")
    Image.fromarray(tinted(digits_by_class[1][0], 1)).resize((40, 40)).save(root / "train" / "class_01" / "big.png")
    return root


def test_a_grey_folder_is_split_80_20_per_class_and_read_exactly(grey_folder, digits_by_class):
    data = load_dataset("imagefolder", str(grey_folder), seed=3)
    assert data.class_names == [f"digit_{c}" for c in range(10)]
    assert data.train_images.shape == (240, 28, 28) and data.val_images.shape == (60, 28, 28)
    assert np.bincount(data.val_labels.numpy()).tolist() == [6] * 10  # 20% of each class
    assert "class-stratified 80%/20% split seeded with 3" in data.source
    everything = np.concatenate([data.train_images.numpy(), data.val_images.numpy()])
    originals = np.concatenate(list(digits_by_class.values()))
    assert sorted(map(bytes, everything)) == sorted(map(bytes, originals))  # PNG at its own size: exact
    other = load_dataset("imagefolder", str(grey_folder), seed=4)
    assert not np.array_equal(other.val_images.numpy(), data.val_images.numpy())


def test_a_colour_folder_keeps_its_split_three_channels_and_one_size(colour_folder):
    data = load_dataset("imagefolder", str(colour_folder), seed=0, image_size=16)
    assert len(data.class_names) == 12 and data.class_names[11] == "class_11"
    assert data.train_images.shape == (12 * 24 + 2, 16, 16, 3) and data.val_images.shape == (72, 16, 16, 3)
    assert "its train/ and val/ folders" in data.source
    grey = data.train_images[data.train_labels == 0]
    assert any((image[..., 0] == image[..., 1]).all() and image.any() for image in grey)  # grey, in 3 channels
    reds = data.val_images[data.val_labels == 0].float().mean((0, 1, 2))
    assert reds[0] > 2 * reds[2]  # class 0's hue is red


def test_files_that_are_not_images_are_skipped_in_one_warning(tmp_path, digits_by_class):
    root = write_folder(tmp_path, {"a": digits_by_class[0][:5], "b": digits_by_class[1][:5]})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (root / "b" / ".DS_Store").write_bytes(b"\x00")  # hidden files are not looked at
    warnings = []
    data = load_dataset("imagefolder", str(root), seed=0, warn=warnings.append)
    assert len(data.train_labels) + len(data.val_labels) == 10
    assert len(warnings) == 1 and "skipped 2 file(s) that are not images" in warnings[0]
    assert "notes.txt" in warnings[0] or "cut.png" in warnings[0]


@pytest.mark.parametrize("layout,fragments", [
    ({}, ["holds 0 class folder(s)", "at least 2"]),
    ({"only": 3}, ["holds 1 class folder(s)", "at least 2"]),
    ({"a": 3, "empty": 0}, ["class folder", "empty", "holds no image"]),
    ({f"c{i:04d}": 0 for i in range(1001)}, ["1001 class folders", "at most 1000"]),
])
def test_bad_folders_are_refused_in_one_line(tmp_path, digits_by_class, layout, fragments):
    (tmp_path / "images").mkdir()
    for name, n in layout.items():
        write_folder(tmp_path / "images", {name: digits_by_class[0][:n]})
    result = call_main(train.main, "--dataset", "imagefolder", "--data-dir", tmp_path / "images",
                       "--out-dir", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and all(f in lines[0] for f in fragments), result.stderr


def test_a_missing_folder_and_a_wrong_size_are_refused(tmp_path):
    result = call_main(train.main, "--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere",
                       "--out-dir", tmp_path / "out")
    assert result.returncode == 1 and result.stderr.strip() == (f"error: {tmp_path / 'nowhere'} does not exist; "
                                                                "--data-dir names the folder of class folders")
    (tmp_path / "a_file").write_text("")
    result = call_main(train.main, "--dataset", "imagefolder", "--data-dir", tmp_path / "a_file",
                       "--out-dir", tmp_path / "out")
    assert result.returncode == 1 and f"{tmp_path / 'a_file'} is not a folder" in result.stderr
    for bad in ("30", "8", "72", "x"):
        result = call_main(train.main, "--dataset", "imagefolder", "--image-size", bad)
        assert result.returncode == 2 and "not 28 or a multiple of 8 from 16 to 64" in result.stderr
    result = call_main(train.main, "--dataset", "mnist-sample", "--image-size", "32")
    assert result.returncode == 2 and "the size is for --dataset imagefolder" in result.stderr


def test_the_decoded_images_are_cached_and_decoded_again_when_a_file_changes(tmp_path, digits_by_class, monkeypatch):
    root = write_folder(tmp_path, {"a": digits_by_class[0][:6], "b": digits_by_class[1][:6]})
    first = load_dataset("imagefolder", str(root), seed=0)
    assert (root / image_folder.CACHE_FILE.format(size=28)).exists()
    calls = []
    decode_all = image_folder.decode_all
    monkeypatch.setattr(image_folder, "decode_all", lambda *args: calls.append(1) or decode_all(*args))
    again = load_dataset("imagefolder", str(root), seed=0)
    assert calls == [] and np.array_equal(again.train_images.numpy(), first.train_images.numpy())
    Image.fromarray(digits_by_class[2][0]).save(root / "a" / "000.png")  # one image replaced
    changed = load_dataset("imagefolder", str(root), seed=0)
    assert calls == [1] and not np.array_equal(changed.train_images.numpy(), first.train_images.numpy())
    load_dataset("imagefolder", str(root), seed=0, image_size=16)  # another size: its own cache
    assert calls == [1, 1] and (root / image_folder.CACHE_FILE.format(size=16)).exists()


def test_a_colour_folder_trains_draws_and_rebuilds_end_to_end(colour_folder, tmp_path):
    import visualization

    args = ["--dataset", "imagefolder", "--data-dir", colour_folder, "--out-dir", tmp_path, "--image-size", "16",
            "--epochs", "3", "--batch-size", "32", "--lr", "3e-3", "--precision", "fp32"]
    result = call_main(train.main, *args)
    assert result.returncode == 0, result.stderr
    from embedviz.run_files import load_images, load_run

    embeddings, labels, meta = load_run(str(tmp_path), "vgg8_arcface")
    assert meta["dataset"] == "imagefolder" and len(meta["class_names"]) == 12 and embeddings.shape[1] == 290 + 72
    assert meta["history"][-1]["val_accuracy"] > 0.3  # 12 classes: chance is 0.08
    images = load_images(str(tmp_path), "vgg8_arcface", len(labels))
    assert images.shape == (362, 16, 16, 3)
    model = load_model(tmp_path / "vgg8_arcface_best.pth")
    import torch

    with torch.no_grad():
        assert model.embed(to_input(torch.from_numpy(images[:4]))).shape == (4, 3)
    drawn = call_main(visualization.main, "--model", "vgg8_arcface", "--out-dir", tmp_path, "--workers", "1",
                      "--split", "val", "--html", "--html-points", "50", "--projector")
    assert drawn.returncode == 0, drawn.stderr
    frames = iio.imread(tmp_path / "vgg8_arcface_Validation_Embeddings.gif", index=None)
    assert len(frames) == 4
    page = (tmp_path / "vgg8_arcface_Validation_Embeddings.html").read_text()
    assert "class_11" in page and page.count('": "data:image/png;base64,') >= 48  # the hover images
    sprite = iio.imread(tmp_path / "vgg8_arcface_projector" / "sprite.png")
    assert sprite.shape == (20 * 16, 20 * 16, 3)  # 362 colour images of 16 pixels in a 20 x 20 grid
    held = call_main(train.main, *args, "--unseen-classes", "10", "11", "--out-dir", tmp_path / "open")
    assert held.returncode == 0, held.stderr
    with pytest.raises(SystemExit):  # beyond the folder's classes: refused once the folder is read
        train.main([*map(str, args), "--unseen-classes", "12", "13", "--out-dir", str(tmp_path / "x")])


def test_more_classes_than_tab20_get_distinct_colours_and_fit_one_gif_palette():
    from embedviz import render

    for n in (12, 20, 37, 100, 193, 1000):  # beyond 192, classes share the GIF palette's nearest hue
        colours = {tuple(np.round(c, 4)) for c in render.class_colors(n)}
        assert len(colours) == n and len(render.gif_palette(n)) <= 256


def test_beyond_twenty_classes_the_gif_leaves_the_legend_to_the_page():
    from embedviz.render import EmbeddingFigure

    figure = EmbeddingFigure([f"c{i}" for i in range(25)], 4)
    assert figure.fig.legends == []
    assert any("25 classes" in text.get_text() and "--html" in text.get_text() for text in figure.fig.texts)
    twelve = EmbeddingFigure([f"c{i}" for i in range(12)], 4)
    assert len(twelve.fig.legends[0].get_texts()) == 12


def test_damaged_pngs_and_names_that_are_not_utf8_are_handled(tmp_path, digits_by_class):
    import struct

    root = tmp_path / "images"
    write_folder(root, {"a": digits_by_class[0][:4]})
    os.makedirs(os.fsdecode(bytes(root) + b"/caf\xe9"))  # a folder name in Latin-1, not UTF-8
    write_folder(root, {os.fsdecode(b"caf\xe9"): digits_by_class[1][:4]})
    png = bytearray((root / "a" / "000.png").read_bytes())
    at = png.index(b"IDAT") - 4
    png[at:at + 4] = struct.pack(">I", 2)  # an IDAT chunk that claims 2 bytes: what follows is no chunk
    (root / "a" / "000.png").write_bytes(bytes(png))
    warnings = []
    data = load_dataset("imagefolder", str(root), seed=0, warn=warnings.append)
    assert len(data.train_labels) + len(data.val_labels) == 7 and "skipped 1 file(s)" in warnings[0]
    assert data.class_names[1] == os.fsdecode(b"caf\xe9")


def test_a_new_run_replaces_the_images_of_an_old_one_and_resume_refuses_other_classes(tmp_path, digits_by_class):
    from embedviz.run_files import load_images

    first = write_folder(tmp_path / "first", {"a": digits_by_class[0][:10], "b": digits_by_class[1][:10]})
    other = write_folder(tmp_path / "other", {"x": digits_by_class[2][:10], "y": digits_by_class[3][:10]})
    common = ["--dataset", "imagefolder", "--out-dir", tmp_path / "out", "--batch-size", "8", "--precision", "fp32"]
    assert call_main(train.main, *common, "--data-dir", first, "--epochs", "1").returncode == 0
    resumed = call_main(train.main, *common, "--data-dir", other, "--epochs", "2", "--resume")
    assert resumed.returncode == 1 and "made with classes a b (now x y)" in resumed.stderr
    assert call_main(train.main, *common, "--data-dir", other, "--epochs", "1").returncode == 0  # a new run
    images = load_images(str(tmp_path / "out"), "vgg8_arcface", 20)
    expected = np.concatenate([digits_by_class[2][:10], digits_by_class[3][:10]])
    assert sorted(map(bytes, images)) == sorted(map(bytes, expected))  # the new run's images, not the first's


def test_class_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    from embedviz.render import EmbeddingFigure

    figure = EmbeddingFigure(["$\\frac", "$5 to $6"], 4)
    figure.render([(np.eye(3)[:2], np.array([0, 1]), None, None, None)], "t")  # mathtext would fail to parse
    assert [text.get_text() for text in figure.fig.legends[0].get_texts()] == ["\\$\\frac", "\\$5 to \\$6"]
