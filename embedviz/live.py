"""The playground's training: train.py's own set-up and train_step, run batch by batch in a thread of
its own, which a page can play, pause, step and reset, and read a snapshot of under a lock.

The order of the batches and every number are train.py's: after an epoch the network is the one that
`python train.py` trains with the same settings (tests/test_playground.py). Between the steps the
display points, a fixed class-balanced sample of the validation images, are embedded in eval mode,
which draws no random number and changes no running statistic, so the training is unchanged by it.
"""

import copy
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

import train
from embedviz.metrics import angle_deg, geometry, unit
from embedviz.sampling import balanced_rows
from embedviz.verification import verification

MAX_POINTS = 2000  # display points, class-balanced
TRAINING_SHARE = 0.8  # while playing, embedding the display points takes at most the rest of the time
HISTORY_UPDATES = 400  # the live curves keep this many updates, the older ones thinned


@dataclass
class Snapshot:
    """What a page draws of the training at one moment; every array is a copy, safe to read unlocked."""
    version: int                 # raised at every update: a page redraws when it changes
    run: int                     # raised at every reset: a page draws its figures anew
    settings: dict
    epoch: int                   # the epoch under way, from 1
    step: int                    # steps done in it
    steps_per_epoch: int
    points: np.ndarray           # (n, dim) the display points' embeddings, unit vectors, rounded
    labels: np.ndarray           # (n,) their labels
    unseen: np.ndarray           # (n,) bool: of a class held out
    weights: np.ndarray          # (classes, dim) the class weights, unit vectors; None for Softmax
    target_angles: np.ndarray    # the last batch's angles to their target's weight, degrees
    curves: dict                 # metric -> ([fractional epochs], [values])
    images_per_second: float
    playing: bool
    note: str = ""               # a divergence, say, in words
    class_names: list = field(default_factory=list)
    published: float = field(default_factory=time.time)  # when it was made, seconds since the epoch


class LiveTraining:
    """One run of train.py's training, stepped in a thread. settings: playground.SETTINGS' keys, as
    parsed; argv(settings) turns them into train.py's options."""

    def __init__(self, settings, data_dir="data", steps_per_update=4, playing=True):
        self.data_dir, self.lock, self.wake = data_dir, threading.Lock(), threading.Event()
        self.steps_per_update, self.playing, self.pending_steps = steps_per_update, playing, 0
        self.version, self.snapshot, self.thread, self.stopping, self.run_number = 0, None, None, False, 0
        self.shown_model = None
        self.reset(settings)

    # ------------------------------------------------------------ control, from the page's callbacks

    def reset(self, settings, playing=None):
        """Stops the run under way within its step and starts a new one with these settings."""
        self.close()
        with self.lock:
            self.settings, self.stopping, self.pending_steps = dict(settings), False, 0
            self.run_number += 1
            self.playing = self.playing if playing is None else playing
        self.thread = threading.Thread(target=self.run, name="playground-training", daemon=True)
        self.thread.start()

    def play(self, playing):
        with self.lock:
            self.playing = playing
        self.wake.set()

    def step_once(self):
        with self.lock:
            self.playing, self.pending_steps = False, self.pending_steps + 1
        self.wake.set()

    def close(self):
        """Ends the training thread within one step."""
        if self.thread is not None:
            self.stopping = True
            self.wake.set()
            self.thread.join()
            self.thread = None

    def latest(self, epoch=None):
        """The last snapshot (epoch: for FollowedRun's interface; training shows the present)."""
        with self.lock:
            return self.snapshot

    def wait_for(self, condition, timeout=60.0):
        """The first snapshot for which condition(snapshot) holds; None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snapshot = self.latest()
            if snapshot is not None and condition(snapshot):
                return snapshot
            time.sleep(0.02)
        return None

    def embed(self, images):
        """(embeddings (n, dim), logits without the margin, logits with the margin on the nearest class,
        the nearest class) of uint8 images (n, 28, 28), by the network of the last update, a copy that the
        training does not touch (None before the first)."""
        model = self.shown_model
        if model is None:
            return None
        with torch.no_grad():
            embeddings = model.embed(train.to_input(images.to(self.device)))
            plain = model.head(embeddings)
            nearest = plain.argmax(1)
            margin = model.head(embeddings, nearest)
        return embeddings.cpu().numpy(), plain.cpu().numpy(), margin.cpu().numpy(), nearest.cpu().numpy()

    # ------------------------------------------------------------ the thread

    def run(self):
        settings = self.settings
        try:
            args = train.parse_args(argv(settings, self.data_dir, tempfile.gettempdir()))
            run = train.set_up(args)
        except (SystemExit, Exception) as error:  # a page shows it in one line
            self.publish_note(settings, f"cannot start: {error}")
            return
        with self.lock:
            self.model, self.device = run.model, run.device
        val = slice(*run.splits["val"])
        unseen = slice(*run.splits.get("unseen", (0, 0)))
        rows = np.r_[np.arange(val.start, val.stop), np.arange(unseen.start, unseen.stop)]
        rows = rows[balanced_rows(run.points_labels.numpy()[rows], MAX_POINTS, args.seed)]
        display = (run.points_images[torch.from_numpy(rows).to(run.device)], run.points_labels.numpy()[rows],
                   run.points_targets[rows].to(run.device), rows >= val.stop)
        angles = BatchAngles(run.model.head)
        curves, epoch, done_images, started = {}, 1, 0, time.perf_counter()
        batches = train.epoch_batches(len(run.train_targets), args.batch_size, run.generator, run.device)
        step_in_epoch, loss = 0, None
        self.publish(settings, run, display, angles, curves, epoch, 0, len(batches), 0.0)
        published_at, publish_seconds = time.perf_counter(), 0.0
        while not self.stopping:
            with self.lock:
                go = self.playing or self.pending_steps > 0
                if self.pending_steps:
                    self.pending_steps -= 1
            if not go:
                self.wake.wait(0.2)
                self.wake.clear()
                continue
            for _ in range(self.steps_per_update if self.playing else 1):
                index = batches[step_in_epoch]
                with self.lock:
                    run.model.train()
                    loss = train.train_step(run.model, run.optimizer, run.scaler, run.train_images[index],
                                            run.train_targets[index], run.precision)
                done_images += len(index)
                step_in_epoch += 1
                if step_in_epoch == len(batches):
                    epoch, step_in_epoch = epoch + 1, 0
                    batches = train.epoch_batches(len(run.train_targets), args.batch_size, run.generator, run.device)
                if self.stopping:
                    return
            loss = loss.item()
            if not math.isfinite(loss):
                self.publish_note(settings, f"the loss became {loss} at epoch {epoch}, step {step_in_epoch}: "
                                  "training stopped; try a lower s, margin or learning rate")
                return
            now = time.perf_counter()
            if (self.playing and self.steps_per_update > 1
                    and now - published_at < publish_seconds * TRAINING_SHARE / (1 - TRAINING_SHARE)):
                continue  # more steps before the next update: the training keeps its share of the time
            self.publish(settings, run, display, angles, curves, epoch, step_in_epoch, len(batches),
                         done_images / (now - started), loss)
            published_at = time.perf_counter()
            publish_seconds = published_at - now

    def publish(self, settings, run, display, angles, curves, epoch, step, steps_per_epoch, rate, loss=None):
        images, labels, targets, is_unseen = display
        with self.lock:
            embeddings, _, correct = train.evaluate(run.model, images, targets, 512, run.precision)
            self.shown_model = copy.deepcopy(run.model).eval()  # what a drawn digit is embedded by
            head = run.model.head
            weights = (unit(head.weight.detach().cpu().numpy()).reshape(head.num_classes, head.k, -1)[:, 0]
                       if head.uses_cosine else None)
        points, correct = embeddings.cpu().numpy(), correct.cpu().numpy()
        seen = ~is_unseen
        seen_targets = targets.cpu().numpy()[seen]
        shape = geometry(points[seen], seen_targets, points[seen], seen_targets, head.num_classes, weights)
        when = epoch - 1 + step / max(steps_per_epoch, 1)
        record(curves, "accuracy", when, float(correct[seen].mean()))
        record(curves, "spread", when, shape["intra_class_deg"])
        record(curves, "separation", when, shape["min_inter_class_deg"])
        if is_unseen.any():
            record(curves, "unseen TAR at FAR 1e-3", when,
                   verification(points[is_unseen], labels[is_unseen])["tar_at_far"]["0.001"])
        class_weights = None
        if weights is not None:  # one per label: held-out classes have none
            class_weights = np.full((len(run.target_of), weights.shape[1]), np.nan)
            trained = run.target_of >= 0
            class_weights[trained.numpy()] = weights[run.target_of[trained].numpy()]
        used = int(labels.max()) + 1  # glyphs: the first classes alone are used
        snapshot = Snapshot(self.version + 1, self.run_number, settings, epoch, step, steps_per_epoch,
                            unit(points).round(3),
                            labels, is_unseen, None if class_weights is None else class_weights[:used],
                            angles.latest(), {k: list(v) for k, v in curves.items()}, rate, self.playing,
                            class_names=run.meta["class_names"][:used])
        with self.lock:
            self.version, self.snapshot = snapshot.version, snapshot

    def publish_note(self, settings, note):
        with self.lock:
            self.version += 1
            previous = self.snapshot
            self.snapshot = Snapshot(self.version, self.run_number, settings, *(0, 0, 0), np.zeros((0, 3)), np.zeros(0, int),
                                     np.zeros(0, bool), None, np.zeros(0), previous.curves if previous else {},
                                     0.0, False, note=note)


class BatchAngles:
    """The angles, in degrees, between each embedding of the last training batch and its target's class
    weight, read by a hook on the head's input: the hook only copies, so the step's numbers stay."""

    def __init__(self, head):
        self.head, self.angles = head, np.zeros(0)
        head.register_forward_hook(self.hook)

    def hook(self, head, inputs, output):
        if head.training and len(inputs) > 1 and inputs[1] is not None and head.uses_cosine:
            embeddings, targets = inputs[0].detach(), inputs[1]
            weights = head.weight.detach().view(head.num_classes, head.k, -1)[:, 0]
            self.pending = (embeddings, weights[targets])

    def latest(self):
        pending = getattr(self, "pending", None)
        if pending is not None:
            self.angles, self.pending = angle_deg(*(t.cpu().numpy() for t in pending)), None
        return self.angles


def record(curves, name, when, value):
    """Appends (when, value) to the curve, thinning it to every other point when it grows too long."""
    xs, ys = curves.setdefault(name, ([], []))
    xs.append(round(when, 4))
    ys.append(None if value is None else round(float(value), 4))
    if len(xs) > HISTORY_UPDATES:
        curves[name] = (xs[::2], ys[::2])


def argv(settings, data_dir, out_dir):
    """train.py's options for the playground's settings."""
    options = ["--model", f"vgg8_{settings['head']}", "--dataset", settings["dataset"], "--data-dir", data_dir,
               "--out-dir", out_dir, "--embedding-dim", str(settings["dim"]), "--batch-size", str(settings["batch"]),
               "--lr", repr(settings["lr"]), "--seed", str(settings["seed"]), "--device", settings["device"],
               "--precision", settings["precision"], "--epochs", "1"]
    if settings.get("s") is not None:
        options += ["--scale", repr(settings["s"])]
    if settings.get("m") is not None:
        options += ["--margin", repr(settings["m"])]
    if settings["dataset"] == "glyphs":
        options += ["--classes", f"0-{settings['classes'] - 1}"]
    if settings.get("unseen"):
        options += ["--unseen-classes", *map(str, settings["unseen"])]
    return options
