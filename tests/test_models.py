import pytest
import torch

from models import MODEL_NAMES, Dropout, build_model, conv_block


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_vgg8_shapes_and_one_backbone_for_every_head(name):
    torch.manual_seed(0)
    model = build_model(name, embedding_dim=3, num_classes=10)
    images = torch.randn(4, 1, 28, 28)
    logits, embeddings = model(images, torch.tensor([0, 1, 2, 3]))
    assert logits.shape == (4, 10) and embeddings.shape == (4, 3)
    assert model.head.weight.shape == (10 * model.head.subcenters, 3) and model.head.num_classes == 10
    assert model.embed(images).shape == (4, 3)
    backbone = {k for k in model.state_dict() if not k.startswith("head.")}
    other = build_model(MODEL_NAMES[0])
    assert backbone == {k for k in other.state_dict() if not k.startswith("head.")}


def test_embedding_and_logits_stay_float32_under_bf16_autocast():
    model = build_model("vgg8_arcface").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, embeddings = model(torch.randn(2, 1, 28, 28))
    assert embeddings.dtype == torch.float32 and logits.dtype == torch.float32


def test_unknown_model_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="vgg8_arcface"):
        build_model("vgg9_cosface")


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
