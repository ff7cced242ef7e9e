import math

import numpy as np
import torch

import train
from metrics import angle_deg
from models import build_model


def test_inputs_are_scaled_to_minus_one_one_in_channels_last():
    images = torch.tensor([[[0, 255], [51, 204]]], dtype=torch.uint8)
    inputs = train.to_input(images, torch.device("cpu"))
    assert inputs.shape == (1, 1, 2, 2) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, 0.6]]))
    assert inputs.is_contiguous(memory_format=torch.channels_last)


def test_bf16_and_fp32_training_give_embeddings_that_agree(mnist_digits):
    images, labels = (torch.from_numpy(a) for a in mnist_digits)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train_images, train_labels = images[order[:512]], labels[order[:512]]
    probe_images, probe_labels = images[order[512:768]], labels[order[512:768]]
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("vgg8_arcface").to(memory_format=torch.channels_last)
        optimizer = train.make_optimizer(model, 1e-3)
        before, _, _ = train.evaluate(model, probe_images, probe_labels, 256, torch.device("cpu"), precision)
        train.train_one_epoch(model, train_images, train_labels, optimizer, 64, torch.Generator().manual_seed(0),
                              torch.device("cpu"), precision, None)  # 8 steps
        after, _, _ = train.evaluate(model, probe_images, probe_labels, 256, torch.device("cpu"), precision)
        results[precision] = before, after
    moved = np.median(angle_deg(results["fp32"][0], results["fp32"][1]))
    apart = np.median(angle_deg(results["fp32"][1], results["bf16"][1]))
    assert moved > 10, f"training barely moved the embeddings ({moved:.1f} deg)"
    assert apart < moved / 10, f"bf16 and fp32 embeddings differ by {apart:.2f} deg (training moved them {moved:.1f})"
    assert math.isfinite(apart)
