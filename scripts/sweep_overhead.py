"""What a cluster backend costs on one machine: the same tiny grid (2 heads, 1 size, 2 seeds, 1 epoch of
mnist-sample) through sweep.py --backend local, ray (Ray started by the sweep, its start included) and
slurm (submitit's local executor), each run one CPU, taken in turns `--repeats` times; printed: each
backend's median seconds and its ratio to local's, and the most memory that Ray's own processes took
at once while its sweeps ran (their resident memory added up; the runs' train.py not counted).

    pip install -r requirements-cluster.txt && python scripts/sweep_overhead.py --repeats 3
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ["--dataset", "mnist-sample", "--seen", "4", "--heads", "vgg8_softmax", "vgg8_arcface", "--dims", "3",
        "--seeds", "0", "1", "--epochs", "1", "--device", "cpu", "--cpus-per-run", "1"]


def ray_memory_mb():
    """Resident memory of this machine's Ray processes (its servers, agents and workers), added up."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ")
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        if (b"ray" in command.split(b" ")[0] or b"/ray/" in command or command.startswith(b"ray::")) \
                and b"train.py" not in command:
            total += rss
    return total / 1024


def sweep(backend, out_dir):
    """(seconds, most Ray memory in MB) of one sweep of the grid into out_dir."""
    start, peak = time.perf_counter(), 0.0
    process = subprocess.Popen([sys.executable, "sweep.py", *GRID, "--backend", backend, "--out-dir", out_dir,
                                "--figure", os.path.join(out_dir, "sweep.png")], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        if backend == "ray":
            peak = max(peak, ray_memory_mb())
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"error: the {backend} sweep failed: {process.stderr.read()[-500:]}")
    return time.perf_counter() - start, peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="sweeps of each backend, taken in turns")
    args = p.parse_args(argv)
    seconds, memory = {"local": [], "ray": [], "slurm": []}, []
    for repeat in range(args.repeats):
        for backend in seconds:
            with tempfile.TemporaryDirectory() as out_dir:
                took, peak = sweep(backend, out_dir)
            seconds[backend].append(took)
            memory += [peak] if backend == "ray" else []
            print(f"{repeat + 1}/{args.repeats} {backend}: {took:.1f} s", file=sys.stderr)
    local = statistics.median(seconds["local"])
    print(f"the grid of 4 runs, {os.cpu_count()} CPUs, {args.repeats} sweeps a backend (median seconds):")
    for backend, times in seconds.items():
        median = statistics.median(times)
        print(f"  {backend:6} {median:6.1f} s  ({median / local:.2f} x local, {median - local:+.1f} s)")
    print(f"Ray's processes: {max(memory):.0f} MB at most (resident, added up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
