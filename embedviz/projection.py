"""What the frames draw of a run beyond its points on the sphere: a fixed 3-D view of embeddings of more
than three dimensions (the three principal directions of a run's last epoch, fitted once, the same for
every frame, so that a frame's points move only as the embeddings do), and Sub-center ArcFace's other
sub-centres."""

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


def fixed_view(embeddings, meta, weights, space="sphere"):
    """What the frames of a run draw: (points, class weights, other sub-centres, the view's name). Beyond three
    dimensions, everything projected on the principal directions of the last epoch; the sub-centres of
    Sub-center ArcFace that are not their class's dominant one, per epoch (None for the other heads)."""
    basis, view, drawn = None, "", embeddings
    if embeddings.shape[-1] > 3:
        basis, share = principal_view(embeddings[-1], space)
        drawn = np.stack([project(frame, basis) for frame in embeddings])  # one frame in memory at a time
        view = f"PCA view of {embeddings.shape[-1]}-D embeddings, {share:.0%} of variance"
    history = meta["history"][:len(embeddings)]
    return (drawn, [viewed(vectors, basis) for vectors in weights],
            [viewed(other_subcenters(entry, meta), basis) for entry in history], view)


def viewed(vectors, basis):
    """Per class, None or its vectors in the embedding (one, or a list of sub-centres) -> the same in the 3-D view."""
    if vectors is None or basis is None:
        return vectors
    return [None if vector is None else project(vector, basis).tolist() for vector in vectors]


def other_subcenters(entry, meta):
    """Per dataset class, the sub-centres of Sub-center ArcFace that are not its dominant one
    (None for a class held out); None for the other heads."""
    if "subcenters" not in entry:
        return None
    centres, dominant = entry["subcenters"]["weights"], entry["subcenters"]["dominant"]
    others = [None] * len(meta["class_names"])
    for target, c in enumerate(meta.get("seen_classes", range(len(centres)))):  # target -> label
        others[c] = [centre for k, centre in enumerate(centres[target]) if k != dominant[target]]
    return others
