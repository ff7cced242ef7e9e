import math

import pytest
import torch

from losses import ArcFace, Softmax, arcface_target

ANGLES = [0.0, 0.3, 1.0, math.pi / 2, 2.5, math.pi - 0.5, 2.9, math.pi]  # 2.9 > pi - m for m = 0.5


def unit_weights_and_points(angles):
    """Class 0's weight is e_x; point i makes angle angles[i] with it in the x-y plane (float64)."""
    weights = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]], dtype=torch.float64) * 3.0
    points = torch.tensor([[math.cos(a), math.sin(a), 0.0] for a in angles], dtype=torch.float64) * 2.0
    return weights, points


def hand_arcface(points, weights, labels, s, m):
    """Loop over samples and classes with math's functions only."""
    rows = []
    for i, x in enumerate(points.tolist()):
        row = []
        for j, w in enumerate(weights.tolist()):
            cos = sum(a * b for a, b in zip(x, w)) / (math.hypot(*x) * math.hypot(*w))
            theta = math.acos(max(-1.0, min(1.0, cos)))
            if labels is not None and j == labels[i]:
                cos = math.cos(theta + m) if theta <= math.pi - m else cos - m * math.sin(m)
            row.append(s * cos)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def make_arcface(weights, s=15.0, m=0.5):
    head = ArcFace(3, len(weights), s=s, m=m).double()
    with torch.no_grad():
        head.weight.copy_(weights)
    return head


@pytest.mark.parametrize("with_labels", [True, False])
def test_arcface_matches_hand_computation(with_labels):
    weights, points = unit_weights_and_points(ANGLES)
    labels = [0] * len(ANGLES) if with_labels else None
    head = make_arcface(weights)
    logits = head(points, torch.tensor(labels) if with_labels else None)
    expected = hand_arcface(points, weights, labels, 15.0, 0.5)
    # the clamp that keeps acos differentiable moves theta by sqrt(2 * float64 eps) ~ 2e-8 at most
    torch.testing.assert_close(logits, expected, atol=15 * 3e-8, rtol=0)
    if with_labels:  # the margin only touches the target column
        torch.testing.assert_close(logits[:, 1:], expected[:, 1:], atol=1e-12, rtol=0)


def test_arcface_labels_pick_the_column_that_gets_the_margin():
    weights, points = unit_weights_and_points([0.4, 1.2])
    head = make_arcface(weights)
    labels = torch.tensor([1, 2])
    torch.testing.assert_close(head(points, labels), hand_arcface(points, weights, [1, 2], 15.0, 0.5))


def test_arcface_target_is_monotonic_in_theta():
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    for m in (0.2, 0.5, 1.0):
        target = arcface_target(torch.cos(theta), m)
        assert (target.diff() <= 1e-12).all(), f"target logit rises with theta for m={m}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_gradients_are_finite_on_and_opposite_to_the_class_weight(dtype, sign):
    weights, _ = unit_weights_and_points([])
    head = make_arcface(weights).to(dtype)
    points = (sign * weights[:1] / 3.0).to(dtype).repeat(2, 1).requires_grad_()
    logits = head(points, torch.tensor([0, 0]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(points.grad).all() and torch.isfinite(head.weight.grad).all()


def test_softmax_is_an_affine_map_and_ignores_labels():
    head = Softmax(3, 4).double()
    points = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([[sum(x * w for x, w in zip(p, row)) + b
                              for row, b in zip(head.weight.tolist(), head.bias.tolist())] for p in points.tolist()],
                            dtype=torch.float64)
    torch.testing.assert_close(head(points), expected)
    torch.testing.assert_close(head(points, torch.tensor([0, 1, 2, 3, 0])), expected)
    assert head.weight.shape == (4, 3)
