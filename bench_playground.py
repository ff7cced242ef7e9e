"""Benchmark of the playground with its page open in headless Chromium (Debian's chromium and
chromium-driver), on this machine's CPU:

    python bench_playground.py --minutes 30

Printed: how long a step's points take to be on screen after the update that holds them is made; how
long a drawn digit's point and logits take to be on screen after the stroke ends, while training runs;
the size of the page's updates; the playground's training images per second against train.py's on the
same settings (fp32 both, so that a timing does not choose the precision), with the page open and then
with none (the browser's share of the cores apart); and the resident memory of the playground's process
over the minutes. A benchmark, not a test: nothing is asserted.
"""

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time

ON_SCREEN = """
window.__updates = [];
new MutationObserver(() => {
    const made = Number(document.getElementById('stamp').innerText);
    requestAnimationFrame(() => requestAnimationFrame(() => window.__updates.push([Date.now() / 1000, made])));
}).observe(document.getElementById('stamp'), {childList: true, characterData: true, subtree: true});
"""
DIGIT_SHOWN = "const t = document.getElementById('digit-text'); return !!t && t.innerText.startsWith('nearest');"


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long the playground trains with the page open")
    p.add_argument("--strokes", type=int, default=10, help="digits drawn while it trains")
    p.add_argument("--alone-seconds", type=float, default=60.0,
                   help="then how long it trains with no page open, for its rate without a browser")
    args = p.parse_args(argv)

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
    import playground
    import train
    from conftest import chromium_driver, quit_and_clean

    server, server_thread = playground.start(["--port", "0", "--device", "cpu", "--precision", "fp32"])
    chrome = chromium_driver()
    try:
        chrome.get(f"http://127.0.0.1:{server.port}/")
        while not chrome.execute_script("return !!document.getElementById('stamp') && "
                                        "!!document.querySelector('#sphere .js-plotly-plot');"):
            time.sleep(0.1)
        chrome.execute_script(ON_SCREEN)
        started, memory, sizes, digits = time.monotonic(), [], {}, []
        stroke_times = [started + (k + 1) * args.minutes * 60 / (args.strokes + 1) for k in range(args.strokes)]
        while time.monotonic() - started < args.minutes * 60:
            memory.append((time.monotonic() - started, rss_mb()))
            if stroke_times and time.monotonic() >= stroke_times[0]:
                stroke_times.pop(0)
                chrome.find_element(By.ID, "clear").click()
                while chrome.execute_script(DIGIT_SHOWN):
                    time.sleep(0.05)
                time.sleep(1.0)  # the canvas drawn anew
                canvas = chrome.find_element(By.CSS_SELECTOR, "#canvas .nsewdrag")
                ActionChains(chrome).move_to_element_with_offset(canvas, -30, -50).click_and_hold() \
                    .move_by_offset(60, 0).move_by_offset(-40, 100).release().perform()
                released = time.perf_counter()  # the stroke's end, as the page saw it, give or take a few ms
                while not chrome.execute_script(DIGIT_SHOWN) and time.perf_counter() - released < 10:
                    time.sleep(0.005)
                digits.append(1000 * (time.perf_counter() - released))
            for entry in chrome.get_log("performance"):  # the responses' sizes, before the log is dropped
                message = json.loads(entry["message"])["message"]
                if message["method"] == "Network.responseReceived" and "_dash-update" in message["params"]["response"]["url"]:
                    sizes[message["params"]["requestId"]] = None
                elif message["method"] == "Network.loadingFinished" and message["params"]["requestId"] in sizes:
                    sizes[message["params"]["requestId"]] = message["params"]["encodedDataLength"]
            time.sleep(5)
        updates = chrome.execute_script("return window.__updates;")
        status = chrome.find_element(By.ID, "status").text
        playground_rate = float(status.split(";")[1].split()[0].replace(",", ""))
    finally:
        quit_and_clean(chrome)
        server.shutdown()
        server_thread.join()
    alone = playground.training(device="cpu", precision="fp32")  # its updates made, no page to show them
    time.sleep(args.alone_seconds)
    alone_rate = alone.latest().images_per_second
    alone.close()
    with tempfile.TemporaryDirectory() as out_dir, contextlib.redirect_stdout(io.StringIO()):
        train.main(["--dataset", "mnist-sample", "--epochs", "4", "--out-dir", out_dir, "--device", "cpu",
                    "--precision", "fp32"])
        with open(os.path.join(out_dir, "all_vgg8_arcface_meta.json")) as f:
            history = json.load(f)["history"]
    rate = 4000 / statistics.median(entry["train_seconds"] for entry in history[2:])
    latencies = sorted(1000 * (shown - made) for shown, made in updates)
    payloads = sorted(size for size in sizes.values() if size)
    steady = [mb for t, mb in memory if t >= 60]
    lines = [f"{args.minutes:g} minutes on {os.cpu_count()} CPUs, the page open in headless Chromium:",
             f"updates on screen: {len(latencies)}, {statistics.median(latencies):.0f} ms after they were made (median; "
             f"95th percentile {latencies[int(0.95 * (len(latencies) - 1))]:.0f} ms, most {latencies[-1]:.0f} ms)",
             f"drawn digits on screen: {len(digits)}, {statistics.median(digits or [math.nan]):.0f} ms after the "
             f"stroke's end (median; most {max(digits or [math.nan]):.0f} ms)",
             f"updates' size: median {statistics.median(payloads) / 1e3:.1f} KB, most {payloads[-1] / 1e3:.1f} KB "
             f"({len(payloads)} responses)",
             f"training: {playground_rate:,.0f} images/s in the playground, {rate:,.0f} in train.py "
             f"({playground_rate / rate:.0%}); with no page open {alone_rate:,.0f} ({alone_rate / rate:.0%})",
             f"memory: {steady[0]:.0f} MB after the first minute, {steady[-1]:.0f} MB at the end "
             f"({steady[-1] - steady[0]:+.0f} MB; most {max(steady):.0f} MB)"]
    print("\n" + "\n  ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
