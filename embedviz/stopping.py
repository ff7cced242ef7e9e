"""What ends a run before its last epoch, and the one line it prints: SIGINT or SIGTERM (at once, but
never in the middle of a save), a loss that becomes NaN or infinite, a save that fails, a training
step that cannot be captured as a CUDA graph, or a bad option or file found while setting up. Every
finished epoch stays saved, and the line says how to go on."""

import contextlib
import shlex
import signal
import sys

from embedviz.datasets import DatasetError
from embedviz.devices import PrecisionError
from embedviz.run_files import RunFileError


class Stop(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException, as KeyboardInterrupt, so that no `except Exception`
    on the way (reading a checkpoint, say) takes it for a fault."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Diverged(Exception):
    """The loss or the embeddings became NaN or infinite; `where`: "steps 1-50", say."""

    def __init__(self, where, loss):
        super().__init__(f"{where} (loss {loss})")


class GraphCaptureError(Exception):
    """The training step could not be captured as a CUDA graph; the message says why."""


class Stops:
    """with Stops(argv, out_dir) as stops: a run. Inside, SIGINT and SIGTERM raise Stop at once, except
    within stops.saving(), which holds them until the save is complete. A stop or fault ends the run
    with one line that names the epochs saved (stops.epoch, the one under way, and stops.last_saved
    are the loop's to set) and how to go on; after a signal, exit_code is 128 + its number."""

    def __init__(self, argv, out_dir):
        self.argv, self.out_dir = argv, out_dir
        self.epoch = self.last_saved = -1
        self.saving_now, self.pending, self.exit_code = False, None, 0

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.saving_now:
            self.pending = signum
        else:
            raise Stop(signum)

    @contextlib.contextmanager
    def saving(self):
        """A signal waits for the save; a failed write (a full disk, a folder taken away) ends the run."""
        self.saving_now = True
        try:
            yield
        except OSError as error:
            raise SystemExit(f"error: cannot save to {self.out_dir} ({error.strerror or error}); "
                             f"{self.saved()} saved there") from None
        finally:
            self.saving_now = False
        if self.pending is not None:
            raise Stop(self.pending)

    def __exit__(self, kind, error, traceback):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if isinstance(error, Stop):
            when = (f"during epoch {self.epoch}; {self.saved()} saved in {self.out_dir}; resume with: "
                    f"{self.resume_command()}" if self.epoch >= 0 else "before training started; no file was written")
            print(f"\nstopped by {error} {when}", file=sys.stderr)
            self.exit_code = 128 + error.signum
            return True
        if isinstance(error, Diverged):
            raise SystemExit(f"error: training diverged at epoch {self.epoch}, {error}; {self.saved()} saved in "
                             f"{self.out_dir}; try a lower --lr") from None
        if isinstance(error, GraphCaptureError):
            raise SystemExit(f"error: the training step could not be captured as a CUDA graph ({error}); "
                             f"{self.saved()} saved in {self.out_dir}; go on without graphs: "
                             f"{self.resume_command('--no-cuda-graphs')}") from None
        if isinstance(error, (DatasetError, RunFileError, PrecisionError)) or (
                isinstance(error, ValueError) and self.epoch < 0):  # while setting up: an option's value
            raise SystemExit(f"error: {error}") from None
        return False

    def saved(self):
        last = self.last_saved
        return "nothing was" if last < 0 else "epoch 0 was" if last == 0 else f"epochs 0-{last} were"

    def resume_command(self, *more):
        argv = [*self.argv, *more]
        return shlex.join(["python", "train.py", *argv, *([] if "--resume" in argv else ["--resume"])])
