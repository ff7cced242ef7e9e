"""The device and the precision a run trains in, and what makes a GPU repeat its numbers."""

import functools
import os
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace, read when CUDA starts

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def select_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def make_deterministic(device):
    """On a GPU, the same seed gives the same numbers: cuDNN and cuBLAS choose deterministic algorithms
    (cuBLAS's workspace is set when this module is imported, before CUDA starts). An operation
    without a deterministic version warns rather than stops the run. fp32 convolutions are fp32,
    not the TF32 that cuDNN would use on Ampere and later (there, bf16 is the fast precision).
    A CPU already is deterministic."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # nothing here reads memory it did not write


EVAL_BATCH_SIZE = {"cpu": 512, "cuda": 4096}  # images per no-grad pass: the CPU's caches, the GPU's width


def hardware(device):
    """(device type, CUDA compute capability or None, the CPU's bf16 speed-up or None).

    The CPU's bf16 is native with AVX-512 bf16 or AMX (oneDNN also says yes on AVX-512 CPUs that
    emulate it; ONEDNN_MAX_CPU_ISA=AVX2 turns it off). Native is not always faster: it is 2.5 times
    fp32 on some CPUs and slower than fp32 on others, so it is measured.
    """
    if device.type == "cuda":
        return "cuda", torch.cuda.get_device_capability(device), None
    native = (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
              and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    return "cpu", None, cpu_bf16_speedup() if native else None


@functools.cache
def cpu_bf16_speedup(repeats=7):
    """How many times faster a convolution of this network (batch 128, 16 channels, 28x28, channels-last)
    runs under bf16 autocast than in fp32 on this CPU: a median over repeats, about 0.2 s."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(128, 16, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 16, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    seconds = {}
    for precision in ("fp32", "bf16"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.no_grad(), autocast(torch.device("cpu"), precision):
                for _ in range(3):
                    F.conv2d(images, weight, padding=1)
            times.append(time.perf_counter() - start)
        seconds[precision] = sorted(times)[repeats // 2]
    return seconds["fp32"] / seconds["bf16"]


class PrecisionError(Exception):
    """A precision that this device does not run."""


MIN_CPU_BF16_SPEEDUP = 1.25  # auto trains a CPU in bf16 only when that is clearly faster than fp32


def choose_precision(requested, device_type, capability=None, cpu_bf16=None):
    """"auto", "fp32", "bf16" or "fp16" -> the precision to train in, for this hardware; cpu_bf16:
    None where the CPU has no native bf16, else how many times faster than fp32 it runs.

    bf16 needs native support: CUDA compute capability 8.0 on (Ampere and later), or a CPU with
    AVX-512 bf16 or AMX, where auto takes it only when it is measured faster.
    torch.cuda.is_bf16_supported() also says yes for older GPUs, which
    emulate it, and cuDNN has no bf16 convolutions there. On those, 7.x (V100, T4), the tensor
    cores run fp16, with a gradient scaler against underflow. Without tensor cores (6.x and older,
    a CPU), fp16 is no faster than fp32, and on most of them far slower.
    """
    is_cuda = device_type == "cuda"
    native_bf16 = capability >= (8, 0) if is_cuda else cpu_bf16 is not None
    fast_bf16 = native_bf16 and (is_cuda or cpu_bf16 >= MIN_CPU_BF16_SPEEDUP)
    fast_fp16 = is_cuda and capability >= (7, 0)
    where = f"this GPU (compute capability {capability[0]}.{capability[1]})" if is_cuda else "this CPU"
    if requested == "auto":
        return "bf16" if fast_bf16 else "fp16" if fast_fp16 else "fp32"
    if requested == "bf16" and not native_bf16:
        raise PrecisionError(f"--precision bf16 asked for, but {where} has no native bf16; "
                             f"use --precision {'fp16 or fp32' if fast_fp16 else 'fp32'}")
    if requested == "fp16" and not fast_fp16:
        raise PrecisionError(f"--precision fp16 asked for, but {where} has no tensor cores, and fp16 "
                             "is slower than fp32 without them; use --precision fp32 or auto")
    return requested


def autocast(device, precision):
    """Autocast of the convolutions in bf16 or fp16, off for fp32. The cast weights are not cached:
    a cache kept across a graph's capture would free memory the graph reads (the numbers are the same)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


def make_scaler(device, precision):
    """fp16's gradient scaler; for the other precisions a disabled one, which passes everything through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
