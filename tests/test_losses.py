import math

import pytest
import torch

from losses import (AdaCos, AdaFace, ArcFace, CombinedMargin, CosFace, CurricularFace, NormFace, Softmax, SphereFace,
                    SubCenterArcFace, margin_target)
from models import HEADS, PRESETS, build_model

ANGLES = [0.0, 0.3, 1.0, math.pi / 2, 2.0, 2.5, math.pi - 0.5, 2.9, math.pi]  # 2.9 > pi - m for m = 0.5
# the margin family with one weight a class; each preset's (m1, m2, m3), written out here rather than read from
# the head, so that a class that put its m in the wrong one of the three would not match the hand computation
MARGINS = {"vgg8_normface": (1.0, 0.0, 0.0), "vgg8_sphereface": (1.5, 0.0, 0.0), "vgg8_cosface": (1.0, 0.0, 0.35),
           "vgg8_arcface": (1.0, 0.5, 0.0), "vgg8_combined": (1.0, 0.3, 0.2)}
MARGIN_PRESETS = [name for name, (head_class, arguments) in PRESETS.items()
                  if issubclass(head_class, CombinedMargin) and "k" not in arguments]


def preset_head(name, in_features=3, num_classes=4, **overrides):
    """The preset's head, its arguments overridden by the class's parameter names (s, m, k, ...)."""
    head_class, arguments = PRESETS[name]
    return head_class(in_features, num_classes, **{**arguments, **overrides})


def head_arguments(*argv):
    """train.py's head for these command-line options: (class, arguments)."""
    import train

    return train.head_arguments(train.parse_args(list(argv)))


def test_the_margin_family_is_the_five_presets_with_one_weight_a_class():
    assert MARGIN_PRESETS == list(MARGINS)
    assert issubclass(SubCenterArcFace, CombinedMargin) and PRESETS["vgg8_subcenter"][1]["k"] == 3


def unit_weights_and_points(angles):
    """Class 0's weight is e_x; point i makes angle angles[i] with it in the x-y plane (float64)."""
    weights = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]], dtype=torch.float64) * 3.0
    points = torch.tensor([[math.cos(a), math.sin(a), 0.0] for a in angles], dtype=torch.float64) * 2.0
    return weights, points


def hand_target(theta, m1, m2, m3):
    """The target logit's cosine, by the definitions: margin, then the monotonic continuation past pi."""
    phi = m1 * theta + m2
    if phi <= math.pi:
        return math.cos(phi) - m3
    if m1 == 1:  # a straight continuation, shifted down at least as far as the curve's end, -1 - m3
        return math.cos(theta) - max(m2 * math.sin(m2), 1 - math.cos(m2)) - m3
    k = math.floor(phi / math.pi)
    return (-1) ** k * math.cos(phi) - 2 * k - m3


def hand_logits(points, weights, labels, s, m1=1.0, m2=0.0, m3=0.0):
    """Loop over samples and classes with math's functions only."""
    rows = []
    for i, x in enumerate(points.tolist()):
        row = []
        for j, w in enumerate(weights.tolist()):
            cos = sum(a * b for a, b in zip(x, w)) / (math.hypot(*x) * math.hypot(*w))
            if labels is not None and j == labels[i]:
                cos = hand_target(math.acos(max(-1.0, min(1.0, cos))), m1, m2, m3)
            row.append(s * cos)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def with_weights(head, weights):
    head = head.double()
    with torch.no_grad():
        head.weight.copy_(weights)
    return head


# the clamp that keeps acos differentiable moves theta by sqrt(2 * float64 eps) ~ 2e-8 at most
ATOL = 15 * 1.5 * 3e-8


@pytest.mark.parametrize("name", MARGIN_PRESETS)
@pytest.mark.parametrize("with_labels", [True, False])
def test_every_margin_head_matches_the_hand_computation(name, with_labels):
    weights, points = unit_weights_and_points(ANGLES)
    head = with_weights(preset_head(name), weights)
    assert (head.m1, head.m2, head.m3) == MARGINS[name] and head.s == 15.0
    labels = [0] * len(ANGLES) if with_labels else None
    logits = head(points, torch.tensor(labels) if with_labels else None)
    expected = hand_logits(points, weights, labels, 15.0, *MARGINS[name])
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    if with_labels:  # the margin only touches the target column
        torch.testing.assert_close(logits[:, 1:], expected[:, 1:], atol=1e-12, rtol=0)


def test_arcface_is_the_seed_signature_with_the_fallback_past_pi_minus_m():
    weights, points = unit_weights_and_points([0.4, 1.2, 2.9])
    head = with_weights(ArcFace(3, 4, s=15.0, m=0.5), weights)
    labels = torch.tensor([1, 2, 0])
    torch.testing.assert_close(head(points, labels), hand_logits(points, weights, [1, 2, 0], 15.0, m2=0.5),
                               atol=ATOL, rtol=0)
    # theta = 2.9 > pi - 0.5: cos(2.9) - 0.5 sin(0.5), not cos(3.4), which would be larger
    assert head(points, labels)[2, 0].item() == pytest.approx(15 * (math.cos(2.9) - 0.5 * math.sin(0.5)), abs=1e-6)


@pytest.mark.parametrize("m1,m2,m3", [(1, 0.5, 0), (1, 1.0, 0), (1, 0, 0.35), (1.5, 0, 0), (4, 0, 0),
                                      (1, 0.3, 0.2), (1.35, 0.25, 0.1)])
def test_target_logit_decreases_in_theta_everywhere(m1, m2, m3):
    theta = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    target = margin_target(torch.cos(theta), m1, m2, m3)
    assert (target.diff() <= 1e-12).all(), "target logit rises with theta"
    assert (target <= torch.cos(theta) + 1e-12).all(), "a margin must never make the target easier"
    if m1 > 1:  # SphereFace's continuation has no jumps
        assert target.diff().abs().max() < 0.01


ZERO_MARGIN = {"vgg8_normface": {}, "vgg8_sphereface": {"m": 1.0}, "vgg8_cosface": {"m": 0.0},
               "vgg8_arcface": {"m": 0.0}, "vgg8_combined": {"m2": 0.0, "m3": 0.0}}


@pytest.mark.parametrize("name", MARGIN_PRESETS)
def test_zero_margin_is_normface(name):
    weights, points = unit_weights_and_points(ANGLES)
    head = with_weights(preset_head(name, **ZERO_MARGIN[name]), weights)
    normface = with_weights(preset_head("vgg8_normface"), weights)
    labels = torch.zeros(len(ANGLES), dtype=torch.long)
    torch.testing.assert_close(head(points, labels), normface(points, labels), atol=ATOL, rtol=0)
    torch.testing.assert_close(normface(points, labels), normface(points), atol=ATOL, rtol=0)
    cosine = torch.cos(torch.tensor(ANGLES, dtype=torch.float64))
    torch.testing.assert_close(margin_target(cosine, 1.0, 0.0, 0.0), cosine, atol=1e-7, rtol=0)


@pytest.mark.parametrize("margins", [{"m2": -0.5}, {"m1": 0.5}, {"m3": -0.1}, {"m2": 3.2}, {"s": 0.0}])
def test_margins_that_would_make_the_target_easier_are_refused(margins):
    with pytest.raises(ValueError, match="out of range"):
        preset_head("vgg8_combined", **margins)


@pytest.mark.parametrize("head_class,arguments", [(SphereFace, {"m": 0.5}), (CosFace, {"m": -0.1}),
                                                  (ArcFace, {"m": -0.5}), (ArcFace, {"m": 3.2}),
                                                  (SubCenterArcFace, {"m": -0.5}), (NormFace, {"s": -1.0}),
                                                  (CurricularFace, {"m": -0.1}), (AdaFace, {"m": 3.2})])
def test_the_named_heads_refuse_the_same_margins_by_their_own_names(head_class, arguments):
    with pytest.raises(ValueError, match="out of range"):
        head_class(3, 4, **arguments)


@pytest.mark.parametrize("name", MARGIN_PRESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradients_are_finite_on_and_opposite_to_the_class_weight(name, dtype, sign):
    weights, _ = unit_weights_and_points([])
    head = with_weights(preset_head(name), weights).to(dtype)
    points = (sign * weights[:1] / 3.0).to(dtype).repeat(2, 1).requires_grad_()
    logits = head(points, torch.tensor([0, 0]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(points.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("name", MARGIN_PRESETS)
def test_gradients_are_finite_under_bf16_autocast_with_embeddings_on_the_weights(name):
    torch.manual_seed(0)
    model = build_model(name).eval()  # eval: the same images give the same embeddings twice
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings = model.embed(images)
    with torch.no_grad():  # class 0's weight on embedding 0, class 1's opposite to embedding 1
        model.head.weight[0] = embeddings[0]
        model.head.weight[1] = -embeddings[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(images, torch.tensor([0, 1, 2, 3]))
        cosines = model.head(model.embed(images)) / model.head.s
    assert cosines[0, 0].item() == pytest.approx(1.0, abs=1e-6) and cosines[1, 1].item() == pytest.approx(-1.0, abs=1e-6)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_softmax_is_an_affine_map_and_ignores_labels():
    head = Softmax(3, 4).double()
    points = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([[sum(x * w for x, w in zip(p, row)) + b
                              for row, b in zip(head.weight.tolist(), head.bias.tolist())] for p in points.tolist()],
                            dtype=torch.float64)
    torch.testing.assert_close(head(points), expected)
    torch.testing.assert_close(head(points, torch.tensor([0, 1, 2, 3, 0])), expected)
    assert head.weight.shape == (4, 3)


def test_overrides_set_the_presets_parameters_by_their_names():
    assert head_arguments("--model", "vgg8_arcface") == (ArcFace, {"s": 15.0, "m": 0.5})  # no option: the preset
    assert head_arguments("--model", "vgg8_arcface", "--scale", "30", "--margin", "0.2") == (ArcFace, {"s": 30.0,
                                                                                                       "m": 0.2})
    head_class, arguments = head_arguments("--model", "vgg8_arcface", "--scale", "30", "--margin", "0.2")
    head = head_class(3, 4, **arguments)
    assert (head.s, head.m1, head.m2, head.m3) == (30.0, 1.0, 0.2, 0.0)
    head_class, arguments = head_arguments("--model", "vgg8_cosface", "--margin", "0.1")
    assert head_class is CosFace and head_class(3, 4, **arguments).m3 == 0.1
    head_class, arguments = head_arguments("--model", "vgg8_sphereface", "--margin", "2.0")
    assert head_class is SphereFace and head_class(3, 4, **arguments).m1 == 2.0
    assert head_arguments("--model", "vgg8_curricularface", "--margin", "0.3") == (CurricularFace,
                                                                                 {"s": 15.0, "m": 0.3})
    assert head_arguments("--model", "vgg8_subcenter", "--subcenters", "5", "--margin", "0.2") == (
        SubCenterArcFace, {"s": 15.0, "m": 0.2, "k": 5})
    assert head_arguments("--model", "vgg8_combined", "--m1", "1.2", "--scale", "9") == (
        CombinedMargin, {"s": 9.0, "m1": 1.2, "m2": 0.3, "m3": 0.2, "k": 1})
    assert PRESETS["vgg8_arcface"] == (ArcFace, {"s": 15.0, "m": 0.5})  # the overrides left the preset as it was


@pytest.mark.parametrize("argv,expected", [
    (["--model", "vgg8_arcface", "--m3", "0.1"], {"s": 15.0, "m1": 1.0, "m2": 0.5, "m3": 0.1, "k": 1}),
    (["--model", "vgg8_sphereface", "--m2", "0.2"], {"s": 15.0, "m1": 1.5, "m2": 0.2, "m3": 0.0, "k": 1}),
    (["--model", "vgg8_cosface", "--m1", "1.2", "--scale", "9"], {"s": 9.0, "m1": 1.2, "m2": 0.0, "m3": 0.35, "k": 1}),
    (["--model", "vgg8_normface", "--m2", "0.4"], {"s": 15.0, "m1": 1.0, "m2": 0.4, "m3": 0.0, "k": 1}),
    (["--model", "vgg8_subcenter", "--m3", "0.1", "--subcenters", "2"], {"s": 15.0, "m1": 1.0, "m2": 0.5,
                                                                         "m3": 0.1, "k": 2}),
])
def test_m1_m2_m3_make_a_margin_preset_the_combined_margin_of_its_margins_and_the_override(argv, expected):
    head_class, arguments = head_arguments(*argv)
    assert head_class is CombinedMargin and arguments == expected
    weights, points = unit_weights_and_points(ANGLES)
    head = with_weights(head_class(3, 4, **arguments), weights.repeat_interleave(expected["k"], 0))
    labels = torch.zeros(len(ANGLES), dtype=torch.long)
    expected_logits = hand_logits(points, weights, labels.tolist(), expected["s"], expected["m1"], expected["m2"],
                                  expected["m3"])
    torch.testing.assert_close(head(points, labels), expected_logits, atol=ATOL, rtol=0)


def test_a_presets_own_margin_given_as_m1_m2_or_m3_keeps_the_presets_class():
    """--m2 on ArcFace is its m: the head stays ArcFace; the same margins as CombinedMargin compute the same."""
    weights, points = unit_weights_and_points(ANGLES)
    labels = torch.zeros(len(ANGLES), dtype=torch.long)
    for name, option, value, margins in [("vgg8_arcface", "--m2", "0.5", (1.0, 0.5, 0.0)),
                                         ("vgg8_cosface", "--m3", "0.35", (1.0, 0.0, 0.35)),
                                         ("vgg8_sphereface", "--m1", "1.5", (1.5, 0.0, 0.0)),
                                         ("vgg8_normface", "--m1", "1", (1.0, 0.0, 0.0))]:
        head_class, arguments = head_arguments("--model", name, option, value)
        assert (head_class, arguments) == PRESETS[name], name
        preset = with_weights(preset_head(name), weights)
        combined = with_weights(CombinedMargin(3, 4, 15.0, *margins), weights)
        torch.testing.assert_close(combined(points, labels), preset(points, labels), atol=0, rtol=0)
    head_class, arguments = head_arguments("--model", "vgg8_arcface", "--m2", "0.3")
    assert head_class is ArcFace and arguments == {"s": 15.0, "m": 0.3}


@pytest.mark.parametrize("argv,message", [
    (["--model", "vgg8_combined", "--margin", "0.1"],
     "--margin has no meaning for vgg8_combined; set --m1, --m2 or --m3"),
    (["--model", "vgg8_softmax", "--scale", "2"], "vgg8_softmax has neither scale nor margin; scale cannot be set"),
    (["--model", "vgg8_softmax", "--m2", "0.1"], "vgg8_softmax has neither scale nor margin; m2 cannot be set"),
    (["--model", "vgg8_adacos", "--scale", "2"], "--scale cannot be set for vgg8_adacos; its scale adapts"),
    (["--model", "vgg8_adacos", "--margin", "0.2"], "--margin has no meaning for vgg8_adacos; it has no margin"),
    (["--model", "vgg8_normface", "--margin", "0.2"], "--margin has no meaning for vgg8_normface; it has no margin"),
    (["--model", "vgg8_magface", "--margin", "0.2"],
     "--margin has no meaning for vgg8_magface; its margin follows the norm"),
    (["--model", "vgg8_arcface", "--subcenters", "2"], "--subcenters cannot be set for vgg8_arcface"),
    (["--model", "vgg8_curricularface", "--m2", "0.2"], "--m2 cannot be set for vgg8_curricularface"),
    (["--model", "vgg8_elasticface", "--subcenters", "2", "--m3", "0.1"],
     "--m3 and --subcenters cannot be set for vgg8_elasticface"),
])
def test_overrides_a_head_does_not_take_are_refused_naming_the_option(argv, message):
    with pytest.raises(ValueError) as refusal:
        head_arguments(*argv)
    assert str(refusal.value) == message


def test_sub_centres_out_of_range_are_refused_before_the_data_is_read():
    with pytest.raises(SystemExit):  # by the option's type: "--subcenters: must be from 1 to 16, got 17"
        head_arguments("--model", "vgg8_subcenter", "--subcenters", "17")
    for k in (0, 2.0):
        with pytest.raises(ValueError, match="k, the sub-centres a class, must be an integer from 1 to 16"):
            preset_head("vgg8_subcenter", k=k)
    assert preset_head("vgg8_subcenter", k=16).weight.shape == (64, 3)


STATE = {AdaCos: {"s"}, CurricularFace: {"t"}, AdaFace: {"batch_mean", "batch_std"}}  # the others: none


def test_heads_names_every_presets_class_by_its_name():
    assert HEADS == {head_class.__name__: head_class for head_class, _ in PRESETS.values()}
    assert len(HEADS) == len(PRESETS) == 12


@pytest.mark.parametrize("name", PRESETS)
def test_a_head_rebuilt_from_its_config_is_the_same_head(name):
    head_class, arguments = PRESETS[name]
    scaled = "s" in head_class.params
    head = preset_head(name, num_classes=10, **({"s": 9.0} if scaled else {}))
    config = head.config()
    assert list(config) == ["class", *head_class.params] and config["class"] == head_class.__name__
    assert config == config | {**arguments, **({"s": 9.0} if scaled else {})}  # the preset's arguments, as given
    assert scaled == (name not in ("vgg8_softmax", "vgg8_adacos"))
    rebuilt = HEADS[config["class"]](3, 10, **{key: value for key, value in config.items() if key != "class"})
    assert type(rebuilt) is type(head) and rebuilt.config() == config and rebuilt.k == head.k
    rebuilt.load_state_dict(head.state_dict())
    points, labels = torch.randn(6, 3), torch.arange(6) % 10
    torch.testing.assert_close(rebuilt.eval()(points, labels), head.eval()(points, labels), rtol=0, atol=0)
    assert set(head.state()) == STATE.get(head_class, set()) and rebuilt.state() == head.state()
    shown = ", ".join(f"{key}={value}" for key, value in config.items() if key != "class")
    assert repr(head) == f"{head_class.__name__}({shown})"
    if name in MARGIN_PRESETS:
        assert (head.s, head.m1, head.m2, head.m3) == (9.0, *MARGINS[name])


def test_reprs_name_the_paper_and_its_parameters():
    assert repr(ArcFace(3, 4)) == "ArcFace(s=15.0, m=0.5)"
    assert repr(SubCenterArcFace(3, 4)) == "SubCenterArcFace(s=15.0, m=0.5, k=3)"
    assert repr(CombinedMargin(3, 4, s=9.0, m1=1.2)) == "CombinedMargin(s=9.0, m1=1.2, m2=0.0, m3=0.0, k=1)"
    assert repr(NormFace(3, 4)) == "NormFace(s=15.0)" and repr(Softmax(3, 4)) == "Softmax()"
    assert repr(AdaCos(3, 4)) == "AdaCos()"


M1_GRID = [1.0, 1.01, 1.2, 1.5, 2.0, 3.0, 4.0, 7.5]
M2_GRID = [k * (math.pi - 1e-6) / 63 for k in range(64)]  # 0 to just under pi, as check_margins accepts
M3_GRID = [0.0, 0.2, 0.5, 2.0, 10.0]


@pytest.mark.parametrize("m1", M1_GRID)
def test_target_logit_decreases_for_every_accepted_margin(m1):
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    cosine = torch.cos(theta)
    for m2 in M2_GRID:
        for m3 in M3_GRID:
            preset_head("vgg8_combined", m1=m1, m2=m2, m3=m3)  # accepted
            target = margin_target(cosine, m1, m2, m3)
            assert (target.diff() < 0).all(), f"the target rises with theta for m1={m1}, m2={m2:.3f}, m3={m3}"
            assert (target <= cosine + 1e-12).all(), f"the margin makes the target easier for m2={m2:.3f}"


def test_the_fallback_is_insightfaces_where_that_decreases_and_meets_the_curve_beyond():
    theta = torch.tensor([2.0, 2.9], dtype=torch.float64)  # both past pi - m2 for m2 = 1.5 and 2.6
    usual = margin_target(torch.cos(theta), 1.0, 1.5, 0.0)  # cos 1.5 + 1.5 sin 1.5 >= 1
    torch.testing.assert_close(usual, torch.cos(theta) - 1.5 * math.sin(1.5))
    large = torch.tensor([math.pi - 2.6], dtype=torch.float64)  # where cos(theta + m2) reaches -1
    just_past = margin_target(torch.cos(large + 1e-9), 1.0, 2.6, 0.3)
    assert just_past.item() == pytest.approx(-1.3, abs=1e-6)  # continuous: no jump up past pi
