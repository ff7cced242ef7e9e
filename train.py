"""Train VGG8 with a 3-D embedding and save the embeddings of every epoch.

    python train.py --model vgg8_arcface
    python train.py --model vgg8_softmax --epochs 20 --dataset fashion-mnist
"""

import contextlib
import math
import shlex
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import run_files
from cli import ArgumentParser, finite_float, non_negative_int, positive
from datasets import DATASET_NAMES, DatasetError, balanced_sample, load_dataset
from metrics import geometry, unit
from models import MODEL_NAMES, build_model


NUM_CLASSES = 10  # every dataset here: digits, clothes, hiragana


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", default="vgg8_arcface", choices=MODEL_NAMES, help="backbone and head (losses.PRESETS)")
    p.add_argument("--scale", type=positive(float), help="s of a cosine head (default: the preset's, 15)")
    p.add_argument("--margin", type=finite_float,
                   help="the margin that names the preset: m1 of sphereface, m2 of arcface, m3 of cosface")
    p.add_argument("--m1", type=finite_float, help="multiplicative angular margin, cos(m1 theta + m2) - m3")
    p.add_argument("--m2", type=finite_float, help="additive angular margin")
    p.add_argument("--m3", type=finite_float, help="additive cosine margin")
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
    p.add_argument("--eval-batch-size", type=positive(int), default=512, help="batch size of no-grad passes")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its last completed epoch (--epochs may be raised)")
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

def saved_points(data, train_points, seed):
    """The images whose embeddings are saved every epoch, in a fixed order: a class-balanced
    sample of train_points training images (0: all), then the whole validation split.
    Returns (images, labels, n_train)."""
    sample = balanced_sample(data.train_labels, train_points, seed)
    images = torch.cat([data.train_images[sample], data.val_images])
    labels = torch.cat([data.train_labels[sample], data.val_labels])
    return images, labels, len(sample)


class Diverged(Exception):
    """The loss or the embeddings became NaN or infinite; `where`: "step 17", say."""

    def __init__(self, where, loss):
        super().__init__(f"{where} (loss {loss})")


def to_input(images, device):
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [-1, 1], channels-last, on `device`."""
    images = images.to(device, non_blocking=True).unsqueeze(1).float().div_(127.5).sub_(1.0)
    return images.contiguous(memory_format=torch.channels_last)


def make_optimizer(model, lr):
    """Adam, with the fused kernel: one pass over all parameters instead of one op per tensor."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_one_epoch(model, images, labels, optimizer, batch_size, generator, device, precision, progress):
    """One pass over the shuffled training set; returns the mean loss."""
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    batches = list(order.split(batch_size))
    if len(batches[-1]) == 1 and len(batches) > 1:  # BatchNorm cannot train on a single sample
        batches.pop()
    total_loss, total_count = 0.0, 0
    for step, index in enumerate(tqdm(batches, desc=progress, leave=False, unit="batch"), start=1):
        inputs, targets = to_input(images[index], device), labels[index].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, _ = model(inputs, targets)
        loss = F.cross_entropy(logits, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):  # stop before the weights are spoiled
            raise Diverged(f"step {step}", loss_value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss_value * len(index)
        total_count += len(index)
    return total_loss / total_count


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


# ---------------------------------------------------------------- stopping and resuming

class Stop(Exception):
    """SIGINT or SIGTERM arrived."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """Turns SIGINT and SIGTERM into Stop, at once, except while files are being saved:
    a signal that arrives then (a second Ctrl-C, say) is held until the save is complete."""

    def __enter__(self):
        self.saving, self.pending = False, None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if self.saving:
            self.pending = signum
        else:
            raise Stop(signum)

    @contextlib.contextmanager
    def saving_files(self):
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.pending is not None:
            raise Stop(self.pending)


RESUME_MUST_MATCH = ("model", "seed", "batch_size", "lr", "train_points", "embedding_dim")
RESUME_KEYS = ("options", "dataset", "head", "precision", "epoch", "history", "best_val_loss", "model_state",
               "optimizer_state", "torch_rng_state", "shuffle_rng_state")


def load_resume_state(args, dataset_name, head, precision, points_labels):
    """The last completed epoch's state and embeddings, refused when the run differs from this one."""
    paths = run_files.run_paths(args.out_dir, args.model)
    state = run_files.load_checkpoint(paths["resume"], f"start one with: python train.py --model {args.model}")
    if not isinstance(state, dict) or any(key not in state for key in RESUME_KEYS):
        raise run_files.RunFileError(f"{paths['resume']} is not a checkpoint to resume from")
    saved = state["options"]
    differences = [f"--{key.replace('_', '-')} {saved.get(key)} (now {getattr(args, key)})"
                   for key in RESUME_MUST_MATCH if saved.get(key) != getattr(args, key)]
    for name, then, now in (("dataset", state["dataset"], dataset_name), ("head", state["head"], head),
                            ("precision", state["precision"], precision)):
        if then != now:
            differences.append(f"{name} {describe(then)} (now {describe(now)})")
    if differences:
        raise run_files.RunFileError(f"cannot resume: the run in {args.out_dir} was made with "
                                     f"{', '.join(differences)}")
    embeddings = run_files.load_npy(paths["embeddings"])
    labels = run_files.load_npy(paths["labels"])
    if not np.array_equal(labels, points_labels) or len(embeddings) <= state["epoch"]:
        raise run_files.RunFileError(f"cannot resume: {paths['embeddings']} and {paths['labels']} do not "
                                     f"match {paths['resume']}")
    if state["epoch"] >= args.epochs:
        raise run_files.RunFileError(f"nothing to resume: the run already has {state['epoch']} epochs; "
                                     "raise --epochs to train longer")
    return state, embeddings[:state["epoch"] + 1]


# ---------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = select_device(args.device)
    precision = select_precision(args.precision, device)
    torch.manual_seed(args.seed)
    try:
        model = build_model(args.model, args.embedding_dim, NUM_CLASSES, scale=args.scale,
                            margin=args.margin, m1=args.m1, m2=args.m2, m3=args.m3)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    model = model.to(device, memory_format=torch.channels_last)
    try:
        run_files.check_writable(args.out_dir)
        data = load_dataset(args.dataset, args.data_dir, args.seed, warn=lambda line: print(line, file=sys.stderr))
    except (DatasetError, run_files.RunFileError) as error:
        raise SystemExit(f"error: {error}")

    points_images, points_labels, n_train = saved_points(data, args.train_points, args.seed)
    n = len(points_labels)
    is_val = torch.arange(n) >= n_train

    optimizer = make_optimizer(model, args.lr)
    shuffle_generator = torch.Generator().manual_seed(args.seed)
    all_embeddings = np.zeros((args.epochs + 1, n, args.embedding_dim), np.float32)
    meta = {
        "model": args.model, "dataset": data.name, "dataset_source": data.source,
        "class_names": data.class_names, "splits": {"train": [0, n_train], "val": [n_train, n]},
        "epochs_completed": 0, "options": vars(args), "device": device.type, "precision": precision,
        "head": head_description(model.head), "history": [],
    }
    first_epoch, best_val_loss = 0, float("inf")
    if args.resume:
        try:
            state, saved_embeddings = load_resume_state(args, data.name, meta["head"], precision,
                                                        points_labels.numpy())
        except run_files.RunFileError as error:
            raise SystemExit(f"error: {error}")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        torch.set_rng_state(state["torch_rng_state"])
        shuffle_generator.set_state(state["shuffle_rng_state"])
        first_epoch, best_val_loss = state["epoch"] + 1, state["best_val_loss"]
        all_embeddings[:first_epoch] = saved_embeddings
        meta["history"] = state["history"]

    print(f"{args.model} on {data.name} ({data.source}): {len(data.train_labels):,} train, "
          f"{len(data.val_labels):,} val images; saving {n_train:,} train + {n - n_train:,} val points "
          f"per epoch; {device.type}, {precision}, batch {args.batch_size}"
          + (f"; resuming after epoch {first_epoch - 1}" if args.resume else ""))
    print(f"{model.head}\n{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>8} {'ncm_acc':>8} "
          f"{'spread':>7} {'separation':>10} {'seconds':>8}")
    epoch, last_saved = first_epoch, first_epoch - 1
    try:
        with SignalGuard() as guard:
            for epoch in range(first_epoch, args.epochs + 1):
                start = time.perf_counter()
                train_loss = None
                if epoch > 0:  # epoch 0 records the untrained network
                    train_loss = train_one_epoch(model, data.train_images, data.train_labels, optimizer,
                                                 args.batch_size, shuffle_generator, device, precision,
                                                 f"epoch {epoch}/{args.epochs}")
                embeddings, losses, correct = evaluate(model, points_images, points_labels,
                                                       args.eval_batch_size, device, precision)
                val_loss, val_accuracy = losses[is_val].mean().item(), correct[is_val].float().mean().item()
                if not (math.isfinite(val_loss) and np.isfinite(embeddings).all()):  # keep the last good files
                    raise Diverged("in the evaluation after it", val_loss)
                weights = unit(model.head.weight.detach().cpu().numpy()) if model.head.uses_cosine else None
                shape = geometry(embeddings[:n_train], points_labels[:n_train].numpy(), embeddings[n_train:],
                                 points_labels[n_train:].numpy(), NUM_CLASSES, weights)
                seconds = time.perf_counter() - start

                all_embeddings[epoch] = embeddings
                meta["epochs_completed"] = epoch
                meta["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                        "val_accuracy": val_accuracy, **shape, "seconds": seconds,
                                        "class_weights": None if weights is None else weights.round(6).tolist()})
                with guard.saving_files(), saving_to(args.out_dir, last_saved):
                    if epoch > 0 and val_loss < best_val_loss:
                        best_val_loss = val_loss
                        run_files.save_checkpoint(args.out_dir, args.model, "checkpoint", {
                            "model_state": model.state_dict(), "model": args.model, "epoch": epoch,
                            "embedding_dim": args.embedding_dim, "num_classes": NUM_CLASSES,
                            "val_loss": val_loss})
                    run_files.save_run(args.out_dir, args.model, all_embeddings[:epoch + 1],
                                       points_labels.numpy(), meta, resume_state={
                        "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                        "torch_rng_state": torch.get_rng_state(),
                        "shuffle_rng_state": shuffle_generator.get_state(), "epoch": epoch,
                        "best_val_loss": best_val_loss, "history": meta["history"],
                        "options": vars(args), "dataset": data.name, "head": meta["head"],
                        "precision": precision})
                    last_saved = epoch
                train_text = "-" if train_loss is None else f"{train_loss:.4f}"
                separation = "-" if shape["min_inter_class_deg"] is None else f"{shape['min_inter_class_deg']:.1f}°"
                print(f"{epoch:>5} {train_text:>10} {val_loss:>9.4f} {val_accuracy:>8.2%} "
                      f"{shape['ncm_accuracy']:>8.2%} {shape['intra_class_deg']:>6.1f}° {separation:>10} "
                      f"{seconds:>8.1f}", flush=True)
    except Stop as stop:
        print(f"\nstopped by {stop} during epoch {epoch}; {saved_epochs(last_saved)} saved in {args.out_dir}; "
              f"resume with: {resume_command(argv)}", file=sys.stderr)
        return 128 + stop.signum
    except Diverged as diverged:
        raise SystemExit(f"error: training diverged at epoch {epoch}, {diverged}; {saved_epochs(last_saved)} "
                         f"saved in {args.out_dir}; try a lower --lr")

    paths = run_files.run_paths(args.out_dir, args.model)
    print(f"wrote {paths['embeddings']}, {paths['labels']}, {paths['meta']}, {paths['checkpoint']}")
    return 0


def describe(value):
    """{"kind": "margin", "s": 15.0} -> "kind=margin s=15.0"; anything else as it is."""
    return " ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


@contextlib.contextmanager
def saving_to(out_dir, last_saved):
    """A failed write (a full disk, a folder taken away) ends training with one line, the files kept."""
    try:
        yield
    except OSError as error:
        raise SystemExit(f"error: cannot save to {out_dir} ({error.strerror or error}); "
                         f"{saved_epochs(last_saved)} saved there") from None


def head_description(head):
    """The head's kind and parameters, for the meta file."""
    if not head.uses_cosine:
        return {"kind": "softmax"}
    return {"kind": "margin", "s": head.s, "m1": head.m1, "m2": head.m2, "m3": head.m3}


def saved_epochs(last_saved):
    return "nothing was" if last_saved < 0 else "epoch 0 was" if last_saved == 0 else f"epochs 0-{last_saved} were"


def resume_command(argv):
    return shlex.join(["python", "train.py", *argv, *([] if "--resume" in argv else ["--resume"])])


if __name__ == "__main__":
    sys.exit(main())
