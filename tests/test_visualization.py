import numpy as np
import pytest

import visualization
from conftest import call_main
from embedviz.render import (EmbeddingFigure, class_colors, gif_durations, gif_palette, on_unit_sphere, render_frames,
                             to_palette)


def test_gif_durations_keep_125_ms_frames_in_hundredths_and_hold_the_last():
    durations = gif_durations(81, 125)
    assert all(d % 10 == 0 for d in durations)
    assert set(durations[:-1]) == {120, 130} and durations[-1] == 3000
    assert sum(durations[:-1]) == 80 * 125
    assert gif_durations(1, 125) == [3000]
    assert gif_durations(4, 1000 / 3) == [330, 340, 330, 3000]


def test_points_are_projected_on_the_sphere_and_bad_rows_flagged():
    points = np.array([[3.0, 0, 4], [0, 0, 0], [np.nan, 1, 1], [1, np.inf, 0], [-1e-20, 0, 0]])
    unit, valid = on_unit_sphere(points)
    assert valid.tolist() == [True, False, False, False, True]
    np.testing.assert_allclose(unit[0], [0.6, 0, 0.8])
    np.testing.assert_allclose(unit[4], [-1, 0, 0])
    assert np.isfinite(unit).all()


def test_frames_show_the_points_and_keep_their_size():
    figure = EmbeddingFigure([str(i) for i in range(3)], point_size=8)
    rng = np.random.default_rng(0)
    points, _ = on_unit_sphere(rng.normal(size=(300, 3)))
    labels = np.arange(300) % 3
    empty = figure.render([(points, np.full(300, -1), None, None, None)], "no points")
    full = figure.render([(points, labels, None, None, None)], "all points")
    assert empty.shape == full.shape == (640, 640, 3) and full.dtype == np.uint8
    assert np.count_nonzero((empty != full).any(-1)) > 2000  # the points changed many pixels
    # the class colors appear: tab10 blue (31, 119, 180) is drawn only with the points
    blue = (np.abs(full.astype(int) - [31, 119, 180]).sum(-1) < 30).sum()
    assert blue > 100 and (np.abs(empty.astype(int) - [31, 119, 180]).sum(-1) < 30).sum() < blue / 10


def test_parallel_rendering_draws_the_same_frames_as_one_process():
    rng = np.random.default_rng(1)
    frames, _ = on_unit_sphere(rng.normal(size=(3, 500, 3)))
    labels = np.arange(500) % 10
    jobs = [([(points, labels, None, None, None)], f"epoch {k}", None) for k, points in enumerate(frames)]
    options = {"class_names": [str(i) for i in range(10)], "point_size": 4}
    palette = gif_palette(10)
    alone = render_frames(jobs, options, palette, workers=1)
    parallel = render_frames(jobs, options, palette, workers=2)
    assert len(alone) == len(parallel) == 3
    for a, b in zip(alone, parallel):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(alone[0], alone[1])


def test_rendering_in_this_process_closes_its_figure():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    jobs = [([(np.eye(3), np.arange(3), None, None, None)], "t", None)]
    frames = render_frames(jobs, {"class_names": ["a", "b", "c"], "point_size": 8}, gif_palette(3), workers=1)
    assert len(frames) == 1 and plt.get_fignums() == open_before  # a caller that lives on does not gather them


def test_palette_keeps_every_class_color():
    palette = gif_palette(10)
    assert palette.shape[1] == 3 and len(palette) <= 256
    colors = np.round(np.array(class_colors(10))[:, :3] * 255).astype(np.uint8)
    image = np.broadcast_to(colors[:, None, :], (10, 4, 3)).copy()  # one row per class color
    image[0, 0] = [255, 255, 255]
    indices = to_palette(image, palette)
    np.testing.assert_array_equal(palette[indices], image)
    blend = to_palette(np.array([[[250, 140, 30]]], np.uint8), palette)  # not in the palette: a close color
    assert np.abs(palette[blend].astype(int) - [250, 140, 30]).max() < 20


def test_the_legend_has_a_class_weight_entry_only_when_asked():
    panels = [(np.array([[1.0, 0, 0], [0, 1, 0]]), np.array([0, 1]), np.eye(2, 3), None, None)]
    for show_weights, expected in ((False, ["a", "b"]), (True, ["a", "b", "class weight"])):
        figure = EmbeddingFigure(["a", "b"], 8, show_weights=show_weights)
        figure.render(panels, "t")
        assert [text.get_text() for text in figure.fig.legends[0].get_texts()] == expected


def test_a_gif_above_50_frames_a_second_is_refused_in_one_line(tmp_path):
    result = call_main(visualization.main, "--fps", "60", "--out-dir", tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    message = "error: --fps 60: a GIF shows at most 50 frames a second (use --format mp4)\n"
    assert result.stderr.endswith(f": {message}") and result.stderr.count("\n") == 1  # after the program's name
    assert visualization.parse_args(["--fps", "50"]).fps == 50
    assert visualization.parse_args(["--fps", "60", "--format", "mp4"]).fps == 60


def test_unseen_classes_are_hollow_rings_named_unseen_and_have_no_class_weight():
    figure = EmbeddingFigure(["a", "b", "c"], 8, show_weights=True, unseen_classes=[2])
    assert [text.get_text() for text in figure.fig.legends[0].get_texts()] == ["a", "b", "c (unseen)", "class weight"]
    seen, unseen = figure.scatters[0][0], figure.scatters[0][2]
    assert seen.get_facecolors()[0][3] == 1 and len(unseen.get_facecolors()) == 0  # filled dot, hollow ring
    assert unseen.get_edgecolors()[0][:3] == pytest.approx(class_colors(3)[2][:3])
    points = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    weights = [[1.0, 0, 0], [0, 1.0, 0], None]  # the head has no row for the held-out class
    image = figure.render([(points, np.array([0, 1, 2]), weights, None, None)], "t")
    assert image.shape == (640, 640, 3) and len(figure.weight_markers[0][2].get_offsets()) == 0
