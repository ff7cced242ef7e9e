"""Verification, as face recognition measures it: every pair of images of a group is scored by the
cosine of their embeddings, genuine pairs (two images of one class) against impostor pairs (two
classes). Also open-set recognition: telling images of the classes seen in training from others.

Scores are counted in a histogram of SCORE_BINS bins over [-1, 1], which is exact to a bin's width
(3e-5 in cosine) and takes one pass over the pairs: all pairs of 10,000 images (50 million) are
counted in half a second here, where sorting them for sklearn.metrics.roc_curve would take far longer.
Numpy (and scikit-learn for the open-set AUROC), so that drawing a run needs no torch; a run
trained on a GPU counts its pairs there (device_pair_histograms), where 50 million take milliseconds.
"""

import numpy as np

from embedviz.metrics import angle_deg, cdnv, class_means, unit

SCORE_BINS = 2 ** 16
FARS = (0.01, 0.001)  # the false accept rates at which the true accept rate is reported
ANGLE_BINS = 90  # the pairs' angles, recorded each epoch in bins of 2 degrees from 0 to 180
ROWS_PER_BLOCK = 1024  # rows of the cosine matrix computed at once: at most 1024 x 10,000 floats, 40 MB
PAIRS_PER_DEVICE_BLOCK = 2 ** 24  # pairs scored at once on a GPU: their cosines, keys and sort take about 400 MB


def score_bin(scores):
    """Cosines -> histogram bins, 0 (cosine -1) to SCORE_BINS - 1 (cosine 1)."""
    scores = np.array(scores, np.float32)  # a copy, changed in place below
    scores += 1
    scores *= SCORE_BINS / 2
    bins = scores.astype(np.int32)
    return np.clip(bins, 0, SCORE_BINS - 1, out=bins)


def histograms(genuine_scores, impostor_scores):
    """(genuine counts, impostor counts) per bin, of scores given one by one."""
    return (np.bincount(score_bin(genuine_scores).ravel(), minlength=SCORE_BINS),
            np.bincount(score_bin(impostor_scores).ravel(), minlength=SCORE_BINS))


def pair_histograms(embeddings, labels):
    """(genuine counts, impostor counts) per bin over all pairs of distinct rows of embeddings.

    With the rows sorted by class, the pairs of a class's rows with each other are genuine and
    those with the rows of the classes after it impostor: no pair needs its labels compared.
    """
    order = np.argsort(labels, kind="stable")
    directions = unit(np.asarray(embeddings)[order]).astype(np.float32)
    _, firsts = np.unique(np.asarray(labels)[order], return_index=True)
    genuine = np.zeros(SCORE_BINS + 1, np.int64)  # the last bin: not a pair
    impostor = np.zeros(SCORE_BINS, np.int64)
    for first, end in zip(firsts, [*firsts[1:], len(order)]):  # the rows of one class
        for start in range(first, end, ROWS_PER_BLOCK):
            rows = directions[start:min(start + ROWS_PER_BLOCK, end)]
            same = score_bin(rows @ directions[start:end].T)  # (rows, columns from the first row on)
            same[np.tril_indices(len(rows))] = SCORE_BINS  # a row with itself, or with one before it
            genuine += np.bincount(same.ravel(), minlength=SCORE_BINS + 1)
            impostor += np.bincount(score_bin(rows @ directions[end:].T).ravel(), minlength=SCORE_BINS)
    return genuine[:SCORE_BINS], impostor


def device_pair_histograms(embeddings, labels):
    """pair_histograms of a torch tensor, computed on its device with nothing read back but the counts."""
    genuine, impostor = device_pair_counts(embeddings, labels).cpu().numpy()
    return genuine, impostor


def device_pair_counts(embeddings, labels):
    """device_pair_histograms' counts, (2, SCORE_BINS) on the device: genuine pairs, then impostors.

    Each block of rows is paired with the rows after each of them; a pair's key is its bin, plus
    SCORE_BINS for an impostor pair, 2 SCORE_BINS for no pair. The keys are sorted and counted by
    binary search: torch.bincount on a GPU would first read the largest key back to the host.
    """
    import torch

    device = embeddings.device
    directions = torch.nn.functional.normalize(embeddings.double()).float()  # as unit(): zero rows stay zero
    labels = torch.as_tensor(np.asarray(labels), device=device)
    n = len(labels)
    edges = torch.arange(2 * SCORE_BINS + 1, dtype=torch.int32, device=device)  # the keys' dtype
    counts = torch.zeros(2 * SCORE_BINS, dtype=torch.int64, device=device)
    rows_per_block = max(1, PAIRS_PER_DEVICE_BLOCK // max(n, 1))
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        scores = directions[start:stop] @ directions[start:].T  # (rows, columns from the block's first row on)
        bins = ((scores + 1) * (SCORE_BINS / 2)).int().clamp_(0, SCORE_BINS - 1)  # as score_bin
        keys = bins + SCORE_BINS * (labels[start:stop, None] != labels[None, start:]).int()
        keys.masked_fill_(torch.ones_like(keys, dtype=torch.bool).tril_(), 2 * SCORE_BINS)  # itself, or before it
        counts += torch.searchsorted(keys.flatten().sort().values, edges).diff()
    return counts.view(2, SCORE_BINS)


def roc(genuine_counts, impostor_counts):
    """(false accept rates, true accept rates) at every bin's lower edge as threshold, from the
    highest threshold to the lowest, (0, 0) first: a pair is accepted when its score is at or above."""
    far = np.concatenate([[0.0], np.cumsum(impostor_counts[::-1]) / max(impostor_counts.sum(), 1)])
    tar = np.concatenate([[0.0], np.cumsum(genuine_counts[::-1]) / max(genuine_counts.sum(), 1)])
    return far, tar


def summary(genuine_counts, impostor_counts):
    """{"auc", "eer", "tar_at_far": {"0.01", "0.001"}, "pairs": {"genuine", "impostor"}}; None values
    when either kind of pair is missing."""
    pairs = {"genuine": int(genuine_counts.sum()), "impostor": int(impostor_counts.sum())}
    if not (pairs["genuine"] and pairs["impostor"]):
        return {"auc": None, "eer": None, "tar_at_far": {str(f): None for f in FARS}, "pairs": pairs}
    far, tar = roc(genuine_counts, impostor_counts)
    # the lowest threshold whose false accept rate is still at most f accepts the most genuine pairs
    tar_at_far = {str(f): float(tar[np.searchsorted(far, f, side="right") - 1]) for f in FARS}
    # equal error rate: between the last threshold where false rejects outnumber false accepts and the next
    frr = 1 - tar
    k = np.argmax(far >= frr)  # >= 1: at the highest threshold, far = 0 and frr = 1
    gap_before, gap_after = frr[k - 1] - far[k - 1], far[k] - frr[k]
    eer = far[k - 1] + gap_before / (gap_before + gap_after) * (far[k] - far[k - 1])
    auc = np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2)  # the trapezoids under the curve
    return {"auc": float(auc), "eer": float(eer), "tar_at_far": tar_at_far, "pairs": pairs}


def angle_counts(counts):
    """Pair counts in SCORE_BINS cosine bins -> ANGLE_BINS counts of their angles, 0 to 180 degrees (each
    cosine bin goes whole to the angle bin of its centre)."""
    centres = -1 + (np.arange(SCORE_BINS) + 0.5) * (2 / SCORE_BINS)
    angle_bin = np.minimum((np.degrees(np.arccos(centres)) / (180 / ANGLE_BINS)).astype(int), ANGLE_BINS - 1)
    return np.bincount(angle_bin, weights=counts, minlength=ANGLE_BINS).round().astype(np.int64)


def verification(embeddings, labels):
    """summary() over all pairs of the rows of embeddings (n, dim) with labels (n,)."""
    return summary(*pair_histograms(embeddings, labels))


def open_set_auroc(seen_points, unseen_points, seen_means):
    """How well the best cosine to a seen class's mean tells seen images (positive) from unseen ones."""
    from sklearn.metrics import roc_auc_score  # here: it takes a second to import, and only open-set runs need it

    if len(seen_points) == 0 or len(unseen_points) == 0:
        return None
    means = unit(np.nan_to_num(seen_means, nan=0.0))
    best = np.concatenate([unit(seen_points) @ means.T, unit(unseen_points) @ means.T]).max(1)
    return float(roc_auc_score(np.r_[np.ones(len(seen_points)), np.zeros(len(unseen_points))], best))


def gallery_split(labels, seed):
    """A seeded half of each class's rows (the gallery, enrolled) and the other half (the probes)."""
    rng = np.random.default_rng(seed)
    gallery = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        gallery[members[:len(members) // 2]] = True
    return gallery


def unseen_geometry(unseen_points, unseen_labels, seen_means, seed):
    """Nearest-class-mean accuracy among the unseen classes (means from a seeded half of their images,
    tested on the other half), their intra-class spread, and the smallest angle between an unseen
    class's mean and any other class's mean, seen or unseen (degrees)."""
    unseen_labels = np.asarray(unseen_labels)
    classes = np.unique(unseen_labels)
    index = np.searchsorted(classes, unseen_labels)  # unseen classes numbered 0, 1, ...
    gallery = gallery_split(index, seed)
    gallery_means = class_means(unseen_points[gallery], index[gallery], len(classes))
    similarity = unit(unseen_points[~gallery]) @ np.nan_to_num(gallery_means, nan=0.0).T
    means = class_means(unseen_points, index, len(classes))
    others = np.concatenate([means, seen_means])
    between = angle_deg(means[:, None], others[None, :])  # (unseen, unseen + seen)
    between[np.arange(len(classes)), np.arange(len(classes))] = np.nan  # a class with itself
    return {"unseen_ncm_accuracy": float(np.mean(similarity.argmax(1) == index[~gallery])),
            "unseen_intra_class_deg": float(np.mean(angle_deg(unseen_points, means[index]))),
            "unseen_min_angle_deg": float(np.nanmin(between))}


def epoch_metrics(embeddings, labels, splits, seen_means, seed, on_device=None):
    """The verification and open-set figures of one epoch's saved points (rows as in the run's splits,
    labels as in the dataset), for the history: the seen part alone when no class is held out. Per
    group ("seen", the validation images of the trained classes, and "unseen"): the verification
    figures, the angles of the genuine and impostor pairs in ANGLE_BINS bins, and the CDNV.
    on_device: the same embeddings as a tensor on a GPU, where their pairs are then counted."""
    result = {"verification": {}, "pair_angles": {}}

    def measure(group, rows):
        counts = (pair_histograms(embeddings[rows], labels[rows]) if on_device is None else
                  device_pair_histograms(on_device[rows], labels[rows]))
        result["verification"][group] = summary(*counts)
        result["pair_angles"][group] = {kind: angle_counts(kind_counts).tolist()
                                        for kind, kind_counts in zip(("genuine", "impostor"), counts)}
        result[f"cdnv_{group}"] = cdnv(embeddings[rows], labels[rows])

    val = slice(*splits["val"])
    measure("seen", val)
    if "unseen" in splits:
        unseen = slice(*splits["unseen"])
        measure("unseen", unseen)
        result["open_set_auroc"] = open_set_auroc(embeddings[val], embeddings[unseen], seen_means)
        result.update(unseen_geometry(embeddings[unseen], labels[unseen], seen_means, seed))
    return result


def roc_curves(embeddings, labels, splits):
    """{"seen": (far, tar), and with classes held out "unseen": (far, tar)} of one frame's points."""
    groups = ["val", *(["unseen"] if "unseen" in splits else [])]
    return {"seen" if group == "val" else group: roc(*pair_histograms(embeddings[slice(*splits[group])],
                                                                       labels[slice(*splits[group])]))
            for group in groups}
