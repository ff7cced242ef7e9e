"""The newer heads against hand computations of their papers' formulas, in float64, at known
angles and norms: AdaCos, Sub-center ArcFace, CurricularFace, ElasticFace, MagFace, AdaFace."""

import math

import pytest
import torch
from test_losses import STATE, hand_target, preset_head

from losses import AdaCos, AdaFace, CurricularFace, ElasticFace, MagFace, SubCenterArcFace, margin_target
from models import PRESETS

NEW_HEADS = ["vgg8_adacos", "vgg8_subcenter", "vgg8_curricularface", "vgg8_elasticface", "vgg8_magface", "vgg8_adaface"]
WEIGHTS = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]], dtype=torch.float64) * 3.0
ANGLES = [0.0, 0.4, 1.2, 2.0, 2.9]           # of each point to class 0's weight, in the x-y plane
NORMS = [0.3, 1.0, 1.7, 2.4, 4.0]            # below, inside and above MagFace's [0.5, 2.5]
LABELS = torch.tensor([0, 1, 0, 3, 0])


def points(angles=ANGLES, norms=NORMS):
    return torch.tensor([[n * math.cos(a), n * math.sin(a), 0.0] for a, n in zip(angles, norms)], dtype=torch.float64)


def hand_cosines(xs, weights=WEIGHTS):
    return [[sum(a * b for a, b in zip(x, w)) / (math.hypot(*x) * math.hypot(*w)) for w in weights.tolist()]
            for x in xs.tolist()]


def in_float64(head, weights=WEIGHTS):
    head = head.double()
    with torch.no_grad():
        head.weight.copy_(weights)
    return head


def hand_ce(row, label):
    top = max(row)
    return math.log(sum(math.exp(v - top) for v in row)) + top - row[label]


def test_adacos_rescales_from_the_batch_with_the_previous_scale():
    head = in_float64(AdaCos(3, 4)).train()
    cos = hand_cosines(points())
    s0 = head.s.item()  # the fixed scale, held in float32 as the network's buffers
    assert s0 == pytest.approx(math.sqrt(2) * math.log(4 - 1), rel=1e-7)
    b_avg = sum(sum(math.exp(s0 * c) for j, c in enumerate(row) if j != y) for row, y in zip(cos, LABELS.tolist())) / 5
    theta_med = sorted(math.acos(row[y]) for row, y in zip(cos, LABELS.tolist()))[2]  # 5 angles: the middle one
    s1 = min(math.log(b_avg) / math.cos(min(math.pi / 4, theta_med)), AdaCos.MAX_S)
    logits = head(points(), LABELS)
    assert head.s.item() == pytest.approx(s1, rel=1e-12) and head.state() == {"s": pytest.approx(s1, rel=1e-12)}
    torch.testing.assert_close(logits, s1 * torch.tensor(cos, dtype=torch.float64))
    head.eval()
    head(points(), LABELS)
    head.train()
    head(points())
    assert head.s.item() == pytest.approx(s1, rel=1e-12)  # eval mode and calls without labels leave it


def test_adacos_scale_is_capped_and_never_overflows():
    head = in_float64(AdaCos(3, 4)).train()
    with torch.no_grad():
        head.s.fill_(1e4)  # exp(1e4 * cos) overflows float64; the log-sum-exp does not
    head(points(), LABELS)
    assert head.s.item() == AdaCos.MAX_S


def test_subcenter_takes_the_best_of_each_class_then_the_margin():
    # class c's sub-centres: its weight and two others; class 0's second one lies at 0.4 rad
    extra = torch.tensor([[0.0, 0, -1.0], [math.cos(0.4), math.sin(0.4), 0.0]], dtype=torch.float64)
    weights = torch.stack([torch.stack([w, extra[0], extra[1] if c == 0 else -extra[0]])
                           for c, w in enumerate(WEIGHTS)])
    head = in_float64(SubCenterArcFace(3, 4, s=15.0, m=0.5, k=3), weights.reshape(12, 3))
    assert head.k == 3 and (head.m1, head.m2, head.m3) == (1.0, 0.5, 0.0)
    cos = [[max(row[3 * c:3 * c + 3]) for c in range(4)] for row in hand_cosines(points(), weights.reshape(12, 3))]
    expected = [[15 * (hand_target(math.acos(min(1.0, c)), 1.0, 0.5, 0.0) if j == y else c) for j, c in enumerate(row)]
                for row, y in zip(cos, LABELS.tolist())]
    torch.testing.assert_close(head(points(), LABELS), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(head(points()), 15 * torch.tensor(cos, dtype=torch.float64))
    assert cos[1][0] == pytest.approx(1.0)  # the point at 0.4 rad sits on class 0's second sub-centre


def test_curricularface_reweights_hard_negatives_with_the_updated_t():
    head = in_float64(CurricularFace(3, 4, s=15.0, m=0.5)).train()
    with torch.no_grad():
        head.t.fill_(0.3)
    cos = hand_cosines(points())
    t = 0.99 * 0.3 + 0.01 * sum(row[y] for row, y in zip(cos, LABELS.tolist())) / 5
    expected = []
    for row, y in zip(cos, LABELS.tolist()):
        target = hand_target(math.acos(min(1.0, row[y])), 1.0, 0.5, 0.0)
        expected.append([15 * (target if j == y else c * (t + c) if c > target else c) for j, c in enumerate(row)])
    torch.testing.assert_close(head(points(), LABELS), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert head.state() == {"t": pytest.approx(t, rel=1e-12)}
    assert any(c > hand_target(math.acos(min(1.0, row[y])), 1, 0.5, 0) for row, y in zip(cos, LABELS.tolist())
               for j, c in enumerate(row) if j != y)  # the batch has hard negatives to reweight
    head.eval()
    head(points(), LABELS)
    assert head.state() == {"t": pytest.approx(t, rel=1e-12)}


def test_elasticface_draws_each_samples_margin_from_the_seeded_generator():
    head = in_float64(ElasticFace(3, 4, s=15.0, m=0.5, sigma=0.05)).train()
    torch.manual_seed(7)
    logits = head(points(), LABELS)
    torch.manual_seed(7)
    margins = (0.5 + 0.05 * torch.randn(5, 1, dtype=torch.float64))[:, 0].tolist()
    cos = hand_cosines(points())
    expected = [[15 * (hand_target(math.acos(min(1.0, c)), 1.0, m, 0.0) if j == y else c) for j, c in enumerate(row)]
                for row, y, m in zip(cos, LABELS.tolist(), margins)]
    torch.testing.assert_close(logits, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert len(set(margins)) == 5
    eval_logits = head.eval()(points(), LABELS)  # eval mode: the mean margin, no draw
    arc = [[15 * (hand_target(math.acos(min(1.0, c)), 1.0, 0.5, 0.0) if j == y else c) for j, c in enumerate(row)]
           for row, y in zip(cos, LABELS.tolist())]
    torch.testing.assert_close(eval_logits, torch.tensor(arc, dtype=torch.float64), atol=1e-6, rtol=0)


def test_magface_margin_and_regulariser_follow_the_norm():
    head = in_float64(MagFace(3, 4, s=15.0, l_a=0.5, u_a=2.5, l_m=0.25, u_m=0.5, lambda_g=1.0))
    cos = hand_cosines(points())
    clamped = [min(max(n, 0.5), 2.5) for n in NORMS]
    margins = [(0.5 - 0.25) / (2.5 - 0.5) * (a - 0.5) + 0.25 for a in clamped]
    assert margins[0] == 0.25 and margins[-1] == 0.5  # the bounds hold outside [l_a, u_a]
    expected = [[15 * (hand_target(math.acos(min(1.0, c)), 1.0, m, 0.0) if j == y else c) for j, c in enumerate(row)]
                for row, y, m in zip(cos, LABELS.tolist(), margins)]
    logits = head(points(), LABELS)
    torch.testing.assert_close(logits, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    loss = head.loss(logits, LABELS, points())
    hand_loss = sum(hand_ce(row, y) + 1.0 * (1 / a + a / 2.5 ** 2)
                    for row, y, a in zip(expected, LABELS.tolist(), clamped)) / 5
    assert loss.item() == pytest.approx(hand_loss, rel=1e-9)
    torch.testing.assert_close(head(points()), 15 * torch.tensor(cos, dtype=torch.float64))


def test_adaface_margin_adapts_to_the_norm_against_the_running_statistics():
    head = in_float64(AdaFace(3, 4, s=15.0, m=0.4, h=0.333)).train()
    with torch.no_grad():
        head.batch_mean.fill_(1.5), head.batch_std.fill_(0.5)
    mean = sum(NORMS) / 5
    std = math.sqrt(sum((n - mean) ** 2 for n in NORMS) / 4)  # unbiased, as torch.std
    mu, sigma = 0.99 * 1.5 + 0.01 * mean, 0.99 * 0.5 + 0.01 * std
    cos = hand_cosines(points())
    expected = []
    for row, y, n in zip(cos, LABELS.tolist(), NORMS):
        z = max(-1.0, min(1.0, 0.333 * (n - mu) / (sigma + 1e-3)))
        g_angle, g_add = -0.4 * z, 0.4 * z + 0.4
        theta = math.acos(min(1.0, row[y]))
        phi = max(theta + g_angle, 0.0)  # the paper clips theta + g_angle at 0
        target = math.cos(phi) - g_add if phi <= math.pi else hand_target(theta, 1.0, g_angle, g_add)
        expected.append([15 * (target if j == y else c) for j, c in enumerate(row)])
    torch.testing.assert_close(head(points(), LABELS), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert head.state() == {"batch_mean": pytest.approx(mu, rel=1e-12), "batch_std": pytest.approx(sigma, rel=1e-12)}
    head.eval()
    head(points(), LABELS)
    assert head.state()["batch_mean"] == pytest.approx(mu, rel=1e-12)


@pytest.mark.parametrize("name", NEW_HEADS)
def test_gradients_are_finite_at_cosines_of_plus_and_minus_one(name):
    head = preset_head(name)
    head = in_float64(head, WEIGHTS.repeat_interleave(head.k, 0)).train()
    x = (torch.tensor([[2.0, 0, 0], [-2.0, 0, 0], [0, 0, 1.5]], dtype=torch.float64)).requires_grad_()
    labels = torch.tensor([0, 0, 3])  # on its weight, opposite it, and at 90 degrees from its own
    logits = head(x, labels)
    head.loss(logits, labels, x).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize("per_sample", ["elastic", "magface", "adaface"])
def test_per_sample_targets_never_rise_with_the_angle(per_sample):
    theta = torch.linspace(0, math.pi, 1001, dtype=torch.float64)[:, None]
    cosine = torch.cos(theta)
    for k in torch.linspace(0, 1, 11, dtype=torch.float64).tolist():
        if per_sample == "elastic":      # draws from m = 0.5 +/- 10 sigma
            m2, m3 = 0.0 + k * 1.0, 0.0
        elif per_sample == "magface":    # l_m to u_m
            m2, m3 = 0.25 + k * 0.25, 0.0
        else:                            # z from -1 to 1: g_angle = -0.4 z, g_add = 0.4 z + 0.4
            z = 2 * k - 1
            m2, m3 = -0.4 * z, 0.4 * z + 0.4
        target = margin_target(cosine, m2=torch.full_like(cosine, m2), m3=m3)[:, 0]
        assert (target.diff() <= 0).all(), f"the target rises for m2={m2:.2f}, m3={m3:.2f}"
        if m2 >= 0:
            assert (target.diff() < 0).all()


# ---------------------------------------------------------------- end to end, on 400 real digits

def tiny_run(data_dir, out_dir, model, *extra):
    import train
    from conftest import call_main

    result = call_main(train.main, "--model", model, "--data-dir", data_dir, "--out-dir", out_dir, "--train-points",
                       "100", "--batch-size", "64", "--lr", "3e-3", "--precision", "fp32", *extra)
    assert result.returncode == 0, result.stderr
    from embedviz.run_files import load_run
    return load_run(str(out_dir), model)


@pytest.fixture(scope="module")
def learned(tiny_mnist, tmp_path_factory):
    """name -> (embeddings, labels, meta) of a 6-epoch run of that head, trained when first asked for."""
    runs = {}

    def run(name):
        if name not in runs:
            runs[name] = tiny_run(tiny_mnist, tmp_path_factory.mktemp(name), name, "--epochs", "6")
        return runs[name]
    return run


@pytest.mark.xdist_group("new_heads")
@pytest.mark.parametrize("name", NEW_HEADS)
def test_each_new_head_learns_the_digits(learned, name):
    _, _, meta = learned(name)
    history = meta["history"]
    assert history[-1]["val_accuracy"] >= 0.3, [round(e["val_accuracy"], 2) for e in history]  # chance: 0.10
    assert history[-1]["val_loss"] < history[1]["val_loss"]
    head_class, arguments = PRESETS[name]
    assert meta["head"] == preset_head(name, num_classes=10).config() == meta["head"] | arguments
    assert meta["head"]["class"] == head_class.__name__
    assert ("head_state" in history[-1]) == (head_class in STATE)
    assert set(history[-1].get("head_state", {})) == STATE.get(head_class, set())
    if name == "vgg8_subcenter":
        subcenters = history[-1]["subcenters"]
        assert len(subcenters["weights"]) == 10 and len(subcenters["weights"][0]) == 3
        assert 0 <= subcenters["outliers"] <= 100 and meta["outlier_deg"] == pytest.approx(66.1468 / 2)


@pytest.mark.xdist_group("new_heads")
@pytest.mark.parametrize("name", ["vgg8_adacos", "vgg8_elasticface", "vgg8_adaface"])
def test_resuming_a_head_with_state_or_draws_is_bit_identical(tiny_mnist, tmp_path, learned, name):
    """Epoch 1, stopped, then resumed to epoch 2: the first two epochs of the uninterrupted 6-epoch run."""
    import numpy as np

    whole_embeddings, _, whole = learned(name)
    tiny_run(tiny_mnist, tmp_path, name, "--epochs", "1")
    parts_embeddings, _, parts = tiny_run(tiny_mnist, tmp_path, name, "--epochs", "2", "--resume")
    np.testing.assert_array_equal(whole_embeddings[:3], parts_embeddings)
    timeless = [{k: v for k, v in e.items() if k not in ("seconds", "train_seconds")} for e in whole["history"][:3]]
    assert timeless == [{k: v for k, v in e.items() if k not in ("seconds", "train_seconds")} for e in parts["history"]]


def test_adacos_trains_two_classes_whose_fixed_scale_would_be_zero():
    head = in_float64(AdaCos(3, 2), WEIGHTS[:2]).train()
    assert head.s.item() == AdaCos.MIN_S  # sqrt(2) ln(2 - 1) = 0 would leave every logit 0
    head(points(), LABELS.clamp(max=1))
    assert AdaCos.MIN_S <= head.s.item() <= AdaCos.MAX_S
