"""Train VGG8 with a 3-D embedding and save the embeddings of every epoch.

    python train.py --model vgg8_arcface
    python train.py --model vgg8_softmax --epochs 20 --dataset fashion-mnist

The way through, in the order it happens (main): the options; the data and the points whose
embeddings are saved; the model, a backbone and a head (models.py, losses.py); then every epoch
trains (train_epoch, a train_step a batch), embeds the saved points (evaluate), measures them
(measure) and saves them (embedviz/run_files.py). Epoch 0 records the untrained network. What guards
the way is one call from it, in a module named for it: embedviz/stopping.py (signals, faults and the
line they end in), resume.py, cuda_graph.py, held_out.py (classes left out or held out).
"""

import math
import sys
import time
from argparse import BooleanOptionalAction
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from embedviz import run_files
from embedviz.cli import ArgumentParser, class_indices, finite_float, image_size, int_from, non_negative_int, positive, \
    seed_int
from embedviz.datasets import DATASET_CLASSES, DATASET_NAMES, load_dataset
from embedviz.devices import (EVAL_BATCH_SIZE, autocast, choose_precision, hardware, make_deterministic, make_scaler,
                              select_device)
from embedviz.metrics import class_means, dominant_subcenters, geometry, outlier_threshold_deg, separation_bound_deg, unit
from embedviz.sampling import balanced_rows
from embedviz.stopping import Diverged, Stops
from embedviz.verification import epoch_metrics
from losses import AdaCos, CombinedMargin, MagFace, Softmax
from models import HEADS, MODEL_NAMES, PRESETS, VGG8, to_input

DIVERGENCE_CHECK_STEPS = 50  # training steps between two looks at the loss; each look waits for the device
MAX_EMBEDDING_DIM = 512  # a face model's size; the embeddings of every epoch are saved
HEAD_OPTIONS = {"scale": "s", "margin": "m", "m1": "m1", "m2": "m2", "m3": "m3", "subcenters": "k"}  # -> the argument


def parse_args(argv=None):
    p = ArgumentParser(prog="train.py", description=__doc__)
    p.add_argument("--model", default="vgg8_arcface", choices=MODEL_NAMES, help="backbone and head (models.PRESETS)")
    p.add_argument("--scale", type=positive(float), help="s of a cosine head (default: the preset's, 15)")
    p.add_argument("--margin", type=finite_float,
                   help="the margin m of the preset's head: SphereFace's, CosFace's, ArcFace's, ...")
    p.add_argument("--m1", type=finite_float, help="multiplicative angular margin, cos(m1 theta + m2) - m3")
    p.add_argument("--m2", type=finite_float, help="additive angular margin")
    p.add_argument("--m3", type=finite_float, help="additive cosine margin")
    p.add_argument("--subcenters", type=int_from(1, 16), help="sub-centres per class of vgg8_subcenter (default: 3)")
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
    args.classes = sorted(c for classes in args.classes for c in classes)  # a list for each index or range
    args.unseen_classes = sorted(c for classes in args.unseen_classes for c in classes)
    if (args.classes or args.unseen_classes) and args.dataset != "imagefolder":  # an image folder's classes are
        from embedviz.held_out import check_classes                            # known once it is read

        try:
            check_classes(args.unseen_classes, DATASET_CLASSES[args.dataset], args.classes)
        except ValueError as error:
            p.error(str(error))
    return args


def head_arguments(args):
    """The head that --model names, as (class, arguments), with the arguments that --scale, --margin,
    --m1, --m2, --m3 and --subcenters set. --m1, --m2 or --m3 change a head of the margin family to the
    margins cos(m1 theta + m2) - m3: it stays the preset's class where they fit its form (ArcFace's m2
    alone), else it becomes their CombinedMargin. Raises ValueError, naming the option, for one the head
    does not take, and for a value out of its range."""
    head_class, arguments = PRESETS[args.model]
    given = {option: getattr(args, option) for option in HEAD_OPTIONS if getattr(args, option) is not None}
    if not given:
        return head_class, dict(arguments)
    if head_class is Softmax:
        raise ValueError(f"{args.model} has neither scale nor margin; {', '.join(given)} cannot be set")
    if "margin" in given and "m" not in head_class.params:
        raise ValueError(f"--margin has no meaning for {args.model}; " + (
            "its margin follows the norm" if head_class is MagFace else
            "set --m1, --m2 or --m3" if head_class is CombinedMargin else "it has no margin"))
    unknown = [f"--{option}" for option in given if HEAD_OPTIONS[option] not in head_class.params
               and not (option in ("m1", "m2", "m3") and issubclass(head_class, CombinedMargin))]
    if unknown:
        raise ValueError(f"{' and '.join(unknown)} cannot be set for {args.model}"
                         + ("; its scale adapts" if head_class is AdaCos and "scale" in given else ""))
    arguments = {**arguments, **{HEAD_OPTIONS[option]: value for option, value in given.items()
                                 if option not in ("m1", "m2", "m3")}}
    if given.keys() & {"m1", "m2", "m3"}:  # the preset's margins in the combined form, then those given
        from embedviz.old_formats import head_config

        head = head_class(2, 2, **arguments)
        margins = {name: given.get(name, getattr(head, name)) for name in ("m1", "m2", "m3")}
        config = head_config({"kind": "margin", "s": head.s, **margins, "subcenters": head.k}, head_class.__name__)
        head_class, arguments = HEADS[config.pop("class")], config
    head_class(2, 2, **arguments)  # the values' ranges, refused now rather than after the data is read
    return head_class, arguments


# ---------------------------------------------------------------- the data

def saved_points(data, train_points, seed, unseen_classes=()):
    """The images whose embeddings are saved every epoch, in a fixed order: a class-balanced sample of
    train_points training images of the seen classes (0: all of them), the validation images of the
    seen classes, then those of the unseen classes.
    Returns (images, labels, splits): splits are the meta file's row ranges of the three."""
    unseen = torch.tensor(unseen_classes, dtype=torch.long)
    seen_train = torch.nonzero(~torch.isin(data.train_labels, unseen)).flatten()
    sample = seen_train[torch.from_numpy(balanced_rows(data.train_labels[seen_train].numpy(), train_points, seed))]
    is_unseen = torch.isin(data.val_labels, unseen)
    val_rows = torch.cat([torch.nonzero(~is_unseen).flatten(), torch.nonzero(is_unseen).flatten()])
    images = torch.cat([data.train_images[sample], data.val_images[val_rows]])
    labels = torch.cat([data.train_labels[sample], data.val_labels[val_rows]])
    val_end = len(sample) + int((~is_unseen).sum())
    splits = {"train": [0, len(sample)], "val": [len(sample), val_end]}
    if len(unseen_classes):
        splits["unseen"] = [val_end, len(labels)]
    return images, labels, splits


# ---------------------------------------------------------------- training and evaluation

def train_step(model, optimizer, scaler, images, targets, precision):
    """One batch: the forward pass, the head's logits and loss, backward and Adam's step; returns the
    loss, on the device. scaler is fp16's gradient scaler (for the other precisions it does nothing)."""
    with autocast(images.device, precision):
        logits, embeddings = model(to_input(images), targets)  # (B, C) with the margin on each target, (B, dim)
    loss = model.head.loss(logits, targets, embeddings)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_epoch(model, optimizer, scaler, images, targets, precision, batch_size, generator, progress=None,
                step=train_step, check_every=DIVERGENCE_CHECK_STEPS):
    """One pass of step over the shuffled images; returns the mean loss. The loss is summed on the
    device and read every check_every steps, not at every step, which would make each step wait for
    the device; the last read is the epoch's loss. step: train_step, or its CUDA graph."""
    model.train()
    batches = epoch_batches(len(targets), batch_size, generator, images.device)
    loss_sum, checked = torch.zeros((), device=images.device), 0
    for number, index in enumerate(tqdm(batches, desc=progress, leave=False, unit="batch"), start=1):
        loss_sum += step(model, optimizer, scaler, images[index], targets[index], precision) * len(index)
        if number % check_every == 0 or number == len(batches):
            total = loss_sum.item()
            if not math.isfinite(total):  # the caller saves nothing of this epoch
                raise Diverged(f"steps {checked + 1}-{number}", total)
            checked = number
    return total / sum(len(index) for index in batches)


def epoch_batches(n, batch_size, generator, device):
    """One epoch's batches: the rows 0 to n - 1 shuffled, cut into batch_size rows, on the device."""
    batches = list(torch.randperm(n, generator=generator).to(device).split(batch_size))
    if len(batches[-1]) == 1 and len(batches) > 1:  # BatchNorm cannot train on a single image
        batches.pop()
    return batches


@torch.no_grad()
def evaluate(model, images, targets, batch_size, precision):
    """The embeddings of images in eval mode, (n, dim) in order, each one's loss (with the margin) and
    whether the head, without the margin, classifies it right; on the images' device."""
    model.eval()
    embeddings, losses, correct = [], [], []
    for start in range(0, len(targets), batch_size):
        batch_targets = targets[start:start + batch_size]
        with autocast(images.device, precision):
            batch = model.embed(to_input(images[start:start + batch_size]))
        losses.append(model.head.loss(model.head(batch, batch_targets), batch_targets, batch, reduction="none"))
        correct.append(model.head(batch).argmax(1) == batch_targets)
        embeddings.append(batch)
    return torch.cat(embeddings), torch.cat(losses), torch.cat(correct)


def measure(embeddings, correct, targets, labels, splits, head, target_of, seed, meta, on_device=None):
    """What an epoch's embeddings show, for the history: the caps' geometry (metrics.py), verification
    (verification.py), the norms of right and wrong answers, and the cosine heads' class weights, one per
    label (None for a class held out): for Sub-center ArcFace a class's dominant sub-centre."""
    train, val = slice(*splits["train"]), slice(*splits["val"])
    weights, extra = None, {}
    if head.uses_cosine:  # (C, k, dim): each class's sub-centres
        centres = unit(head.weight.detach().cpu().numpy()).reshape(head.num_classes, head.k, -1)
        weights = centres[:, 0]
        if head.k > 1:
            dominant, angles = dominant_subcenters(embeddings[train], targets[train], centres)
            weights = centres[np.arange(head.num_classes), dominant]
            extra["subcenters"] = {"weights": centres.round(6).tolist(), "dominant": dominant.tolist(),
                                   "outliers": int((angles > meta["outlier_deg"]).sum())}
    norms, right = np.linalg.norm(embeddings[val], axis=1), correct[val]
    return {**geometry(embeddings[train], targets[train], embeddings[val], targets[val], head.num_classes, weights),
            **epoch_metrics(embeddings, labels, splits, class_means(embeddings[train], targets[train], head.num_classes),
                            seed, on_device),
            "norm_correct": float(norms[right].mean()) if right.any() else None,
            "norm_wrong": float(norms[~right].mean()) if not right.all() else None, **extra,
            "class_weights": None if weights is None else
            [weights[target].round(6).tolist() if target >= 0 else None for target in target_of.tolist()]}


# ---------------------------------------------------------------- main

@dataclass
class Run:
    """What a run trains and measures, as set_up makes it before the first epoch."""
    device: torch.device
    precision: str                # the convolutions' autocast precision: fp32, bf16 or fp16
    model: VGG8
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's gradient scaler; a disabled one for the other precisions
    generator: torch.Generator    # the shuffling's
    train_images: torch.Tensor    # (N, 28, 28) uint8 images of the trained classes, on the device
    train_targets: torch.Tensor   # (N,) their targets, on the device
    points_images: torch.Tensor   # the images whose embeddings are saved every epoch, on the device
    points_labels: torch.Tensor   # their labels, on the CPU
    points_targets: torch.Tensor  # their targets (0 for a class held out, whose loss is not used), on the CPU
    splits: dict                  # the points' row ranges: "train", "val" and, with classes held out, "unseen"
    target_of: torch.Tensor       # label -> target, -1 for a class that is not trained
    meta: dict                    # the run's description and history, as the meta file holds it


def set_up(args):
    """The device, the data and the saved points, the model and its optimizer, and the empty record of a
    run; a bad option or dataset raises the error that stopping.Stops ends in one line."""
    device = select_device(args.device)
    make_deterministic(device)
    precision = choose_precision(args.precision, *hardware(device))
    head_class, head_args = head_arguments(args)  # refused before the data is read, which can take long
    run_files.check_writable(args.out_dir)
    data = load_dataset(args.dataset, args.data_dir, args.seed, warn=lambda line: print(line, file=sys.stderr),
                        image_size=args.image_size)
    target_of = torch.arange(len(data.class_names))  # label -> target: the same, unless classes are left out
    if args.classes or args.unseen_classes:
        from embedviz import held_out

        data, target_of = held_out.select(data, args.classes, args.unseen_classes)
    points_images, points_labels, splits = saved_points(data, args.train_points, args.seed, args.unseen_classes)
    trained = target_of[data.train_labels] >= 0  # no image of a class held out reaches training

    torch.manual_seed(args.seed)
    model = VGG8(head_class, head_args, int((target_of >= 0).sum()), args.embedding_dim,
                 1 if data.train_images.dim() == 3 else 3, data.train_images.shape[1])
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # one kernel for all parameters
    run_files.check_room(args.out_dir, args.model, len(points_labels) * args.embedding_dim * 4, args.epochs + 1,
                         points_images.numel() + 4 * sum(p.numel() for p in model.parameters()) * 6)
    meta = {"model": args.model, "dataset": data.name, "dataset_source": data.source,
            "class_names": data.class_names, "splits": splits, "epochs_completed": 0, "options": vars(args),
            "device": device.type, "precision": precision, "head": model.head.config(), "history": [],
            "separation_bound_deg": separation_bound_deg(model.head.num_classes, args.embedding_dim),
            **({"outlier_deg": outlier_threshold_deg(model.head.num_classes, args.embedding_dim)}
               if model.head.k > 1 else {}),
            **({"dataset_details": data.details} if data.details else {})}
    if args.classes or args.unseen_classes:
        meta.update(held_out.meta_entries(args.classes, args.unseen_classes, target_of))
    return Run(device, precision, model, optimizer, make_scaler(device, precision),
               torch.Generator().manual_seed(args.seed), data.train_images[trained].to(device),
               target_of[data.train_labels[trained]].to(device), points_images.to(device), points_labels,
               target_of[points_labels].clamp(min=0), splits, target_of, meta)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    with Stops(argv, args.out_dir) as stops:  # a signal or a fault ends the run in one line, every saved epoch kept
        run = set_up(args)
        model, optimizer, device, meta, splits = run.model, run.optimizer, run.device, run.meta, run.splits
        first_epoch, best_val_loss = 0, math.inf
        if args.resume:  # the stopped run's last epoch, refused where it was made otherwise
            from embedviz.resume import restore

            first_epoch, best_val_loss, run.precision, run.scaler = restore(
                args, meta, model, optimizer, run.generator, device, run.precision, run.points_labels)
            stops.last_saved = first_epoch - 1
        step = train_step
        if device.type == "cuda" and args.cuda_graphs:
            from embedviz.cuda_graph import GraphedStep

            step = GraphedStep(train_step, args.batch_size, optimizer, run.scaler)
        print_header(args, meta, len(run.train_targets), device, run.precision, first_epoch, model.head)
        points_targets = run.points_targets.to(device)

        for epoch in range(first_epoch, args.epochs + 1):
            stops.epoch, start, train_loss = epoch, time.perf_counter(), None
            if epoch > 0:
                train_loss = train_epoch(model, optimizer, run.scaler, run.train_images, run.train_targets,
                                         run.precision, args.batch_size, run.generator, f"epoch {epoch}/{args.epochs}",
                                         step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the training's seconds, not the time to queue it
            train_seconds = time.perf_counter() - start
            embeddings, losses, correct = evaluate(model, run.points_images, points_targets,
                                                   args.eval_batch_size or EVAL_BATCH_SIZE[device.type], run.precision)
            frame, losses, correct = embeddings.cpu().numpy(), losses.cpu(), correct.cpu()
            val = slice(*splits["val"])
            val_loss, val_accuracy = losses[val].mean().item(), correct[val].float().mean().item()  # seen classes
            if not (math.isfinite(val_loss) and np.isfinite(frame).all()):  # keep the last good files
                raise Diverged("in the evaluation after it", val_loss)
            entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy,
                     **measure(frame, correct.numpy(), run.points_targets.numpy(), run.points_labels.numpy(), splits,
                               model.head, run.target_of, args.seed, meta,
                               embeddings if device.type == "cuda" else None)}
            head_state = model.head.state()
            if head_state:
                entry["head_state"] = head_state
            entry.update(seconds=time.perf_counter() - start, train_seconds=train_seconds)

            with stops.saving():  # a signal waits for the save; a failed write ends the run in one line
                meta["epochs_completed"] = epoch
                meta["history"].append(entry)
                network = checkpoint(model, args, entry)
                if epoch > 0 and val_loss < best_val_loss:
                    best_val_loss = val_loss
                    run_files.save_checkpoint(args.out_dir, args.model, "checkpoint", network)
                run_files.save_images(args.out_dir, args.model, lambda: run.points_images.cpu().numpy(),
                                      replace=epoch == 0)
                run_files.save_run(args.out_dir, args.model, frame, epoch, run.points_labels.numpy(), meta,
                                   resume_state=resume_state(network, optimizer, run.scaler, run.generator, device,
                                                             meta, best_val_loss, run.precision))
                stops.last_saved = epoch  # before a signal held during the save is raised
            print_row(entry)
        paths = run_files.run_paths(args.out_dir, args.model)
        print(f"wrote {paths['embeddings']}, {paths['labels']}, {paths['meta']}, {paths['checkpoint']}")
    return stops.exit_code


def checkpoint(model, args, entry):
    """What both checkpoints hold: enough for models.load_model to rebuild the network."""
    return {"model_state": model.state_dict(), "model": args.model, "head": model.head.config(),
            "embedding_dim": args.embedding_dim, "num_classes": model.head.num_classes,
            "in_channels": model.features[0][0].in_channels, "image_size": args.image_size,
            "options": vars(args), "epoch": entry["epoch"], "val_loss": entry["val_loss"]}


def resume_state(network, optimizer, scaler, generator, device, meta, best_val_loss, precision):
    """What M_last.pth holds besides the network: what --resume needs to go on as if never stopped (the
    optimizer, the gradient scaler, every random state the training draws from: the CPU's, the
    training GPU's for dropout there, the shuffling's), the history and the dataset."""
    return {**network, "optimizer_state": optimizer.state_dict(), "scaler_state": scaler.state_dict(),
            "rng_states": {"torch": torch.get_rng_state(), "shuffle": generator.get_state(),
                           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "history": meta["history"], "best_val_loss": best_val_loss, "dataset": meta["dataset"],
            "class_names": meta["class_names"], "precision": precision}


def print_header(args, meta, n_train, device, precision, first_epoch, head):
    counts = {split: stop - start for split, (start, stop) in meta["splits"].items()}
    held = f" (held out: classes {' '.join(map(str, args.unseen_classes))})" if args.unseen_classes else ""
    print(f"{args.model} on {meta['dataset']} ({meta['dataset_source']}): {n_train:,} training images{held}; "
          f"saving {' + '.join(f'{count:,} {split}' for split, count in counts.items())} points per epoch; "
          f"{device.type}, {precision}, batch {args.batch_size}"
          + (f"; resuming after epoch {first_epoch - 1}" if args.resume else ""))
    print(f"{head}\n{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>8} {'ncm_acc':>8} {'spread':>7} "
          f"{'separation':>10} {'seconds':>8}")


def print_row(entry):
    train_text = "-" if entry["train_loss"] is None else f"{entry['train_loss']:.4f}"
    separation = "-" if entry["min_inter_class_deg"] is None else f"{entry['min_inter_class_deg']:.1f}°"
    print(f"{entry['epoch']:>5} {train_text:>10} {entry['val_loss']:>9.4f} {entry['val_accuracy']:>8.2%} "
          f"{entry['ncm_accuracy']:>8.2%} {entry['intra_class_deg']:>6.1f}° {separation:>10} "
          f"{entry['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
