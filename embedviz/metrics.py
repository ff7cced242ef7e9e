"""What the sphere shows, in numbers: the angular geometry of the embeddings of one epoch.

All angles are in degrees and are measured between directions (L2-normalised vectors), as
the frames draw them. Pure numpy, so that a test can reach every function.
"""

import numpy as np


def unit(vectors, dtype=np.float64):
    """Rows scaled to length 1, in dtype; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype)
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


def cdnv(points, labels):
    """Class-distance-normalised variance (Galanti et al., 2022, "On the Role of Neural Collapse in
    Transfer Learning", Def. 1) of the unit-normalised points: for two classes, the sum of their
    variances (the mean squared distance of a point to its class's mean) over twice the squared
    distance between their means, averaged over every pair of classes. Near 0: tight classes far
    apart. None with fewer than two classes, or two classes with the same mean."""
    directions, labels = unit(points), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        return None
    means = np.stack([directions[labels == c].mean(0) for c in classes])
    variances = np.array([((directions[labels == c] - mean) ** 2).sum(1).mean() for c, mean in zip(classes, means)])
    i, j = np.triu_indices(len(classes), 1)
    distances = ((means[i] - means[j]) ** 2).sum(1)
    if not (distances > 0).all():
        return None
    return float(np.mean((variances[i] + variances[j]) / (2 * distances)))


# The largest possible smallest angle between N points on the 2-sphere (the Tammes problem), degrees:
# N = 3, 4, 6, 12 Fejes Toth (1943); N = 5-9 Schuette and van der Waerden (1951); N = 10, 11 Danzer
# (1986, Discrete Math. 60); N = 13 Musin and Tarasov (2012, Discrete Comput. Geom. 48); N = 14
# Musin and Tarasov (2015, Experimental Math. 24). Beyond 14 the optimum is not proven.
TAMMES_DEG = {2: 180.0, 3: 120.0, 4: 109.4712, 5: 90.0, 6: 90.0, 7: 77.8695, 8: 74.8585, 9: 70.5288,
              10: 66.1468, 11: 63.4349, 12: 63.4349, 13: 57.1367, 14: 55.6706}


def separation_bound_deg(num_classes, dim):
    """The most that the smallest angle between num_classes class means can be in dim dimensions:
    360 / C on the circle, the Tammes value on the sphere; None where no value is known."""
    if num_classes < 2:
        return None
    if dim == 2:
        return 360.0 / num_classes if num_classes > 2 else 180.0
    return TAMMES_DEG.get(num_classes) if dim == 3 else None


def outlier_threshold_deg(num_classes, dim):
    """Sub-center ArcFace's outliers lie farther than this from their class's dominant sub-centre.
    The paper's 75 degrees is for 512-D faces, where unrelated images sit near 90 degrees apart; on
    a sphere of C caps, half the widest possible spacing of their centres (the Tammes angle) is
    where a point starts to lie nearer another class's cap than its own. 30 where no bound is known."""
    bound = separation_bound_deg(num_classes, dim)
    return bound / 2 if bound is not None else 30.0


def dominant_subcenters(points, labels, subcenters):
    """Sub-center ArcFace's view of one epoch. subcenters: (C, K, dim), each class's K sub-centres.
    Returns the dominant sub-centre of each class (the one nearest, by cosine, to most of its
    points; 0 for a class without points) and each point's angle to its class's dominant one."""
    directions, centres = unit(points), unit(subcenters)
    nearest = np.einsum("nd,nkd->nk", directions, centres[labels]).argmax(1)
    dominant = np.array([np.bincount(nearest[labels == c], minlength=centres.shape[1]).argmax()
                         for c in range(len(centres))])
    return dominant, angle_deg(directions, centres[labels, dominant[labels]])
