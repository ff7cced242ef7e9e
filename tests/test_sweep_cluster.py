"""sweep.py --backend ray and slurm: the same table as the local backend, byte for byte, on a tiny grid
(one local Ray cluster of 2 CPUs for the module's tests, which the sweeps join; submitit's local
executor); a Ray worker killed in the middle of a run, and the run retried; a driver stopped and started
again; run folders returned through a temporary folder; a folder too large to return refused; a missing
ray or submitit named in one line."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_script, wait_for
from embedviz import remote_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRID = ["--seen", "4", "--heads", "vgg8_softmax", "vgg8_arcface", "--dims", "3", "--seeds", "0",
        "--epochs", "1", "--train-points", "50", "--batch-size", "64", "--device", "cpu", "--cpus-per-run", "1"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine (2 CPUs, no dashboard, on 127.0.0.1), its address for --ray-address."""
    ray = pytest.importorskip("ray", reason="pip install -r requirements-cluster.txt")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def backend_options(backend, ray_cluster):
    return ["--backend", backend, *(["--ray-address", ray_cluster] if backend == "ray" else [])]


@pytest.mark.xdist_group("cluster")
def test_local_ray_and_slurm_write_the_same_table_byte_for_byte(tiny_mnist, tmp_path, ray_cluster):
    tables = {}
    for backend in ("local", "ray", "slurm"):
        out = tmp_path / backend
        result = run_script("sweep.py", "--dataset", "mnist", "--data-dir", tiny_mnist, *GRID,
                            *backend_options(backend, ray_cluster),
                            "--out-dir", out, "--figure", tmp_path / f"{backend}.png", timeout=240, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        tables[backend] = (out / "margin_sweep.md").read_bytes()
        run = out / "mnist-seen4" / "vgg8_arcface-d3-s0"
        assert {"all_vgg8_arcface_meta.json", "vgg8_arcface_last.pth", "train.log"} <= set(os.listdir(run))
        assert not [name for name in os.listdir(run.parent) if name.startswith(".")]  # no temporary folder left
    assert tables["ray"] == tables["local"] and tables["slurm"] == tables["local"]
    assert b"| 4 | `vgg8_arcface` | 3 | 1 |" in tables["local"]
    again = run_script("sweep.py", "--dataset", "mnist", "--data-dir", tiny_mnist, *GRID,
                       *backend_options("ray", ray_cluster), "--out-dir", tmp_path / "ray", "--figure",
                       tmp_path / "ray.png", timeout=240, check=False)
    assert again.returncode == 0 and "2 of 2 runs done; training 0" in again.stdout  # resume is the driver's


def training_processes(out_dir):
    """{pid: parent pid} of the train.py processes whose run goes to out_dir (a Ray worker's scratch folder)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if any(arg.endswith(b"train.py") for arg in argv) and str(out_dir).encode() in b" ".join(argv):
            found[int(pid)] = parent
    return found


def start_sweep(tiny_mnist, out, ray_cluster, *extra):
    return subprocess.Popen([sys.executable, "sweep.py", "--dataset", "mnist", "--data-dir", tiny_mnist, *GRID,
                             *backend_options("ray", ray_cluster), "--out-dir", str(out), "--figure",
                             str(out) + ".png", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.mark.xdist_group("cluster")
def test_a_ray_worker_killed_in_the_middle_of_a_run_is_retried_and_the_sweep_finishes(tiny_mnist, tmp_path,
                                                                                      ray_cluster):
    out = tmp_path / "sweep"
    sweep = start_sweep(tiny_mnist, out, ray_cluster, "--epochs", "3")
    try:
        running = wait_for(lambda: training_processes(tiny_mnist), 120, "no run started on the Ray workers")
        pid, worker = sorted(running.items())[0]
        time.sleep(1.0)  # into the run
        os.kill(worker, signal.SIGKILL)  # the worker process, and with it its train.py
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                 10, "the run outlived its worker")
        stdout, stderr = sweep.communicate(timeout=240)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, stderr[-2000:]
    assert "0 of 2 runs done; training 2" in stdout and stdout.count(": done (") == 2
    for head in ("vgg8_softmax", "vgg8_arcface"):
        assert (out / "mnist-seen4" / f"{head}-d3-s0" / f"all_{head}_meta.json").exists()


@pytest.mark.xdist_group("cluster")
def test_a_driver_stopped_and_started_again_trains_only_what_is_left(tiny_mnist, tmp_path, ray_cluster):
    out = tmp_path / "sweep"
    one_at_a_time = ["--heads", "vgg8_softmax", "--seeds", "0", "1", "--cpus-per-run", "2"]
    sweep = start_sweep(tiny_mnist, out, ray_cluster, *one_at_a_time)
    lines = []
    try:
        for line in sweep.stdout:
            lines.append(line)
            if ": done (" in line:
                sweep.send_signal(signal.SIGINT)
                break
        _, stderr = sweep.communicate(timeout=60)
    finally:
        sweep.kill()
    assert sweep.returncode == 1 and "runs finished and kept; the same command trains the rest" in stderr, stderr
    assert not training_processes(tiny_mnist)  # the runs still out were cancelled
    again = start_sweep(tiny_mnist, out, ray_cluster, *one_at_a_time)
    stdout, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr[-2000:]
    assert "1 of 2 runs done; training 1 " in stdout and stdout.count(": done (") == 1


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


def test_a_run_stopped_between_the_two_renames_is_put_back(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    remote_run.install({"a.json": b"1"}, folder)
    rename = os.rename

    def interrupted(source, target):  # Ctrl-C as the returned run takes the good one's place
        if os.path.basename(source).startswith(".run.incoming-"):
            raise KeyboardInterrupt
        rename(source, target)

    monkeypatch.setattr(remote_run.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remote_run.install({"a.json": b"2"}, folder)
    assert sorted(os.listdir(tmp_path)) == ["run"] and (folder / "a.json").read_bytes() == b"1"


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
