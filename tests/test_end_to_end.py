"""train.py and visualization.py run as a user runs them, on 400 + 100 real digits: in a Python of
their own where the process is the point (the README's commands, a killed run), in-process elsewhere."""

import json
import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import train
from conftest import ROOT, call_main, run_script
from embedviz.datasets import load_dataset
from embedviz.resume import KEYS as RESUME_KEYS
from embedviz.render import gif_durations

EPOCHS = 2
pytestmark = pytest.mark.xdist_group("end_to_end")  # the trained run, shared by the module's tests, made once


def train_args(data_dir, out_dir, *extra):
    return ["--data-dir", data_dir, "--out-dir", str(out_dir), "--dataset", "mnist", "--batch-size", "64",
            "--train-points", "200", *extra]


@pytest.fixture(scope="module")
def trained_run(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run")
    result = run_script("train.py", "--model", "vgg8_arcface", "--epochs", str(EPOCHS),
                        *train_args(tiny_mnist, out_dir))
    return out_dir, result


def test_train_writes_the_documented_files(trained_run, tiny_mnist):
    out_dir, result = trained_run
    embeddings = np.load(out_dir / "all_vgg8_arcface_embeddings.npy", allow_pickle=False)
    labels = np.load(out_dir / "all_vgg8_arcface_labels.npy", allow_pickle=False)
    meta = json.loads((out_dir / "all_vgg8_arcface_meta.json").read_text())
    assert embeddings.dtype == np.float32 and embeddings.shape == (EPOCHS + 1, 300, 3)
    assert labels.dtype == np.int64 and labels.shape == (300,)
    assert meta["splits"] == {"train": [0, 200], "val": [200, 300]}
    assert meta["epochs_completed"] == EPOCHS and meta["dataset"] == "mnist"
    assert meta["options"]["epochs"] == EPOCHS and meta["options"]["seed"] == 58
    assert [h["epoch"] for h in meta["history"]] == [0, 1, 2] and meta["history"][0]["train_loss"] is None
    assert all(0 <= h["val_accuracy"] <= 1 and h["val_loss"] > 0 for h in meta["history"])
    assert np.bincount(labels[:200]).tolist() == [20] * 10  # class-balanced training sample
    assert not np.array_equal(embeddings[0], embeddings[EPOCHS])
    images, image_labels, _ = train.saved_points(load_dataset("mnist", tiny_mnist, 58), 200, 58)
    assert np.array_equal(np.load(out_dir / "all_vgg8_arcface_images.npy", allow_pickle=False), images.numpy())
    assert np.array_equal(image_labels.numpy(), labels)  # the image behind each point, in the points' order
    checkpoint = torch.load(out_dir / "vgg8_arcface_best.pth", weights_only=True)
    assert checkpoint["model"] == "vgg8_arcface" and "head.weight" in checkpoint["model_state"]
    last = torch.load(out_dir / "vgg8_arcface_last.pth", weights_only=True)
    assert set(RESUME_KEYS) <= set(last) and last["epoch"] == EPOCHS
    assert {k: v for k, v in last.items() if k in checkpoint and k not in ("epoch", "val_loss", "model_state")} \
        == {k: v for k, v in checkpoint.items() if k not in ("epoch", "val_loss", "model_state")}  # one dictionary
    assert set(last["rng_states"]) == {"torch", "shuffle", "cuda"}
    assert all(tensor.device.type == "cpu" for tensor in tensors_in(last)) and len(tensors_in(last)) > 50
    # one table line per epoch, with the epoch's val accuracy
    last = [line for line in result.stdout.splitlines() if line.split()[:1] == [str(EPOCHS)]]
    assert last and f"{meta['history'][-1]['val_accuracy']:.2%}" in last[0]


def tensors_in(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [tensor for value in values for tensor in tensors_in(value)]


def test_visualization_writes_looping_gifs_with_one_frame_per_epoch(trained_run):
    out_dir, _ = trained_run
    result = run_script("visualization.py", "--model", "vgg8_arcface", "--out-dir", str(out_dir), "--workers", "2")
    for split in ("Training", "Validation"):
        path = out_dir / f"vgg8_arcface_{split}_Embeddings.gif"
        assert str(path) in result.stdout
        frames = iio.imread(path, index=None)
        assert frames.shape[0] == EPOCHS + 1 and frames.shape[-1] == 3
        durations = [iio.immeta(path, index=i)["duration"] for i in range(EPOCHS + 1)]
        assert durations == gif_durations(EPOCHS + 1, 125) == [130, 120, 3000]
        assert iio.immeta(path, index=0)["loop"] == 0
        assert not np.array_equal(frames[0], frames[-1])
    pictures = {p.name for p in out_dir.rglob("*.png")} - {"vgg8_arcface_misfits.png"}
    assert pictures == {f"vgg8_arcface_{name}.png" for name in ("metrics", "roc", "scores", "class_angles")}  # no frame
    scores = out_dir / "vgg8_arcface_scores.gif"  # the pairs' angles, epoch by epoch, at the animations' pace
    assert str(scores) in result.stdout and len(iio.imread(scores, index=None)) == EPOCHS + 1
    assert [iio.immeta(scores, index=i)["duration"] for i in range(EPOCHS + 1)] == [130, 120, 3000]
    assert str(out_dir / "vgg8_arcface_metrics.png") in result.stdout


def test_same_seed_same_embeddings_other_seed_not(tiny_mnist, tmp_path):
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        result = call_main(train.main, "--model", "vgg8_softmax", "--epochs", "1",
                           *train_args(tiny_mnist, tmp_path / name, "--seed", seed, "--precision", "fp32"))
        assert result.returncode == 0, result.stderr
        runs[name] = np.load(tmp_path / name / "all_vgg8_softmax_embeddings.npy")
    assert np.array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"][-1], runs["c"][-1])


def test_killed_run_leaves_files_holding_the_epochs_done(tiny_mnist, tmp_path):
    from embedviz.run_files import load_run

    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--model", "vgg8_arcface",
                                "--epochs", "500", *train_args(tiny_mnist, tmp_path)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta_path = tmp_path / "all_vgg8_arcface_meta.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if meta_path.exists() and json.loads(meta_path.read_text())["epochs_completed"] >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    embeddings, labels, meta = load_run(str(tmp_path), "vgg8_arcface")
    k = meta["epochs_completed"]
    assert 2 <= k < 500
    assert embeddings.shape == (k + 1, 300, 3) and len(meta["history"]) == k + 1
    assert np.isfinite(embeddings).all()
