"""The playground: train.py's training stepped in a thread (the same network after an epoch, bit for
bit), the settings from the page address bounded, a drawn digit made into MNIST's shape, and the app
itself in headless Chromium."""

import math
import time
from urllib.parse import parse_qs

import numpy as np
import pytest
import torch

import playground
import train
from conftest import call_main
from embedviz import drawn_digit
from embedviz.live import LiveTraining
from embedviz.playground_page import PRESET, parse_settings, query, target_logit_figure, training_settings


def test_an_epoch_of_the_playground_is_an_epoch_of_train_py_bit_for_bit(tiny_mnist, tmp_path):
    settings = {**training_settings({**PRESET, "dataset": "mnist", "batch": 64}), "device": "cpu",
                "precision": "fp32"}
    result = call_main(train.main, "--dataset", "mnist", "--data-dir", tiny_mnist, "--out-dir", tmp_path,
                       "--batch-size", "64", "--epochs", "1", "--precision", "fp32", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    trained = torch.load(tmp_path / "vgg8_arcface_last.pth", weights_only=True)["model_state"]
    live = LiveTraining(settings, tiny_mnist, steps_per_update=1, playing=False)
    try:
        first = live.wait_for(lambda snapshot: snapshot.steps_per_epoch > 0)
        assert first is not None and first.steps_per_epoch == 7  # 400 images, batches of 64 (the last of 16)
        for _ in range(first.steps_per_epoch):
            live.step_once()
            time.sleep(0.01)
        assert live.wait_for(lambda snapshot: snapshot.epoch == 2 and snapshot.step == 0) is not None
        with live.lock:
            state = live.model.state_dict()
        assert state.keys() == trained.keys()
        different = [name for name in state if not torch.equal(state[name].cpu(), trained[name])]
        assert different == [], different
        saved = np.load(tmp_path / "all_vgg8_arcface_embeddings.npy")[1]
        images = torch.from_numpy(np.load(tmp_path / "all_vgg8_arcface_images.npy"))
        with live.lock:
            embeddings, _, _ = train.evaluate(live.model, images, torch.zeros(len(images), dtype=torch.long), 512,
                                              "fp32")
        np.testing.assert_array_equal(embeddings.numpy(), saved)  # the embeddings train.py saved after epoch 1
    finally:
        live.close()
    assert live.thread is None


@pytest.mark.parametrize("values,setting,expected,note", [
    ({"m": "abc"}, "m", PRESET["m"], "m='abc' is not valid"),
    ({"s": "-1"}, "s", PRESET["s"], "s='-1' is not valid (from 1 to 1024)"),
    ({"s": "1000"}, "s", 1000.0, None),
    ({"head": "nope"}, "head", "arcface", "head='nope' is not valid (one of softmax"),
    ({"dim": "100"}, "dim", 3, "dim='100' is not valid (from 2 to 3)"),
    ({"lr": "inf"}, "lr", PRESET["lr"], "lr='inf' is not valid"),
    ({"dataset": "../../etc"}, "dataset", "mnist-sample", "dataset='../../etc' is not valid"),
    ({"unseen": "6-9"}, "unseen", [6, 7, 8, 9], None),
    ({"unseen": "9"}, "unseen", [], "hold out 2 to 8"),
    ({"head": "sphereface", "m": "0.5"}, "m", 1.5, "SphereFace's m multiplies the angle"),
    ({"head": "cosface", "m": "0.2", "s": "30"}, "s", 30.0, None),
])
def test_a_setting_from_the_address_is_parsed_and_bounded_or_falls_back_with_a_note(values, setting, expected, note):
    settings, notes = parse_settings(values)
    assert settings[setting] == expected
    assert (note is None and notes == []) or (note is not None and any(note in line for line in notes)), notes


def test_the_address_holds_the_settings_and_gives_them_back():
    settings, _ = parse_settings({"head": "cosface", "m": "0.25", "s": "20", "dim": "2", "unseen": "6 7"})
    text = query(settings, controls=False)
    assert text.startswith("?") and "controls=off" in text
    again, notes = parse_settings({key: value[0] for key, value in parse_qs(text[1:]).items()})
    assert notes == [] and again == settings


def test_the_target_logit_is_the_heads_and_the_fallback_region_starts_at_pi_minus_m():
    settings, _ = parse_settings({"head": "arcface", "m": "0.5", "s": "10"})
    figure = target_logit_figure(settings, target_angles=[10.0, 20.0])
    plain, target, batch = figure.data
    theta = np.radians(np.asarray(target.x))
    np.testing.assert_allclose(plain.y, 10 * np.cos(theta), atol=1e-3)  # sent rounded to 4 decimals
    inside = theta <= math.pi - 0.5
    np.testing.assert_allclose(np.asarray(target.y)[inside], 10 * np.cos(theta[inside] + 0.5), atol=1e-3)
    assert (np.diff(target.y) < 0).all()  # decreasing everywhere, the fallback included
    (region,) = figure.layout.shapes
    assert region.x0 == pytest.approx(math.degrees(math.pi - 0.5)) and region.x1 == 180
    assert list(batch.x) == [10.0, 20.0]


def test_a_drawn_stroke_becomes_a_digit_as_mnist_made_them():
    """A vertical bar and an L: the ink's box scaled to 20 pixels on its longer side, its centre of mass
    at the image's centre, grey edges from the scaling; nothing for an empty canvas."""
    for paths in (["M0.5,0.9L0.5,0.1"], ["M0.3,0.8L0.3,0.2L0.6,0.2"]):
        image = drawn_digit.to_mnist(drawn_digit.strokes_from_paths(paths))
        assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() == 255
        rows, cols = np.nonzero(image)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
        weights = image.astype(float)
        r, c = np.indices(image.shape)
        centre = np.array([(r * weights).sum(), (c * weights).sum()]) / weights.sum()
        assert np.abs(centre - 13.5).max() <= 0.5
        assert ((image > 0) & (image < 255)).any()
    assert drawn_digit.to_mnist(drawn_digit.strokes_from_paths([])) is None
    (parsed,) = drawn_digit.strokes_from_paths(["M1e9,2L<script>,3", "junk"])  # only number pairs, clipped
    assert np.array_equal(parsed, [[1.0, 1.0]])
    clipped = drawn_digit.strokes_from_paths(["M5,-3L0.5,0.5"])
    assert clipped[0].min() >= 0 and clipped[0].max() <= 1


def test_a_port_in_use_is_refused_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = call_main(playground.main, "--port", str(port))
    assert result.returncode == 1 and result.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_a_loss_that_becomes_nan_stops_the_run_with_one_line_that_says_so(monkeypatch):
    train_step = train.train_step
    monkeypatch.setattr(train, "train_step", lambda *args: train_step(*args) * math.nan)  # a diverging setting
    settings = {**training_settings(PRESET), "device": "cpu"}
    live = LiveTraining(settings, "data", steps_per_update=2)
    try:
        snapshot = live.wait_for(lambda snapshot: snapshot.note, 60)
    finally:
        live.close()
    assert snapshot is not None and snapshot.note.startswith("the loss became nan at epoch 1, step 2: training stopped")
    assert live.thread is None


def test_ctrl_c_stops_the_training_and_frees_the_port_and_another_host_is_warned_of():
    import signal
    import socket
    import subprocess
    import sys

    from conftest import ROOT

    process = subprocess.Popen([sys.executable, "playground.py", "--host", "127.0.0.2", "--port", "0", "--device",
                                "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # once it listens
        assert line.startswith("the playground is at http://127.0.0.2:"), line + process.stderr.read()
        port = int(line.split(":")[2].split("/")[0])
        time.sleep(3)  # training
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and time.monotonic() - started < 10
    assert "warning: listening on 127.0.0.2: anyone who can reach this machine there can use it" in stderr
    assert stderr.strip().splitlines()[-1] == "stopped" and "Traceback" not in stderr
    with socket.socket() as again:  # the port is free
        again.bind(("127.0.0.2", port))
