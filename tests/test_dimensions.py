"""Any embedding size: the fixed 3-D view of larger ones, each epoch's frame written once, and the
sizes that cannot train refused in one line."""

import re

import numpy as np
import pytest

import train
import visualization
from conftest import call_main
from embedviz import run_files
from embedviz.projection import principal_view, project


def points_in(dim, n=400, seed=0):
    """n points whose variance lies along three known orthonormal directions of dim dimensions
    (standard deviations 3, 2 and 1), and those directions as the columns of (dim, 3)."""
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.normal(size=(dim, 3)))
    samples = rng.normal(size=(n, 3))
    uncorrelated, _ = np.linalg.qr(samples - samples.mean(0))  # centred, orthonormal columns: no sample covariance
    latent = uncorrelated * np.sqrt(n) * [3.0, 2.0, 1.0]
    return latent @ directions.T + 1e-3 * rng.normal(size=(n, dim)), directions


def test_the_view_finds_the_principal_directions_in_order_with_fixed_signs():
    points, directions = points_in(10)
    basis, share = principal_view(points, space="raw")
    assert basis.shape == (10, 3) and share > 0.999
    np.testing.assert_allclose(np.abs(basis.T @ directions), np.eye(3), atol=1e-3)  # largest variance first
    loadings = basis[np.abs(basis).argmax(0), np.arange(3)]
    assert (loadings > 0).all()  # each direction's largest loading positive: the same signs every time
    again, _ = principal_view(-points, space="raw")  # the same directions, whatever side the points lie on
    np.testing.assert_allclose(again, basis, atol=1e-9)


def test_the_sphere_view_is_fitted_to_the_directions_and_keeps_the_origin():
    points, _ = points_in(6)
    lengths = np.random.default_rng(1).uniform(0.5, 5, size=(len(points), 1))
    basis, _ = principal_view(points * lengths, space="sphere")  # lengths do not count on the sphere
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    np.testing.assert_allclose(basis, principal_view(unit, space="sphere")[0], atol=1e-9)
    np.testing.assert_allclose(project(np.zeros(6), basis), 0.0)  # a projection through the origin


def test_every_frame_of_a_run_is_drawn_through_the_last_epochs_view(tmp_path):
    points, _ = points_in(8, n=60)
    rng = np.random.default_rng(2)
    embeddings = np.stack([points + rng.normal(size=points.shape) * (3 - k) for k in range(3)]).astype(np.float32)
    labels = np.arange(60) % 3
    meta = {"model": "m", "class_names": ["a", "b", "c"], "splits": {"train": [0, 30], "val": [30, 60]},
            "options": {"epochs": 2}, "history": [{"epoch": k, "val_accuracy": 0.5} for k in range(3)]}
    run = visualization.Run("m", embeddings, labels, meta)
    basis, share = principal_view(embeddings[-1], space="sphere")
    for k in range(3):
        np.testing.assert_allclose(run.drawn[k], embeddings[k] @ basis, rtol=1e-5, atol=1e-6)
    assert run.view == f"PCA view of 8-D embeddings, {share:.0%} of variance"


def test_each_epoch_is_appended_once_and_the_file_loads_at_every_moment(tmp_path):
    path = str(tmp_path / "all_m_embeddings.npy")
    frames = np.random.default_rng(0).normal(size=(4, 50, 16)).astype(np.float32)
    sizes = []
    for epoch in range(3):
        run_files.append_frame(path, frames[epoch], epoch)
        np.testing.assert_array_equal(np.load(path), frames[:epoch + 1])
        sizes.append((tmp_path / "all_m_embeddings.npy").stat().st_size)
    assert np.diff(sizes).tolist() == [frames[0].nbytes] * 2  # one frame's bytes an epoch, not the whole run
    with open(path, "ab") as f:  # a run stopped after writing a frame, before counting it in the header
        f.write(frames[3].tobytes()[:1000])
    np.testing.assert_array_equal(np.load(path), frames[:3])
    run_files.append_frame(path, frames[3], 3)  # the cut-off bytes are replaced
    np.testing.assert_array_equal(np.load(path), frames)
    run_files.append_frame(path, frames[0] * 2, 2)  # a resume from epoch 1 writes over epochs 2 and 3
    np.testing.assert_array_equal(np.load(path), np.concatenate([frames[:2], frames[:1] * 2]))
    with pytest.raises(run_files.RunFileError, match="not the frames 0-5"):
        run_files.append_frame(path, frames[0], 6)
    np.save(path, frames.astype(np.float64))  # frames of another dtype
    with pytest.raises(run_files.RunFileError, match="not the float32 frames of this project's embeddings"):
        run_files.append_frame(path, frames[0], 4)


@pytest.mark.parametrize("option,value,message", [
    ("--embedding-dim", "1", "argument --embedding-dim: must be from 2 to 512, got 1"),
    ("--embedding-dim", "100000", "argument --embedding-dim: must be from 2 to 512, got 100000"),
    ("--batch-size", "1", "argument --batch-size: must be 2 or more, got 1"),
])
def test_sizes_that_cannot_train_are_refused_in_one_line(option, value, message, tmp_path):
    result = call_main(train.main, "--out-dir", tmp_path, option, value)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"train.py: error: {message}"]


def test_a_run_that_would_fill_the_disk_is_refused_before_training(tiny_mnist, tmp_path, monkeypatch):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 10 ** 6, 10 ** 6))  # 1 MB free
    result = call_main(train.main, "--data-dir", tiny_mnist, "--out-dir", tmp_path, "--embedding-dim", "512",
                       "--epochs", "80", "--train-points", "100")
    (line,) = result.stderr.strip().splitlines()
    expected = (rf"error: the run needs \d+\.\d MiB in {re.escape(str(tmp_path))} \(81 epochs of 400\.0 KiB of "
                r"embeddings, .*\), and 976\.6 KiB are free; .*")
    assert result.returncode == 1 and re.fullmatch(expected, line)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.xdist_group("dimensions")
def test_a_run_of_16_dimensions_trains_measures_and_draws(tiny_mnist, tmp_path):
    result = call_main(train.main, "--data-dir", tiny_mnist, "--out-dir", tmp_path, "--embedding-dim", "16",
                       "--epochs", "2", "--train-points", "100", "--batch-size", "64", "--unseen-classes", "8", "9")
    assert result.returncode == 0, result.stderr
    embeddings, labels, meta = run_files.load_run(str(tmp_path), "vgg8_arcface")
    assert embeddings.shape == (3, len(labels), 16) and len(meta["history"][-1]["class_weights"][0]) == 16
    assert meta["history"][-1]["verification"]["unseen"]["pairs"]["genuine"] > 0
    drawn = call_main(visualization.main, "--model", "vgg8_arcface", "--out-dir", tmp_path, "--split", "val",
                      "--workers", "1", "--html", "--html-points", "50")
    assert drawn.returncode == 0, drawn.stderr
    for name in ("Validation_Embeddings.gif", "Validation_Embeddings.html", "roc.png", "class_angles.png"):
        assert f"wrote {tmp_path / f'vgg8_arcface_{name}'}" in drawn.stdout
    run = visualization.load(str(tmp_path), "vgg8_arcface", False)
    assert run.drawn.shape == (3, len(labels), 3) and run.view.startswith("PCA view of 16-D embeddings, ")
    assert all(len(weight) == 3 for weight in run.weights[-1] if weight is not None)
