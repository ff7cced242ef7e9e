"""The training step on every device: nothing read back from the device inside a step, the GPU's
step replayed as a CUDA graph with the eager step's numbers, the same seed giving the same numbers,
and the verification pairs counted on the device as on the CPU."""

import collections
import gc
import itertools

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import train
from embedviz import devices
from embedviz.cuda_graph import WARMUP_STEPS, GraphedStep
from embedviz.verification import SCORE_BINS, device_pair_counts, device_pair_histograms, pair_histograms
from models import MODEL_NAMES, build_model, to_input

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs and CUDA's sync check need a CUDA device")

# Operations that make a GPU wait for the host or the host for the GPU: a tensor made from Python
# data (a copy to the device), a value read back (.item(), a bool), and results whose size depends
# on the data, which the host must learn before it can go on.
WAITS = ("aten.lift_fresh", "aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique",
         "aten.unique", "aten.bincount", "aten.histc", "aten.repeat_interleave")


class RecordOps(TorchDispatchMode):
    """Counts every aten operation run inside it."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def waits(self):
        return {op: count for op, count in self.counts.items() if op.startswith(WAITS)}


def precisions(device):
    if device.type == "cpu":
        return ["fp32", "fp16"]  # fp16's gradient scaler runs on the CPU too, slowly
    return ["fp32", "fp16"] + (["bf16"] if torch.cuda.get_device_capability(device) >= (8, 0) else [])


class Steps:
    """train.py's training of one model on digits: its step, eager or as a CUDA graph, called batch by batch
    (step(index)) or an epoch at a time."""

    def __init__(self, name, precision, device, digits, batch_size=16, graph=False):
        devices.make_deterministic(device)  # as train.py runs a GPU
        self.images, self.labels = (torch.from_numpy(a[:6 * batch_size + 8]).to(device) for a in digits)
        torch.manual_seed(0)
        self.model = build_model(name).to(device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.scaler, self.precision, self.batch_size = devices.make_scaler(device, precision), precision, batch_size
        self.step = GraphedStep(train.train_step, batch_size, self.optimizer, self.scaler) if graph else train.train_step

    def __call__(self, index):
        return self.step(self.model, self.optimizer, self.scaler, self.images[index], self.labels[index],
                         self.precision)

    def epoch(self, generator, check_every=train.DIVERGENCE_CHECK_STEPS):
        return train.train_epoch(self.model, self.optimizer, self.scaler, self.images, self.labels, self.precision,
                                 self.batch_size, generator, step=self.step, check_every=check_every)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_training_step_reads_nothing_back_from_the_device(name, mnist_digits):
    """On the CPU, every operation of two steps is recorded and none is one that would make a GPU wait
    (a constant made into a tensor at every step was one); on a GPU, CUDA's own check stops any sync."""
    for precision in precisions(torch.device("cpu")):
        step = Steps(name, precision, torch.device("cpu"), mnist_digits)
        with RecordOps() as recorded:
            step(torch.arange(16))
            step(torch.arange(16, 32))
        assert recorded.counts["aten.convolution_backward.default"] >= 12  # it did record the steps
        assert recorded.waits() == {}, f"{name} {precision}"
    if CUDA:  # eager, then replays: capturing syncs once, after the warm-up steps
        cuda = torch.device("cuda")
        for precision, graph in itertools.product(precisions(cuda), (False, True)):
            step = Steps(name, precision, cuda, mnist_digits, graph=graph)
            batches = torch.randperm(96, generator=torch.Generator().manual_seed(0)).to(cuda).split(16)
            before = 1 + WARMUP_STEPS if graph else 1  # the first step makes the optimizer's and scaler's state
            for index in batches[:before]:
                step(index)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for index in batches[before:]:
                    step(index)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert (getattr(step.step, "graph", None) is not None) == graph
            del step
            gc.collect()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_head_keeps_to_the_gpu_without_one(name):
    """On any machine: the step's forward pass and loss (the heads' state updated in it), Adam's step, the
    evaluation pass and the pair counts on CUDA tensors that are shapes and a device only (torch's fake tensors; fp32,
    as autocast needs a real GPU; the backward pass too). A CPU tensor mixed in fails, and so does a
    value read back or a size that depends on the data."""
    cuda = torch.device("cuda")
    with FakeTensorMode():
        with cuda:
            torch.manual_seed(0)
            model = build_model(name)
            images, labels = torch.zeros(40, 28, 28, dtype=torch.uint8), torch.arange(40) % 10
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        losses = []
        for index in torch.arange(40, device=cuda).split(16):  # train_step's forward pass and loss
            logits, embeddings = model(to_input(images[index]), labels[index])
            losses.append(model.head.loss(logits, labels[index], embeddings))
        for parameter in model.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        embeddings, point_losses, correct = train.evaluate(model, images, labels, 32, "fp32")
        counts = device_pair_counts(embeddings, np.arange(40) % 10)
    assert {loss.device.type for loss in losses} == {embeddings.device.type, point_losses.device.type,
                                                     correct.device.type, counts.device.type} == {"cuda"}
    assert embeddings.shape == (40, 3) and point_losses.shape == correct.shape == (40,)
    assert counts.shape == (2, SCORE_BINS)


def test_an_epoch_reads_the_loss_back_only_at_its_checks(mnist_digits):
    steps = Steps("vgg8_arcface", "fp32", torch.device("cpu"), mnist_digits, batch_size=8)  # 56 images
    batch_losses = []

    def recorded_step(*args):
        batch_losses.append(train.train_step(*args).item() * len(args[3]))
        return batch_losses[-1]

    with RecordOps() as recorded:
        loss = steps.epoch(torch.Generator().manual_seed(0), check_every=3)
    assert recorded.waits() == {"aten._local_scalar_dense.default": 3}  # after steps 3, 6 and the last, 7
    again = Steps("vgg8_arcface", "fp32", torch.device("cpu"), mnist_digits, batch_size=8)
    again.step = recorded_step
    again.epoch(torch.Generator().manual_seed(0))
    assert len(batch_losses) == 7 and loss == pytest.approx(sum(batch_losses) / len(again.labels), rel=1e-6)


def trained_state(steps, epochs=2):
    """Every number the steps change: weights, buffers (the heads' state among them), Adam's moments and
    step counts, the loss, and the device's random state that dropout and ElasticFace draw from."""
    generator = torch.Generator().manual_seed(0)
    losses = [steps.epoch(generator) for _ in range(epochs)]
    optimizer_state = [tensor for state in steps.optimizer.state.values() for tensor in state.values()]
    return losses, [*steps.model.state_dict().values(), *optimizer_state, torch.cuda.get_rng_state()]


@needs_cuda
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_replays_give_the_eager_steps_numbers_bit_for_bit(name, mnist_digits):
    """Two epochs of 6 full batches and one of 8 images: 3 warm-up steps, the capture, replays, the
    partial batch eager, then replays only; fp16 steps its optimizer outside the graph."""
    cuda = torch.device("cuda")
    for precision in precisions(cuda):
        eager = Steps(name, precision, cuda, mnist_digits)
        eager_losses, eager_state = trained_state(eager)
        graphed = Steps(name, precision, cuda, mnist_digits, graph=True)
        graph_losses, graph_state = trained_state(graphed)
        assert graphed.step.graph is not None, "the step was not captured"
        assert graph_losses == eager_losses, f"{name} {precision}"
        assert len(graph_state) == len(eager_state) > 30
        assert all(torch.equal(a, b) for a, b in zip(graph_state, eager_state)), f"{name} {precision}"
        del eager, graphed  # a graph freed before the next capture on the same stream: pytorch/pytorch#193402
        gc.collect()


@needs_cuda
def test_every_operation_on_the_gpu_has_a_deterministic_version(mnist_digits):
    """train.py's mode only warns at an operation without a deterministic CUDA version; the strict mode
    raises there: every head's training steps, the evaluation pass and the pairs counted on the device."""
    cuda = torch.device("cuda")
    for name, precision in itertools.product(MODEL_NAMES, precisions(cuda)):
        steps = Steps(name, precision, cuda, mnist_digits)
        torch.use_deterministic_algorithms(True)  # strict; conftest restores train.py's mode
        for index in torch.arange(48, device=cuda).split(16):
            steps(index)
        embeddings, _, _ = train.evaluate(steps.model, steps.images, steps.labels, 64, precision)
        device_pair_histograms(embeddings, steps.labels.cpu().numpy())
        torch.cuda.synchronize()


def test_graphs_are_refused_off_a_gpu(mnist_digits):
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        Steps("vgg8_arcface", "fp32", torch.device("cpu"), mnist_digits, graph=True)


@pytest.mark.parametrize("n,classes", [(300, 4), (1000, 10), (2, 2)])
def test_the_device_counts_every_pair_as_the_cpu_reference_does(n, classes, monkeypatch):
    """On the CPU here, and on the GPU where there is one; small blocks, so that pairs span blocks.
    Cosines computed in other blocks may differ in their last bit, which moves a pair at a bin's
    edge to the next bin: at every threshold the counts agree to a ten-thousandth of the pairs."""
    from embedviz import verification

    monkeypatch.setattr(verification, "PAIRS_PER_DEVICE_BLOCK", 5000)
    rng = np.random.default_rng(n)
    embeddings = rng.normal(size=(n, 3)).astype(np.float32)
    embeddings[0] = 0  # a zero row is scored 0 with every other
    labels = rng.integers(0, classes, n)
    labels[-1] = classes  # a class of one image has no genuine pair
    reference = pair_histograms(embeddings, labels)
    assert reference[0].sum() + reference[1].sum() == n * (n - 1) // 2
    for device in ["cpu"] + (["cuda"] if CUDA else []):
        on_device = device_pair_histograms(torch.from_numpy(embeddings).to(device), labels)
        for counts, expected in zip(on_device, reference):
            assert counts.sum() == expected.sum(), device
            assert np.abs(np.cumsum(counts - expected)).max() <= 1e-4 * expected.sum() + 1, device
        figures, expected = verification.summary(*on_device), verification.summary(*reference)
        assert figures["auc"] == pytest.approx(expected["auc"], abs=1e-4) if n > 2 else figures == expected


def test_pairs_on_exact_cosines_fall_in_the_same_bins_on_the_device():
    """Axis-aligned points have cosines 1, 0 and -1 exactly: every count must agree."""
    embeddings = np.repeat(np.eye(3, dtype=np.float32), [3, 4, 5], axis=0) * np.array([[1], [-1]] * 6, np.float32)
    labels = np.arange(12) % 3
    reference = pair_histograms(embeddings, labels)
    on_device = device_pair_histograms(torch.from_numpy(embeddings), labels)
    assert all(np.array_equal(a, b) for a, b in zip(reference, on_device))
    assert reference[0].sum() == 3 * 6 and reference[1].sum() == 66 - 18


def test_the_evaluation_pass_suits_the_device():
    args = train.parse_args([])
    assert args.eval_batch_size is None and args.cuda_graphs
    assert devices.EVAL_BATCH_SIZE == {"cpu": 512, "cuda": 4096}
    assert not train.parse_args(["--no-cuda-graphs"]).cuda_graphs
