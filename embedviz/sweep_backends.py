"""Where sweep.py's runs train: train.py subprocesses on this machine (local), Ray tasks on a Ray cluster
(ray), or a Slurm job array through submitit (slurm). Each backend starts runs, hands back those that
finished, in the order they finish, as (folder, remote_run.Outcome), and cancels the rest on Ctrl-C.
ray and submitit are imported only here, only when asked for."""

import math
import os
import subprocess
import time

from embedviz import remote_run

EXCLUDED = ["data/", ".git/", "docs/", "tests/", "__pycache__/", "*.pth", "*.npy", "*.gif", "*.mp4"]


def need(module, backend):
    try:
        return __import__(module)
    except ImportError:
        raise SystemExit(f"error: --backend {backend} needs {module}: pip install -r requirements-cluster.txt") \
            from None


class Local:
    """train.py subprocesses on this machine, `jobs` at a time, each writing its folder's train.log."""

    def __init__(self, jobs, threads=None):
        self.at_once, self.threads, self.running = jobs, threads, {}

    def describe(self):
        return f"{self.at_once} at a time on this machine"

    def has_room(self):
        return len(self.running) < self.at_once

    def start(self, folder, argv, stopped):
        os.makedirs(folder, exist_ok=True)
        log = open(os.path.join(folder, remote_run.LOG), "w")  # noqa: SIM115 (closed when the run ends)
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {}))
        process = subprocess.Popen(remote_run.train_command(argv), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.running[folder] = process, log

    def finished(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            done = [(folder, process.returncode) for folder, (process, _) in self.running.items()
                    if process.poll() is not None]
            if done or time.monotonic() > deadline or not self.running:
                break
            time.sleep(0.05)
        outcomes = []
        for folder, status in done:
            self.running.pop(folder)[1].close()
            with open(os.path.join(folder, remote_run.LOG), errors="replace") as f:
                outcomes.append((folder, remote_run.Outcome(status, f.read(), "this machine")))
        return outcomes

    def close(self):
        pass

    def cancel(self):
        for process, log in self.running.values():
            process.terminate()  # train.py ends in one line, its saved epochs kept
            process.wait()
            log.close()
        self.running.clear()


class Remote:
    """What Ray and Slurm share: a run goes out with its stopped folder's files and comes back as an
    Outcome, whose files the driver writes (remote_run.install); on a shared disk they train in place."""

    def __init__(self, out_dir, max_return_mb, threads, memory_fraction, shared_dir):
        self.out_dir, self.max_return_bytes = out_dir, int(max_return_mb * 2**20)
        self.threads, self.memory_fraction, self.shared_dir = threads, memory_fraction, shared_dir
        self.running = {}

    def has_room(self):
        return True  # the cluster queues what does not fit now

    def arguments(self, folder, argv, stopped):
        files = None if self.shared_dir or not stopped else remote_run.pack(folder)
        return (os.path.relpath(folder, self.out_dir), argv, files, self.max_return_bytes, self.threads,
                self.memory_fraction, os.path.abspath(folder) if self.shared_dir else None)

    def record(self, folder, outcome):
        if outcome.files is not None:
            remote_run.install(outcome.files, folder)
        elif not self.shared_dir:  # the log alone: a good folder is left as it was
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, remote_run.LOG), "w") as f:
                f.write(outcome.log)
        return folder, outcome

    def close(self):
        pass


class Ray(Remote):
    """Every run a Ray task, retried once if its worker is lost; the project's code reaches the workers
    through the runtime environment's working directory."""

    def __init__(self, address, cpus, gpus, **options):
        super().__init__(threads=cpus, memory_fraction=gpus if 0 < gpus < 1 else None, **options)
        self.ray = need("ray", "ray")
        excluded = EXCLUDED + [os.path.relpath(os.path.abspath(self.out_dir), remote_run.ROOT) + "/"]
        code = {"working_dir": remote_run.ROOT, "excludes": excluded}
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # a Ray job (ray job submit --working-dir) ships it
            code = None
        # no address: a cluster of this machine alone, on its loopback address, not one that RAY_ADDRESS names
        here = {"address": address} if address else {"address": "local", "_node_ip_address": "127.0.0.1"}
        self.ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env=code, **here)
        self.task = self.ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(remote_run.train)
        resources = self.ray.cluster_resources()
        if gpus and not resources.get("GPU"):
            self.ray.shutdown()
            raise SystemExit(f"error: --gpus-per-run {gpus:g}, but the Ray cluster has no GPU")
        self.at_once = int(min(math.floor(resources.get("CPU", 0) / cpus + 1e-9),
                               math.floor(resources.get("GPU", 0) / gpus + 1e-9) if gpus else math.inf))
        self.resources = resources

    def has_room(self):
        return len(self.running) < max(1, 2 * self.at_once)  # a queue of a few; the rest packed when sent

    def describe(self):
        return (f"on Ray ({self.resources.get('CPU', 0):.0f} CPUs, {self.resources.get('GPU', 0):.0f} GPUs: "
                f"{self.at_once} at a time)")

    def start(self, folder, argv, stopped):
        self.running[self.task.remote(*self.arguments(folder, argv, stopped))] = folder

    def finished(self, timeout):
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        outcomes = []
        for ref in ready:
            folder = self.running.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:  # lost twice, or cancelled
                outcome = remote_run.Outcome(-1, f"error: {type(error).__name__}: {str(error).splitlines()[0]}", "?")
            outcomes.append(self.record(folder, outcome))
        return outcomes

    def cancel(self):
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()

    def close(self):
        self.ray.shutdown()


class Slurm(Remote):
    """A Slurm job array through submitit (its local executor where this machine has no Slurm); a job
    that ends without an outcome (its node lost) is submitted once more."""

    def __init__(self, folder, cpus, gpus, partition, minutes, jobs, **options):
        if gpus != int(gpus):
            raise SystemExit(f"error: --gpus-per-run {gpus}: Slurm gives whole GPUs; share one with --backend ray")
        super().__init__(threads=cpus, memory_fraction=None, **options)
        submitit = need("submitit", "slurm")
        self.executor = submitit.AutoExecutor(folder=folder)
        self.executor.update_parameters(cpus_per_task=cpus, gpus_per_node=int(gpus) or None, timeout_min=minutes,
                                        slurm_partition=partition, slurm_array_parallelism=jobs or 256)
        self.executor._executor.max_pickle_size_gb = 64  # stopped runs' folders go out in the pickles
        self.pending, self.retried = [], set()
        if self.executor.cluster == "slurm":
            self.at_once = jobs or math.inf  # Slurm queues the array
        else:  # submitit's local executor starts every job it is given at once
            self.at_once = jobs or max(1, (os.cpu_count() or 1) // cpus)

    def describe(self):
        where = "Slurm" if self.executor.cluster == "slurm" else "submitit's local executor (no Slurm here)"
        return f"as a job array on {where}"

    def has_room(self):
        return len(self.running) + len(self.pending) < self.at_once

    def start(self, folder, argv, stopped):
        self.pending.append((folder, self.arguments(folder, argv, stopped)))

    def submit(self):
        if self.pending:
            with self.executor.batch():
                jobs = [self.executor.submit(remote_run.train, *arguments) for _, arguments in self.pending]
            self.running.update({job: (folder, arguments) for job, (folder, arguments) in zip(jobs, self.pending)})
            self.pending.clear()

    def finished(self, timeout):
        self.submit()
        deadline = time.monotonic() + timeout
        while self.running and not any(job.done() for job in self.running) and time.monotonic() < deadline:
            time.sleep(0.2)
        outcomes = []
        for job in [job for job in self.running if job.done()]:
            folder, arguments = self.running.pop(job)
            try:
                outcomes.append(self.record(folder, job.result()))
                for pickle in (job.paths.result_pickle, job.paths.submitted_pickle):
                    pickle.unlink(missing_ok=True)  # the run's files, now written into its folder
            except Exception as error:  # noqa: BLE001 (submitit raises what the job's end was)
                if folder not in self.retried:
                    self.retried.add(folder)
                    self.pending.append((folder, arguments))
                else:
                    outcomes.append((folder, remote_run.Outcome(-1, f"error: {str(error).splitlines()[0]}", "?")))
        return outcomes

    def cancel(self):
        for job in self.running:
            job.cancel(check=False)
        self.running.clear()
