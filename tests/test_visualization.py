import numpy as np

from visualization import SphereFigure, gif_durations, on_unit_sphere


def test_gif_durations_keep_125_ms_frames_in_hundredths_and_hold_the_last():
    durations = gif_durations(81)
    assert all(d % 10 == 0 for d in durations)
    assert set(durations[:-1]) == {120, 130} and durations[-1] == 3000
    assert sum(durations[:-1]) == 80 * 125
    assert gif_durations(1) == [3000]


def test_points_are_projected_on_the_sphere_and_bad_rows_flagged():
    points = np.array([[3.0, 0, 4], [0, 0, 0], [np.nan, 1, 1], [1, np.inf, 0], [-1e-20, 0, 0]])
    unit, valid = on_unit_sphere(points)
    assert valid.tolist() == [True, False, False, False, True]
    np.testing.assert_allclose(unit[0], [0.6, 0, 0.8])
    np.testing.assert_allclose(unit[4], [-1, 0, 0])
    assert np.isfinite(unit).all()


def test_frames_show_the_points_and_keep_their_size():
    figure = SphereFigure([str(i) for i in range(3)], point_size=8)
    rng = np.random.default_rng(0)
    points, _ = on_unit_sphere(rng.normal(size=(300, 3)))
    labels = np.arange(300) % 3
    empty = figure.render(points, np.full(300, -1), "no points")
    full = figure.render(points, labels, "all points")
    assert empty.shape == full.shape == (600, 600, 3) and full.dtype == np.uint8
    assert np.count_nonzero((empty != full).any(-1)) > 2000  # the points changed many pixels
    # the class colors appear: tab10 blue (31, 119, 180) is drawn only with the points
    blue = (np.abs(full.astype(int) - [31, 119, 180]).sum(-1) < 30).sum()
    assert blue > 100 and (np.abs(empty.astype(int) - [31, 119, 180]).sum(-1) < 30).sum() < blue / 10
