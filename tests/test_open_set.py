"""Classes held out of training (--unseen-classes): never trained on, embedded and measured every epoch."""

import numpy as np
import pytest
import torch

import train
from conftest import call_main
from embedviz.metrics import cdnv
from embedviz.datasets import load_dataset
from embedviz.run_files import load_run
from embedviz.verification import epoch_metrics

UNSEEN = ["6", "7", "8", "9"]


def open_set_args(data_dir, out_dir, *extra, unseen=UNSEEN):
    return ["--data-dir", data_dir, "--out-dir", out_dir, "--train-points", "100", "--batch-size", "64",
            "--precision", "fp32", *extra, *(["--unseen-classes", *unseen] if unseen else [])]


def test_a_held_out_class_reaches_no_training_batch_and_has_no_head_row(tiny_mnist, tmp_path, monkeypatch):
    data = load_dataset("mnist", tiny_mnist, 58)
    unseen = torch.isin(data.train_labels, torch.tensor([6, 7, 8, 9]))
    held_out = {image.numpy().tobytes() for image in data.train_images[unseen]}
    assert len(held_out) > 100
    trained_on, targets = [], []  # every image of every training batch, and the targets it was trained to
    train_step = train.train_step

    def recording_step(model, optimizer, scaler, images, batch_targets, precision):
        trained_on.extend(image.numpy().tobytes() for image in images.cpu())
        targets.extend(batch_targets.tolist())
        return train_step(model, optimizer, scaler, images, batch_targets, precision)

    monkeypatch.setattr(train, "train_step", recording_step)  # on the CPU: eager, every batch seen
    result = call_main(train.main, "--epochs", "1", "--device", "cpu", *open_set_args(tiny_mnist, tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(trained_on) >= int((~unseen).sum()) - 64 and not held_out & set(trained_on)
    assert set(targets) == {0, 1, 2, 3, 4, 5}  # the seen classes' targets
    head_weight = torch.load(tmp_path / "vgg8_arcface_last.pth", weights_only=True)["model_state"]["head.weight"]
    assert head_weight.shape == (6, 3)


@pytest.fixture(scope="module")
def open_set_run(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("open_set")
    result = call_main(train.main, "--epochs", "2", *open_set_args(tiny_mnist, out_dir))
    assert result.returncode == 0, result.stderr
    return out_dir, result


def test_the_run_saves_the_unseen_rows_with_their_labels_and_measures_them(open_set_run):
    out_dir, result = open_set_run
    embeddings, labels, meta = load_run(str(out_dir), "vgg8_arcface")
    assert meta["seen_classes"] == [0, 1, 2, 3, 4, 5] and meta["unseen_classes"] == [6, 7, 8, 9]
    (t0, t1), (v0, v1), (u0, u1) = (meta["splits"][split] for split in ("train", "val", "unseen"))
    assert t0 == 0 and t1 == v0 and v1 == u0 and u1 == len(labels) == embeddings.shape[1]
    assert set(labels[:v1]) <= {0, 1, 2, 3, 4, 5} and set(labels[u0:]) == {6, 7, 8, 9}
    assert "held out: classes 6 7 8 9" in result.stdout
    for entry in meta["history"]:
        assert set(entry["verification"]) == set(entry["pair_angles"]) == {"seen", "unseen"}
        for group, figures in entry["verification"].items():
            assert 0 <= figures["auc"] <= 1 and 0 <= figures["eer"] <= 1
            assert set(figures["tar_at_far"]) == {"0.01", "0.001"}
            angles = entry["pair_angles"][group]  # every pair, counted by its angle
            assert {kind: sum(counts) for kind, counts in angles.items()} == figures["pairs"]
            assert entry[f"cdnv_{group}"] > 0
        assert 0 <= entry["open_set_auroc"] <= 1 and 0 <= entry["unseen_ncm_accuracy"] <= 1
        assert entry["unseen_intra_class_deg"] > 0 and entry["unseen_min_angle_deg"] >= 0
        weights = entry["class_weights"]  # one per dataset class; the held-out ones have none
        assert len(weights) == 10 and all(w is None for w in weights[6:]) and all(len(w) == 3 for w in weights[:6])
    best = torch.load(out_dir / "vgg8_arcface_best.pth", weights_only=True)
    assert best["num_classes"] == 6 and best["model_state"]["head.weight"].shape == (6, 3)


def test_resume_keeps_the_held_out_classes_and_refuses_others(open_set_run, tiny_mnist, tmp_path):
    out_dir, _ = open_set_run
    for name in ("all_vgg8_arcface_embeddings.npy", "all_vgg8_arcface_labels.npy", "all_vgg8_arcface_meta.json",
                 "vgg8_arcface_last.pth"):
        (tmp_path / name).write_bytes((out_dir / name).read_bytes())
    other = call_main(train.main, *open_set_args(tiny_mnist, tmp_path, "--epochs", "3", "--resume", unseen=["6", "7"]))
    assert other.returncode == 1 and "--unseen-classes 6 7 8 9 (now 6 7)" in other.stderr
    closed = call_main(train.main, *open_set_args(tiny_mnist, tmp_path, "--epochs", "3", "--resume", unseen=[]))
    assert closed.returncode == 1 and "--unseen-classes 6 7 8 9 (now none)" in closed.stderr
    resumed = call_main(train.main, *open_set_args(tiny_mnist, tmp_path, "--epochs", "3", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    embeddings, _, meta = load_run(str(tmp_path), "vgg8_arcface")
    assert len(embeddings) == 4 and "unseen" in meta["history"][-1]["verification"]


def test_a_closed_set_run_records_the_seen_verification_alone(tiny_mnist, tmp_path):
    result = call_main(train.main, "--data-dir", tiny_mnist, "--out-dir", tmp_path, "--train-points", "100",
                       "--batch-size", "64", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    _, _, meta = load_run(str(tmp_path), "vgg8_arcface")
    assert set(meta["splits"]) == {"train", "val"} and "unseen_classes" not in meta
    assert set(meta["history"][-1]["verification"]) == {"seen"} and "open_set_auroc" not in meta["history"][-1]


def test_epoch_metrics_split_the_rows_as_the_run_does():
    rng = np.random.default_rng(0)
    labels = np.r_[np.arange(20) % 2, np.arange(10) % 2, 2 + np.arange(12) % 3]  # train, val, unseen
    embeddings = rng.normal(size=(len(labels), 3))
    splits = {"train": [0, 20], "val": [20, 30], "unseen": [30, 42]}
    result = epoch_metrics(embeddings, labels, splits, np.eye(3)[:2], seed=0)
    assert result["verification"]["seen"]["pairs"] == {"genuine": 2 * 10, "impostor": 25}  # 10 val images, 5 + 5
    assert result["verification"]["unseen"]["pairs"] == {"genuine": 3 * 6, "impostor": 48}  # 12 unseen, 4 + 4 + 4
    assert result["cdnv_unseen"] == pytest.approx(cdnv(embeddings[30:], labels[30:]))
    closed = epoch_metrics(embeddings[:30], labels[:30], {"train": [0, 20], "val": [20, 30]}, np.eye(3)[:2], seed=0)
    assert set(closed) == {"verification", "pair_angles", "cdnv_seen"} and set(closed["verification"]) == {"seen"}
    assert closed["cdnv_seen"] == pytest.approx(cdnv(embeddings[20:30], labels[20:30]))
    assert sum(closed["pair_angles"]["seen"]["genuine"]) == 20 and sum(closed["pair_angles"]["seen"]["impostor"]) == 25


def test_drawing_an_open_set_run_writes_its_roc_scores_and_class_angles(open_set_run):
    import imageio.v3 as iio

    import visualization
    from embedviz.scores import PANEL_INCHES

    out_dir, _ = open_set_run
    result = call_main(visualization.main, "--model", "vgg8_arcface", "--out-dir", out_dir, "--split", "val",
                       "--workers", "1")
    assert result.returncode == 0, result.stderr
    for name in ("roc.png", "scores.gif", "scores.png", "class_angles.png"):
        assert f"wrote {out_dir / f'vgg8_arcface_{name}'}" in result.stdout
    assert (out_dir / "vgg8_arcface_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = iio.imread(out_dir / "vgg8_arcface_scores.gif", index=None)
    width, height = (round(100 * inches) for inches in PANEL_INCHES)
    assert scores.shape[:3] == (3, 2 * height, width)  # epochs 0-2; a row for the seen, one for the unseen
    assert not np.array_equal(scores[0], scores[2])
    last = iio.imread(out_dir / "vgg8_arcface_scores.png")[..., :3].astype(int)
    assert np.abs(last - scores[-1][..., :3]).mean() < 2  # the last epoch, as the GIF's 64 colors show it
    _, _, meta = load_run(str(out_dir), "vgg8_arcface")
    assert meta["separation_bound_deg"] == 90.0  # 6 seen classes on the sphere: the octahedron


def test_the_summary_table_gives_the_runs_last_figures(open_set_run):
    import summary

    out_dir, _ = open_set_run
    result = call_main(summary.main, out_dir)
    assert result.returncode == 0, result.stderr
    last = load_run(str(out_dir), "vgg8_arcface")[2]["history"][-1]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| `vgg8_arcface`")).split(" | ")
    assert row[1:] == [f"{100 * last['val_accuracy']:.1f}%",
                       f"{100 * last['verification']['seen']['tar_at_far']['0.001']:.1f}%",
                       f"{100 * last['verification']['unseen']['tar_at_far']['0.001']:.1f}%",
                       f"{100 * last['verification']['unseen']['eer']:.1f}%",
                       f"{last['open_set_auroc']:.3f}",
                       f"{100 * last['unseen_ncm_accuracy']:.1f}% |"]
