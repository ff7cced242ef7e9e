"""Makes docs/playground.png from the app itself: the playground trains ArcFace on mnist-sample for
a while in headless Chromium (Debian's chromium and chromium-driver), a 7 is drawn on the canvas,
and the page is photographed.

    python docs/playground_screenshot.py [--seconds 40]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=40.0, help="training before the picture")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "playground.png"))
    args = p.parse_args(argv)

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    import playground
    from conftest import chromium_driver, quit_and_clean

    server, thread = playground.start(["--port", "0"])
    chrome = chromium_driver()
    try:
        chrome.get(f"http://127.0.0.1:{server.port}/?head=arcface&m=0.5&s=15&dim=3")
        time.sleep(args.seconds)
        canvas = chrome.find_element(By.CSS_SELECTOR, "#canvas .nsewdrag")
        ActionChains(chrome).move_to_element_with_offset(canvas, -45, -60).click_and_hold() \
            .move_by_offset(80, 0).move_by_offset(-45, 115).release().perform()
        time.sleep(3)
        chrome.save_screenshot(args.out)
    finally:
        quit_and_clean(chrome)
        server.shutdown()
        thread.join()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
