"""Every fault a user can meet ends with one clear line, a non-zero exit and the finished epochs kept."""

import gzip
import os
import pickle
import signal
import time

import numpy as np
import pytest

import train
import visualization
from conftest import call_main, write_idx, write_mnist_layout
from embedviz import run_files
from embedviz.run_files import load_run

TRAIN, DRAW = train.main, visualization.main


def run(main, *args):
    """The script's main(argv) in this process: options, refusals and damaged files need no new Python."""
    return call_main(main, *args)


def assert_clean_error(result, *fragments, code=None):
    """A non-zero exit, no traceback, and one line on stderr (progress bars aside) that holds every fragment."""
    assert result.returncode != 0 if code is None else result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_args(data_dir, out_dir, *extra):
    return ["--data-dir", data_dir, "--out-dir", out_dir, "--train-points", "100", "--batch-size", "64", *extra]


# ---------------------------------------------------------------- resume and interruption

def without_seconds(meta):
    return [{k: v for k, v in entry.items() if k not in ("seconds", "train_seconds")} for entry in meta["history"]]


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tiny_mnist, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    fp32 = ("--precision", "fp32")  # auto's choice rests on a timing, which two runs could see apart
    assert run(TRAIN, *tiny_args(tiny_mnist, whole, "--epochs", "3", *fp32)).returncode == 0
    assert run(TRAIN, *tiny_args(tiny_mnist, parts, "--epochs", "1", *fp32)).returncode == 0
    resumed = run(TRAIN, *tiny_args(tiny_mnist, parts, "--epochs", "3", "--resume", *fp32))
    assert resumed.returncode == 0, resumed.stderr
    a, _, meta_a = load_run(str(whole), "vgg8_arcface")
    b, _, meta_b = load_run(str(parts), "vgg8_arcface")
    assert a.shape == b.shape == (4, 200, 3)
    assert np.array_equal(a, b)
    assert without_seconds(meta_a) == without_seconds(meta_b)


@pytest.mark.parametrize("flag,value,message", [
    ("--model", "vgg8_softmax", "no checkpoint"),
    ("--train-points", "50", "--train-points 100 (now 50)"),
    ("--seed", "1", "--seed 58 (now 1)"),
    ("--dataset", "mnist-sample", "dataset mnist (now mnist-sample)"),
    ("--margin", "0.3", "head class=ArcFace s=15.0 m=0.5 (now class=ArcFace s=15.0 m=0.3)"),
    ("--m3", "0.1", "head class=ArcFace s=15.0 m=0.5 (now class=CombinedMargin s=15.0 m1=1.0 m2=0.5 m3=0.1 k=1)"),
])
def test_resume_refuses_a_run_made_otherwise_and_names_the_difference(tiny_mnist, run_copy, flag, value, message):
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume", flag, value))
    assert_clean_error(result, message, code=1)


def test_resume_refuses_another_precision_whatever_this_machine_runs(tiny_mnist, run_copy, monkeypatch):
    monkeypatch.setattr(train, "hardware", lambda device: ("cpu", None, 2.5))  # a CPU with fast bf16
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume", "--precision", "bf16"))
    assert_clean_error(result, "precision fp32 (now bf16)", code=1)


def test_resume_with_auto_precision_continues_in_the_runs_own(tiny_mnist, run_copy, monkeypatch):
    monkeypatch.setattr(train, "hardware", lambda device: ("cpu", None, 2.5))  # auto would start a run in bf16
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume", "--device", "cpu"))
    assert result.returncode == 0, result.stderr
    assert load_run(str(run_copy), "vgg8_arcface")[2]["precision"] == "fp32" and "cpu, fp32" in result.stdout


def test_resume_refuses_embeddings_of_another_shape(tiny_mnist, run_copy):
    embeddings = np.load(npy_path(run_copy))
    np.save(npy_path(run_copy), embeddings[..., :2])  # 2-D points where the run has 3-D ones
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume", "--precision", "fp32"))
    assert_clean_error(result, "all_vgg8_arcface_embeddings.npy has shape (3, 200, 2)",
                       "needs (3 or more, 200, 3)", code=1)


def on_epoch(monkeypatch, epoch, action):
    """action() runs in this process as train.py's epoch `epoch` (of a run from epoch 0) begins, before its
    first step: train_epoch's `epoch`-th call."""
    train_epoch, calls = train.train_epoch, []

    def action_then_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            action()
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", action_then_train)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_once_keeps_the_epochs_and_says_how_to_resume(tiny_mnist, tmp_path, monkeypatch, signum,
                                                                      code):
    """Ctrl-C, or a process manager's SIGTERM, as epoch 2 of 3 begins: no more training, epochs 0-1 kept."""
    on_epoch(monkeypatch, 2, lambda: os.kill(os.getpid(), signum))
    args = tiny_args(tiny_mnist, tmp_path, "--epochs", "3")
    result = run(TRAIN, *args)
    assert_clean_error(result, f"stopped by {signal.Signals(signum).name} during epoch 2; epochs 0-1 were saved in "
                               f"{tmp_path}; resume with: python train.py", "--resume", code=code)
    embeddings, _, meta = load_run(str(tmp_path), "vgg8_arcface")
    assert len(embeddings) == meta["epochs_completed"] + 1 == 2
    monkeypatch.undo()
    resumed = run(TRAIN, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert load_run(str(tmp_path), "vgg8_arcface")[2]["epochs_completed"] == 3


def test_a_resumed_run_stopped_by_a_signal_names_the_epochs_saved_before_it(tiny_mnist, tmp_path, monkeypatch):
    assert run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--epochs", "1")).returncode == 0
    on_epoch(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGINT))  # the resumed run's first: epoch 2
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--epochs", "3", "--resume"))
    assert_clean_error(result, f"stopped by SIGINT during epoch 2; epochs 0-1 were saved in {tmp_path}", code=130)


def test_a_signal_during_a_save_names_the_epoch_that_save_completed(tiny_mnist, tmp_path, monkeypatch):
    save_run = run_files.save_run

    def interrupted_save(out_dir, model_name, frame, epoch, *args, **kwargs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # held until the save is complete
        return save_run(out_dir, model_name, frame, epoch, *args, **kwargs)

    monkeypatch.setattr(run_files, "save_run", interrupted_save)
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--epochs", "3"))
    assert_clean_error(result, f"stopped by SIGINT during epoch 1; epochs 0-1 were saved in {tmp_path}", code=130)
    assert load_run(str(tmp_path), "vgg8_arcface")[2]["epochs_completed"] == 1


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_dataset_loads_stops_in_one_line(tiny_mnist, tmp_path, monkeypatch, signum, code):
    def load_until_stopped(*args, **kwargs):  # the user presses Ctrl-C during a long download
        os.kill(os.getpid(), signum)
        time.sleep(10)
        raise AssertionError("the signal did not stop the loading")

    monkeypatch.setattr(train, "load_dataset", load_until_stopped)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--epochs", "1"))
    assert_clean_error(result, f"stopped by {signal.Signals(signum).name} before training started",
                       "no file was written", code=code)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # given back


class InterruptedDownload:
    """What urllib.request.urlopen returns, for a server that sends a few chunks of an archive
    before the user presses Ctrl-C."""

    def __init__(self, request):
        self.url, self.length, self.chunks = request.full_url, 10 ** 6, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def read(self, size=-1):
        self.chunks += 1
        if self.chunks == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        return b"\x1f\x8b" + bytes(1000)


def test_ctrl_c_during_a_download_leaves_no_partial_archive(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, *args, **kwargs: InterruptedDownload(request))
    result = run(TRAIN, "--dataset", "fashion-mnist", "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    assert_clean_error(result, "stopped by SIGINT before training started", code=130)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert raw.is_dir() and list(raw.iterdir()) == []  # the next run downloads again, not a truncated archive


def test_ctrl_c_while_the_checkpoint_is_read_is_a_stop_not_a_damaged_file(tiny_mnist, run_copy, monkeypatch):
    import torch

    def load_until_stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)

    monkeypatch.setattr(torch, "load", load_until_stopped)
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume"))
    assert_clean_error(result, "stopped by SIGINT before training started", code=130)


def test_a_save_that_fails_ends_in_one_line_and_keeps_the_epochs_done(tiny_mnist, tmp_path, monkeypatch):
    meta_path = tmp_path / "all_vgg8_arcface_meta.json"

    def take_the_meta_files_place():  # epoch 2's save cannot replace it, as with a full disk
        meta_path.unlink()
        meta_path.mkdir()

    on_epoch(monkeypatch, 2, take_the_meta_files_place)
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--epochs", "3"))
    assert_clean_error(result, f"cannot save to {tmp_path}", "epochs 0-1 were saved there", code=1)
    embeddings = np.load(tmp_path / "all_vgg8_arcface_embeddings.npy")
    assert len(embeddings) >= 2 and np.isfinite(embeddings).all()


def test_a_step_that_cannot_be_captured_ends_in_one_line_and_says_how_to_go_on(tiny_mnist, tmp_path, monkeypatch):
    """What a GPU whose capture fails sees: the epochs done kept, and the resume command without graphs."""
    from embedviz.stopping import GraphCaptureError

    train_step, steps = train.train_step, []

    def fails_in_epoch_two(*args):
        steps.append(1)
        if len(steps) > 7:  # epoch 1: 7 steps of 64 of the 400 images
            raise GraphCaptureError("operation not permitted when stream is capturing")
        return train_step(*args)

    monkeypatch.setattr(train, "train_step", fails_in_epoch_two)  # on the CPU: a GPU would replay its graph instead
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--device", "cpu", "--epochs", "3"))
    assert_clean_error(result, "could not be captured as a CUDA graph (operation not permitted when stream is "
                       "capturing)", "epochs 0-1 were saved", "--epochs 3 --no-cuda-graphs --resume", code=1)
    assert load_run(str(tmp_path), "vgg8_arcface")[2]["epochs_completed"] == 1


def test_signals_during_a_save_wait_for_the_save_to_finish():
    from embedviz.stopping import Stop, Stops

    steps = []
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIGINT's is SIG_IGN under nohup
    with Stops([], "out") as stops:
        with pytest.raises(Stop) as stop:
            with stops.saving():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C
                steps.append("save finished")
        assert stop.value.signum == signal.SIGINT
        with pytest.raises(Stop):
            os.kill(os.getpid(), signal.SIGTERM)  # outside a save: at once
            time.sleep(1)
    assert steps == ["save finished"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # given back


def test_diverging_training_stops_and_keeps_the_last_good_epoch(tiny_mnist, tmp_path):
    result = run(TRAIN, *tiny_args(tiny_mnist, tmp_path, "--model", "vgg8_softmax", "--lr", "1e20",
                                   "--epochs", "3"))
    assert_clean_error(result, "diverged at epoch 1, steps 1-", "epoch 0 was saved", code=1)
    embeddings, _, meta = load_run(str(tmp_path), "vgg8_softmax")
    assert len(embeddings) == 1 and meta["epochs_completed"] == 0 and np.isfinite(embeddings).all()


def test_a_checkpoint_that_is_an_arbitrary_pickle_is_refused(tiny_mnist, run_copy):
    marker = run_copy / "code_ran"
    with open(run_copy / "vgg8_arcface_last.pth", "wb") as f:  # unpickling this would create `marker`
        pickle.dump(type("Exploit", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})(), f)
    result = run(TRAIN, *tiny_args(tiny_mnist, run_copy, "--epochs", "3", "--resume"))
    assert_clean_error(result, "vgg8_arcface_last.pth cannot be read as a checkpoint", code=1)
    assert not marker.exists()


# ---------------------------------------------------------------- bad options and bad data

@pytest.mark.parametrize("args,fragments", [
    (["--model", "vgg9"], ["--model", "vgg8_arcface", "vgg8_softmax"]),
    (["--dataset", "cifar10"], ["--dataset", "fashion-mnist", "mnist-sample"]),
    (["--epochs", "0"], ["--epochs", "positive"]),
    (["--epochs", "two"], ["--epochs", "not a number"]),
    (["--batch-size", "-8"], ["--batch-size", "2 or more"]),
    (["--lr", "0"], ["--lr", "positive"]),
    (["--lr", "nan"], ["--lr", "positive"]),
    (["--train-points", "-1"], ["--train-points", "0 or more"]),
    (["--seed", "-1"], ["--seed", "from 0 to 2**64 - 1", "got -1"]),
    (["--seed", str(2 ** 64)], ["--seed", "from 0 to 2**64 - 1"]),
    (["--precision", "fp8"], ["--precision", "fp16"]),
    (["--unseen-classes", "3", "10"], ["--unseen-classes 10", "classes 0-9"]),
    (["--unseen-classes", "3", "3"], ["--unseen-classes 3 3", "named twice"]),
    (["--unseen-classes", "3"], ["at least 2 are seen and 2 unseen", "got 1"]),
    (["--unseen-classes", *map(str, range(9))], ["at least 2 are seen and 2 unseen", "got 9"]),
])
def test_bad_options_are_refused_in_one_line(args, fragments):
    assert_clean_error(run(TRAIN, *args), *fragments, code=2)


@pytest.mark.parametrize("precision,cpu_bf16,message", [
    ("bf16", False, "this CPU has no native bf16; use --precision fp32"),
    ("fp16", True, "this CPU has no tensor cores, and fp16 is slower than fp32 without them"),
])
def test_a_precision_this_cpu_does_not_run_is_refused(tmp_path, monkeypatch, precision, cpu_bf16, message):
    monkeypatch.setattr(train, "hardware", lambda device: ("cpu", None, 2.5 if cpu_bf16 else None))
    result = run(TRAIN, "--out-dir", tmp_path, "--device", "cpu", "--precision", precision)
    assert_clean_error(result, message, code=1)


def test_an_output_folder_that_cannot_be_written_is_found_before_training(tmp_path, tiny_mnist):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    started = time.monotonic()
    result = run(TRAIN, *tiny_args(tiny_mnist, blocker / "out", "--epochs", "50"))
    assert_clean_error(result, "cannot write to output folder", str(blocker / "out"), code=1)
    assert time.monotonic() - started < 60


def damaged_data(tmp_path, mnist_digits, damage):
    images, labels = mnist_digits
    raw = write_mnist_layout(tmp_path, "MNIST", images[:60], labels[:60], images[60:80], labels[60:80])
    damage(raw)
    return str(tmp_path)


def truncate(raw):
    path = os.path.join(raw, "train-images-idx3-ubyte")
    os.truncate(path, os.path.getsize(path) - 100)


def wrong_magic(raw):
    with open(os.path.join(raw, "t10k-labels-idx1-ubyte"), "r+b") as f:
        f.write(b"\x00\x00\x08\x03")


def fewer_labels(raw):
    write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), np.zeros(59, np.uint8))


def label_out_of_range(raw):
    write_idx(os.path.join(raw, "t10k-labels-idx1-ubyte"), np.full(20, 12, np.uint8))


def archives_only_in_a_folder_that_cannot_be_written(raw):
    """Only .gz files, and the unpacked file cannot be created: as in a read-only folder (root, who runs
    CI, may write anywhere, so a folder stands where the unpacked file's temporary name would go)."""
    for name in os.listdir(raw):
        with open(os.path.join(raw, name), "rb") as f, gzip.open(os.path.join(raw, name + ".gz"), "wb") as g:
            g.write(f.read())
        os.remove(os.path.join(raw, name))
    os.mkdir(os.path.join(raw, f"train-images-idx3-ubyte.part{os.getpid()}"))  # main() runs in this process


def broken_archive(raw):
    os.remove(os.path.join(raw, "t10k-images-idx3-ubyte"))
    with open(os.path.join(raw, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(gzip.compress(np.random.default_rng(0).bytes(5000))[:100])


@pytest.mark.parametrize("damage,fragments", [
    (truncate, ["train-images-idx3-ubyte", "truncated"]),
    (wrong_magic, ["t10k-labels-idx1-ubyte", "magic number 0x00000803"]),
    (fewer_labels, ["60 images", "59 labels"]),
    (label_out_of_range, ["t10k-labels-idx1-ubyte", "label 12"]),
    (broken_archive, ["t10k-images-idx3-ubyte.gz", "cannot be unpacked"]),
    (archives_only_in_a_folder_that_cannot_be_written, ["cannot unpack", "train-images-idx3-ubyte.gz",
                                                        "cannot be written", "--data-dir"]),
])
def test_damaged_idx_files_are_named_with_their_fault(tmp_path, mnist_digits, damage, fragments):
    data_dir = damaged_data(tmp_path, mnist_digits, damage)
    result = run(TRAIN, *tiny_args(data_dir, tmp_path / "out", "--epochs", "1"))
    assert_clean_error(result, *fragments, code=1)


# ---------------------------------------------------------------- bad runs given to visualization.py

@pytest.fixture(scope="module")
def finished_run(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("finished")
    assert run(TRAIN, *tiny_args(tiny_mnist, out_dir, "--epochs", "2", "--precision", "fp32")).returncode == 0
    return out_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    for name in os.listdir(finished_run):
        (tmp_path / name).write_bytes((finished_run / name).read_bytes())
    return tmp_path


def draw(out_dir, *extra):
    return run(DRAW, "--model", "vgg8_arcface", "--out-dir", out_dir, "--workers", "1", *extra)


def test_no_run_gives_the_command_that_makes_one(tmp_path):
    assert_clean_error(draw(tmp_path), "no run of vgg8_arcface", "python train.py --model vgg8_arcface", code=1)


def npy_path(out_dir, kind="embeddings"):
    return out_dir / f"all_vgg8_arcface_{kind}.npy"


@pytest.mark.parametrize("damage,fragments", [
    (lambda d: os.truncate(npy_path(d), 300), ["all_vgg8_arcface_embeddings.npy", "not a valid .npy"]),
    (lambda d: npy_path(d).write_bytes(b"garbage" * 20), ["all_vgg8_arcface_embeddings.npy"]),
    (lambda d: np.save(npy_path(d, "labels"), np.zeros(150, np.int64)), ["200 points per epoch", "150 labels"]),
    (lambda d: np.save(npy_path(d), np.zeros((3, 200), np.float32)), ["shape (3, 200)"]),
    (lambda d: (d / "all_vgg8_arcface_meta.json").write_text("{\"epochs_completed\": 2"),
     ["all_vgg8_arcface_meta.json", "not a valid run description"]),
    (lambda d: (d / "all_vgg8_arcface_meta.json").write_text(
        (d / "all_vgg8_arcface_meta.json").read_text().replace('"epochs_completed": 2', '"epochs_completed": 7')),
     ["7 epochs were completed", "3 frames"]),
    (lambda d: (d / "all_vgg8_arcface_meta.json").write_text(
        (d / "all_vgg8_arcface_meta.json").read_text().replace('"val": [\n   100,\n   200', '"val": [100, 250')),
     ["describes 250 points"]),
    (lambda d: (d / "all_vgg8_arcface_meta.json").write_text(
        (d / "all_vgg8_arcface_meta.json").read_text().replace('"val": [\n   100,', '"val": [\n   90,')),
     ["split at 100"]),
])
def test_damaged_or_inconsistent_runs_are_refused(run_copy, damage, fragments):
    damage(run_copy)
    assert_clean_error(draw(run_copy), *fragments, code=1)


def write_seed_layout(out_dir, epochs=3, n_train=40, n_val=20):
    rng = np.random.default_rng(0)
    embeddings = {split: [rng.normal(size=(n, 3)).astype(np.float32) for _ in range(epochs)]
                  for split, n in (("train", n_train), ("val", n_val))}
    labels = {split: [rng.permutation(np.arange(n) % 10) for _ in range(epochs)]
              for split, n in (("train", n_train), ("val", n_val))}
    np.save(npy_path(out_dir), embeddings, allow_pickle=True)
    np.save(npy_path(out_dir, "labels"), labels, allow_pickle=True)


def test_pickled_seed_files_are_refused_by_default_and_drawn_when_allowed(tmp_path):
    import imageio.v3 as iio

    write_seed_layout(tmp_path)  # two .npy files, no meta: what the seed repository wrote
    assert_clean_error(draw(tmp_path), "pickled", "--allow-pickle", code=1)
    assert not list(tmp_path.glob("*.gif"))
    result = draw(tmp_path, "--allow-pickle")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "trust" in result.stderr
    assert iio.imread(tmp_path / "vgg8_arcface_Validation_Embeddings.gif", index=None).shape[0] == 3


def test_non_finite_and_zero_points_are_left_out_and_counted(run_copy):
    embeddings = np.load(npy_path(run_copy))
    embeddings[1, :5] = np.nan
    embeddings[2, 7] = np.inf
    embeddings[2, 150] = 0.0
    np.save(npy_path(run_copy), embeddings)
    result = draw(run_copy)
    assert result.returncode == 0, result.stderr
    assert "warning: 7 of 600 points" in result.stderr
    assert (run_copy / "vgg8_arcface_Training_Embeddings.gif").exists()


def check_when_all_ready(barrier, out_dir):
    barrier.wait()
    run_files.check_writable(out_dir)


def test_runs_started_together_check_the_same_new_output_folder(tmp_path):
    """A family trained side by side into one new folder: each run's check must leave the others' alone."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")  # processes of their own, started without a new Python
    for attempt in range(10):
        out_dir = tmp_path / f"runs{attempt}"
        barrier = fork.Barrier(4)
        processes = [fork.Process(target=check_when_all_ready, args=(barrier, out_dir)) for _ in range(4)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=30)
        assert [p.exitcode for p in processes] == [0] * 4, f"attempt {attempt}"
        assert os.listdir(out_dir) == []  # and nothing left behind
