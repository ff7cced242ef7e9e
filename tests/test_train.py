import math

import numpy as np
import pytest
import torch

import train
from conftest import call_main
from embedviz import devices, run_files
from embedviz.resume import set_rng_states
from embedviz.datasets import load_dataset
from embedviz.metrics import angle_deg
from losses import Head
from models import build_model, load_model, to_input

CPU = torch.device("cpu")


def adam(model, lr=1e-3):
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # as train.py makes it


def test_inputs_are_scaled_to_minus_one_one_in_channels_last():
    images = torch.tensor([[[0, 255], [51, 204]]], dtype=torch.uint8)
    inputs = to_input(images)
    assert inputs.shape == (1, 1, 2, 2) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, 0.6]]))
    assert inputs.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("requested,device_type,capability,cpu_bf16,expected", [
    ("auto", "cuda", (9, 0), None, "bf16"),    # H100
    ("auto", "cuda", (8, 0), None, "bf16"),    # A100
    ("auto", "cuda", (7, 5), 2.5, "fp16"),     # T4: emulated bf16 only; the CPU's does not matter
    ("auto", "cuda", (7, 0), None, "fp16"),    # V100
    ("auto", "cuda", (6, 1), None, "fp32"),    # Pascal: no tensor cores
    ("auto", "cpu", None, 2.5, "bf16"),        # a CPU whose bf16 is 2.5 times fp32
    ("auto", "cpu", None, 0.7, "fp32"),        # native bf16, measured slower than fp32
    ("auto", "cpu", None, 1.1, "fp32"),        # not clearly faster
    ("auto", "cpu", None, None, "fp32"),       # AVX2 laptops
    ("fp32", "cuda", (9, 0), None, "fp32"),
    ("fp32", "cpu", None, 2.5, "fp32"),
    ("bf16", "cuda", (8, 6), None, "bf16"),
    ("bf16", "cpu", None, 2.5, "bf16"),
    ("bf16", "cpu", None, 0.7, "bf16"),        # asked for, and native: slower, but not refused
    ("fp16", "cuda", (7, 5), None, "fp16"),
    ("fp16", "cuda", (8, 0), None, "fp16"),
])
def test_precision_is_what_the_device_runs_natively_and_fast(requested, device_type, capability, cpu_bf16, expected):
    assert devices.choose_precision(requested, device_type, capability, cpu_bf16) == expected


@pytest.mark.parametrize("requested,device_type,capability,cpu_bf16,message", [
    ("bf16", "cuda", (7, 5), 2.5, "compute capability 7.5) has no native bf16; use --precision fp16 or fp32"),
    ("bf16", "cuda", (6, 1), None, "compute capability 6.1) has no native bf16; use --precision fp32"),
    ("bf16", "cpu", None, None, "this CPU has no native bf16; use --precision fp32"),
    ("fp16", "cuda", (6, 1), None, "compute capability 6.1) has no tensor cores"),
    ("fp16", "cpu", None, 2.5, "this CPU has no tensor cores"),
])
def test_a_precision_the_device_does_not_run_is_refused(requested, device_type, capability, cpu_bf16, message):
    with pytest.raises(devices.PrecisionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices.choose_precision(requested, device_type, capability, cpu_bf16)


def test_the_cpus_bf16_speedup_is_measured_and_none_where_it_is_not_native():
    device_type, capability, speedup = devices.hardware(CPU)
    assert device_type == "cpu" and capability is None
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and (torch.cpu._is_avx512_bf16_supported()
                                                                or torch.cpu._is_amx_tile_supported())
    assert (speedup is None) == (not native)
    if native:  # a ratio of two timings of the same convolution
        assert 0.05 < speedup < 20


@pytest.fixture(scope="module")
def digits_split(mnist_digits):
    images, labels = (torch.from_numpy(a) for a in mnist_digits)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return (images[order[:512]], labels[order[:512]]), (images[order[512:768]], labels[order[512:768]])


def train_and_embed(digits_split, precision, lr=1e-3):
    """8 steps of 48 of the 384 first training digits, and the 128 first probes embedded before and after."""
    (train_images, train_labels), (probe_images, probe_labels) = digits_split
    train_images, train_labels, probe_images, probe_labels = (train_images[:384], train_labels[:384],
                                                              probe_images[:128], probe_labels[:128])
    torch.manual_seed(0)
    model = build_model("vgg8_arcface").to(memory_format=torch.channels_last)
    optimizer, scaler = adam(model, lr), devices.make_scaler(CPU, precision)
    before, _, _ = train.evaluate(model, probe_images, probe_labels, 256, precision)
    train.train_epoch(model, optimizer, scaler, train_images, train_labels, precision, 48, torch.Generator().manual_seed(0))
    after, _, _ = train.evaluate(model, probe_images, probe_labels, 256, precision)
    return before.numpy(), after.numpy(), scaler


def test_bf16_and_fp32_training_give_embeddings_that_agree(digits_split):
    before, after, _ = train_and_embed(digits_split, "fp32")
    _, reduced, scaler = train_and_embed(digits_split, "bf16")
    moved = np.median(angle_deg(before, after))
    apart = np.median(angle_deg(after, reduced))
    assert moved > 10, f"training barely moved the embeddings ({moved:.1f} deg)"
    assert apart < moved / 10, f"bf16 and fp32 embeddings differ by {apart:.2f} deg (training moved them {moved:.1f})"
    assert math.isfinite(apart) and not scaler.is_enabled()


@pytest.mark.parametrize("init_scale,skipped", [(2.0 ** 24, True), (1.0, False)])
def test_fp16_steps_go_through_the_gradient_scaler(digits_split, init_scale, skipped):
    """The T4's path, on the CPU (where fp16 is slow: 2 steps of 4 images): gradients scaled so far that
    they overflow fp16 are found, the step is skipped and the scale halved; at scale 1 the weights move."""
    (images, labels), _ = digits_split
    torch.manual_seed(0)
    model = build_model("vgg8_arcface").to(memory_format=torch.channels_last)
    optimizer = adam(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    weights = model.features[0][0].weight.detach().clone()
    loss = train.train_epoch(model, optimizer, scaler, images[:8], labels[:8], "fp16", 4,
                             torch.Generator().manual_seed(0))
    assert math.isfinite(loss)
    assert torch.equal(model.features[0][0].weight, weights) == skipped
    assert scaler.get_scale() == (init_scale / 4 if skipped else init_scale)
    assert devices.make_scaler(CPU, "fp16").is_enabled() and not devices.make_scaler(CPU, "fp32").is_enabled()


class GoesNaN(torch.nn.Module):
    """A linear classifier whose logits become NaN from the nan_from-th call on."""

    def __init__(self, nan_from):
        super().__init__()
        self.linear, self.calls, self.nan_from = torch.nn.Linear(28 * 28, 10), 0, nan_from
        self.head = Head()  # its loss: cross-entropy

    def forward(self, images, labels=None):
        self.calls += 1
        logits = self.linear(images.flatten(1))
        return (logits * math.nan if self.calls >= self.nan_from else logits), logits


@pytest.mark.parametrize("nan_from,check_every,where", [(5, 3, "steps 4-6"), (7, 3, "steps 7-8"),
                                                        (1, 50, "steps 1-8"), (2, 1, "steps 2-2")])
def test_divergence_is_found_at_the_next_check_and_names_the_steps_since_the_last(digits_split, nan_from,
                                                                                   check_every, where):
    (images, labels), _ = digits_split  # 512 images, batch 64: 8 steps
    model = GoesNaN(nan_from)
    optimizer, scaler = adam(model), devices.make_scaler(CPU, "fp32")
    with pytest.raises(train.Diverged, match=rf"^{where} \(loss nan\)$"):
        train.train_epoch(model, optimizer, scaler, images, labels, "fp32", 64, torch.Generator().manual_seed(0),
                          check_every=check_every)
    assert model.calls == int(where.split("-")[1])  # stopped at the check, neither before nor after


def test_checkpoint_state_is_on_the_cpu_whatever_the_device():
    devices = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        model = build_model("vgg8_arcface").to(device)
        optimizer = adam(model)
        model(torch.zeros(2, 1, 28, 28, device=device), torch.tensor([0, 1], device=device))[0].sum().backward()
        optimizer.step()
        state = run_files.on_cpu({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "list": [model.head.weight]})
        tensors = [*state["model"].values(), *(v for s in state["optimizer"]["state"].values() for v in s.values()),
                   *state["list"]]
        assert len(tensors) > 30 and all(t.device == CPU for t in tensors)
        assert all(torch.equal(a.cpu(), b) for a, b in zip(model.state_dict().values(), state["model"].values()))
        assert state["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]


@pytest.fixture(scope="module")
def fp32_run(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fp32_run")
    # on the CPU, as load_model's default: a GPU's convolutions (TF32) give other last digits
    result = call_main(train.main, "--data-dir", tiny_mnist, "--out-dir", out_dir, "--train-points", "100",
                       "--batch-size", "64", "--epochs", "3", "--precision", "fp32", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return out_dir


def test_load_model_rebuilds_the_best_network_from_its_checkpoint_alone(fp32_run, tiny_mnist):
    best = torch.load(fp32_run / "vgg8_arcface_best.pth", weights_only=True)
    assert {"model_state", "model", "head", "embedding_dim", "num_classes", "options", "epoch",
            "val_loss"} <= set(best)
    assert best["head"] == {"class": "ArcFace", "s": 15.0, "m": 0.5}
    model = load_model(fp32_run / "vgg8_arcface_best.pth")
    assert not model.training
    images, labels, _ = train.saved_points(load_dataset("mnist", tiny_mnist, 58), 100, 58)
    embeddings, _, _ = train.evaluate(model, images, labels, 512, "fp32")
    saved = np.load(fp32_run / "all_vgg8_arcface_embeddings.npy")
    np.testing.assert_array_equal(embeddings.numpy(), saved[best["epoch"]])  # the same network, the same numbers
    with torch.no_grad():  # as the README embeds a new image
        one = model.embed(to_input(images[-1:]))
    np.testing.assert_allclose(one.numpy(), saved[best["epoch"], -1:], atol=1e-5)


def test_load_model_refuses_a_file_that_is_not_a_model_checkpoint(fp32_run, tmp_path):
    from embedviz.run_files import RunFileError

    torch.save({"model_state": {}}, tmp_path / "weights.pth")
    with pytest.raises(RunFileError, match="weights.pth does not describe a model"):
        load_model(tmp_path / "weights.pth")
    with pytest.raises(RunFileError, match="no checkpoint"):
        load_model(tmp_path / "missing.pth")


def test_the_readmes_lines_embed_a_new_image(fp32_run, tiny_mnist):
    import os
    import re

    from conftest import ROOT

    with open(os.path.join(ROOT, "README.md")) as f:
        code = re.search(r"to embed a new image.*?```python\n(.*?)```", f.read(), re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    images, _, _ = train.saved_points(load_dataset("mnist", tiny_mnist, 58), 100, 58)
    best = torch.load(fp32_run / "vgg8_arcface_best.pth", weights_only=True)
    namespace = {"image": images[-1]}  # a (28, 28) uint8 digit
    exec(code.replace("data/vgg8_arcface_best.pth", str(fp32_run / "vgg8_arcface_best.pth")), namespace)
    saved = np.load(fp32_run / "all_vgg8_arcface_embeddings.npy")[best["epoch"], -1:]
    np.testing.assert_allclose(namespace["embedding"].numpy(), saved, atol=1e-5)


def test_random_states_are_restored_for_dropout_and_shuffling_on_every_device():
    for device in [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else []):
        generator = torch.Generator().manual_seed(1)
        model = build_model("vgg8_arcface").to(device)
        meta = {"history": [], "dataset": "mnist", "class_names": list("0123456789")}
        states = train.resume_state({}, adam(model), devices.make_scaler(device, "fp32"), generator, device, meta,
                                    math.inf, "fp32")["rng_states"]
        assert set(states) == {"torch", "shuffle", "cuda"} and (device.type == "cuda") == (states["cuda"] is not None)

        def draws():  # dropout's draws on the device, and the shuffling's
            return torch.rand(5, device=device).cpu(), torch.rand(5).cpu(), torch.randperm(9, generator=generator)

        first = draws()
        set_rng_states(states, generator, device)
        assert all(torch.equal(a, b) for a, b in zip(first, draws()))
