"""Class-balanced subsamples, in numpy so that drawing needs no torch."""

import numpy as np


def balanced_rows(labels, n, seed):
    """Indices of n rows with the classes as equal as possible, chosen with default_rng(seed), sorted.

    n = 0 or n >= len(labels) means all of them.
    """
    labels = np.asarray(labels)
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    # rank of each row within its class in the shuffled order: 0, 1, 2, ... per class
    rank = np.empty(len(order), np.int64)
    for c in np.unique(shuffled):
        members = np.flatnonzero(shuffled == c)
        rank[members] = np.arange(len(members))
    # rank 0 of every class, then rank 1 of every class, ...
    key = rank * (int(labels.max()) + 1) + shuffled
    return np.sort(order[np.argsort(key, kind="stable")[:n]])
