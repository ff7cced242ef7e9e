"""One train.py run on a cluster's worker: trained in a scratch folder and its files sent back as the
result (no shared disk needed), or trained in place where the disk is shared; and, on the driver, a
returned run written into its folder through a temporary one and a rename.

    python embedviz/remote_run.py FRACTION train.py-options...   # train.py with FRACTION of the GPU's memory
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG = "train.log"


@dataclass
class Outcome:
    status: int  # train.py's exit status; -1: the run never finished (its worker was lost)
    log: str
    node: str
    files: dict = None  # {name: bytes} of the run's folder; None where they stayed on a shared disk

    def reason(self):
        lines = [line for line in self.log.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.status}"


def pack(folder):
    """{name: bytes} of the files in `folder` (a run's folder is flat)."""
    if not os.path.isdir(folder):
        return {}
    files = {}
    for name in sorted(os.listdir(folder)):
        if os.path.isfile(os.path.join(folder, name)):
            with open(os.path.join(folder, name), "rb") as f:
                files[name] = f.read()
    return files


def unpack(files, folder):
    os.makedirs(folder, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(folder, os.path.basename(name)), "wb") as f:
            f.write(content)


def install(files, folder):
    """Writes a returned run into `folder`: first into a temporary folder beside it, then renamed over it,
    so that a run half written never replaces a good one."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    incoming = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.incoming-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(incoming, 0o777 & ~umask)  # a folder as os.makedirs makes it, not mkdtemp's private one
    old = None
    try:
        unpack(files, incoming)
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=parent)
            os.rename(folder, os.path.join(old, "run"))
        os.rename(incoming, folder)
    except BaseException:
        if old and not os.path.exists(folder):  # stopped between the two renames: the good run put back
            os.rename(os.path.join(old, "run"), folder)
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    finally:
        if old:
            shutil.rmtree(old, ignore_errors=True)


try:  # loaded here: die_with_parent runs between fork and exec, where loading a library can deadlock
    LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux
    LIBC = None


def die_with_parent():
    """Linux: the run is killed when the process that started it dies (a lost worker leaves no orphan)."""
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def train_command(argv, memory_fraction=None):
    if memory_fraction:
        return [sys.executable, os.path.abspath(__file__), repr(memory_fraction), *argv]
    return [sys.executable, os.path.join(ROOT, "train.py"), *argv]


def with_option(argv, option, value):
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def train(name, argv, files, max_return_bytes, threads=None, memory_fraction=None, folder=None):
    """Runs train.py with `argv` on this node. Without `folder`: in a scratch folder that starts with
    `files` (a stopped run's), under --out-dir `name`, and returns the folder's files when they fit in
    max_return_bytes. With `folder` (a shared disk): in place, returning the status and log alone."""
    node = socket.gethostname()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryDirectory(prefix="sweep-run-") as scratch:
        out_dir = folder or os.path.join(scratch, name)
        unpack(files or {}, out_dir)
        log_path = os.path.join(out_dir, LOG)
        with open(log_path, "w") as log:
            status = subprocess.run(train_command(with_option(argv, "--out-dir", folder or name), memory_fraction),
                                    stdout=log, stderr=subprocess.STDOUT, cwd=folder and ROOT or scratch, env=env,
                                    preexec_fn=die_with_parent).returncode
        with open(log_path, errors="replace") as f:
            text = f.read()
        if folder:
            return Outcome(status, text, node)
        returned = pack(out_dir)
        size = sum(len(content) for content in returned.values())
        if size > max_return_bytes:
            line = (f"error: the run's folder holds {size / 2**20:.0f} MB, over --max-return-mb "
                    f"{max_return_bytes / 2**20:.0f}: raise it, or train on a shared disk (--shared-dir)")
            return Outcome(status or 1, text + line + "\n", node)
        return Outcome(status, text, node, returned)


if __name__ == "__main__":
    sys.path[0] = ROOT  # not embedviz/, whose modules' names (datasets, metrics) could hide packages
    import runpy

    import torch

    fraction = float(sys.argv[1])
    if torch.cuda.is_available():  # its share of the GPU: Ray schedules fractions of one but enforces none
        torch.cuda.set_per_process_memory_fraction(fraction)
    sys.argv = [os.path.join(ROOT, "train.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
