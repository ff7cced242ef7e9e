"""playground.py --run DIR: a run that train.py wrote, or is writing, shown on the playground's page at
any epoch; each epoch appears as train.py appends it, and a drawn digit is embedded by the run's last
checkpoint. The same interface as live.LiveTraining, without the training."""

import os
import threading

import numpy as np
import torch

from embedviz import run_files
from embedviz.live import MAX_POINTS, Snapshot
from embedviz.metrics import unit
from embedviz.sampling import balanced_rows


class FollowedRun:
    """The run of `model` in out_dir, read again whenever its meta file changes."""

    def __init__(self, out_dir, model):
        self.out_dir, self.model_name, self.lock = out_dir, model, threading.Lock()
        self.paths = run_files.run_paths(out_dir, model)
        self.stamp, self.network, self.network_stamp = None, None, None
        self.playing, self.steps_per_update, self.settings = False, 1, {}
        run_files.load_run(out_dir, model)  # a missing or damaged run: RunFileError, before the page starts
        self.read()

    def read(self):
        """Reads the run's files when the meta file has changed since the last read."""
        stamp = os.stat(self.paths["meta"]).st_mtime_ns
        if stamp == self.stamp:
            return
        embeddings, labels, meta = run_files.load_run(self.out_dir, self.model_name)
        start, stop = run_files.drawn_rows(meta, "val")
        rows = np.arange(start, stop)[balanced_rows(labels[start:stop], MAX_POINTS, meta["options"]["seed"])]
        basis = None
        if embeddings.shape[-1] > 3:  # the frames' fixed view of the principal directions
            from embedviz.projection import principal_view

            basis, _ = principal_view(embeddings[-1])
        config = meta["head"]
        settings = {"head": meta["model"].removeprefix("vgg8_"), "m": config.get("m", config.get("m2")),
                    "s": config.get("s"), "unseen": meta.get("unseen_classes", []), "dim": min(embeddings.shape[-1], 3)}
        with self.lock:
            self.embeddings, self.labels, self.meta, self.rows, self.stamp = embeddings, labels, meta, rows, stamp
            self.basis = basis
            self.settings = settings

    @property
    def epochs(self):
        return len(self.embeddings) - 1

    def latest(self, epoch=None):
        """The snapshot of an epoch (the last when None or beyond it)."""
        try:
            self.read()
        except (OSError, run_files.RunFileError):
            pass  # a file replaced at this moment: the last read stands
        with self.lock:
            epoch = self.epochs if epoch is None else min(int(epoch), self.epochs)
            entry, rows = self.meta["history"][epoch], self.rows
            points = np.asarray(self.embeddings[epoch][rows], np.float64)
            weights = entry.get("class_weights")
            weights = None if weights is None else np.array([[np.nan] * points.shape[1] if w is None else w
                                                             for w in weights], float)
            if self.basis is not None:
                points, weights = points @ self.basis, None if weights is None else weights @ self.basis
            points = unit(points).round(3)
            weights = None if weights is None else unit(weights)
            unseen = rows >= self.meta["splits"]["val"][1]
            history = self.meta["history"][:self.epochs + 1]
            curves = {"accuracy": ([e["epoch"] for e in history], [e["val_accuracy"] for e in history]),
                      "spread": ([e["epoch"] for e in history], [e.get("intra_class_deg") for e in history]),
                      "separation": ([e["epoch"] for e in history], [e.get("min_inter_class_deg") for e in history])}
            return Snapshot(f"{self.stamp}-{epoch}", 0, self.settings, epoch, 0, 0, points, self.labels[rows],
                            unseen, weights, np.zeros(0), curves, 0.0, False, class_names=self.meta["class_names"])

    def embed(self, images):
        """As LiveTraining.embed, by the network of the run's last checkpoint."""
        from models import load_model, to_input

        stamp = os.stat(self.paths["resume"]).st_mtime_ns
        if stamp != self.network_stamp:
            self.network, self.network_stamp = load_model(self.paths["resume"]), stamp
        with torch.no_grad():
            embeddings = self.network.embed(to_input(torch.as_tensor(images)))
            plain = self.network.head(embeddings)
            nearest = plain.argmax(1)
            margin = self.network.head(embeddings, nearest)
        return embeddings.numpy(), plain.numpy(), margin.numpy(), nearest.numpy()

    def play(self, playing):
        pass

    def step_once(self):
        pass

    def reset(self, settings, playing=None):
        pass

    def close(self):
        pass
