"""interactive.py: the figure it builds, the page it writes, and that page in a real headless Chromium."""

import base64
import io
import os
import re

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from conftest import wait_for
from embedviz.interactive import build_figure, write_html
from embedviz.render import class_colors
from embedviz.sampling import balanced_rows


def make_run(n_frames=4, n_train=40, n_val=30, class_names=("zero", "one", "two"), weights=False, seed=0):
    """A small run in load_run's layout: embeddings (frames, n, 3) that move from frame to frame."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    labels = np.arange(n) % len(class_names)
    embeddings = rng.normal(size=(n_frames, n, 3)).astype(np.float32) * rng.uniform(0.5, 3, size=(n_frames, n, 1))
    history = []
    for k in range(n_frames):
        entry = {"epoch": k, "val_accuracy": None if k == 0 else 0.5 + 0.1 * k}
        if weights:  # a cosine head: no weights before the first epoch, then unnormalised ones
            entry["class_weights"] = None if k == 0 else (2 * rng.normal(size=(len(class_names), 3))).tolist()
        history.append(entry)
    meta = {"model": "vgg8_test", "class_names": list(class_names), "history": history,
            "splits": {"train": [0, n_train], "val": [n_train, n]}, "options": {"epochs": n_frames - 1}}
    return embeddings, labels, meta


def unit(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def class_trace_data(figure, frame):
    """{class name: (customdata, (m, 3) points)} of one frame; customdata from the base traces
    when the frames do not carry their own."""
    names = [trace["name"] for trace in figure["data"][1:] if trace["name"] != "class weights"]
    frame_data = figure["frames"][frame]["data"]
    result = {}
    for i, name in enumerate(names):
        trace = frame_data[i]
        indices = trace.get("customdata", figure["data"][1 + i]["customdata"])
        result[name] = (np.array(indices, dtype=np.int64), np.stack([trace[a] for a in "xyz"], 1).reshape(-1, 3))
    return result


# ---------------------------------------------------------------- subsample

def test_subsample_is_bounded_class_balanced_and_seeded():
    labels = np.repeat([0, 1, 2, 3], [500, 300, 12, 100])
    rows = balanced_rows(labels, 200, seed=3)
    assert len(rows) == 200 and len(np.unique(rows)) == 200 and np.all(np.diff(rows) > 0)
    counts = np.bincount(labels[rows], minlength=4)
    assert counts[2] == 12  # a small class is taken whole...
    big = counts[[0, 1, 3]]
    assert big.max() - big.min() <= 1  # ...and the others share the rest equally
    np.testing.assert_array_equal(rows, balanced_rows(labels, 200, seed=3))
    assert not np.array_equal(rows, balanced_rows(labels, 200, seed=4))
    np.testing.assert_array_equal(balanced_rows(labels, 10_000, seed=0), np.arange(len(labels)))


def test_figure_draws_the_same_bounded_balanced_rows_of_the_split_in_every_frame():
    embeddings, labels, meta = make_run(n_train=300, n_val=301)
    labels[300:] = np.repeat([0, 1, 2], [200, 90, 11])  # unbalanced, and sorted: the first rows are all zeros
    figure = build_figure(embeddings, labels, meta, "val", max_points=31, seed=1)
    first = None
    for k in range(len(embeddings)):
        rows = np.concatenate([indices for indices, _ in class_trace_data(figure, k).values()])
        assert len(rows) == 31 and np.all((rows >= 300) & (rows < 601))
        counts = np.bincount(labels[rows], minlength=3)
        assert counts.max() - counts.min() <= 1
        first = rows if first is None else first
        np.testing.assert_array_equal(np.sort(rows), np.sort(first))


# ---------------------------------------------------------------- the figure

def test_one_animation_frame_and_slider_step_per_epoch_with_titles():
    embeddings, labels, meta = make_run(n_frames=5)
    meta["history"] = [{**entry, "epoch": 10 + k} for k, entry in enumerate(meta["history"])]
    figure = build_figure(embeddings, labels, meta, "val")
    assert len(figure["frames"]) == 5
    steps = figure["layout"]["sliders"][0]["steps"]
    assert [step["label"] for step in steps] == ["10", "11", "12", "13", "14"]
    assert [step["args"][0] for step in steps] == [[frame["name"]] for frame in figure["frames"]]
    titles = [frame["layout"]["title"]["text"] for frame in figure["frames"]]
    assert titles[0] == "vgg8_test - Validation - epoch 10"  # no accuracy before training
    assert titles[3] == "vgg8_test - Validation - epoch 13 - val acc 80.0%"
    assert [b["label"].split()[-1] for b in figure["layout"]["updatemenus"][0]["buttons"]] == ["Play", "Pause"]
    # the points move from frame to frame
    assert class_trace_data(figure, 0)["one"][1].tolist() != class_trace_data(figure, 4)["one"][1].tolist()


def test_points_are_the_normalised_rows_rounded_and_hover_names_class_and_index():
    embeddings, labels, meta = make_run()
    figure = build_figure(embeddings, labels, meta, "train", max_points=1000)
    class_traces = [trace for trace in figure["data"] if trace.get("showlegend", True)]
    assert [trace["name"] for trace in class_traces] == ["zero", "one", "two"]
    for trace in class_traces:
        assert f"class {trace['name']}" in trace["hovertemplate"] and "%{customdata}" in trace["hovertemplate"]
    for k in range(len(embeddings)):
        for c, (name, (indices, points)) in enumerate(class_trace_data(figure, k).items()):
            assert np.all(labels[indices] == c) and np.all(indices < 40)
            np.testing.assert_allclose(points, unit(embeddings[k, indices].astype(np.float64)), atol=5.1e-5)
            np.testing.assert_array_equal(points, np.round(points, 4))  # 4 decimals, nothing more
    assert len(np.concatenate([i for i, _ in class_trace_data(figure, 0).values()])) == 40


def test_bad_rows_are_left_out_of_their_frame_only():
    embeddings, labels, meta = make_run()
    embeddings[1, 41] = np.nan
    embeddings[2, 42] = 0.0
    embeddings[2, 43, 0] = np.inf
    figure = build_figure(embeddings, labels, meta, "val")
    shown = [set(np.concatenate([i for i, _ in class_trace_data(figure, k).values()]).tolist()) for k in range(4)]
    every = set(range(40, 70))
    assert shown[0] == every and shown[3] == every
    assert shown[1] == every - {41} and shown[2] == every - {42, 43}
    assert all("customdata" in trace for frame in figure["frames"] for trace in frame["data"][:3])
    for k in range(4):
        assert all(np.isfinite(points).all() for _, points in class_trace_data(figure, k).values())


def test_class_colors_legend_sphere_and_fixed_axes():
    embeddings, labels, meta = make_run()
    figure = build_figure(embeddings, labels, meta, "val")
    sphere, *classes = figure["data"]
    assert [trace["marker"]["color"] for trace in classes] == [to_hex(c) for c in class_colors(3)]
    assert sphere["showlegend"] is False and sphere["hoverinfo"] == "skip" and sphere["mode"] == "lines"
    ring = np.array([[x, y, z] for x, y, z in zip(sphere["x"], sphere["y"], sphere["z"]) if x is not None])
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 1, atol=1e-3)
    scene = figure["layout"]["scene"]
    assert scene["aspectmode"] == "cube"
    for axis in ("xaxis", "yaxis", "zaxis"):
        assert scene[axis]["range"] == [-1.05, 1.05] and scene[axis]["autorange"] is False


def test_class_weights_are_drawn_as_outlined_diamonds_when_the_head_has_them():
    embeddings, labels, meta = make_run(weights=True)
    figure = build_figure(embeddings, labels, meta, "val")
    weights = figure["data"][-1]
    assert weights["name"] == "class weights" and len(figure["data"]) == 5
    assert weights["marker"]["symbol"] == "diamond" and weights["marker"]["line"]["color"] == "black"
    assert figure["frames"][0]["data"][-1]["x"] == []  # epoch 0: no weights
    for k in (1, 3):
        trace = figure["frames"][k]["data"][-1]
        expected = unit(np.array(meta["history"][k]["class_weights"]))
        np.testing.assert_allclose(np.stack([trace[a] for a in "xyz"], 1), expected, atol=5.1e-5)
        assert trace["text"] == ["zero", "one", "two"]
        assert trace["marker"]["color"] == [to_hex(c) for c in class_colors(3)]
    assert figure["frames"][1]["traces"] == [1, 2, 3, 4]
    # a softmax head's history: no weights trace at all
    assert len(build_figure(*make_run(), "val")["data"]) == 4


def test_only_3d_embeddings_are_drawn():
    embeddings, labels, meta = make_run()
    with pytest.raises(ValueError, match="only 3-D"):
        build_figure(embeddings[..., :2], labels, meta, "val")


# ---------------------------------------------------------------- the page

def test_page_is_self_contained_and_small(tmp_path):
    from plotly.offline import get_plotlyjs

    embeddings, labels, meta = make_run(n_frames=6, n_train=10, n_val=5000)
    path = tmp_path / "page.html"
    size = write_html(str(path), embeddings, labels, meta, "val", max_points=300)
    html = path.read_text(encoding="utf-8")
    assert size == os.path.getsize(path)
    assert get_plotlyjs()[:1000] in html and "plotly.js v" in html  # the bundle itself, inline
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "the page loads a script from elsewhere"
    assert "https://cdn.plot.ly/plotly" not in html
    # 300 points x 6 frames of data: a few tens of kilobytes beyond plotly.js, not 5,000 points' worth
    assert size - len(get_plotlyjs()) < 200_000
    figure_json = html[html.rindex("Plotly.newPlot("):]  # the call, after the bundle
    assert figure_json.count('"name":"one"') == 1
    assert figure_json.count('"customdata"') == 3  # the row indices once, not in every frame


# ---------------------------------------------------------------- in a browser

@pytest.mark.xdist_group("browser")
def test_page_plays_in_a_browser_and_the_slider_moves_the_points(chrome, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    embeddings, labels, meta = make_run(n_frames=6, n_val=300, weights=True)
    path = tmp_path / "page.html"
    write_html(str(path), embeddings, labels, meta, "val")
    chrome.get(path.as_uri())
    graph = "document.querySelector('.js-plotly-plot')"
    wait_for(lambda: chrome.execute_script(f"const g = {graph}; return !!(g && g.data && g._fullLayout);"), 10,
             "the page shows no plotly graph")
    state = chrome.execute_script(f"""const g = {graph};
        return {{traces: g.data.length, names: g.data.map(t => t.name), frames: g._transitionData._frames.length,
                 webgl: !!(g._fullLayout.scene._scene && g._fullLayout.scene._scene.glplot),
                 title: g._fullLayout.title.text}};""")
    assert state["traces"] == 5 and state["names"][1:] == ["zero", "one", "two", "class weights"]
    assert state["frames"] == 6 and state["webgl"], state
    assert state["title"] == "vgg8_test - Validation - epoch 0"

    read_x = f"return Array.from({graph}.data[2].x);"  # the class "one"
    before = chrome.execute_script(read_x)
    assert len(before) == 100
    # a real click at the right end of the slider's rail: the slider jumps to the last epoch
    rail = chrome.find_element(By.CSS_SELECTOR, ".slider-rail-touch-rect")
    ActionChains(chrome).move_to_element_with_offset(rail, rail.size["width"] // 2 - 3, 0).click().perform()
    wait_for(lambda: chrome.execute_script(read_x) != before, 10, "clicking the slider did not move the points")
    after = chrome.execute_script(read_x)
    expected = np.round(unit(embeddings[5, 40:340:3].astype(np.float64))[:, 0], 4)
    np.testing.assert_allclose(after, expected, atol=1e-9)
    assert chrome.execute_script(f"return {graph}.layout.sliders[0].active;") == 5
    grip_gap = ("const [grip, rail] = ['.slider-grip-rect', '.slider-rail-touch-rect'].map("
                "s => document.querySelector(s).getBoundingClientRect().right); return Math.abs(grip - rail);")
    wait_for(lambda: chrome.execute_script(grip_gap) < 2, 5,  # the grip slides there in an animation
             "the slider's grip is not at the end of its rail")
    assert chrome.execute_script(f"return {graph}._fullLayout.title.text;").endswith("epoch 5 - val acc 100.0%")
    weights = chrome.execute_script(f"const t = {graph}._fullData[4]; "
                                    "return [t.x.length, t.marker.symbol, Array.from(t.marker.color)];")
    assert weights == [3, "diamond", [to_hex(c) for c in class_colors(3)]]

    severe = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, f"console errors: {severe}"


@pytest.mark.xdist_group("browser")
def test_hovering_a_point_shows_its_image_enlarged_with_its_class_and_sample(chrome, tmp_path):
    embeddings, labels, meta = make_run(n_frames=3, n_train=40, n_val=60)
    images = np.random.default_rng(1).integers(0, 256, size=(100, 12, 12, 3), dtype=np.uint8)
    path = tmp_path / "page.html"
    write_html(str(path), embeddings, labels, meta, "val", images=images)
    chrome.get(path.as_uri())
    graph = "document.querySelector('.js-plotly-plot')"
    wait_for(lambda: chrome.execute_script(f"const g = {graph}; return !!(g && g._fullLayout && g.emit);"), 10,
             "the page shows no plotly graph")
    # plotly's own event, as a hover over the point of row 57 (class "zero", as 57 % 3 == 0) emits it
    shown = chrome.execute_script(f"""const g = {graph};
        g.emit('plotly_hover', {{points: [{{customdata: 57, data: g.data[1]}}]}});
        const box = document.getElementById('hovered-image');
        return [box.style.display, box.querySelector('img').src, box.textContent];""")
    display, src, text = shown
    assert display == "block" and text == "zero, sample 57"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, images[57])  # the point's own image, losslessly
    chrome.execute_script(f"{graph}.emit('plotly_unhover', {{}});")
    assert chrome.execute_script("return document.getElementById('hovered-image').style.display;") == "none"
    thumbs = re.findall(r'"(\d+)": "data:image/png;base64,', path.read_text())  # in the page itself
    assert sorted(map(int, thumbs)) == list(range(40, 100))  # one per point drawn


def test_unseen_classes_are_open_rings_named_unseen_in_the_validation_page():
    embeddings, labels, meta = make_run(n_train=30, n_val=30, weights=True)
    labels[45:] = 2  # rows 45-59: a class held out of training, after the validation rows
    labels[30:45] = np.arange(15) % 2
    meta["splits"] = {"train": [0, 30], "val": [30, 45], "unseen": [45, 60]}
    meta["unseen_classes"] = [2]
    for entry in meta["history"]:
        if entry["class_weights"] is not None:
            entry["class_weights"][2] = None
    figure = build_figure(embeddings, labels, meta, "val", max_points=1000)
    traces = {trace["name"]: trace for trace in figure["data"][1:]}
    assert traces["two (unseen)"]["marker"]["symbol"] == "circle-open"
    assert "symbol" not in traces["zero"]["marker"]
    assert sorted(traces["two (unseen)"]["customdata"]) == list(range(45, 60))  # the val page shows them
    assert len(traces["class weights"]["x"]) == 0 and len(figure["frames"][1]["data"][-1]["x"]) == 2
