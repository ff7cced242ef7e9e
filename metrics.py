"""What the sphere shows, in numbers: the angular geometry of the embeddings of one epoch.

All angles are in degrees and are measured between directions (L2-normalised vectors), as
the frames draw them. Pure numpy, so that a test can reach every function.
"""

import numpy as np


def unit(vectors):
    """Rows scaled to length 1 (float64); zero rows stay zero."""
    vectors = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def angle_deg(a, b):
    """Angle between the rows of a and b (broadcast), in degrees."""
    return np.degrees(np.arccos(np.clip((unit(a) * unit(b)).sum(-1), -1.0, 1.0)))


def class_means(points, labels, num_classes):
    """(num_classes, dim): the mean direction of each class (NaN for a class without points)."""
    directions = unit(points)
    means = np.full((num_classes, directions.shape[1]), np.nan)
    for c in range(num_classes):
        members = directions[labels == c]
        if len(members):
            means[c] = unit(members.mean(0))
    return means


def geometry(train_points, train_labels, val_points, val_labels, num_classes, class_weights=None):
    """The geometry of one epoch, measured on the validation points.

    ncm_accuracy: nearest class mean, the means taken from the training points, by cosine.
    intra_class_deg: mean angle of a point to its class's mean (the spread of a cap).
    min_inter_class_deg: smallest angle between two class means (how close the nearest caps are).
    weight_to_mean_deg: for the cosine heads, the angle between each class mean and its class weight.
    """
    train_means = class_means(train_points, train_labels, num_classes)
    val_means = class_means(val_points, val_labels, num_classes)
    val_directions = unit(val_points)
    similarity = val_directions @ np.nan_to_num(train_means, nan=0.0).T  # (n_val, C)
    ncm_accuracy = float(np.mean(similarity.argmax(1) == val_labels))
    intra = angle_deg(val_directions, val_means[val_labels])
    present = ~np.isnan(val_means).any(1)
    between = angle_deg(val_means[present][:, None], val_means[present][None, :])
    np.fill_diagonal(between, np.inf)
    result = {
        "ncm_accuracy": ncm_accuracy,
        "intra_class_deg": float(np.nanmean(intra)),
        "min_inter_class_deg": float(between.min()) if present.sum() > 1 else None,
    }
    if class_weights is not None:
        result["weight_to_mean_deg"] = [None if np.isnan(a) else float(a)
                                        for a in angle_deg(val_means, class_weights)]
    return result
