"""Every saved epoch of a run as one interactive, self-contained HTML page: a 3-D scatter on the unit
sphere that can be turned with the mouse, an epoch slider, a play button, and a legend that hides
and shows classes. plotly.js is embedded, so the page works offline.

    from embedviz import interactive, run_files
    embeddings, labels, meta = run_files.load_run("data", "vgg8_arcface")
    interactive.write_html("data/vgg8_arcface_Validation_Embeddings.html", embeddings, labels, meta, "val")
"""

import base64
import html
import io
import json

import numpy as np
from matplotlib.colors import to_hex
from PIL import Image

from embedviz import run_files
from embedviz.render import SPLIT_TITLES, class_colors, on_unit_sphere, placed
from embedviz.sampling import balanced_rows

DECIMALS = 4           # coordinates written to the page; 1e-4 of the radius is below a pixel
AXIS_RANGE = [-1.05, 1.05]
POINT_SIZE = 2.5       # marker diameter, pixels
WEIGHT_SIZE = 7        # class weight markers, pixels
PLAY_FRAME_MS = 125    # the GIF's pace


def coordinates(points):
    """(n, 3) -> {"x": [...], "y": [...], "z": [...]} as rounded Python floats.

    Lists, not arrays: plotly writes numpy arrays as base64 doubles, which rounding cannot shorten.
    """
    points = np.round(np.asarray(points, np.float64).reshape(-1, 3), DECIMALS) + 0.0  # + 0.0: no "-0.0"
    return {axis: points[:, i].tolist() for i, axis in enumerate("xyz")}


def sphere_wireframe(meridians=12, parallels=7, steps=48):
    """A faint unit-sphere wireframe: one line trace, its circles separated by None gaps."""
    t = np.linspace(0, 2 * np.pi, steps + 1)
    circles = []
    for phi in np.arange(meridians) * np.pi / meridians:  # great circles through the poles
        circles.append(np.stack([np.cos(phi) * np.cos(t), np.sin(phi) * np.cos(t), np.sin(t)], 1))
    for theta in np.linspace(0, np.pi, parallels + 2)[1:-1]:  # circles of latitude
        circles.append(np.stack([np.sin(theta) * np.cos(t), np.sin(theta) * np.sin(t),
                                 np.full_like(t, np.cos(theta))], 1))
    xyz = {axis: [] for axis in "xyz"}
    for circle in circles:
        for axis, values in coordinates(circle).items():
            xyz[axis] += values + [None]
    return {"type": "scatter3d", "mode": "lines", **xyz, "line": {"color": "rgb(200, 200, 200)", "width": 1},
            "hoverinfo": "skip", "showlegend": False, "name": "unit sphere"}


def frame_title(meta, split, entry):
    accuracy = "" if entry.get("val_accuracy") is None else f" - val acc {entry['val_accuracy']:.1%}"
    return f"{meta['model']} - {SPLIT_TITLES.get(split, split)} - epoch {entry['epoch']}{accuracy}"


def build_figure(embeddings, labels, meta, split, max_points=2000, seed=0, space="sphere"):
    """The plotly figure, as a dict, of rows meta["splits"][split] of every frame.

    embeddings (frames, n, 3) float, labels (n,) int. Traces: the sphere, one per class, then the class
    weights when the history holds any; each frame moves the class traces and the weights. space "raw":
    the embeddings before normalisation, in a box that the last frame fills (render.placed), no sphere.
    """
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    if embeddings.ndim != 3 or embeddings.shape[-1] != 3 or len(embeddings) == 0:
        raise ValueError(f"embeddings of shape {embeddings.shape}: only 3-D embeddings (frames, n, 3) are drawn")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, not {max_points}")
    history = meta["history"][:len(embeddings)]
    if len(history) < len(embeddings):
        raise ValueError(f"{len(embeddings)} frames but a history of {len(history)} epochs")
    class_names = [str(name) for name in meta["class_names"]]
    colors = [to_hex(color) for color in class_colors(len(class_names))]
    rows = page_rows(labels, meta, split, max_points, seed)
    points, valid, box = placed(embeddings[:, rows], space)  # (frames, rows, 3), (frames, rows), half-width
    edge = box / 1.05 if space == "raw" else 1.0  # where a raw view draws the weights' directions
    members = [labels[rows] == c for c in range(len(class_names))]
    weights = [entry.get("class_weights") for entry in history]
    has_weights = any(w is not None for w in weights)

    def frame_traces(k, with_indices):
        classes = [class_trace(points[k], member & valid[k], rows, with_indices) for member in members]
        return classes + ([weight_trace(weights[k], class_names, colors, edge)] if has_weights else [])

    data = [sphere_wireframe() if space == "sphere" else
            {"type": "scatter3d", "mode": "lines", "x": [], "y": [], "z": [], "hoverinfo": "skip", "showlegend": False}]
    data += styled(frame_traces(0, with_indices=True), class_names, colors, set(meta.get("unseen_classes", [])))
    per_frame_indices = not valid.all()  # the indices only change when a frame leaves some points out
    frames = [{"name": str(k), "data": frame_traces(k, per_frame_indices), "traces": list(range(1, len(data))),
               "layout": {"title": {"text": frame_title(meta, split, entry)}}} for k, entry in enumerate(history)]
    return {"data": data, "layout": figure_layout(history, frames[0]["layout"]["title"]["text"], box, edge, space),
            "frames": frames}


def class_trace(points, shown, rows, with_indices):
    """One class's points of a frame; customdata: their row indices in the run, for the hover."""
    trace = {"type": "scatter3d", **coordinates(points[shown])}
    if with_indices:
        trace["customdata"] = rows[shown].tolist()
    return trace


def weight_trace(weights, class_names, colors, edge):
    """A frame's class weights as directions at `edge`; a class held out has None."""
    if weights is None:
        return {"type": "scatter3d", "x": [], "y": [], "z": [], "text": [], "marker": {"color": []}}
    rows = [[np.nan] * 3 if w is None else w for w in weights]
    unit, ok = on_unit_sphere(np.asarray(rows, np.float64))
    ok = np.flatnonzero(ok)
    return {"type": "scatter3d", **coordinates(unit[ok] * edge), "text": [class_names[c] for c in ok],
            "marker": {"color": [colors[c] for c in ok]}}


def styled(traces, class_names, colors, unseen):
    """The first frame's traces with their names, markers and hover texts, which later frames keep:
    classes held out of training as hollow rings, the class weights as outlined diamonds."""
    for c, trace in enumerate(traces[:len(class_names)]):
        name = f"{class_names[c]} (unseen)" if c in unseen else class_names[c]
        trace.update(name=name, legendgroup=class_names[c], mode="markers",
                     marker={"size": POINT_SIZE * 1.6, "symbol": "circle-open", "color": colors[c]} if c in unseen
                     else {"size": POINT_SIZE, "color": colors[c], "line": {"width": 0}},
                     hovertemplate=f"class {name}<br>sample %{{customdata}}<extra></extra>")
    for trace in traces[len(class_names):]:
        trace.update(name="class weights", mode="markers",
                     marker={**trace["marker"], "symbol": "diamond", "size": WEIGHT_SIZE,
                             "line": {"color": "black", "width": 1.5}},
                     hovertemplate="class weight %{text}<extra></extra>")
    return traces


def animate_args(frame_names, frame_ms):
    """The args of Plotly.animate: go to (or play through) frame_names, frame_ms per frame."""
    return [frame_names, {"mode": "immediate", "fromcurrent": True, "transition": {"duration": 0},
                          "frame": {"duration": frame_ms, "redraw": True}}]


def figure_layout(history, title, box, edge, space):
    """Fixed axes, the camera, the legend, the play and pause buttons and the epoch slider."""
    axis = {"range": [-box, box] if space == "raw" else AXIS_RANGE, "autorange": False,
            "tickvals": [-edge, 0, edge], "zeroline": space == "raw",
            "showspikes": False, "backgroundcolor": "white"}
    return {
        "title": {"text": title, "x": 0.5},
        "template": "plotly_white",
        "scene": {"xaxis": {**axis, "title": {"text": "x"}}, "yaxis": {**axis, "title": {"text": "y"}},
                  "zaxis": {**axis, "title": {"text": "z"}}, "aspectmode": "cube",
                  "camera": {"eye": {"x": 1.25, "y": -1.25, "z": 0.6}}},
        "legend": {"itemsizing": "constant", "title": {"text": "class"},  # a click hides or shows one
                   # inside the plot: a legend in the margin moves the plot area, and the slider's grip
                   # is then placed for the old width (plotly.js 4.1) and overshoots the rail
                   "x": 1, "xanchor": "right", "y": 1, "yanchor": "top", "bgcolor": "rgba(255, 255, 255, 0.6)"},
        "margin": {"l": 0, "r": 0, "t": 50, "b": 100},  # the bottom one holds the slider
        "uirevision": "keep",  # the camera stays where the user turned it
        "updatemenus": [{
            "type": "buttons", "direction": "left", "showactive": False, "x": 0.0, "y": 0.0,
            "xanchor": "left", "yanchor": "top", "pad": {"t": 45, "r": 10},
            "buttons": [
                {"label": "▶ Play", "method": "animate", "args": animate_args(None, PLAY_FRAME_MS)},
                {"label": "❚❚ Pause", "method": "animate", "args": animate_args([None], 0)},
            ],
        }],
        "sliders": [{
            "active": 0, "x": 0.2, "len": 0.8, "y": 0.0, "yanchor": "top", "pad": {"t": 30},
            "currentvalue": {"prefix": "epoch ", "visible": True, "xanchor": "left"},
            "steps": [{"label": str(entry["epoch"]), "method": "animate", "args": animate_args([str(k)], 0)}
                      for k, entry in enumerate(history)],
        }],
    }


def page_rows(labels, meta, split, max_points, seed):
    """The rows of the run that the page draws: a class-balanced sample of the split, the same in every frame."""
    start, stop = run_files.drawn_rows(meta, split)
    return start + balanced_rows(labels[start:stop], max_points, seed)


def thumbnail_uri(image):
    """A uint8 image (H, W) or (H, W, 3) as a PNG data URI, as the page shows it on hover."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# On hover, the point's image, enlarged, beside its class and sample index (plotly's own hover box
# shows text only). THUMBS maps a row of the run to its image.
HOVER_SCRIPT = """
const THUMBS = %s;
const plot = document.getElementById('{plot_id}');
const box = document.createElement('div');
box.id = 'hovered-image';
box.style.cssText = 'position:fixed;left:12px;top:60px;display:none;background:white;border:1px solid #999;'
    + 'padding:6px;font:13px sans-serif;z-index:10;text-align:center';
const img = document.createElement('img');
img.width = img.height = %d;
img.style.imageRendering = 'pixelated';
const caption = document.createElement('div');
box.append(img, caption);
document.body.append(box);
plot.on('plotly_hover', event => {
    const point = event.points[0];
    if (!(point.customdata in THUMBS)) return;
    img.src = THUMBS[point.customdata];
    caption.textContent = point.data.name + ', sample ' + point.customdata;
    box.style.display = 'block';
});
plot.on('plotly_unhover', () => { box.style.display = 'none'; });
"""
HOVER_PIXELS = 140  # the enlarged image's side on the page


def write_html(path, embeddings, labels, meta, split, max_points=2000, seed=0, space="sphere", images=None):
    """Writes the page of build_figure(...) to path, plotly.js included; returns its size in bytes.
    images: the run's images (run_files.load_images), shown on hover; None: text only."""
    import plotly.io as pio

    script = None
    if images is not None:
        thumbs = {int(row): thumbnail_uri(images[row]) for row in page_rows(labels, meta, split, max_points, seed)}
        script = HOVER_SCRIPT % (json.dumps(thumbs), HOVER_PIXELS)
    page = pio.to_html(build_figure(embeddings, labels, meta, split, max_points, seed, space), include_plotlyjs=True,
                       full_html=True, auto_play=False, validate=True, default_width="100%", default_height="100%",
                       config={"displaylogo": False}, div_id="sphere", post_script=script)
    title = html.escape(f"{meta['model']} - {SPLIT_TITLES.get(split, split)}")
    page = page.replace("<head>", f"<head><title>{title}</title><style>body {{margin: 0}}</style>", 1).encode()
    run_files.atomic_write(path, lambda f: f.write(page))
    return len(page)
