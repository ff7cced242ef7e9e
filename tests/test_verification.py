import math

import numpy as np
import pytest

from embedviz.verification import (
    ANGLE_BINS,
    angle_counts,
    gallery_split,
    histograms,
    open_set_auroc,
    pair_histograms,
    summary,
    unseen_geometry,
    verification,
)


def test_a_roc_small_enough_to_count_by_hand():
    genuine, impostor = [0.9, 0.8, 0.3], [0.5, 0.1, -0.2, -0.5]
    result = summary(*histograms(genuine, impostor))
    assert result["pairs"] == {"genuine": 3, "impostor": 4}
    assert result["auc"] == pytest.approx(11 / 12)  # 0.3 loses to 0.5 only: 11 of 12 (genuine, impostor) pairs
    # accepting no impostor (FAR <= 0.01 of 4) accepts 0.9 and 0.8
    assert result["tar_at_far"] == {"0.01": pytest.approx(2 / 3), "0.001": pytest.approx(2 / 3)}
    # thresholds going down: FRR 1/3 with FAR 1/4 (0.5 accepted), then FRR 0 with FAR 1/4: they meet at 1/4
    assert result["eer"] == pytest.approx(0.25)


def test_perfectly_separated_and_identical_scores():
    separated = summary(*histograms(np.full(5, 0.9), np.full(7, -0.4)))
    assert separated["auc"] == 1.0 and separated["eer"] == 0.0 and separated["tar_at_far"]["0.001"] == 1.0
    same = summary(*histograms(np.full(5, 0.2), np.full(7, 0.2)))
    assert same["auc"] == pytest.approx(0.5) and same["eer"] == pytest.approx(0.5)
    assert same["tar_at_far"]["0.01"] == 0.0  # accepting any of them accepts every impostor


def sklearn_reference(genuine, impostor, fars):
    from sklearn.metrics import roc_auc_score, roc_curve  # a second to import: here, where it is used

    truth = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    scores = np.r_[genuine, impostor]
    fpr, tpr, _ = roc_curve(truth, scores)
    frr = 1 - tpr
    k = np.argmax(fpr >= frr)
    t = (frr[k - 1] - fpr[k - 1]) / ((frr[k - 1] - fpr[k - 1]) + (fpr[k] - frr[k]))
    eer = fpr[k - 1] + t * (fpr[k] - fpr[k - 1])
    return roc_auc_score(truth, scores), eer, {str(f): tpr[fpr <= f].max() for f in fars}


@pytest.mark.parametrize("seed", range(5))
def test_the_histogram_roc_agrees_with_scikit_learn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    genuine = np.clip(rng.normal(0.6, 0.25, 20_000), -1, 1)
    impostor = np.clip(rng.normal(-0.1, 0.35, 200_000), -1, 1)
    result = summary(*histograms(genuine, impostor))
    auc, eer, tar_at_far = sklearn_reference(genuine, impostor, (0.01, 0.001))
    assert result["auc"] == pytest.approx(auc, abs=1e-3)
    assert result["eer"] == pytest.approx(eer, abs=1e-3)
    for far in ("0.01", "0.001"):
        assert result["tar_at_far"][far] == pytest.approx(tar_at_far[far], abs=1e-3)


def test_all_pairs_of_the_rows_are_counted_once_and_scored_by_their_cosine():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 7], [5, 9, 1, 14])  # a class of one image has no genuine pair
    embeddings = rng.normal(size=(len(labels), 3)) * rng.uniform(0.1, 5, size=(len(labels), 1))
    genuine, impostor = pair_histograms(embeddings, labels)
    n = len(labels)
    same = sum(math.comb(k, 2) for k in (5, 9, 1, 14))
    assert genuine.sum() == same and impostor.sum() == math.comb(n, 2) - same
    directions = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    by_hand = [[], []]
    for i in range(n):
        for j in range(i + 1, n):
            by_hand[int(labels[i] != labels[j])].append(directions[i] @ directions[j])
    expected = summary(*histograms(*by_hand))
    result = verification(embeddings, labels)
    assert result["pairs"] == expected["pairs"]
    assert result["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert result["eer"] == pytest.approx(expected["eer"], abs=1e-6)


def test_blocks_of_rows_count_the_same_pairs_as_one_block(monkeypatch):
    from embedviz import verification as module

    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(50, 3)), rng.integers(0, 4, 50)
    whole = pair_histograms(embeddings, labels)
    monkeypatch.setattr(module, "ROWS_PER_BLOCK", 7)
    blocks = pair_histograms(embeddings, labels)
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocks))


def test_no_pairs_of_a_kind_gives_no_figures():
    result = verification(np.eye(3), np.array([0, 1, 2]))  # three classes of one image: no genuine pair
    assert result["auc"] is None and result["pairs"] == {"genuine": 0, "impostor": 3}


def on_circle(degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)


def test_open_set_auroc_ranks_by_the_best_cosine_to_a_seen_mean():
    seen_means = on_circle([0.0, 90.0])
    seen = on_circle([5.0, 80.0, 30.0])      # best cosines: cos 5, cos 10, cos 30
    unseen = on_circle([200.0, 140.0, 40.0])  # cos 110 -> cos 20... best: cos 70, cos 50, cos 40
    # seen 30 (cos 30) beats every unseen; all 9 (seen, unseen) pairs ordered rightly
    assert open_set_auroc(seen, unseen, seen_means) == 1.0
    closer = on_circle([2.0])  # an unseen image nearer to a seen mean than any seen image
    assert open_set_auroc(seen, closer, seen_means) == 0.0
    assert open_set_auroc(seen, np.concatenate([unseen, closer]), seen_means) == pytest.approx(9 / 12)
    assert open_set_auroc(seen, np.zeros((0, 3)), seen_means) is None


def test_gallery_is_half_of_every_class_and_seeded():
    labels = np.repeat([0, 1, 2], [10, 7, 1])
    gallery = gallery_split(labels, seed=3)
    assert [int(gallery[labels == c].sum()) for c in range(3)] == [5, 3, 0]
    assert np.array_equal(gallery, gallery_split(labels, seed=3))
    assert not np.array_equal(gallery, gallery_split(labels, seed=4))


def test_unseen_geometry_of_caps_at_known_angles():
    # unseen classes 7 and 9 around 100 and 160 degrees, each point 10 degrees off its centre
    centres = np.repeat([100.0, 160.0], 4)
    points = on_circle(centres + np.tile([-10.0, 10.0, -10.0, 10.0], 2)) * 3.0
    labels = np.repeat([7, 9], 4)
    seen_means = on_circle([0.0, 130.0])  # a seen class between the two: 30 degrees from each
    result = unseen_geometry(points, labels, seen_means, seed=0)
    assert result["unseen_ncm_accuracy"] == 1.0
    assert result["unseen_intra_class_deg"] == pytest.approx(10.0)
    assert result["unseen_min_angle_deg"] == pytest.approx(30.0)


def test_roc_curves_of_a_frame_per_group_from_0_0_to_1_1():
    from embedviz.verification import roc_curves

    rng = np.random.default_rng(2)
    labels = np.r_[np.arange(30) % 3, np.arange(20) % 3, 3 + np.arange(16) % 2]
    embeddings = rng.normal(size=(len(labels), 3))
    curves = roc_curves(embeddings, labels, {"train": [0, 30], "val": [30, 50], "unseen": [50, 66]})
    assert set(curves) == {"seen", "unseen"}
    for (far, tar), rows in ((curves["seen"], slice(30, 50)), (curves["unseen"], slice(50, 66))):
        assert (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
        assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
        auc = np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2)
        assert auc == pytest.approx(verification(embeddings[rows], labels[rows])["auc"])
    assert set(roc_curves(embeddings[:50], labels[:50], {"train": [0, 30], "val": [30, 50]})) == {"seen"}


def test_pair_angles_fall_in_their_two_degree_bins():
    angles = np.array([1.0, 1.5, 61.0, 91.0, 179.0])  # bins 0, 0, 30, 45 and 89
    genuine, impostor = histograms(np.cos(np.radians(angles)), np.cos(np.radians([120.5])))
    counts = angle_counts(genuine)
    assert len(counts) == ANGLE_BINS and counts.sum() == 5
    assert {int(b): int(counts[b]) for b in np.flatnonzero(counts)} == {0: 2, 30: 1, 45: 1, 89: 1}
    assert np.flatnonzero(angle_counts(impostor)).tolist() == [60]
