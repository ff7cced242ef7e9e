"""Train VGG8 with a 3-D embedding and save the embeddings of every epoch.

    python train.py --model vgg8_arcface
    python train.py --model vgg8_softmax --epochs 20 --dataset fashion-mnist
"""

import contextlib
import dataclasses
import math
import shlex
import signal
import sys
import time
from argparse import ArgumentTypeError, BooleanOptionalAction
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from embedviz import run_files
from embedviz.cli import ArgumentParser, finite_float, int_from, non_negative_int, positive, seed_int
from embedviz.datasets import DATASET_CLASSES, DATASET_NAMES, DatasetError, balanced_sample, load_dataset
from embedviz.devices import (EVAL_BATCH_SIZE, PrecisionError, autocast, choose_precision, hardware, make_deterministic,
                              select_device)
from embedviz.metrics import (class_means, dominant_subcenters, geometry, outlier_threshold_deg, separation_bound_deg,
                              unit)
from embedviz.training_step import GraphCaptureError, TrainStep
from embedviz.verification import epoch_metrics
from models import MODEL_NAMES, build_model, head_config, to_input

DIVERGENCE_CHECK_STEPS = 50  # training steps between two looks at the loss; each look waits for the device
MAX_EMBEDDING_DIM = 512  # a face model's size; the embeddings of every epoch are saved


def parse_args(argv=None):
    p = ArgumentParser(prog="train.py", description=__doc__)
    p.add_argument("--model", default="vgg8_arcface", choices=MODEL_NAMES, help="backbone and head (models.PRESETS)")
    p.add_argument("--scale", type=positive(float), help="s of a cosine head (default: the preset's, 15)")
    p.add_argument("--margin", type=finite_float,
                   help="the margin that names the preset: m1 of sphereface, m2 of arcface, m3 of cosface")
    p.add_argument("--m1", type=finite_float, help="multiplicative angular margin, cos(m1 theta + m2) - m3")
    p.add_argument("--m2", type=finite_float, help="additive angular margin")
    p.add_argument("--m3", type=finite_float, help="additive cosine margin")
    p.add_argument("--subcenters", type=positive(int), help="sub-centres per class of vgg8_subcenter (default: 3)")
    p.add_argument("--epochs", type=positive(int), default=80, help="training epochs")
    p.add_argument("--batch-size", type=int_from(2), default=128,
                   help="training batch size; BatchNorm needs 2 images a batch at least")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=seed_int, default=58,
                   help="seeds weights, shuffling, dropout, the saved points and the mnist-sample split")
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES,
                   help="mnist falls back to mnist-sample (5,000 digits) when offline and not in --data-dir")
    p.add_argument("--data-dir", default="data",
                   help="datasets live in DATA_DIR/MNIST/raw/ and alike; for imagefolder, the folder of class folders")
    p.add_argument("--out-dir", default="data", help="where embeddings, meta and checkpoints are written")
    p.add_argument("--train-points", type=non_negative_int, default=10000,
                   help="class-balanced training images whose embeddings are saved each epoch (0: all)")
    p.add_argument("--embedding-dim", type=int_from(2, MAX_EMBEDDING_DIM), default=3,
                   help="size of the embedding; beyond 3, the frames show the 3 principal directions of the last epoch")
    p.add_argument("--image-size", type=image_size, default=28,
                   help="side of the square images of --dataset imagefolder: 28, or a multiple of 8 from 16 to 64")
    p.add_argument("--classes", type=class_indices, nargs="+", default=[], metavar="CLASS",
                   help="the dataset classes a run uses (indices or ranges: 0-24 100-132); the others are left out "
                        "of training and of every measure; default: all")
    p.add_argument("--unseen-classes", type=class_indices, nargs="+", default=[], metavar="CLASS",
                   help="classes held out of training (dataset indices or ranges: 6 7 8 9, 100-132), embedded "
                        "every epoch to measure verification on classes never seen; default: none")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast precision of the convolutions; auto: bf16 where the hardware runs it natively, "
                        "else fp16 on a CUDA GPU with tensor cores, else fp32; the head is always fp32")
    p.add_argument("--eval-batch-size", type=positive(int),
                   help="batch size of the passes that embed the saved points (default: 512 on a CPU, 4096 on a GPU)")
    p.add_argument("--cuda-graphs", action=BooleanOptionalAction, default=True,
                   help="on a GPU, replay the training step as a CUDA graph (the same numbers, less waiting)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its last completed epoch (--epochs may be raised)")
    args = p.parse_args(argv)
    if args.image_size != 28 and args.dataset != "imagefolder":
        p.error(f"--image-size {args.image_size}: {args.dataset}'s images are 28x28; "
                "the size is for --dataset imagefolder")
    for name in ("classes", "unseen_classes"):  # a list for each index or range
        setattr(args, name, [c for classes in getattr(args, name) for c in classes])
    if args.dataset != "imagefolder":  # an image folder's classes are known once it is read (set_up)
        try:
            check_unseen(args.unseen_classes, DATASET_CLASSES[args.dataset], args.classes)
        except ValueError as error:
            p.error(str(error))
    args.classes, args.unseen_classes = sorted(args.classes), sorted(args.unseen_classes)
    return args


def image_size(text):
    """--image-size: 28, as the digits, or a multiple of 8 from 16 to 64 (three poolings halve it)."""
    size = int(text) if text.isdigit() else None
    if size != 28 and (size is None or size % 8 or not 16 <= size <= 64):
        raise ArgumentTypeError(f"{text!r} is not 28 or a multiple of 8 from 16 to 64")
    return size


def class_indices(text):
    """--unseen-classes: "7" -> [7], "100-132" -> [100, ..., 132]."""
    first, _, last = text.partition("-")
    if not (first.isdigit() and (last.isdigit() or not _)):
        raise ArgumentTypeError(f"{text!r} is not a class index or a range of them (6, or 100-132)")
    if _ and int(last) < int(first):
        raise ArgumentTypeError(f"{text!r}: a range goes up (100-132)")
    return list(range(int(first), int(last or first) + 1))


def check_unseen(unseen, num_classes, classes=()):
    """--classes and --unseen-classes against the dataset's classes: known, the unseen among the classes
    used, 2 seen and 2 unseen at least."""
    for flag, chosen in (("--classes", classes), ("--unseen-classes", unseen)):
        if chosen and max(chosen) >= num_classes:
            raise ValueError(f"{flag} {max(chosen)}: the dataset has classes 0-{num_classes - 1}")
        if len(set(chosen)) < len(chosen):
            raise ValueError(f"{flag} {' '.join(map(str, chosen))}: a class is named twice")
    used = classes or range(num_classes)
    if classes and not set(unseen) <= set(classes):
        raise ValueError(f"--unseen-classes {' '.join(map(str, sorted(set(unseen) - set(classes))))}: "
                         "not among --classes")
    if classes and len(classes) - len(unseen) < 2:
        raise ValueError(f"--classes: {len(classes) - len(unseen)} seen classes; train on 2 at least")
    if unseen and not 2 <= len(unseen) <= len(used) - 2:
        raise ValueError(f"--unseen-classes: hold out from 2 to {len(used) - 2} classes, so that at least 2 "
                         f"are seen and 2 unseen; got {len(unseen)}")


# ---------------------------------------------------------------- training and evaluation

def saved_points(data, train_points, seed, unseen_classes=()):
    """The images whose embeddings are saved every epoch, in a fixed order: a class-balanced
    sample of train_points training images of the seen classes (0: all of them), the validation
    images of the seen classes, then those of the unseen classes.
    Returns (images, labels, splits): labels as in the dataset, splits the meta file's row ranges."""
    unseen = torch.tensor(unseen_classes, dtype=torch.long)
    seen_train = torch.nonzero(~torch.isin(data.train_labels, unseen)).flatten()
    sample = seen_train[balanced_sample(data.train_labels[seen_train], train_points, seed)]
    is_unseen = torch.isin(data.val_labels, unseen)
    val_rows = torch.cat([torch.nonzero(~is_unseen).flatten(), torch.nonzero(is_unseen).flatten()])
    images = torch.cat([data.train_images[sample], data.val_images[val_rows]])
    labels = torch.cat([data.train_labels[sample], data.val_labels[val_rows]])
    val_end = len(sample) + int((~is_unseen).sum())
    splits = {"train": [0, len(sample)], "val": [len(sample), val_end]}
    if len(unseen_classes):
        splits["unseen"] = [val_end, len(labels)]
    return images, labels, splits


def with_classes(data, classes):
    """The dataset with the images of `classes` alone (all of them when empty); labels stay the dataset's."""
    if not classes:
        return data
    chosen = torch.tensor(classes)
    train, val = torch.isin(data.train_labels, chosen), torch.isin(data.val_labels, chosen)
    return dataclasses.replace(data, train_images=data.train_images[train], train_labels=data.train_labels[train],
                               val_images=data.val_images[val], val_labels=data.val_labels[val])


def head_rows(unseen_classes, num_classes=10, classes=()):
    """Dataset label -> the head's row for that class: the seen classes in order, -1 for the unseen and
    for those left out (not among `classes`, when given)."""
    rows = torch.full((num_classes,), -1, dtype=torch.long)
    seen = [c for c in (classes or range(num_classes)) if c not in unseen_classes]
    rows[seen] = torch.arange(len(seen))
    return rows


class Diverged(Exception):
    """The loss or the embeddings became NaN or infinite; `where`: "steps 1-50", say."""

    def __init__(self, where, loss):
        super().__init__(f"{where} (loss {loss})")


def make_optimizer(model, lr):
    """Adam, with the fused kernel: one pass over all parameters instead of one op per tensor."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def make_scaler(device, precision):
    """fp16's gradient scaler; for the other precisions a disabled one, which passes everything through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def train_one_epoch(step, generator, progress, check_every=DIVERGENCE_CHECK_STEPS):
    """One pass of step (a TrainStep) over its shuffled training set; returns the mean loss. The loss
    is summed on the device and read every check_every steps, not at every step, which would make
    each step wait for the device; the last read is the epoch's loss."""
    step.model.train()
    order = torch.randperm(len(step.labels), generator=generator).to(step.images.device)
    batches = list(order.split(step.batch_size))
    if len(batches[-1]) == 1 and len(batches) > 1:  # BatchNorm cannot train on a single sample
        batches.pop()
    step.loss_sum.zero_()
    checked = 0
    for number, index in enumerate(tqdm(batches, desc=progress, leave=False, unit="batch"), start=1):
        step(index)
        if number % check_every == 0 or number == len(batches):
            loss_sum = step.loss_sum.item()
            if not math.isfinite(loss_sum):  # the caller saves nothing of this epoch
                raise Diverged(f"steps {checked + 1}-{number}", loss_sum)
            checked = number
    return loss_sum / sum(len(index) for index in batches)


def evaluate(model, images, labels, batch_size, precision):
    """Embeddings (eval mode, in order), per-sample loss (with margin) and correctness (without), all
    brought back to the CPU at once; the model is left in the mode it came in."""
    columns = evaluation_columns(model, images, labels, batch_size, precision).cpu()
    return columns[:, :-2].contiguous().numpy(), columns[:, -2], columns[:, -1].bool()


@torch.no_grad()
def evaluation_columns(model, images, labels, batch_size, precision):
    """evaluate's numbers on the device, a row an image: the embedding, the loss and 1 where correct."""
    was_training = model.training
    model.eval()
    columns = []  # (batch, dim + 2): embedding, loss, correct
    for start in range(0, len(labels), batch_size):
        targets = labels[start:start + batch_size]
        with autocast(images.device, precision):
            embeddings = model.embed(to_input(images[start:start + batch_size]))
        loss = model.head.loss(model.head(embeddings, targets), targets, embeddings, reduction="none")
        correct = model.head(embeddings).argmax(1) == targets
        columns.append(torch.cat([embeddings, loss[:, None], correct[:, None].float()], 1))
    model.train(was_training)
    return torch.cat(columns)


# ---------------------------------------------------------------- stopping

class Stop(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException, as KeyboardInterrupt, so that no `except Exception`
    on the way (reading a checkpoint, say) takes it for a fault."""

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


# ---------------------------------------------------------------- a run: set up, restore, one epoch, save

@dataclass
class Training:
    """A run between two epochs: what it trains, on what, and what it has recorded."""
    args: object
    device: torch.device
    precision: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffle_generator: torch.Generator
    train_images: torch.Tensor   # (N, 28, 28) uint8 images of the seen classes, on the device
    train_labels: torch.Tensor   # (N,) their head rows, on the device
    points_images: torch.Tensor  # the images whose embeddings are saved, on the device
    points_labels: torch.Tensor  # their dataset labels, on the CPU
    points_rows: torch.Tensor    # their head rows (0 for unseen classes, whose loss is not used), on the device
    head_rows: torch.Tensor      # dataset class -> its head row, -1 for a class held out
    splits: dict                 # row ranges of points_images: "train", "val" and, held out, "unseen"
    meta: dict
    first_epoch: int = 0
    epoch: int = -1              # the epoch under way
    last_saved: int = -1         # the last epoch whose files are complete
    best_val_loss: float = math.inf
    step: TrainStep = None       # made at the first epoch trained, after a resume has loaded its state
    frame: np.ndarray = None     # (n, embedding_dim): the embeddings of the epoch to save


def set_up(args):
    """Device, precision, model, data and the empty record of a new run."""
    device = select_device(args.device)
    make_deterministic(device)
    try:
        precision = choose_precision(args.precision, *hardware(device))
    except PrecisionError as error:
        raise SystemExit(f"error: {error}")
    head_options = {"scale": args.scale, "margin": args.margin, "m1": args.m1, "m2": args.m2, "m3": args.m3,
                    "subcenters": args.subcenters}
    try:
        head_config(args.model, **head_options)  # refused before the data is read, which can take long
        run_files.check_writable(args.out_dir)
        data = load_dataset(args.dataset, args.data_dir, args.seed, warn=lambda line: print(line, file=sys.stderr),
                            image_size=args.image_size)
        check_unseen(args.unseen_classes, len(data.class_names), args.classes)
        data = with_classes(data, args.classes)
        rows = head_rows(args.unseen_classes, len(data.class_names), args.classes)
        torch.manual_seed(args.seed)
        model = build_model(args.model, args.embedding_dim, int((rows >= 0).sum()),
                            in_channels=1 if data.train_images.dim() == 3 else 3,
                            image_size=data.train_images.shape[1], **head_options)
    except (ValueError, DatasetError, run_files.RunFileError) as error:
        raise SystemExit(f"error: {error}")
    model = model.to(device, memory_format=torch.channels_last)
    points_images, points_labels, splits = saved_points(data, args.train_points, args.seed, args.unseen_classes)
    try:
        run_files.check_room(args.out_dir, args.model, len(points_labels) * args.embedding_dim * 4, args.epochs + 1,
                             points_images.numel() + 4 * sum(p.numel() for p in model.parameters()) * 6)
    except run_files.RunFileError as error:
        raise SystemExit(f"error: {error}")
    train_images, train_labels = data.train_images, data.train_labels
    if args.unseen_classes:  # nothing of them reaches training
        seen = rows[train_labels] >= 0
        train_images, train_labels = train_images[seen], train_labels[seen]
    meta = {
        "model": args.model, "dataset": data.name, "dataset_source": data.source,
        "class_names": data.class_names, "splits": splits,
        "epochs_completed": 0, "options": vars(args), "device": device.type, "precision": precision,
        "head": model.head.config(), "history": [],
    }
    meta["separation_bound_deg"] = separation_bound_deg(model.head.num_classes, args.embedding_dim)
    if model.head.subcenters > 1:
        meta["outlier_deg"] = outlier_threshold_deg(model.head.num_classes, args.embedding_dim)
    if data.details:
        meta["dataset_details"] = data.details
    if args.classes:
        meta["classes"] = args.classes
    if args.unseen_classes:
        meta["seen_classes"] = [c for c in range(len(rows)) if rows[c] >= 0]
        meta["unseen_classes"] = args.unseen_classes
    return Training(
        args=args, device=device, precision=precision, model=model, optimizer=make_optimizer(model, args.lr),
        scaler=make_scaler(device, precision), shuffle_generator=torch.Generator().manual_seed(args.seed),
        train_images=train_images.to(device), train_labels=rows[train_labels].to(device),
        points_images=points_images.to(device), points_labels=points_labels,
        points_rows=rows[points_labels].clamp(min=0).to(device), head_rows=rows, splits=splits, meta=meta)


RESUME_MUST_MATCH = ("model", "seed", "batch_size", "lr", "train_points", "embedding_dim", "unseen_classes",
                     "image_size", "classes")
RESUME_KEYS = ("model_state", "head", "options", "epoch", "optimizer_state", "scaler_state", "rng_states",
               "history", "best_val_loss", "dataset", "precision")


def restore(training):
    """Continues from the run in --out-dir: its last completed epoch's state and embeddings,
    refused when that run was made otherwise than this one."""
    args = training.args
    paths = run_files.run_paths(args.out_dir, args.model)
    state = run_files.load_checkpoint(paths["resume"], f"start one with: python train.py --model {args.model}")
    if not isinstance(state, dict):
        raise run_files.RunFileError(f"{paths['resume']} is not a checkpoint to resume from")
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise run_files.RunFileError(f"{paths['resume']} lacks {', '.join(missing)}: it was written by another "
                                     "version of train.py; start the run again without --resume")
    if args.precision == "auto" and state["precision"] != training.precision:
        try:  # auto continues in the run's own precision where this device runs it
            training.precision = choose_precision(state["precision"], *hardware(training.device))
            training.scaler = make_scaler(training.device, training.precision)
            training.meta["precision"] = training.precision
        except PrecisionError:
            pass  # refused below, the difference named
    saved = {"image_size": 28, "classes": [], **state["options"]}  # runs made before these options had their defaults
    differences = [f"--{key.replace('_', '-')} {describe(saved.get(key))} (now {describe(getattr(args, key))})"
                   for key in RESUME_MUST_MATCH if saved.get(key) != getattr(args, key)]
    for name, then, now in (("dataset", state["dataset"], training.meta["dataset"]),
                            ("classes", state.get("class_names", training.meta["class_names"]),
                             training.meta["class_names"]),
                            ("head", state["head"], training.model.head.config()),
                            ("precision", state["precision"], training.precision)):
        if then != now:
            differences.append(f"{name} {describe(then)} (now {describe(now)})")
    if differences:
        raise run_files.RunFileError(f"cannot resume: the run in {args.out_dir} was made with "
                                     f"{', '.join(differences)}")
    if state["epoch"] >= args.epochs:
        raise run_files.RunFileError(f"nothing to resume: the run already has {state['epoch']} epochs; "
                                     "raise --epochs to train longer")
    embeddings = run_files.load_npy(paths["embeddings"], mmap=True)  # its shape: the frames stay on disk
    labels = run_files.load_npy(paths["labels"])
    first_epoch, points_shape = state["epoch"] + 1, (len(training.points_labels), args.embedding_dim)
    if embeddings.ndim != 3 or embeddings.shape[1:] != points_shape or len(embeddings) < first_epoch:
        raise run_files.RunFileError(
            f"cannot resume: {paths['embeddings']} has shape {embeddings.shape}, but this run needs "
            f"({first_epoch} or more, {', '.join(map(str, points_shape))})")
    if not np.array_equal(labels, training.points_labels.numpy()):
        raise run_files.RunFileError(f"cannot resume: {paths['labels']} does not hold the labels of this "
                                     "run's points")
    training.model.load_state_dict(state["model_state"])
    training.optimizer.load_state_dict(state["optimizer_state"])
    training.scaler.load_state_dict(state["scaler_state"])
    set_rng_states(state["rng_states"], training.shuffle_generator, training.device)
    training.first_epoch, training.last_saved = first_epoch, first_epoch - 1
    training.best_val_loss = state["best_val_loss"]
    training.meta["history"] = state["history"]


def run_epoch(training, epoch):
    """Trains one epoch (epoch 0 records the untrained network), embeds the saved points and
    measures them; returns the epoch's history entry."""
    start = time.perf_counter()
    model, args = training.model, training.args
    train_loss = None
    if epoch > 0:
        if training.step is None:
            training.step = TrainStep(model, training.optimizer, training.scaler, training.train_images,
                                      training.train_labels, training.precision, args.batch_size,
                                      graph=args.cuda_graphs and training.device.type == "cuda")
        train_loss = train_one_epoch(training.step, training.shuffle_generator, f"epoch {epoch}/{args.epochs}")
    if training.device.type == "cuda":
        torch.cuda.synchronize(training.device)  # the training's seconds, not the time to queue it
    train_seconds = time.perf_counter() - start
    embeddings, losses, correct = evaluate(model, training.points_images, training.points_rows,
                                           args.eval_batch_size or EVAL_BATCH_SIZE[training.device.type],
                                           training.precision)
    train, val = (slice(*training.splits[split]) for split in ("train", "val"))
    val_loss, val_accuracy = losses[val].mean().item(), correct[val].float().mean().item()  # the seen classes
    if not (math.isfinite(val_loss) and np.isfinite(embeddings).all()):  # keep the last good files
        raise Diverged("in the evaluation after it", val_loss)
    head, rows, labels = model.head, training.points_rows.cpu().numpy(), training.points_labels.numpy()
    weights, extra = None, {}
    if head.uses_cosine:  # (C, K, dim): each class's sub-centres, K = 1 but for Sub-center ArcFace
        centres = unit(head.weight.detach().cpu().numpy()).reshape(head.num_classes, head.subcenters, -1)
        weights = centres[:, 0]
        if head.subcenters > 1:  # a class's weight is its dominant sub-centre
            dominant, angles = dominant_subcenters(embeddings[train], rows[train], centres)
            weights = centres[np.arange(head.num_classes), dominant]
            extra["subcenters"] = {"weights": centres.round(6).tolist(), "dominant": dominant.tolist(),
                                   "outliers": int((angles > training.meta["outlier_deg"]).sum())}
    state = head.state()
    if state:
        extra["head_state"] = state
    shape = geometry(embeddings[train], rows[train], embeddings[val], rows[val], head.num_classes, weights)
    seen_means = class_means(embeddings[train], rows[train], head.num_classes)
    training.frame = embeddings
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy, **shape,
            **epoch_metrics(embeddings, labels, training.splits, seen_means, args.seed,
                            on_device(embeddings, training)),
            **norms_by_correctness(embeddings[val], correct[val].numpy()), **extra,
            "seconds": time.perf_counter() - start, "train_seconds": train_seconds,
            "class_weights": None if weights is None else  # one per dataset class, None for one held out
            [weights[row].round(6).tolist() if row >= 0 else None for row in training.head_rows.tolist()]}


def on_device(embeddings, training):
    """The epoch's embeddings on the GPU, where their pairs are counted; None on a CPU."""
    return torch.from_numpy(embeddings).to(training.device) if training.device.type == "cuda" else None


def norms_by_correctness(embeddings, correct):
    """The mean norm, before normalisation, of the correctly and of the wrongly classified images
    (None where there are none): how the norm relates to difficulty."""
    norms = np.linalg.norm(embeddings, axis=1)
    return {"norm_correct": float(norms[correct].mean()) if correct.any() else None,
            "norm_wrong": float(norms[~correct].mean()) if not correct.all() else None}


def save(training, entry):
    """The best checkpoint when the val loss improved, then the run's files with the state to resume."""
    args, epoch = training.args, entry["epoch"]
    training.meta["epochs_completed"] = epoch
    training.meta["history"].append(entry)
    network = checkpoint(training, entry)
    if epoch > 0 and entry["val_loss"] < training.best_val_loss:
        training.best_val_loss = entry["val_loss"]
        run_files.save_checkpoint(args.out_dir, args.model, "checkpoint", network)
    run_files.save_images(args.out_dir, args.model, lambda: training.points_images.cpu().numpy(), replace=epoch == 0)
    run_files.save_run(args.out_dir, args.model, training.frame, epoch, training.points_labels.numpy(),
                       training.meta, resume_state={
                           **network,
                           "optimizer_state": on_cpu(training.optimizer.state_dict()),
                           "scaler_state": training.scaler.state_dict(),
                           "rng_states": rng_states(training.shuffle_generator, training.device),
                           "history": training.meta["history"], "best_val_loss": training.best_val_loss,
                           "dataset": training.meta["dataset"], "class_names": training.meta["class_names"],
                           "precision": training.precision})
    training.last_saved = epoch


def checkpoint(training, entry):
    """What both checkpoints hold, all on the CPU: enough for models.load_model to rebuild the network."""
    model = training.model
    return {"model_state": on_cpu(model.state_dict()), "model": training.args.model, "head": model.head.config(),
            "embedding_dim": training.args.embedding_dim, "num_classes": model.head.num_classes,
            "in_channels": model.features[0][0].in_channels, "image_size": training.args.image_size,
            "options": vars(training.args), "epoch": entry["epoch"], "val_loss": entry["val_loss"]}


def on_cpu(state):
    """A state dict with every tensor copied to the CPU, so that it loads on a machine without the device."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(value) for value in state)
    return state


def rng_states(shuffle_generator, device):
    """Every random state the training draws from: the CPU's, the training GPU's (dropout there),
    and the shuffling's."""
    return {"torch": torch.get_rng_state(), "shuffle": shuffle_generator.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_states(states, shuffle_generator, device):
    torch.set_rng_state(states["torch"])
    shuffle_generator.set_state(states["shuffle"])
    if device.type == "cuda" and states["cuda"] is not None:  # None: the run so far was on the CPU
        torch.cuda.set_rng_state(states["cuda"], device)


# ---------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    training = None
    try:
        with SignalGuard() as guard:
            training = set_up(args)
            if args.resume:
                try:
                    restore(training)
                except run_files.RunFileError as error:
                    raise SystemExit(f"error: {error}")
            print_header(training)
            for epoch in range(training.first_epoch, args.epochs + 1):
                training.epoch = epoch
                entry = run_epoch(training, epoch)
                with guard.saving_files(), saving_to(args.out_dir, training.last_saved):
                    save(training, entry)
                print_row(entry)
    except Stop as stop:
        if training is None or training.epoch < 0:
            print(f"\nstopped by {stop} before training started; no file was written", file=sys.stderr)
        else:
            print(f"\nstopped by {stop} during epoch {training.epoch}; {saved_epochs(training.last_saved)} saved in "
                  f"{args.out_dir}; resume with: {resume_command(argv)}", file=sys.stderr)
        return 128 + stop.signum
    except Diverged as diverged:
        raise SystemExit(f"error: training diverged at epoch {training.epoch}, {diverged}; "
                         f"{saved_epochs(training.last_saved)} saved in {args.out_dir}; try a lower --lr")
    except GraphCaptureError as error:
        raise SystemExit(f"error: the training step could not be captured as a CUDA graph ({error}); "
                         f"{saved_epochs(training.last_saved)} saved in {args.out_dir}; go on without graphs: "
                         f"{resume_command([*argv, '--no-cuda-graphs'])}")
    paths = run_files.run_paths(args.out_dir, args.model)
    print(f"wrote {paths['embeddings']}, {paths['labels']}, {paths['meta']}, {paths['checkpoint']}")
    return 0


def print_header(training):
    args, counts = training.args, {split: stop - start for split, (start, stop) in training.splits.items()}
    held_out = f" (held out: classes {' '.join(map(str, args.unseen_classes))})" if args.unseen_classes else ""
    print(f"{args.model} on {training.meta['dataset']} ({training.meta['dataset_source']}): "
          f"{len(training.train_labels):,} training images{held_out}; saving "
          f"{' + '.join(f'{count:,} {split}' for split, count in counts.items())} points per epoch; "
          f"{training.device.type}, {training.precision}, batch {args.batch_size}"
          + (f"; resuming after epoch {training.first_epoch - 1}" if args.resume else ""))
    print(f"{training.model.head}\n{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>8} {'ncm_acc':>8} "
          f"{'spread':>7} {'separation':>10} {'seconds':>8}")


def print_row(entry):
    train_text = "-" if entry["train_loss"] is None else f"{entry['train_loss']:.4f}"
    separation = "-" if entry["min_inter_class_deg"] is None else f"{entry['min_inter_class_deg']:.1f}°"
    print(f"{entry['epoch']:>5} {train_text:>10} {entry['val_loss']:>9.4f} {entry['val_accuracy']:>8.2%} "
          f"{entry['ncm_accuracy']:>8.2%} {entry['intra_class_deg']:>6.1f}° {separation:>10} "
          f"{entry['seconds']:>8.1f}", flush=True)


def describe(value):
    """{"kind": "margin", "s": 15.0} -> "kind=margin s=15.0", [6, 7] -> "6 7" ([]: "none"); else as it is."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)


@contextlib.contextmanager
def saving_to(out_dir, last_saved):
    """A failed write (a full disk, a folder taken away) ends training with one line, the files kept."""
    try:
        yield
    except OSError as error:
        raise SystemExit(f"error: cannot save to {out_dir} ({error.strerror or error}); "
                         f"{saved_epochs(last_saved)} saved there") from None


def saved_epochs(last_saved):
    return "nothing was" if last_saved < 0 else "epoch 0 was" if last_saved == 0 else f"epochs 0-{last_saved} were"


def resume_command(argv):
    return shlex.join(["python", "train.py", *argv, *([] if "--resume" in argv else ["--resume"])])


if __name__ == "__main__":
    sys.exit(main())
