import math

import numpy as np
import pytest

from embedviz.curves import panels_of, plot_metrics, series
from embedviz.metrics import TAMMES_DEG, angle_deg, cdnv, class_means, geometry, separation_bound_deg


def on_circle(degrees):
    """Unit vectors in the x-y plane at the given angles from e_x."""
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)


def test_angles_and_means_of_constructed_points():
    np.testing.assert_allclose(angle_deg(on_circle([0, 90, 180]), on_circle([45, 45, 45])), [45, 45, 135])
    points = np.concatenate([on_circle([-10, 10]) * [[2.0], [5.0]], on_circle([80, 100])])
    means = class_means(points, np.array([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(means[:2], on_circle([0, 90]), atol=1e-12)
    assert np.isnan(means[2]).all()  # a class without points


def test_geometry_of_three_caps_with_known_angles():
    # class c sits around 120c degrees, its two points +/- 10 degrees off the centre
    centres = np.array([0.0, 120.0, 240.0])
    val = on_circle(np.concatenate([centres - 10, centres + 10]))
    val_labels = np.array([0, 1, 2, 0, 1, 2])
    # training means at 0, 120 and 250: the +10 point of class 2 (250) and -10 point (230) still closest to 250
    train = on_circle([0.0, 120.0, 250.0]) * 3.0
    weights = on_circle([30.0, 120.0, 240.0])
    result = geometry(train, np.array([0, 1, 2]), val, val_labels, 3, weights)
    assert result["intra_class_deg"] == pytest.approx(10.0)
    assert result["min_inter_class_deg"] == pytest.approx(120.0)
    assert result["ncm_accuracy"] == 1.0
    assert result["weight_to_mean_deg"] == pytest.approx([30.0, 0.0, 0.0], abs=1e-9)


def test_nearest_class_mean_counts_the_points_closer_to_another_class():
    val = on_circle([0.0, 50.0, 100.0])
    train = on_circle([0.0, 90.0])
    result = geometry(train, np.array([0, 1]), val, np.array([0, 0, 1]), 2)
    # 50 degrees is closer to class 1's mean (90) than to class 0's (0): one mistake in three
    assert result["ncm_accuracy"] == pytest.approx(2 / 3)
    assert "weight_to_mean_deg" not in result
    # spread: class 0's mean is at 25 degrees, its points 25 off; class 1's single point 0 off
    assert result["intra_class_deg"] == pytest.approx((25 + 25 + 0) / 3)
    assert result["min_inter_class_deg"] == pytest.approx(75.0)


def test_metric_curves_average_per_class_values_and_write_a_png(tmp_path):
    history = [{"epoch": k, "val_accuracy": 0.1 * k, "ncm_accuracy": 0.1, "intra_class_deg": 10.0,
                "min_inter_class_deg": None, "weight_to_mean_deg": [10.0, None, 30.0]} for k in range(3)]
    epochs, values = series(history, "weight_to_mean_deg")
    assert epochs == [0, 1, 2] and values.tolist() == [20.0, 20.0, 20.0]
    assert math.isnan(series(history, "min_inter_class_deg")[1][0])
    path = tmp_path / "m.png"
    plot_metrics([{"model": "a", "history": history}, {"model": "b", "history": history}], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_separation_bounds_are_met_by_the_known_optimal_configurations():
    # on the circle: C equally spaced points
    assert separation_bound_deg(10, 2) == 36.0 and separation_bound_deg(2, 2) == 180.0
    # on the sphere: configurations that reach the bound (tetrahedron, octahedron, icosahedron)
    tetrahedron = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    octahedron = np.concatenate([np.eye(3), -np.eye(3)])
    golden = (1 + 5 ** 0.5) / 2
    icosahedron = np.array([[0, s1, s2 * golden] for s1 in (-1, 1) for s2 in (-1, 1)], float)
    icosahedron = np.concatenate([np.roll(icosahedron, k, axis=1) for k in range(3)])
    for points in (tetrahedron, octahedron, icosahedron):
        angles = angle_deg(points[:, None], points[None, :])
        np.fill_diagonal(angles, np.inf)
        assert angles.min() == pytest.approx(separation_bound_deg(len(points), 3), abs=1e-4)
    # the bound never rises with more points, and the square antiprism's 74.86 degrees for 8
    values = [TAMMES_DEG[n] for n in sorted(TAMMES_DEG)]
    assert all(a >= b for a, b in zip(values, values[1:])) and separation_bound_deg(8, 3) == 74.8585
    assert separation_bound_deg(15, 3) is None and separation_bound_deg(10, 4) is None


def test_curves_gain_the_verification_panels_of_the_runs_that_have_them(tmp_path):
    closed = [{"epoch": k, "val_accuracy": 0.5, "ncm_accuracy": 0.5, "intra_class_deg": 9.0,
               "min_inter_class_deg": 40.0, "verification": {"seen": {"tar_at_far": {"0.001": 0.1 * k}}}}
              for k in range(3)]
    opened = [{**entry, "verification": {**entry["verification"], "unseen": {"tar_at_far": {"0.001": 0.05}}},
               "open_set_auroc": 0.7} for entry in closed]
    titles = [title for title, _, _ in panels_of([{"history": closed}])]
    assert len(titles) == 5 and titles[-1].startswith("verification") and "weight" not in " ".join(titles)
    assert series(opened, ("verification", "unseen", "tar_at_far", "0.001"))[1].tolist() == [0.05] * 3
    assert np.isnan(series(closed, ("verification", "unseen", "tar_at_far", "0.001"))[1]).all()
    assert len(panels_of([{"history": closed}, {"history": opened}])) == 6
    path = tmp_path / "curves.png"
    plot_metrics([{"model": "a", "history": closed, "separation_bound_deg": 66.1468},
                  {"model": "b", "history": opened, "separation_bound_deg": None}], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cdnv_of_caps_at_known_angles():
    """Two classes at 0 and 90 degrees, each of two unit points +/- t off its centre: a class's mean is
    cos(t) along its centre, its variance sin(t)^2, the means sqrt(2) cos(t) apart, so the CDNV is
    2 sin(t)^2 / (2 * 2 cos(t)^2) = tan(t)^2 / 2. Lengths do not count: the points are unit-normalised."""
    t = 30.0
    points = on_circle([-t, t, 90 - t, 90 + t]) * np.array([[0.5], [2.0], [3.0], [1.0]])
    labels = np.array([0, 0, 1, 1])
    assert cdnv(points, labels) == pytest.approx(math.tan(math.radians(t)) ** 2 / 2)
    # a third class at 180 degrees, spread by 10: the mean over the three pairs, each by hand
    third = on_circle([170.0, 190.0])
    var = {0: math.sin(math.radians(t)) ** 2, 1: math.sin(math.radians(t)) ** 2, 2: math.sin(math.radians(10)) ** 2}
    mean = {0: on_circle([0.0])[0] * math.cos(math.radians(t)), 1: on_circle([90.0])[0] * math.cos(math.radians(t)),
            2: on_circle([180.0])[0] * math.cos(math.radians(10))}
    pairs = ((0, 1), (0, 2), (1, 2))
    expected = np.mean([(var[a] + var[b]) / (2 * np.sum((mean[a] - mean[b]) ** 2)) for a, b in pairs])
    assert cdnv(np.concatenate([points, third]), np.r_[labels, 2, 2]) == pytest.approx(expected)
    assert cdnv(points[:2], labels[:2]) is None  # one class
    assert cdnv(on_circle([0, 0, 0, 0]), labels) is None  # two classes with one mean
