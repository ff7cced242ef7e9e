"""Benchmark: this project's training epoch and frame rendering against the seed repository's way.

    python bench.py --dataset fashion-mnist --data-dir /path/to/data
    python bench.py --dataset fashion-mnist --data-dir /path/to/data --device cuda

Each part runs in a process of its own, one after the other, so that its peak memory is its
own and the parts do not compete for the cores. Printed: seconds per epoch and per frame, the
ratios (seed / ours), training images per second, the share of this machine's measured
matrix-product peak, and peak resident memory (with --device cuda: peak GPU memory too).
A benchmark, not a test: nothing is asserted.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SEED_BATCH_SIZE = 32  # the seed's configuration: fp32, batch 32, a PIL DataLoader, a separate eval pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="any train.py --dataset; full-size data is the fair test")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training part; the first is a warm-up")
    p.add_argument("--seed-epochs", type=int, help="epochs of the seed's way (default: --epochs); on a GPU it is slow")
    p.add_argument("--frames", type=int, default=20, help="frames per rendering part")
    p.add_argument("--points", type=int, default=60000, help="points per frame")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="our renderer's processes")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both ways train")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part, print its JSON
    return p.parse_args(argv)


# ---------------------------------------------------------------- parts, each in its own process

def part_peak(args):
    """Measured matrix-product throughput, the ceiling for a convolution-bound network."""
    import torch

    from embedviz.devices import hardware

    results = {}
    native_bf16 = args.device == "cuda" or hardware(torch.device("cpu"))[2] is not None  # emulated: slow, no peak
    for dtype in (torch.float32, *([torch.bfloat16] if native_bf16 else []),
                  *([torch.float16] if args.device == "cuda" else [])):
        a, b = (torch.randn(2048, 2048, dtype=dtype, device=args.device) for _ in range(2))
        a @ b
        times = []
        for _ in range(7):
            synchronize(args.device)
            start = time.perf_counter()
            a @ b
            synchronize(args.device)
            times.append(time.perf_counter() - start)
        results[str(dtype).removeprefix("torch.")] = 2 * 2048 ** 3 / statistics.median(times) / 1e9
    return {"gflops": results}


def synchronize(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def gpu_peak_mb(device):
    import torch

    return torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else None


def training_flops_per_image(model):
    """Multiply-adds of the convolutions and linear layers, x2 for FLOPs, x3 for forward + backward."""
    import torch

    flops = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            flops.append(2 * output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, torch.nn.Linear):
            flops.append(2 * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device))
    for hook in hooks:
        hook.remove()
    return 3 * sum(flops)


def train_options(args, out_dir, *options):
    return ["--dataset", args.dataset, "--data-dir", args.data_dir, "--out-dir", out_dir, "--device", args.device,
            "--epochs", str(args.epochs), *options]


def part_train_ours(args, *options):
    """train.py's own epochs, at its defaults; the seconds are those train.py records of each epoch:
    training, embedding the saved points and every metric, the save left out (and epoch 0, the untrained
    network)."""
    import contextlib
    import io

    import train
    from embedviz.datasets import load_dataset
    from embedviz.run_files import load_run, run_paths
    from models import load_model

    with tempfile.TemporaryDirectory() as out_dir:
        with contextlib.redirect_stdout(io.StringIO()):
            if train.main(train_options(args, out_dir, *options)) != 0:
                raise SystemExit("error: train.py stopped")
        _, _, meta = load_run(out_dir, "vgg8_arcface")
        model = load_model(run_paths(out_dir, "vgg8_arcface")["checkpoint"], args.device)
    n_train = len(load_dataset(args.dataset, args.data_dir, 58).train_labels)  # every class trains
    history = meta["history"][1:]
    return {"epoch_seconds": [entry["seconds"] for entry in history],
            "train_seconds": [entry["train_seconds"] for entry in history],
            "n_train": n_train, "val_accuracy": history[-1]["val_accuracy"],
            "precision": meta["precision"], "batch_size": meta["options"]["batch_size"],
            "flops_per_image": training_flops_per_image(model), "gpu_peak_mb": gpu_peak_mb(args.device)}


def part_train_eager(args):
    """On a GPU: the same epochs with the training step launched from Python, not replayed as a graph."""
    return part_train_ours(args, "--no-cuda-graphs")


def part_train_profile(args):
    """On a GPU: host syncs in a steady epoch (training and the evaluation pass), counted by CUDA's sync
    check, and the share of the training time the GPU is busy, from the profiler's kernel and copy times."""
    import warnings

    import torch

    import train
    from embedviz.cuda_graph import GraphedStep

    with tempfile.TemporaryDirectory() as out_dir:
        options = train.parse_args(train_options(args, out_dir))
        run = train.set_up(options)
    step = GraphedStep(train.train_step, options.batch_size, run.optimizer, run.scaler)
    points_targets = run.points_targets.to(run.device)

    def epoch():
        loss = train.train_epoch(run.model, run.optimizer, run.scaler, run.train_images, run.train_targets,
                                 run.precision, options.batch_size, run.generator, step=step)
        train.evaluate(run.model, run.points_images, points_targets, 4096, run.precision)
        return loss

    epoch()  # warm-up and capture
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        train.train_epoch(run.model, run.optimizer, run.scaler, run.train_images, run.train_targets, run.precision,
                          options.batch_size, run.generator, step=step)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    device_seconds = sum(event.self_device_time_total for event in profile.key_averages()
                         if event.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    n, batch_size = len(run.train_targets), options.batch_size
    steps = -(-n // batch_size) - (n % batch_size == 1)  # a last batch of one image is dropped
    return {"syncs": sum("synchroniz" in str(w.message) for w in caught), "steps": steps,
            "busy": device_seconds / seconds, "graph": step.graph is not None}


def seed_block(in_channels, out_channels):
    """The seed's block: convolutions with a bias, and ReLU before the pool."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def part_train_seed(args):
    """The seed's way, restated: per-sample PIL transforms in a DataLoader, fp32, batch 32, training
    embeddings gathered from the training batches, then a separate pass over the validation set."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from tqdm import tqdm

    from embedviz.datasets import load_dataset
    from models import PRESETS, VGG8

    class PILDataset(torch.utils.data.Dataset):  # what torchvision's MNIST.__getitem__ does per sample
        def __init__(self, images, labels):
            self.images, self.labels = images, labels
            self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            from PIL import Image
            return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), int(self.labels[i])

    data = load_dataset(args.dataset, args.data_dir, seed=58)
    train_loader = DataLoader(PILDataset(data.train_images, data.train_labels), batch_size=SEED_BATCH_SIZE,
                              shuffle=True, generator=torch.Generator().manual_seed(58))
    val_loader = DataLoader(PILDataset(data.val_images, data.val_labels), batch_size=SEED_BATCH_SIZE)
    torch.manual_seed(58)
    model = VGG8(*PRESETS["vgg8_arcface"], block=seed_block, dropout=torch.nn.Dropout).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch_seconds, train_seconds = [], []
    for epoch in range(args.seed_epochs or args.epochs):
        start = time.perf_counter()
        model.train()
        train_embeddings = []
        for images, labels in tqdm(train_loader, desc=f"seed, epoch {epoch + 1}", leave=False):
            images, labels = images.to(args.device), labels.to(args.device)
            logits, embeddings = model(images, labels)
            train_embeddings.append(embeddings.detach())
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(args.device)
        train_seconds.append(time.perf_counter() - start)
        model.eval()
        correct, val_embeddings = 0, []
        with torch.no_grad():
            for images, labels in val_loader:
                images, labels = images.to(args.device), labels.to(args.device)
                logits, embeddings = model(images, labels)
                F.cross_entropy(logits, labels)
                correct += (model.head(embeddings).argmax(1) == labels).sum().item()
                val_embeddings.append(embeddings)
        epoch_seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": epoch_seconds, "train_seconds": train_seconds, "n_train": len(data.train_labels),
            "val_accuracy": correct / len(data.val_labels), "precision": "fp32", "batch_size": SEED_BATCH_SIZE,
            "gpu_peak_mb": gpu_peak_mb(args.device)}


def clustered_sphere_points(n_frames, n_points, seed=0):
    """Ten caps that tighten frame by frame: what a run's frames look like, for timing the renderer."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_points) % 10
    centres = rng.normal(size=(10, 3))
    frames = []
    for k in range(n_frames):
        spread = 1.5 / (1 + k)
        points = centres[labels] + spread * rng.normal(size=(n_points, 3))
        frames.append(points / np.linalg.norm(points, axis=1, keepdims=True))
    return np.stack(frames).astype(np.float32), labels


def part_render_ours(args):
    from embedviz import render

    points, labels = clustered_sphere_points(args.frames, args.points)
    jobs = [([(frame, labels, None, None, None)], f"bench - epoch {k}", None) for k, frame in enumerate(points)]
    start = time.perf_counter()
    palette = render.gif_palette(10)
    options = {"class_names": [str(i) for i in range(10)], "point_size": render.point_size(args.points)}
    frames = render.render_frames(jobs, options, palette, args.workers, "ours, frames")
    with tempfile.TemporaryDirectory() as tmp:
        render.write_gif(os.path.join(tmp, "bench.gif"), frames, palette, fps=8)
    return {"frame_seconds": (time.perf_counter() - start) / args.frames}


def part_render_seed(args):
    """The seed's way, restated: a new 10x10-inch figure per frame, saved as PNG, read back, then a GIF."""
    import imageio.v2 as imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, labels = clustered_sphere_points(args.frames, args.points)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        frames = []
        for k, frame in enumerate(points):
            fig = plt.figure(figsize=(10, 10))
            ax = fig.add_subplot(111, projection="3d")
            for class_id in range(10):
                members = frame[labels == class_id]
                ax.scatter(members[:, 0], members[:, 1], members[:, 2], label=f"Class {class_id}")
            u, v = np.mgrid[0:2 * np.pi:20j, 0:np.pi:10j]
            ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="r", alpha=0.1)
            plt.title(f"Epoch [{k + 1}/{len(points)}] - Training Embeddings")
            plt.legend()
            path = os.path.join(tmp, f"train_epoch_{k}.png")
            plt.savefig(path)
            plt.close(fig)
            frames.append(imageio.imread(path))
        imageio.mimsave(os.path.join(tmp, "train_embeddings.gif"), frames, duration=125)
    return {"frame_seconds": (time.perf_counter() - start) / args.frames}


PARTS = {"peak": part_peak, "train-ours": part_train_ours, "train-seed": part_train_seed,
         "render-ours": part_render_ours, "render-seed": part_render_seed,
         "train-eager": part_train_eager, "train-profile": part_train_profile}
CUDA_PARTS = ("train-eager", "train-profile")


# ---------------------------------------------------------------- orchestration

def run_part(name, argv):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--part", name],
                            stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def render_memory(result, workers):
    """Parent plus every worker at the largest worker's peak: an upper bound of the total."""
    return result["peak_rss_mb"] + (workers * result["child_peak_rss_mb"] if workers > 1 else 0)


def steady(seconds):
    """Median over the epochs after the first (warm-up), or the only one."""
    return statistics.median(seconds[1:] or seconds)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.part:
        result = PARTS[args.part](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["child_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    r = {name: run_part(name, argv) for name in PARTS if args.device == "cuda" or name not in CUDA_PARTS}
    ours, seed = r["train-ours"], r["train-seed"]
    ours_epoch, seed_epoch = steady(ours["epoch_seconds"]), steady(seed["epoch_seconds"])
    ours_rate = ours["n_train"] / steady(ours["train_seconds"])
    seed_rate = seed["n_train"] / steady(seed["train_seconds"])
    peak = r["peak"]["gflops"][{"bf16": "bfloat16", "fp16": "float16"}.get(ours["precision"], "float32")]
    flops = ours["flops_per_image"]
    print(f"\n{args.dataset}: {ours['n_train']:,} training images, {args.epochs} epochs per part "
          f"({args.seed_epochs or args.epochs} for the seed's way) "
          f"(first one a warm-up) on {args.device}; machine: {os.cpu_count()} CPUs, matrix-product peak "
          + ", ".join(f"{gflops:.0f} GFLOP/s {dtype}" for dtype, gflops in r["peak"]["gflops"].items()))
    rows = [
        ("", "seed's way", "ours", "seed / ours"),
        ("epoch, s (ours: train, embed, measure)", f"{seed_epoch:.2f}", f"{ours_epoch:.2f}",
         f"{seed_epoch / ours_epoch:.2f}x"),
        ("training images / s", f"{seed_rate:,.0f}", f"{ours_rate:,.0f}", f"{ours_rate / seed_rate:.2f}x faster"),
        ("share of matrix-product peak", f"{seed_rate * flops / 1e9 / r['peak']['gflops']['float32']:.0%}",
         f"{ours_rate * flops / 1e9 / peak:.0%}", ""),
        (f"val accuracy after {args.epochs} epochs (seed's: {args.seed_epochs or args.epochs})",
         f"{seed['val_accuracy']:.2%}", f"{ours['val_accuracy']:.2%}",
         f"{(ours['val_accuracy'] - seed['val_accuracy']) * 100:+.2f} points"),
        ("training peak memory, MB", f"{seed['peak_rss_mb']:.0f}", f"{ours['peak_rss_mb']:.0f}", ""),
        *([("training peak GPU memory, MB", f"{seed['gpu_peak_mb']:.0f}", f"{ours['gpu_peak_mb']:.0f}", "")]
          if args.device == "cuda" else []),
        (f"frame at {args.points:,} points, s", f"{r['render-seed']['frame_seconds']:.2f}",
         f"{r['render-ours']['frame_seconds']:.3f}",
         f"{r['render-seed']['frame_seconds'] / r['render-ours']['frame_seconds']:.1f}x"),
        ("rendering peak memory, MB", f"{r['render-seed']['peak_rss_mb']:.0f}",
         f"{render_memory(r['render-ours'], args.workers):.0f}", "ours: all processes"),
    ]
    for row in rows:
        print(f"{row[0]:<44} {row[1]:>12} {row[2]:>12} {row[3]:>16}")
    if args.device == "cuda":
        eager, profile = r["train-eager"], r["train-profile"]
        print(f"the step as a CUDA graph: {'replayed' if profile['graph'] else 'not captured, so eager'}; epoch "
              f"{ours_epoch:.2f} s against {steady(eager['epoch_seconds']):.2f} s eager; val accuracy after "
              f"{args.epochs} epochs {ours['val_accuracy']:.2%} against {eager['val_accuracy']:.2%} eager; of the "
              f"epoch, training {steady(ours['train_seconds']):.2f} s against {steady(eager['train_seconds']):.2f} s")
        print(f"a steady epoch: {profile['syncs']} host syncs in {profile['steps']} steps (steps / 50 + 10 = "
              f"{profile['steps'] / 50 + 10:.0f}); the GPU busy {profile['busy']:.0%} of the training time")
    print(f"(ours: {ours['precision']}, batch {ours['batch_size']}, {args.workers} rendering processes; "
          f"seed: fp32, batch {SEED_BATCH_SIZE}; {flops / 1e6:.0f} MFLOP per training image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
