"""playground.py --run: a run that train.py wrote, shown at any epoch, following the epochs train.py
appends while the page is open, and embedding a drawn digit by the run's last checkpoint."""

import pytest

import playground
import train
from conftest import call_main
from conftest import wait_for

STATUS = "const s = document.getElementById('status'); return s ? s.innerText : '';"


def tiny_run(tiny_mnist, out_dir, epochs, *extra):
    result = call_main(train.main, "--data-dir", tiny_mnist, "--out-dir", out_dir, "--train-points", "100",
                       "--batch-size", "64", "--epochs", str(epochs), "--device", "cpu", *extra)
    assert result.returncode == 0, result.stderr


@pytest.mark.xdist_group("browser")
def test_a_run_on_disk_is_shown_followed_as_it_grows_and_embeds_a_drawing(tiny_mnist, tmp_path, chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    tiny_run(tiny_mnist, tmp_path, 1)
    server, thread = playground.start(["--port", "0", "--run", str(tmp_path)])
    try:
        chrome.get(f"http://127.0.0.1:{server.port}/")
        wait_for(lambda: chrome.execute_script(STATUS) == "vgg8_arcface, epoch 1 of 1", 30, "the run is not shown")
        controls = "const c = document.getElementById('controls'); return !!c && c.style.display === 'none';"
        assert chrome.execute_script(controls)  # nothing to train: no training controls
        tiny_run(tiny_mnist, tmp_path, 2, "--resume")  # train.py appends epoch 2 while the page is open
        wait_for(lambda: chrome.execute_script(STATUS) == "vgg8_arcface, epoch 2 of 2", 30,
                 "the new epoch did not appear")
        canvas = chrome.find_element(By.CSS_SELECTOR, "#canvas .nsewdrag")
        ActionChains(chrome).move_to_element_with_offset(canvas, -30, -50).click_and_hold() \
            .move_by_offset(60, 0).move_by_offset(-40, 100).release().perform()  # a 7
        text = wait_for(lambda: chrome.find_element(By.ID, "digit-text").text, 20, "the drawing was not embedded")
        assert text.startswith("nearest class: ")
    finally:
        server.shutdown()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_missing_run_is_refused_in_one_line(tmp_path):
    result = call_main(playground.main, "--run", str(tmp_path))
    assert result.returncode == 1 and result.stderr.strip().startswith(f"error: no run of vgg8_arcface in {tmp_path}")
