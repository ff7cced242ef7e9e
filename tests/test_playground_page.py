"""The playground in headless Chromium: started in the test's process on a free port, on mnist-sample;
it trains, keeps the camera the user turned, embeds a drawn digit, restarts when m changes, says what
is wrong with a bad address, and asks for nothing beyond 127.0.0.1. A module of its own: its app
trains in a thread until the module's tests end, and no other test may share the process's random
state with it meanwhile."""

import json
import time

import pytest

import playground
from conftest import wait_for


@pytest.fixture(scope="module")
def app_address():
    """The playground, started in this process on a free port; stopped, its port freed, at the end."""
    server, thread = playground.start(["--port", "0", "--device", "cpu"])
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the training thread or the server did not stop"


SPHERE = "document.querySelector('#sphere .js-plotly-plot')"


@pytest.mark.xdist_group("browser")
def test_the_playground_trains_keeps_the_camera_embeds_a_drawing_and_stays_local(app_address, chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chrome.get(app_address)
    first_x = (f"const g = {SPHERE}; const t = g && g.data && g.data[0]; "
               "return t && t.x && t.x.length ? t.x[0] : null;")
    before = wait_for(lambda: chrome.execute_script(first_x), 60, "no points on the sphere")
    wait_for(lambda: chrome.execute_script(first_x) != before, 30, "the points do not move: no training")
    assert "epoch" in chrome.find_element(By.ID, "status").text

    camera = {"eye": {"x": 0.3, "y": -2.0, "z": 0.4}, "up": {"x": 0, "y": 0, "z": 1}, "center": {"x": 0, "y": 0, "z": 0}}
    chrome.execute_script(f"Plotly.relayout({SPHERE}, {{'scene.camera': {json.dumps(camera)}}});")  # as a user turns it
    moved = chrome.execute_script(first_x)
    wait_for(lambda: chrome.execute_script(first_x) != moved, 30, "no update after turning the camera")
    moved = chrome.execute_script(first_x)
    wait_for(lambda: chrome.execute_script(first_x) != moved, 30, "no second update after turning the camera")
    eye = chrome.execute_script(f"return {SPHERE}._fullLayout.scene.camera.eye;")
    assert eye == pytest.approx(camera["eye"], abs=1e-6), eye

    canvas = chrome.find_element(By.CSS_SELECTOR, "#canvas .nsewdrag")  # draw a 1: a stroke down the middle
    ActionChains(chrome).move_to_element_with_offset(canvas, 0, -60).click_and_hold() \
        .move_by_offset(2, 40).move_by_offset(2, 40).move_by_offset(0, 30).release().perform()
    text = wait_for(lambda: chrome.find_element(By.ID, "digit-text").text, 20, "the drawing was not embedded")
    assert text.startswith("nearest class: ") and "angle to each class weight" in text
    digit = wait_for(lambda: chrome.execute_script(f"const t = {SPHERE}.data[11]; return t.x && t.x.length ? t : null;"),
                     10, "the drawn digit's point is not on the sphere")
    assert digit["name"] == "your digit" and len(digit["x"]) == 1
    assert chrome.execute_script("return document.querySelector('#digit-logits .js-plotly-plot').data.length;") == 2
    chrome.find_element(By.ID, "clear").click()  # cleared, the same stroke again is embedded again
    wait_for(lambda: chrome.find_element(By.ID, "digit-text").text == "", 10, "clear left the digit's text")
    time.sleep(1)
    canvas = chrome.find_element(By.CSS_SELECTOR, "#canvas .nsewdrag")
    ActionChains(chrome).move_to_element_with_offset(canvas, 0, -60).click_and_hold() \
        .move_by_offset(2, 40).move_by_offset(2, 40).move_by_offset(0, 30).release().perform()
    wait_for(lambda: chrome.find_element(By.ID, "digit-text").text.startswith("nearest class: "), 20,
             "the same stroke, drawn again after clear, was not embedded")

    requests = [json.loads(entry["message"])["message"] for entry in chrome.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    network = {url for url in urls if url.split(":")[0] in ("http", "https", "ws", "wss")}  # not chrome:, data:
    assert network and all(url.startswith(app_address) for url in network), network
    severe = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe


@pytest.mark.xdist_group("browser")
def test_a_changed_margin_restarts_the_run_and_bad_addresses_say_so(app_address, chrome):
    chrome.get(app_address + "?head=arcface&m=0.5&s=15&dim=3")
    logit = ("const g = document.querySelector('#logit .js-plotly-plot'); "
             "return g && g.data && g.data[1] ? g.data[1].y[200] : null;")
    at_100 = wait_for(lambda: chrome.execute_script(logit), 60, "no target logit drawn")
    status = "const s = document.getElementById('status'); return s ? s.innerText : '';"
    wait_for(lambda: "epoch" in chrome.execute_script(status), 60, "not training")
    chrome.get(app_address + "?head=arcface&m=0.2&s=15&dim=3")  # m changed: the curve and the run
    wait_for(lambda: (v := chrome.execute_script(logit)) is not None and abs(v - at_100) > 1e-6, 30,
             "the target logit did not change with m")
    assert "m=0.2" in chrome.current_url
    chrome.get(app_address + "?m=abc&s=-1&head=nope&dim=100")
    note = wait_for(lambda: chrome.execute_script("const n = document.getElementById('note'); return n && n.innerText;"),
                    30, "no note for the bad address")
    for fragment in ("m='abc'", "s='-1'", "head='nope'", "dim='100'"):
        assert fragment in note, note
    chrome.get(app_address + "?controls=off")
    hidden = "const c = document.getElementById('controls'); return !!c && c.style.display === 'none';"
    wait_for(lambda: chrome.execute_script(hidden), 30, "controls=off shows the controls")


@pytest.mark.xdist_group("browser")
def test_space_plays_and_pauses_and_two_tabs_follow_one_training(app_address, chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chrome.get(app_address)
    def text(element):  # "" until Dash has built the page
        return chrome.execute_script(f"const e = document.getElementById('{element}'); return e ? e.innerText : '';")

    status, button = (lambda: text("status")), (lambda: text("play"))
    wait_for(lambda: "epoch" in status(), 60, "no training shown")
    if button() == "play":  # an earlier test's state: playing is the page's own start
        chrome.find_element(By.ID, "play").click()
    wait_for(lambda: button() == "pause" and "paused" not in status(), 20, "the training does not play")
    ActionChains(chrome).send_keys(Keys.SPACE).perform()
    wait_for(lambda: button() == "play" and status().endswith("; paused"), 20, "space did not pause the training")
    def settled():  # the steps under way when it paused are shown once they are done
        before = status()
        time.sleep(1.0)
        return status() == before

    wait_for(settled, 20, "the paused training's status keeps changing")
    paused_at = status()
    time.sleep(1.5)
    assert status() == paused_at  # paused: no step taken since

    first = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    chrome.get(app_address)  # a second page on the same training, paused
    wait_for(lambda: status() == paused_at and button() == "play", 60,
             "the second tab does not show the paused training")
    ActionChains(chrome).send_keys(Keys.SPACE).perform()  # played from the second tab
    wait_for(lambda: button() == "pause" and status() != paused_at, 30, "space in the second tab did not play")
    chrome.close()
    chrome.switch_to.window(first)
    wait_for(lambda: button() == "pause" and "paused" not in status() and status() != paused_at, 30,
             "the first tab does not follow the training played from the second")
