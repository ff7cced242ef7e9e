"""A fixed 3-D view of embeddings of more than three dimensions: the three principal directions of
a run's last epoch, fitted once, the same for every frame, so that a frame's points move only as
the embeddings do."""

import numpy as np

from embedviz.render import on_unit_sphere


def principal_view(points, space="sphere"):
    """(basis (dim, 3), share of the variance it keeps) of one frame's (n, dim) points: unit-normalised
    for the sphere view, as they are for the raw view. The directions are PCA's (of the centred
    points), each signed so that its largest loading is positive; the view projects on them through
    the origin, which keeps a direction a direction and the origin of the raw view where it is."""
    points = np.asarray(points, np.float64)
    points, valid = on_unit_sphere(points) if space == "sphere" else (points, np.isfinite(points).all(1))
    points = points[valid]
    _, singular, directions = np.linalg.svd(points - points.mean(0), full_matrices=False)
    basis = directions[:3]
    basis *= np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(1)])[:, None]
    variance = singular ** 2
    return basis.T, float(variance[:3].sum() / variance.sum()) if variance.sum() > 0 else 1.0


def project(vectors, basis):
    """(..., dim) vectors -> (..., 3), by the basis of principal_view; NaN rows stay NaN."""
    return np.asarray(vectors, np.float64) @ basis
