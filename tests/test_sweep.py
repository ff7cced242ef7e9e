"""sweep.py: its grid trained once, resumed where stopped, and summarised with intervals counted by hand."""

import math

import pytest
import torch

import sweep
import train
from conftest import call_main
from embedviz import remote_run
from embedviz.remote_run import Outcome
from embedviz.sweep_backends import Local


def test_the_interval_is_students_for_the_mean_of_the_seeds():
    mean, half = sweep.interval([1.0, 2.0, 3.0, None, 4.0, 5.0])  # None: a run without that figure
    # sd sqrt(2.5), standard error sqrt(2.5 / 5), t(0.975, 4 degrees of freedom) = 2.776445
    assert mean == 3.0 and half == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert sweep.interval([0.4])[0] == 0.4 and math.isnan(sweep.interval([0.4])[1])
    assert all(math.isnan(x) for x in sweep.interval([None]))


def test_differences_pair_the_seeds_where_both_heads_have_the_figure():
    values = {(4, "a", 3): {"T": {0: 1.0, 1: 2.0, 2: None}, "U": {0: 0.5}},
              (4, "b", 3): {"T": {0: 1.5, 1: 3.0, 2: 5.0}, "U": {1: 0.7}}}
    paired = sweep.differences(values, "a")
    assert list(paired) == [(4, "b", 3)]
    mean, half, seeds = paired[4, "b", 3]["T"]  # seed 2 left out: "a" has no figure there
    # differences 0.5 and 1.0: sd sqrt(0.125), standard error 0.25, t(0.975, 1 degree of freedom) = 12.706205
    assert (mean, seeds) == (0.75, 2) and half == pytest.approx(12.706205 * 0.25, rel=1e-6)
    assert paired[4, "b", 3]["U"][2] == 0 and math.isnan(paired[4, "b", 3]["U"][0])  # no seed in common


class InProcess(Local):
    """train.py's main, in this process, as the sweep would start it; `launched` the argv of each."""

    def __init__(self):
        super().__init__(jobs=1)
        self.launched = []

    def start(self, folder, argv, stopped):
        self.launched.append(argv)
        self.running[folder] = call_main(train.main, *argv).returncode

    def finished(self, timeout):
        done = [(folder, Outcome(status, "", "here")) for folder, status in self.running.items()]
        self.running.clear()
        return done


def test_the_sweep_trains_its_grid_once_and_resumes_stopped_runs(tiny_mnist, tmp_path):
    in_process = InProcess()
    launched = in_process.launched

    options = ["--dataset", "mnist", "--data-dir", tiny_mnist, "--seen", "4", "--heads", "vgg8_softmax", "vgg8_arcface",
               "--dims", "3", "8", "--seeds", "0", "1", "--train-points", "100", "--batch-size", "64",
               "--out-dir", tmp_path / "sweep", "--figure", tmp_path / "sweep.png", "--device", "cpu"]
    run = [str(option) for option in options]
    assert sweep.main([*run, "--epochs", "1"], backend=in_process) == 0
    assert len(launched) == 8 and all("--resume" not in argv for argv in launched)
    assert {argv[argv.index("--unseen-classes") + 1] for argv in launched} == {"4"}  # classes 4-9, every run
    assert {argv[argv.index("--precision") + 1] for argv in launched} == {"fp32"}  # not auto's timed choice
    table = (tmp_path / "sweep" / "margin_sweep.md").read_text()
    assert table.count("| 4 | `vgg8_") == 4 + 2 and "| 2 |" in table  # 2 heads x 2 sizes over 2 seeds, then
    assert "| head − softmax |" in table                                # arcface's differences at 2 sizes
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    launched.clear()
    assert sweep.main([*run, "--epochs", "1"], backend=in_process) == 0 and launched == []  # all done
    assert sweep.main([*run, "--epochs", "2"], backend=in_process) == 0
    assert len(launched) == 8 and all("--resume" in argv for argv in launched)  # each goes on from epoch 1


def test_held_out_classes_must_lie_beyond_the_seen_ones():
    result = call_main(sweep.main, "--dataset", "mnist", "--seen", "6", "--unseen-classes", "5-9")
    assert result.returncode == 2 and "--seen 6: its classes 0-5 include held-out ones" in result.stderr


def test_a_run_that_fell_back_to_mnist_sample_fails_in_a_grid_of_mnist(tmp_path, no_network, capsys):
    in_process = InProcess()
    run = [str(option) for option in
           ["--dataset", "mnist", "--data-dir", tmp_path / "no-data", "--seen", "4", "--heads", "vgg8_softmax",
            "--dims", "3", "--seeds", "0", "--epochs", "1", "--train-points", "50", "--out-dir", tmp_path / "sweep",
            "--figure", tmp_path / "sweep.png", "--device", "cpu"]]
    with pytest.raises(SystemExit, match="1 runs failed"):
        sweep.main(run, backend=in_process)
    assert "failed on here: no mnist there, it trained on mnist-sample" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="1 runs failed"):
        sweep.main(run, backend=in_process)  # not taken for done: trained again
    assert len(in_process.launched) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a share of a GPU's memory needs a CUDA device")
def test_a_run_on_a_share_of_the_gpu_cannot_take_more_of_its_memory(tiny_mnist, tmp_path):
    argv = ["--model", "vgg8_arcface", "--dataset", "mnist", "--data-dir", tiny_mnist, "--out-dir", "run",
            "--epochs", "1", "--batch-size", "64", "--device", "cuda", "--train-points", "50"]
    total = torch.cuda.get_device_properties(0).total_memory
    starved = remote_run.train("run", argv, None, 2**30, memory_fraction=2**20 / total)  # 1 MB of the GPU
    assert starved.status != 0 and "out of memory" in starved.log.lower()
    fed = remote_run.train("run", argv, None, 2**30, memory_fraction=2**30 / total)  # 1 GB: a run needs ~200 MB
    assert fed.status == 0, fed.log[-2000:]
    assert "all_vgg8_arcface_meta.json" in fed.files
