"""The other views: side-by-side comparison, MP4, a turning camera, fixed views, 2-D circles. The drawings
that several tests read are made once, in module fixtures, and the tests run in one process."""

import os

import imageio.v3 as iio
import numpy as np
import pytest

import train
import visualization
from conftest import call_main
from embedviz import render
from embedviz.render import EmbeddingFigure, on_unit_sphere

PANEL = 640  # pixels
pytestmark = pytest.mark.xdist_group("views")  # the drawings shared by the module's tests are made once


def succeed(main, *args):
    result = call_main(main, *args)
    assert result.returncode == 0, f"failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def runs(tiny_mnist, tmp_path_factory):
    """arcface for 2 epochs, softmax for 1, and a 2-D cosface run, in one folder."""
    out_dir = tmp_path_factory.mktemp("views")
    common = ["--data-dir", tiny_mnist, "--out-dir", out_dir, "--train-points", "100", "--batch-size", "64"]
    succeed(train.main, "--model", "vgg8_arcface", "--epochs", "2", *common)
    succeed(train.main, "--model", "vgg8_softmax", "--epochs", "1", *common)
    succeed(train.main, "--model", "vgg8_cosface", "--epochs", "1", "--embedding-dim", "2", *common)
    return out_dir


def draw(out_dir, *args, workers=1):
    return succeed(visualization.main, "--out-dir", out_dir, "--workers", workers, *args)


@pytest.fixture(scope="module")
def arcface_val(runs):
    """One drawing that several tests read: arcface's validation split, its misfits at epoch 1 and the
    projector's files of epoch 1; its GIF's frames kept, since later drawings write over the file."""
    result = draw(runs, "--model", "vgg8_arcface", "--split", "val", "--epoch", "1", "--projector", "1")
    return result, iio.imread(runs / "vgg8_arcface_Validation_Embeddings.gif", index=None)


@pytest.fixture(scope="module")
def softmax_pages(runs):
    """softmax's two splits with their pages; the legend of the last figure drawn (the validation split's)."""
    result = draw(runs, "--no-figures", "--model", "vgg8_softmax", "--html", "--html-points", "50")
    return result, legend_of_last_drawing()


@pytest.fixture(scope="module")
def softmax_raw(runs):
    """softmax's raw view of the validation split as an MP4, with its page; the video's frames kept."""
    result = draw(runs, "--no-figures", "--model", "vgg8_softmax", "--split", "val", "--space", "raw",
                  "--format", "mp4", "--html", "--html-points", "50")
    return result, iio.imread(runs / "vgg8_softmax_Validation_Embeddings_raw.mp4", plugin="FFMPEG", index=None)


def legend_of_last_drawing():
    """The legend texts of the figure that drew the last frames (in this process: --workers 1)."""
    return [text.get_text() for text in render._worker_figure.fig.legends[0].get_texts()]


def test_comparison_has_one_panel_per_run_and_the_shorter_run_holds_its_last_frame(runs):
    result = draw(runs, "--compare", "vgg8_arcface", "vgg8_softmax", "--split", "val", "--keep-frames",
                  workers=2)  # the renderers forked from this process, as a user's run has them
    path = runs / "comparison_Validation_Embeddings.gif"
    assert f"wrote {path}" in result.stdout and f"wrote {runs / 'comparison_metrics.png'}" in result.stdout
    frames = iio.imread(path, index=None)
    assert frames.shape == (3, PANEL, 2 * PANEL, 3)  # the longer run's 3 frames, two panels side by side
    right = frames[:, :, PANEL:]  # softmax: epochs 0, 1, then 1 held
    assert np.array_equal(right[1, 60:], right[2, 60:])  # below the figure title, which counts the frames
    assert not np.array_equal(right[0, 60:], right[1, 60:])
    left = frames[:, :, :PANEL]
    assert not np.array_equal(left[1, 60:], left[2, 60:])
    assert not (runs / "vgg8_arcface_Validation_Embeddings.gif").exists()


def test_mp4_has_every_frame_plus_the_held_last_and_is_smaller_than_the_gif(runs):
    draw(runs, "--no-figures", "--model", "vgg8_arcface", "--split", "train")
    draw(runs, "--no-figures", "--model", "vgg8_arcface", "--split", "train", "--format", "mp4", "--fps", "8")
    gif, mp4 = runs / "vgg8_arcface_Training_Embeddings.gif", runs / "vgg8_arcface_Training_Embeddings.mp4"
    video = iio.imread(mp4, plugin="FFMPEG", index=None)
    assert video.shape == (3 + 23, PANEL, PANEL, 3)  # 3 epochs, then 3 s at 8 frames a second
    assert iio.immeta(mp4, plugin="FFMPEG")["fps"] == 8
    assert os.path.getsize(mp4) < os.path.getsize(gif)


def test_a_turning_camera_changes_the_view_of_the_same_points():
    points, _ = on_unit_sphere(np.random.default_rng(0).normal(size=(200, 3)))
    panels = [(points, np.arange(200) % 10, None, None, None)]
    figure = EmbeddingFigure([str(i) for i in range(10)], 4)
    still = figure.render(panels, "t")
    assert np.array_equal(still, figure.render(panels, "t"))
    assert not np.array_equal(still, figure.render(panels, "t", azimuth=-40))
    assert np.array_equal(still, figure.render(panels, "t", azimuth=-60))  # -60: the default camera


def test_rotate_and_fixed_views_change_the_frames(runs, arcface_val):
    _, plain = arcface_val
    draw(runs, "--no-figures", "--model", "vgg8_arcface", "--split", "val", "--rotate", "10")
    turning = iio.imread(runs / "vgg8_arcface_Validation_Embeddings.gif", index=None)
    assert np.array_equal(plain[0], turning[0])  # frame 0 at the starting azimuth
    assert not np.array_equal(plain[2], turning[2])
    draw(runs, "--no-figures", "--model", "vgg8_arcface", "--split", "val", "--elev", "80", "--azim", "0")
    top = iio.imread(runs / "vgg8_arcface_Validation_Embeddings.gif", index=None)
    assert not np.array_equal(plain[0], top[0])


def test_2d_embeddings_are_drawn_on_the_unit_circle(runs):
    draw(runs, "--no-figures", "--model", "vgg8_cosface", "--split", "val", "--keep-frames")
    frames = iio.imread(runs / "vgg8_cosface_Validation_Embeddings.gif", index=None)
    embeddings = np.load(runs / "all_vgg8_cosface_embeddings.npy")
    assert embeddings.shape[-1] == 2 and frames.shape == (2, PANEL, PANEL, 3)
    assert len(os.listdir(runs / "vgg8_cosface_Validation_frames")) == 2


def test_a_circle_frame_puts_points_where_their_angle_says():
    figure = EmbeddingFigure(["a", "b"], 30, dim=2)
    points = np.array([[1.0, 0.0], [-1.0, 0.0]])
    image = figure.render([(points, np.array([0, 1]), None, None, None)], "t").astype(int)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    ys_b, xs_b = np.nonzero(np.abs(image - blue).sum(-1) < 40)
    ys_o, xs_o = np.nonzero(np.abs(image - orange).sum(-1) < 40)
    right = xs_b > PANEL / 2  # legend markers sit at the left edge; the class 0 point is on the right
    assert right.any() and xs_o.min() < PANEL / 2
    assert abs(ys_b[right].mean() - np.median(ys_o[xs_o > 60])) < 10  # both on the horizontal diameter


def test_html_writes_one_light_offline_page_per_3d_run_and_prints_its_size(runs):
    result = draw(runs, "--no-figures", "--model", "vgg8_arcface", "vgg8_cosface", "--split", "val", "--html",
                  "--html-points", "50")
    page = runs / "vgg8_arcface_Validation_Embeddings.html"
    written = [line.removeprefix("wrote ") for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert len(written) == 3 and all(path.endswith((".gif", ".html")) for path in written)  # --no-figures
    assert f"wrote {page}" in result.stdout and f"{page}: " in result.stdout and " MB" in result.stdout
    text = page.read_text()
    assert "<script src=\"http" not in text and text.count('"name":"') >= 3  # frames embedded, no CDN
    assert "2-D embeddings" in result.stderr and not (runs / "vgg8_cosface_Validation_Embeddings.html").exists()


def test_html_writes_one_page_per_split_drawn_named_like_the_animations(runs, softmax_pages):
    pages = {split: runs / f"vgg8_softmax_{split}_Embeddings.html" for split in ("Training", "Validation")}
    both, _ = softmax_pages
    for split, page in pages.items():
        assert f"wrote {page}" in both.stdout
        assert f"<title>vgg8_softmax - {split}</title>" in page.read_text()
    train_only = draw(runs, "--no-figures", "--model", "vgg8_softmax", "--split", "train", "--html",
                      "--html-points", "50")
    assert f"wrote {pages['Training']}" in train_only.stdout and "Validation" not in train_only.stdout


def test_the_legend_has_a_class_weight_star_only_when_a_run_drawn_has_class_weights(runs, softmax_pages):
    digits = [str(digit) for digit in range(10)]
    _, softmax_legend = softmax_pages
    assert softmax_legend == digits
    draw(runs, "--no-figures", "--compare", "vgg8_softmax", "vgg8_arcface", "--split", "val")
    assert legend_of_last_drawing() == [*digits, "class weight"]


# ---------------------------------------------------------------- the raw view, sub-centres, outliers

def test_raw_placement_keeps_the_points_and_fixes_one_box_from_the_last_frame():
    embeddings = np.array([[[0.1, 0.0, 0.0], [0.0, 0.2, 0.0]],
                           [[3.0, -1.0, 0.5], [np.nan, 0.0, 0.0]],
                           [[0.0, -2.0, 0.0], [1.0, 1.0, 0.0]]])
    points, valid, box = render.placed(embeddings, "raw")
    assert box == pytest.approx(2.0 * 1.05)  # the last frame's largest coordinate, and a 5% border
    np.testing.assert_array_equal(points[valid], embeddings[valid])  # where they are
    assert valid.tolist() == [[True, True], [True, False], [True, True]]
    sphere, _, unit_box = render.placed(embeddings, "sphere")
    assert unit_box == 1.0 and np.allclose(np.linalg.norm(sphere[valid], axis=-1), 1)


def test_a_raw_frame_draws_a_point_at_its_coordinates_in_a_box_fixed_across_frames():
    figure = EmbeddingFigure(["a", "b"], 30, dim=2, boxes=[4.2])
    blue = np.array([31, 119, 180])
    ax = figure.axes[0]
    for x, y in [(2.0, 1.0), (-3.0, -0.5)]:  # two frames, the same box
        image = figure.render([(np.array([[x, y]]), np.array([0]), None, None, None)], "t").astype(int)
        assert ax.get_xlim() == ax.get_ylim() == (-4.2, 4.2)
        px, py = ax.transData.transform((x, y))
        ys, xs = np.nonzero(np.abs(image - blue).sum(-1) < 40)
        inside = xs > 60  # the legend's marker sits at the left edge
        assert abs(xs[inside].mean() - px) < 3 and abs(ys[inside].mean() - (image.shape[0] - py)) < 3


def test_raw_view_files_and_page(runs, softmax_raw):
    result = draw(runs, "--no-figures", "--compare", "vgg8_softmax", "vgg8_arcface", "--split", "val", "--space",
                  "raw")
    gif = runs / "comparison_Validation_Embeddings_raw.gif"
    assert f"wrote {gif}" in result.stdout and iio.imread(gif, index=None).shape[1:3] == (PANEL, 2 * PANEL)
    page = runs / "vgg8_softmax_Validation_Embeddings_raw.html"
    assert f"wrote {page}" in softmax_raw[0].stdout
    from embedviz.interactive import build_figure
    from embedviz.run_files import drawn_rows, load_run

    embeddings, labels, meta = load_run(str(runs), "vgg8_softmax")
    figure = build_figure(embeddings, labels, meta, "val", max_points=1000, space="raw")
    box = render.placed(embeddings[:, slice(*drawn_rows(meta, "val"))], "raw")[2]
    assert figure["layout"]["scene"]["xaxis"]["range"] == [-box, box]
    shown = figure["data"][1]  # class 0 at epoch 0, as it is
    rows = np.array(shown["customdata"])
    xyz = np.c_[shown["x"], shown["y"], shown["z"]]
    np.testing.assert_allclose(xyz, embeddings[0, rows], atol=5.1e-5)  # the page keeps 4 decimals


def test_subcenter_runs_draw_every_sub_centre_and_their_outliers(tiny_mnist, tmp_path):
    common = ["--data-dir", tiny_mnist, "--out-dir", tmp_path, "--train-points", "100", "--batch-size", "64"]
    succeed(train.main, "--model", "vgg8_subcenter", "--epochs", "2", *common)
    result = draw(tmp_path, "--model", "vgg8_subcenter", "--split", "train")
    assert legend_of_last_drawing()[-2:] == ["dominant sub-centre", "other sub-centres"]
    others = [len(render._worker_figure.subcenter_markers[0][c]._offsets3d[0]) for c in range(10)]
    assert others == [2] * 10  # of 3 sub-centres a class, 2 drawn small
    outliers = tmp_path / "vgg8_subcenter_outliers.png"
    assert f"wrote {outliers}" in result.stdout or "no outliers" in result.stdout
    assert not outliers.exists() or iio.imread(outliers).ndim == 3


def test_outliers_are_the_points_beyond_the_threshold_farthest_first():
    from embedviz.gallery import subcenter_outliers

    centres = [[[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [0, 0, -1]]]  # class 0 dominant: x, class 1: y
    angles = [0, 10, 50, 80, 5, 40]  # rows 0-3 class 0, about x in the x-y plane; 4-5 class 1, about y
    embeddings = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a)), 0] for a in angles[:4]]
                          + [[np.sin(np.radians(a)), np.cos(np.radians(a)), 0] for a in angles[4:]])
    meta = {"splits": {"train": [0, 6], "val": [6, 6]}, "outlier_deg": 33.0}
    entry = {"subcenters": {"weights": centres, "dominant": [0, 0]}}
    found = subcenter_outliers(embeddings, np.array([0, 0, 0, 0, 1, 1]), meta, entry)
    assert {c: [(row, round(angle)) for row, angle in rows] for c, rows in found.items()} == \
        {0: [(3, 80), (2, 50)], 1: [(5, 40)]}


def test_misfits_are_the_validation_points_nearer_another_class_mean_farthest_first():
    from embedviz.gallery import misfits

    def at(degrees):  # a point in the x-y plane
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 0.0]

    train = [at(0), at(0), at(90), at(90)]          # class 0's mean: 0 degrees, class 1's: 90
    val = [at(10), at(80), at(60), at(35), at(50)]  # true classes 0, 0, 0, 1, 1
    meta = {"splits": {"train": [0, 4], "val": [4, 9]}, "class_names": ["a", "b", "held out"]}
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 1, 1])
    found = misfits(np.array(train + val), labels, meta)
    # rows 5 (80 degrees from class 0's mean) and 6 (60), and row 7 (class 1, 55 from its mean)
    assert [(row, true, predicted, round(angle)) for row, true, predicted, angle in found] == \
        [(5, 0, 1, 80), (6, 0, 1, 60), (7, 1, 0, 55)]


def test_misfits_agree_with_the_runs_nearest_class_mean_accuracy(runs, arcface_val):
    from embedviz.gallery import misfits
    from embedviz.run_files import load_run

    embeddings, labels, meta = load_run(str(runs), "vgg8_arcface")
    n_val = meta["splits"]["val"][1] - meta["splits"]["val"][0]
    found = misfits(embeddings[-1], labels, meta)
    assert len(found) == round((1 - meta["history"][-1]["ncm_accuracy"]) * n_val) > 0
    result, _ = arcface_val  # drawn at --epoch 1
    assert f"wrote {runs / 'vgg8_arcface_misfits.png'}" in result.stdout
    bad = call_main(visualization.main, "--model", "vgg8_arcface", "--out-dir", runs, "--epoch", "9")
    assert bad.returncode == 1 and "--epoch 9: vgg8_arcface has epochs 0-2" in bad.stderr


def test_projector_files_follow_tensorboards_format(runs, arcface_val):
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    from embedviz.run_files import load_images, load_run

    result, _ = arcface_val  # drawn with --projector 1
    folder = runs / "vgg8_arcface_projector"
    assert f"wrote {folder}{os.sep}" in result.stdout
    embeddings, labels, meta = load_run(str(runs), "vgg8_arcface")
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == "vgg8_arcface epoch 1" and embedding.tensor_path == "tensors.tsv"
    assert embedding.sprite.image_path == "sprite.png" and list(embedding.sprite.single_image_dim) == [28, 28]
    tensors = np.loadtxt(folder / embedding.tensor_path, delimiter="\t")
    np.testing.assert_allclose(tensors, embeddings[1], rtol=1e-5, atol=1e-6)
    rows = (folder / embedding.metadata_path).read_text().splitlines()
    assert rows[0] == "class\tsplit" and len(rows) == 1 + len(labels)
    assert rows[1] == f"{meta['class_names'][labels[0]]}\ttrain" and rows[-1].endswith("\tval")
    sprite = np.asarray(Image.open(folder / embedding.sprite.image_path))
    grid = int(np.ceil(np.sqrt(len(labels))))
    images = load_images(str(runs), "vgg8_arcface", len(labels))
    assert sprite.shape == (grid * 28, grid * 28)
    k = len(labels) - 1  # the last image, row by row in the grid
    np.testing.assert_array_equal(sprite[(k // grid) * 28:(k // grid + 1) * 28, (k % grid) * 28:(k % grid + 1) * 28],
                                  images[k])
    bad = call_main(visualization.main, "--model", "vgg8_arcface", "--out-dir", runs, "--projector", "7")
    assert bad.returncode == 1 and "--projector 7: vgg8_arcface has epochs 0-2" in bad.stderr


def test_a_sprite_too_large_for_tensorboard_is_scaled_down():
    from embedviz.projector import MAX_SPRITE_PIXELS, sprite_image

    images = np.zeros((4200, 128, 128), np.uint8)  # a 65 x 65 grid: 8,320 pixels at full size
    images[-1] = 255
    sprite, side = sprite_image(images)
    assert side == MAX_SPRITE_PIXELS // 65 == 126 and sprite.size == (65 * 126, 65 * 126)
    last = np.asarray(sprite)[64 * 126:, 39 * 126:40 * 126]  # image 4199: row 64, column 39
    assert (last == 255).all() and np.asarray(sprite)[:64 * 126].max() == 0


def test_the_raw_view_turns_and_writes_mp4_too(runs, softmax_raw):
    _, still = softmax_raw
    draw(runs, "--no-figures", "--model", "vgg8_softmax", "--split", "val", "--space", "raw", "--format", "mp4",
         "--rotate", "10")
    turning = iio.imread(runs / "vgg8_softmax_Validation_Embeddings_raw.mp4", plugin="FFMPEG", index=None)
    assert still.shape == turning.shape and still.shape[1:] == (PANEL, PANEL, 3)
    assert np.abs(still[0].astype(int) - turning[0]).mean() < 1  # frame 0: the same camera, up to the codec
    assert np.abs(still[1].astype(int) - turning[1]).mean() > 1  # frame 1: turned by 10 degrees
