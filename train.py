"""Train VGG8 with a 3-D embedding and save the embeddings of every epoch.

    python train.py --model vgg8_arcface
    python train.py --model vgg8_softmax --epochs 20 --dataset fashion-mnist
"""

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import run_files
from datasets import DATASET_NAMES, DatasetError, balanced_sample, load_dataset
from models import MODEL_NAMES, build_model


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="vgg8_arcface", choices=MODEL_NAMES, help="backbone and head")
    p.add_argument("--epochs", type=positive(int), default=80, help="training epochs")
    p.add_argument("--batch-size", type=positive(int), default=128, help="training batch size")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=58, help="seeds weights, shuffling, dropout and samples")
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES,
                   help="mnist falls back to mnist-sample (5,000 digits) when offline and not in --data-dir")
    p.add_argument("--data-dir", default="data", help="datasets live in DATA_DIR/MNIST/raw/ and alike")
    p.add_argument("--out-dir", default="data", help="where embeddings, meta and checkpoints are written")
    p.add_argument("--train-points", type=non_negative_int, default=10000,
                   help="class-balanced training images whose embeddings are saved each epoch (0: all)")
    p.add_argument("--embedding-dim", type=positive(int), default=3, help="size of the embedding")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="convolutions in bf16 where the hardware supports it (auto); the head is always fp32")
    p.add_argument("--eval-batch-size", type=positive(int), default=1024, help="batch size of no-grad passes")
    return p.parse_args(argv)


def select_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def bf16_supported(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def select_precision(name, device):
    if name == "bf16" and not bf16_supported(device):
        raise SystemExit(f"error: --precision bf16 asked for, but this {device.type.upper()} has no bf16 support")
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return name


# ---------------------------------------------------------------- training and evaluation

def to_input(images, device):
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [-1, 1], channels-last, on `device`."""
    images = images.to(device, non_blocking=True).unsqueeze(1).float().div_(127.5).sub_(1.0)
    return images.contiguous(memory_format=torch.channels_last)


def train_one_epoch(model, images, labels, optimizer, batch_size, generator, device, precision, progress):
    """One pass over the shuffled training set; returns the mean loss."""
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    batches = list(order.split(batch_size))
    if len(batches[-1]) == 1 and len(batches) > 1:  # BatchNorm cannot train on a single sample
        batches.pop()
    total_loss, total_count = torch.zeros((), device=device), 0
    for index in tqdm(batches, desc=progress, leave=False, unit="batch"):
        inputs, targets = to_input(images[index], device), labels[index].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, _ = model(inputs, targets)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(index)
        total_count += len(index)
    return total_loss.item() / total_count


@torch.no_grad()
def evaluate(model, images, labels, batch_size, device, precision):
    """Embeddings (eval mode, in order), per-sample loss (with margin) and correctness (without)."""
    model.eval()
    embeddings, losses, correct = [], [], []
    for start in range(0, len(labels), batch_size):
        inputs = to_input(images[start:start + batch_size], device)
        targets = labels[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            batch_embeddings = model.embed(inputs)
        losses.append(F.cross_entropy(model.head(batch_embeddings, targets), targets, reduction="none"))
        correct.append(model.head(batch_embeddings).argmax(1) == targets)
        embeddings.append(batch_embeddings)
    model.train()
    return torch.cat(embeddings).cpu().numpy(), torch.cat(losses).cpu(), torch.cat(correct).cpu()


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = select_device(args.device)
    precision = select_precision(args.precision, device)
    try:
        run_files.check_writable(args.out_dir)
        data = load_dataset(args.dataset, args.data_dir, args.seed, warn=lambda line: print(line, file=sys.stderr))
    except (DatasetError, run_files.RunFileError) as error:
        raise SystemExit(f"error: {error}")

    # The saved points: a fixed class-balanced training sample, then the whole validation split.
    sample = balanced_sample(data.train_labels, args.train_points, args.seed)
    points_images = torch.cat([data.train_images[sample], data.val_images])
    points_labels = torch.cat([data.train_labels[sample], data.val_labels])
    n_train, n = len(sample), len(points_labels)
    is_val = torch.arange(n) >= n_train

    torch.manual_seed(args.seed)
    model = build_model(args.model, args.embedding_dim, len(data.class_names)).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle_generator = torch.Generator().manual_seed(args.seed)

    print(f"{args.model} on {data.name} ({data.source}): {len(data.train_labels):,} train, "
          f"{len(data.val_labels):,} val images; saving {n_train:,} train + {n - n_train:,} val points "
          f"per epoch; {device.type}, {precision}, batch {args.batch_size}")
    all_embeddings = np.zeros((args.epochs + 1, n, args.embedding_dim), np.float32)
    meta = {
        "model": args.model, "dataset": data.name, "dataset_source": data.source,
        "class_names": data.class_names, "splits": {"train": [0, n_train], "val": [n_train, n]},
        "epochs_completed": 0, "options": vars(args), "device": device.type, "precision": precision,
        "history": [],
    }
    best_val_loss = float("inf")
    print(f"{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>8} {'seconds':>8}")
    for epoch in range(args.epochs + 1):
        start = time.perf_counter()
        train_loss = None
        if epoch > 0:  # epoch 0 records the untrained network
            train_loss = train_one_epoch(model, data.train_images, data.train_labels, optimizer, args.batch_size,
                                         shuffle_generator, device, precision, f"epoch {epoch}/{args.epochs}")
        embeddings, losses, correct = evaluate(model, points_images, points_labels, args.eval_batch_size,
                                               device, precision)
        val_loss, val_accuracy = losses[is_val].mean().item(), correct[is_val].float().mean().item()
        seconds = time.perf_counter() - start

        all_embeddings[epoch] = embeddings
        meta["epochs_completed"] = epoch
        meta["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                "val_accuracy": val_accuracy, "seconds": seconds})
        if epoch > 0 and val_loss < best_val_loss:
            best_val_loss = val_loss
            run_files.save_checkpoint(args.out_dir, args.model, {
                "model_state": model.state_dict(), "model": args.model, "embedding_dim": args.embedding_dim,
                "num_classes": len(data.class_names), "epoch": epoch, "val_loss": val_loss})
        run_files.save_run(args.out_dir, args.model, all_embeddings[:epoch + 1], points_labels.numpy(), meta)
        train_text = "-" if train_loss is None else f"{train_loss:.4f}"
        print(f"{epoch:>5} {train_text:>10} {val_loss:>9.4f} {val_accuracy:>8.2%} {seconds:>8.1f}", flush=True)

    paths = run_files.run_paths(args.out_dir, args.model)
    print(f"wrote {paths['embeddings']}, {paths['labels']}, {paths['meta']}, {paths['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
