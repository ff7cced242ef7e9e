"""The training step: forward, head, loss, backward and the optimizer on one batch, with nothing read
back from the device; on CUDA, captured once as a CUDA graph and replayed.

A step queues a few hundred small kernels. Launched one by one from Python they keep a fast GPU
waiting for the host most of the time; a CUDA graph launches them all at once. Replays compute
what the eager step computes, bit for bit: the same kernels on the same memory, dropout's and
ElasticFace's draws from the device's generator at the same offsets, the heads' running state
(AdaCos's s, CurricularFace's t, AdaFace's statistics) updated in place inside the graph.
"""

import warnings

import torch

from embedviz.devices import autocast
from models import to_input

WARMUP_STEPS = 3  # eager steps before capture: the optimizer's state, cuDNN's plans and the allocator settle


class GraphCaptureError(Exception):
    """The training step could not be captured as a CUDA graph; the message says why."""


class TrainStep:
    """step(index) trains on the batch images[index], labels[index] (index: a tensor of rows on the
    device) and adds its loss times its size to step.loss_sum, a tensor on the device.

    With graph=True (CUDA only), batches of batch_size rows replay a graph captured after
    WARMUP_STEPS eager steps of that size; the batch's rows are copied into the graph's index
    tensor, the one thing queued outside it. Other sizes (the last, partial batch) run eagerly.
    fp16's gradient scaler steps the optimizer outside the graph: whether it skips a step is decided
    on the device, but its bookkeeping is Python's. Capture happens at the first full batch after the
    warm-up, so after a resume has loaded its state; the learning rate is fixed from then on. A
    capture that fails raises GraphCaptureError: a failed capture leaves CUDA's stream and random
    state unfit to go on in the same process, and the run is resumed with --no-cuda-graphs.
    """

    def __init__(self, model, optimizer, scaler, images, labels, precision, batch_size, graph=False):
        if graph and images.device.type != "cuda":
            raise ValueError("CUDA graphs need the images on a CUDA device")
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.images, self.labels, self.precision, self.batch_size = images, labels, precision, batch_size
        self.loss_sum = torch.zeros((), device=images.device)
        self.use_graph, self.graph, self.warm_steps = graph, None, 0
        self.graph_index = torch.zeros(batch_size, dtype=torch.long, device=images.device) if graph else None
        self.graph_grads = None  # the gradients the graph writes, which fp16's optimizer step outside it reads
        for group in optimizer.param_groups:  # Adam's fused kernel keeps its step count on the device: the
            group["capturable"] = graph      # same numbers, capturable; a resumed state may say otherwise

    def __call__(self, index):
        if not (self.use_graph and len(index) == self.batch_size):
            self.eager(index)
        elif self.graph is not None:
            self.graph_index.copy_(index)
            self.graph.replay()
            self.step_optimizer_outside_graph()
        elif self.warm_steps < WARMUP_STEPS:
            self.warm_up(index)
        else:
            self.capture(index)

    def eager(self, index):
        self.forward_backward(index)
        self.step_optimizer()

    def forward_backward(self, index):
        loss = self.batch_loss(index)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.loss_sum += loss.detach() * len(index)

    def batch_loss(self, index):
        """The forward pass and the head's loss on the batch, which also updates the heads' running state."""
        targets = self.labels[index]
        with autocast(self.images.device, self.precision):
            logits, embeddings = self.model(to_input(self.images[index]), targets)
        return self.model.head.loss(logits, targets, embeddings)

    def step_optimizer(self):
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def step_optimizer_outside_graph(self):
        if self.scaler.is_enabled():
            for parameter, grad in zip(self.parameters(), self.graph_grads):  # an eager step may have set others
                parameter.grad = grad
            self.step_optimizer()

    def parameters(self):
        return [parameter for group in self.optimizer.param_groups for parameter in group["params"]]

    def warm_up(self, index):
        """An eager step on a side stream, as CUDA graphs ask of the steps before a capture."""
        side = torch.cuda.Stream(self.images.device)
        side.wait_stream(torch.cuda.current_stream(self.images.device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")  # it will be
            self.eager(index)
        torch.cuda.current_stream(self.images.device).wait_stream(side)
        self.warm_steps += 1

    def capture(self, index):
        """Captures the step into a graph, then replays it for this batch: capturing runs nothing."""
        graph = torch.cuda.CUDAGraph()
        self.graph_index.copy_(index)
        try:
            with torch.cuda.graph(graph):
                self.forward_backward(self.graph_index)
                if not self.scaler.is_enabled():
                    self.step_optimizer()
        except RuntimeError as error:
            cause = error.__context__ or error  # capture_end's own message only says that something failed
            raise GraphCaptureError((str(cause).strip().splitlines() or [repr(cause)])[0]) from error
        self.graph, self.graph_grads = graph, [parameter.grad for parameter in self.parameters()]
        self.graph.replay()
        self.step_optimizer_outside_graph()
