import pytest
import torch

from embedviz.old_formats import head_config
from losses import ArcFace, CombinedMargin, CosFace, SubCenterArcFace
from models import HEADS, MODEL_NAMES, PRESETS, VGG8, Dropout, build_model, conv_block, load_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_vgg8_shapes_and_one_backbone_for_every_head(name):
    torch.manual_seed(0)
    model = build_model(name, embedding_dim=3, num_classes=10)
    images = torch.randn(4, 1, 28, 28)
    logits, embeddings = model(images, torch.tensor([0, 1, 2, 3]))
    assert logits.shape == (4, 10) and embeddings.shape == (4, 3)
    assert type(model.head) is PRESETS[name][0] and model.head.k == PRESETS[name][1].get("k", 1)
    assert model.head.weight.shape == (10 * model.head.k, 3) and model.head.num_classes == 10
    assert model.embed(images).shape == (4, 3)
    backbone = {k for k in model.state_dict() if not k.startswith("head.")}
    other = build_model(MODEL_NAMES[0])
    assert backbone == {k for k in other.state_dict() if not k.startswith("head.")}


def test_embedding_and_logits_stay_float32_under_bf16_autocast():
    model = build_model("vgg8_arcface").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, embeddings = model(torch.randn(2, 1, 28, 28))
    assert embeddings.dtype == torch.float32 and logits.dtype == torch.float32


def test_unknown_model_is_refused_with_the_valid_names(capsys):
    import train

    with pytest.raises(KeyError, match="vgg9_cosface"):
        build_model("vgg9_cosface")
    with pytest.raises(SystemExit) as refusal:
        train.parse_args(["--model", "vgg9_cosface"])
    assert refusal.value.code == 2
    error = capsys.readouterr().err
    assert "--model" in error and "vgg9_cosface" in error and all(name in error for name in MODEL_NAMES)


def test_build_model_overrides_the_presets_arguments_by_their_names():
    head = build_model("vgg8_arcface", s=9.0, m=0.2).head
    assert type(head) is ArcFace and head.config() == {"class": "ArcFace", "s": 9.0, "m": 0.2} and head.m2 == 0.2
    head = build_model("vgg8_subcenter", num_classes=7, k=5).head
    assert head.config() == {"class": "SubCenterArcFace", "s": 15.0, "m": 0.5, "k": 5} and head.weight.shape == (35, 3)
    assert build_model("vgg8_magface", u_m=0.6).head.config() == {"class": "MagFace", "s": 15.0, "l_a": 0.5,
                                                                  "u_a": 2.5, "l_m": 0.25, "u_m": 0.6,
                                                                  "lambda_g": 1.0}
    assert PRESETS["vgg8_arcface"] == (ArcFace, {"s": 15.0, "m": 0.5})  # the preset itself unchanged
    with pytest.raises(TypeError, match="m1"):  # ArcFace's margin is m: --m1 makes a CombinedMargin (train.py)
        build_model("vgg8_arcface", m1=1.2)


def test_vgg8_builds_its_head_from_a_class_and_arguments():
    model = VGG8(CosFace, {"s": 10.0, "m": 0.2}, num_classes=7, embedding_dim=4, in_channels=3, image_size=32)
    assert type(model.head) is CosFace and (model.head.s, model.head.m3, model.head.num_classes) == (10.0, 0.2, 7)
    logits, embeddings = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and embeddings.shape == (2, 4) and model.head.weight.shape == (7, 4)


def test_the_backbone_starts_from_the_same_weights_whatever_the_head():
    states = []
    for name in MODEL_NAMES:
        torch.manual_seed(3)
        states.append({k: v for k, v in build_model(name).state_dict().items() if not k.startswith("head.")})
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in state)


@pytest.mark.parametrize("autocast", [False, True])
def test_pooling_before_the_last_relu_gives_the_textbook_block_exactly(autocast):
    torch.manual_seed(0)
    block = conv_block(3, 8).to(memory_format=torch.channels_last)
    pool, relu = block[5], block[6]
    assert isinstance(pool, torch.nn.MaxPool2d) and isinstance(relu, torch.nn.ReLU)
    textbook = torch.nn.Sequential(*block[:5], relu, pool)  # the same layers, ReLU before the pool
    images = torch.randn(6, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    results = []
    for net in (block, textbook):
        net.zero_grad()
        x = images.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(x)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad, block[0].weight.grad.clone(), block[4].weight.grad.clone()))
    assert (results[0][0] == 0).any() and (results[0][0] > 0).any()
    for ours, reference in zip(*results):
        assert torch.equal(ours, reference)


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_in_training_only():
    torch.manual_seed(0)
    dropout, x = Dropout(0.5), torch.full((200, 500), 3.0)
    out = dropout(x)
    assert set(out.unique().tolist()) == {0.0, 6.0}
    assert abs((out == 0).float().mean().item() - 0.5) < 0.01  # 100,000 draws: sd 0.0016
    assert abs(out.mean().item() - 3.0) < 0.03
    assert torch.equal(Dropout(0.0)(x), x) and torch.equal(dropout.eval()(x), x)
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


# ---------------------------------------------------------------- heads recorded before they were named after papers

# what head.config() wrote before (a margin head always recorded m1, m2 and m3; the presets' own entries left some
# out), the class of the run's preset, and what the head is now
OLD_CONFIGS = [
    ("vgg8_arcface", {"kind": "margin", "s": 15.0, "m1": 1.0, "m2": 0.5, "m3": 0.0},
     {"class": "ArcFace", "s": 15.0, "m": 0.5}),
    ("vgg8_arcface", {"kind": "margin", "s": 15.0, "m2": 0.5}, {"class": "ArcFace", "s": 15.0, "m": 0.5}),
    ("vgg8_cosface", {"kind": "margin", "s": 15.0, "m1": 1.0, "m2": 0.0, "m3": 0.35},
     {"class": "CosFace", "s": 15.0, "m": 0.35}),
    ("vgg8_sphereface", {"kind": "margin", "s": 15.0, "m1": 1.5, "m2": 0.0, "m3": 0.0},
     {"class": "SphereFace", "s": 15.0, "m": 1.5}),
    ("vgg8_normface", {"kind": "margin", "s": 15.0, "m1": 1.0, "m2": 0.0, "m3": 0.0}, {"class": "NormFace", "s": 15.0}),
    ("vgg8_combined", {"kind": "margin", "s": 15.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
     {"class": "CombinedMargin", "s": 15.0, "m1": 1.0, "m2": 0.3, "m3": 0.2, "k": 1}),
    ("vgg8_subcenter", {"kind": "subcenter", "s": 15.0, "m1": 1.0, "m2": 0.5, "m3": 0.0, "subcenters": 3},
     {"class": "SubCenterArcFace", "s": 15.0, "m": 0.5, "k": 3}),
    ("vgg8_softmax", {"kind": "softmax"}, {"class": "Softmax"}),
    ("vgg8_adacos", {"kind": "adacos"}, {"class": "AdaCos"}),
    ("vgg8_curricularface", {"kind": "curricular", "s": 15.0, "m": 0.5},
     {"class": "CurricularFace", "s": 15.0, "m": 0.5}),
    ("vgg8_elasticface", {"kind": "elastic", "s": 15.0, "m": 0.5, "sigma": 0.05},
     {"class": "ElasticFace", "s": 15.0, "m": 0.5, "sigma": 0.05}),
    ("vgg8_magface", {"kind": "magface", "s": 15.0, "l_a": 0.5, "u_a": 2.5, "l_m": 0.25, "u_m": 0.5, "lambda_g": 1.0},
     {"class": "MagFace", "s": 15.0, "l_a": 0.5, "u_a": 2.5, "l_m": 0.25, "u_m": 0.5, "lambda_g": 1.0}),
    ("vgg8_adaface", {"kind": "adaface", "s": 15.0, "m": 0.4, "h": 0.333}, {"class": "AdaFace", "s": 15.0, "m": 0.4,
                                                                            "h": 0.333}),
]


def rebuilt_head(config, in_features=3, num_classes=10):
    arguments = {key: value for key, value in config.items() if key != "class"}
    return HEADS[config["class"]](in_features, num_classes, **arguments)


def test_the_old_configs_cover_every_preset():
    assert {name for name, _, _ in OLD_CONFIGS} == set(PRESETS)


@pytest.mark.parametrize("name,old,new", OLD_CONFIGS, ids=[f"{name}-{len(old)}" for name, old, _ in OLD_CONFIGS])
def test_an_old_config_is_read_as_the_presets_class_with_the_same_logits(name, old, new):
    head_class, arguments = PRESETS[name]
    written = dict(old)
    assert head_config(old, head_class.__name__) == new
    assert old == written  # the checkpoint's own dictionary is left as it was
    torch.manual_seed(0)
    preset = head_class(3, 10, **arguments).double()
    assert preset.config() == new  # what a run of the preset records now
    converted = rebuilt_head(head_config(old, head_class.__name__)).double()
    assert type(converted) is head_class
    converted.load_state_dict(preset.state_dict())
    points = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 10
    for mode in ("eval", "train"):  # train: the margins; ElasticFace draws its margins, so from the same seed
        getattr(preset, mode)(), getattr(converted, mode)()
        torch.manual_seed(2)
        expected = preset(points, labels)
        torch.manual_seed(2)
        torch.testing.assert_close(converted(points, labels), expected, rtol=0, atol=0)
    torch.testing.assert_close(converted(points), preset(points), rtol=0, atol=0)
    assert converted.state() == preset.state()


def old_margin(s, m1, m2, m3, k=None):
    """An old run's head of the margin family: {"kind": "margin", ...}, or "subcenter" with k sub-centres."""
    return {"kind": "margin" if k is None else "subcenter", "s": s, "m1": m1, "m2": m2, "m3": m3,
            **({} if k is None else {"subcenters": k})}


def combined(s, m1, m2, m3, k=1):
    return {"class": "CombinedMargin", "s": s, "m1": m1, "m2": m2, "m3": m3, "k": k}


@pytest.mark.parametrize("old,head_class_name,new", [
    # margins that are not the preset's form: the CombinedMargin that computes them
    (old_margin(15.0, 1.0, 0.5, 0.1), "ArcFace", combined(15.0, 1.0, 0.5, 0.1)),
    (old_margin(9.0, 1.5, 0.2, 0.0), "SphereFace", combined(9.0, 1.5, 0.2, 0.0)),
    (old_margin(15.0, 1.0, 0.5, 0.2, k=2), "SubCenterArcFace", combined(15.0, 1.0, 0.5, 0.2, k=2)),
    (old_margin(15.0, 1.0, 0.2, 0.35), "CosFace", combined(15.0, 1.0, 0.2, 0.35)),
    (old_margin(15.0, 1.2, 0.5, 0.0), "ArcFace", combined(15.0, 1.2, 0.5, 0.0)),
    (old_margin(15.0, 1.0, 0.0, 0.1), "NormFace", combined(15.0, 1.0, 0.0, 0.1)),
    (old_margin(15.0, 1.3, 0.5, 0.0, k=3), "SubCenterArcFace", combined(15.0, 1.3, 0.5, 0.0, k=3)),
    (old_margin(15.0, 1.0, 0.5, 0.0, k=3), "ArcFace", combined(15.0, 1.0, 0.5, 0.0, k=3)),
    (old_margin(15.0, 1.0, 0.5, 0.0), None, combined(15.0, 1.0, 0.5, 0.0)),  # a model name no longer known
    # margins that fit a named class other than the preset's
    (old_margin(15.0, 1.0, 0.2, 0.0), "ArcFace", {"class": "ArcFace", "s": 15.0, "m": 0.2}),
    (old_margin(15.0, 1.0, 0.0, 0.0), "CosFace", {"class": "CosFace", "s": 15.0, "m": 0.0}),
])
def test_an_old_margin_config_that_is_not_the_presets_form_keeps_its_numbers(old, head_class_name, new):
    assert head_config(old, head_class_name) == new
    k = new.get("k", 1)
    weights = torch.randn(10 * k, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    points = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 10
    head = rebuilt_head(new).double()
    with torch.no_grad():
        head.weight.copy_(weights)
    margins = {"m1": 1.0, "m2": 0.0, "m3": 0.0, **{key: old[key] for key in ("m1", "m2", "m3") if key in old}}
    reference = CombinedMargin(3, 10, s=old["s"], k=old.get("subcenters", 1), **margins).double()
    with torch.no_grad():
        reference.weight.copy_(weights)
    torch.testing.assert_close(head(points, labels), reference(points, labels), rtol=0, atol=0)


def test_a_new_config_is_read_as_it_is_and_an_unknown_kind_is_refused():
    new = {"class": "ArcFace", "s": 15.0, "m": 0.5}
    read = head_config(new, "CosFace")
    assert read == new and read is not new
    with pytest.raises(ValueError, match="'sphere2'"):
        head_config({"kind": "sphere2", "s": 15.0}, "SphereFace")


def test_load_model_rebuilds_a_checkpoint_written_before_the_heads_were_renamed(tmp_path):
    torch.manual_seed(0)
    model = build_model("vgg8_subcenter", num_classes=10).eval().to(memory_format=torch.channels_last)  # as loaded
    images = torch.randn(3, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    for name, head in [("old", {"kind": "subcenter", "s": 15.0, "m1": 1.0, "m2": 0.5, "m3": 0.0, "subcenters": 3}),
                       ("new", model.head.config())]:
        path = tmp_path / f"{name}.pth"
        torch.save({"model_state": model.state_dict(), "model": "vgg8_subcenter", "head": head, "num_classes": 10,
                    "embedding_dim": 3}, path)
        loaded = load_model(str(path))
        assert type(loaded.head) is SubCenterArcFace and loaded.head.config() == model.head.config()
        assert not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(images)[0], model(images)[0], rtol=0, atol=0)
