"""train.py's train_step, captured once as a CUDA graph and replayed.

A step queues a few hundred small kernels. Launched one by one from Python they keep a fast GPU
waiting for the host most of the time; a CUDA graph launches them all at once. Replays compute what
the eager step computes, bit for bit: the same kernels on the same memory, dropout's and
ElasticFace's draws from the device's generator at the same offsets, the heads' running state
(AdaCos's s, CurricularFace's t, AdaFace's statistics) updated in place inside the graph.
"""

import warnings

import torch

from embedviz.stopping import GraphCaptureError

WARMUP_STEPS = 3  # eager steps before capture: the optimizer's state, cuDNN's plans and the allocator settle


class GraphedStep:
    """GraphedStep(step, batch_size, optimizer, scaler)(model, optimizer, scaler, images, targets, precision)
    returns what step(...) returns, the batch's loss on the device; step is train.train_step.

    Batches of batch_size replay a graph captured after WARMUP_STEPS eager steps of that size (on a
    side stream, as CUDA graphs ask); the batch (gathered by train_epoch) is copied into the graph's
    input tensors, and the loss returned is the graph's own tensor, which the next replay overwrites:
    train_epoch adds it up at once. Other sizes (the last, partial batch) run eagerly. fp16's gradient scaler steps
    the optimizer outside the graph: whether it skips a step is decided on the device, but its
    bookkeeping is Python's. Capture happens at the first full batch after the warm-up, so after a
    resume has loaded its state; the learning rate is fixed from then on. A capture that fails raises
    GraphCaptureError: a failed capture leaves CUDA's stream and random state unfit to go on in the
    same process, and the run is resumed with --no-cuda-graphs.
    """

    def __init__(self, step, batch_size, optimizer, scaler):
        if any(parameter.device.type != "cuda" for parameter in parameters(optimizer)):
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.step, self.batch_size, self.scaler = step, batch_size, scaler
        self.graph, self.warm_steps, self.inputs, self.loss, self.grads = None, 0, None, None, None
        for group in optimizer.param_groups:  # Adam's fused kernel keeps its step count on the device:
            group["capturable"] = True       # the same numbers, capturable

    def __call__(self, model, optimizer, scaler, images, targets, precision):
        if len(images) != self.batch_size:
            return self.step(model, optimizer, scaler, images, targets, precision)
        if self.graph is None and self.warm_steps < WARMUP_STEPS:
            return self.warm_up(model, optimizer, scaler, images, targets, precision)
        if self.graph is None:
            self.capture(model, optimizer, images, targets, precision)
        for static, batch in zip(self.inputs, (images, targets)):
            static.copy_(batch)
        self.graph.replay()
        if scaler.is_enabled():  # fp16: the optimizer's step, outside the graph
            for parameter, grad in zip(parameters(optimizer), self.grads):  # an eager step may have set others
                parameter.grad = grad
            scaler.step(optimizer)
            scaler.update()
        return self.loss

    def warm_up(self, *step_arguments):
        device = step_arguments[3].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")  # it will be
            loss = self.step(*step_arguments)
        torch.cuda.current_stream(device).wait_stream(side)
        self.warm_steps += 1
        return loss

    def capture(self, model, optimizer, images, targets, precision):
        """Captures the step into a graph, on copies of this batch; capturing runs nothing."""
        graph, self.inputs = torch.cuda.CUDAGraph(), (images.clone(), targets.clone())
        scaler = DeferredScaler(self.scaler) if self.scaler.is_enabled() else self.scaler
        try:
            with torch.cuda.graph(graph):
                self.loss = self.step(model, optimizer, scaler, *self.inputs, precision)
        except RuntimeError as error:
            cause = error.__context__ or error  # capture_end's own message only says that something failed
            raise GraphCaptureError((str(cause).strip().splitlines() or [repr(cause)])[0]) from error
        self.graph, self.grads = graph, [parameter.grad for parameter in parameters(optimizer)]


class DeferredScaler:
    """fp16's gradient scaler inside a capture: it scales the loss in the graph and leaves the
    optimizer's step, and its own update, to GraphedStep, outside."""

    def __init__(self, scaler):
        self.scale = scaler.scale

    def step(self, optimizer):
        pass

    def update(self):
        pass


def parameters(optimizer):
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]
