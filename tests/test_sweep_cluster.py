"""sweep.py --backend ray and slurm: the same table as the local backend, byte for byte, on a tiny grid
(Ray started by the driver on this machine, submitit's local executor); run folders returned through a
temporary folder; a folder too large to return refused; a missing ray or submitit named in one line."""

import os

import pytest

from conftest import run_script
from embedviz import remote_run

GRID = ["--seen", "4", "--heads", "vgg8_softmax", "vgg8_arcface", "--dims", "3", "--seeds", "0",
        "--epochs", "1", "--train-points", "50", "--batch-size", "64", "--device", "cpu", "--cpus-per-run", "1"]


@pytest.mark.xdist_group("cluster")
def test_local_ray_and_slurm_write_the_same_table_byte_for_byte(tiny_mnist, tmp_path):
    tables = {}
    for backend in ("local", "ray", "slurm"):
        out = tmp_path / backend
        result = run_script("sweep.py", "--dataset", "mnist", "--data-dir", tiny_mnist, *GRID, "--backend", backend,
                            "--out-dir", out, "--figure", tmp_path / f"{backend}.png", timeout=240, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        tables[backend] = (out / "margin_sweep.md").read_bytes()
        run = out / "mnist-seen4" / "vgg8_arcface-d3-s0"
        assert {"all_vgg8_arcface_meta.json", "vgg8_arcface_last.pth", "train.log"} <= set(os.listdir(run))
        assert not [name for name in os.listdir(run.parent) if name.startswith(".")]  # no temporary folder left
    assert tables["ray"] == tables["local"] and tables["slurm"] == tables["local"]
    assert b"| 4 | `vgg8_arcface` | 3 | 1 |" in tables["local"]
    again = run_script("sweep.py", "--dataset", "mnist", "--data-dir", tiny_mnist, *GRID, "--backend", "ray",
                       "--out-dir", tmp_path / "ray", "--figure", tmp_path / "ray.png", timeout=240, check=False)
    assert again.returncode == 0 and "2 of 2 runs done; training 0" in again.stdout  # resume is the driver's


@pytest.mark.xdist_group("cluster")
def test_a_missing_dataset_on_a_worker_fails_that_run_naming_the_node_and_the_path(tmp_path):
    result = run_script("sweep.py", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "nowhere", *GRID,
                        "--backend", "slurm", "--out-dir", tmp_path / "out", "--figure", tmp_path / "f.png",
                        timeout=240, check=False)
    assert result.returncode == 1 and "2 runs failed" in result.stderr
    assert f"failed on {os.uname().nodename}: " in result.stdout and str(tmp_path / "nowhere") in result.stdout


def test_a_returned_run_replaces_its_folder_only_once_written_whole(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    remote_run.install({"a.json": b"1", "train.log": b"first"}, folder)
    assert (folder / "a.json").read_bytes() == b"1" and oct(folder.stat().st_mode)[-3:] != "700"

    def half_written(files, target):
        (remote_run.os.makedirs(target, exist_ok=True), open(os.path.join(target, "a.json"), "wb").close())
        raise OSError("disk full")

    monkeypatch.setattr(remote_run, "unpack", half_written)
    with pytest.raises(OSError):
        remote_run.install({"a.json": b"2"}, folder)
    assert sorted(os.listdir(tmp_path)) == ["run"] and (folder / "a.json").read_bytes() == b"1"  # kept whole


def test_a_folder_over_the_return_limit_is_refused_with_its_log(tmp_path):
    stopped = {"big.npy": b"x" * 3000}
    outcome = remote_run.train("run", ["--out-dir", "run", "--epochs", "0"], stopped, max_return_bytes=2000)
    assert outcome.status != 0 and outcome.files is None  # train.py refused --epochs 0, and its folder is too big
    assert "over --max-return-mb" in outcome.reason() and "--epochs" in outcome.log


@pytest.mark.parametrize("backend, module", [("ray", "ray"), ("slurm", "submitit")])
def test_a_backend_without_its_package_says_what_to_install(backend, module, tmp_path):
    shadow = tmp_path / module
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = run_script("sweep.py", "--dataset", "mnist-sample", *GRID, "--backend", backend, "--out-dir",
                        tmp_path / "out", env={"PYTHONPATH": str(tmp_path)}, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (f"error: --backend {backend} needs {module}: "
                                                      "pip install -r requirements-cluster.txt")
