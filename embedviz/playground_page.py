"""The playground's page (Plotly Dash): the controls, the sphere that training moves, the target logit
against the angle, the live curves and a canvas to draw a digit on.

One LiveTraining thread owns the training; the callbacks read its latest snapshot on an interval tick
and send only what changed (Dash's Patch): the points of each class, the class weights, the curves.
The 3-D view keeps the camera the user turned: its uirevision stays the same and no update sets the
camera. The settings live in the page address (?head=arcface&m=0.5&s=15&dim=3); nothing the browser
sends is trusted: each value is parsed and bounded as a command-line option is, and one that is not
fit is replaced by its default with a note on the page.
"""

import math
import os
from argparse import ArgumentTypeError
from urllib.parse import parse_qs, urlencode

import numpy as np
import plotly.graph_objects as go
import torch
from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update

from embedviz import drawn_digit
from embedviz.cli import class_indices
from embedviz.render import class_colors
from losses import CombinedMargin, margin_target
from models import PRESETS

HEADS = [name.removeprefix("vgg8_") for name in PRESETS]
TICK_MS = 250
TOOLTIP = {"always_visible": True, "placement": "bottom"}
PRESET = {"head": "arcface", "m": 0.5, "s": 15.0, "dim": 3, "batch": 128, "lr": 1e-3, "dataset": "mnist-sample",
          "classes": 10, "unseen": [], "speed": 4, "seed": 58, "device": "auto", "precision": "auto"}


# ---------------------------------------------------------------- the settings, from the address or the controls

def number(kind, low, high):
    def parse(text):
        value = kind(text)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"from {low:g} to {high:g}")
        return value
    return parse


def class_list(text):
    """"6-9" or "6 7 8 9" -> [6, 7, 8, 9] (each part as train.py's --unseen-classes reads it); "" -> []."""
    classes = sorted({c for part in str(text).replace(",", " ").split() for c in class_indices(part)})
    if len(classes) > 200:
        raise ValueError("at most 200 classes")
    return classes


def head_name(text):
    if text not in HEADS:
        raise ValueError(f"one of {', '.join(HEADS)}")
    return text


def dataset_name(text):
    if text not in ("mnist-sample", "glyphs", "fashion-mnist", "mnist"):
        raise ValueError("mnist-sample, glyphs, fashion-mnist or mnist")
    return text


PARSERS = {"head": head_name, "m": number(float, 0.0, 4.0), "s": number(float, 1.0, 1024.0),
           "dim": number(int, 2, 3), "batch": number(int, 8, 1024), "lr": number(float, 1e-5, 0.1),
           "dataset": dataset_name, "classes": number(int, 4, 133), "unseen": class_list,
           "speed": number(int, 1, 50)}


def parse_settings(values):
    """{name: text or value} from the address or the controls -> (settings, notes): PRESET with every
    value that parses and is in range; each other one named in a note and left at its default."""
    settings, notes = dict(PRESET), []
    for name, parse in PARSERS.items():
        if values.get(name) in (None, ""):
            continue
        try:
            settings[name] = parse(values[name])
        except (ValueError, TypeError, ArgumentTypeError) as error:
            notes.append(f"{name}={str(values[name])[:20]!r} is not valid ({error}); using {PRESET[name]}")
    head_class = PRESETS[f"vgg8_{settings['head']}"][0]
    if head_class.__name__ == "SphereFace" and settings["m"] < 1:
        notes.append(f"SphereFace's m multiplies the angle: 1 or more; using {PRESETS['vgg8_sphereface'][1]['m']}")
        settings["m"] = PRESETS["vgg8_sphereface"][1]["m"]
    num_classes = settings["classes"] if settings["dataset"] == "glyphs" else 10
    held = [c for c in settings["unseen"] if c < num_classes]
    if held != settings["unseen"] or (held and not 2 <= len(held) <= num_classes - 2):
        notes.append(f"unseen={values.get('unseen')!r}: hold out 2 to {num_classes - 2} of classes 0-{num_classes - 1}; "
                     "holding none out")
        held = []
    settings["unseen"] = held
    return settings, notes


def training_settings(settings):
    """The settings a run is made of: m and s only where the head takes them (the preset's otherwise)."""
    head_class, _ = PRESETS[f"vgg8_{settings['head']}"]
    chosen = {key: value for key, value in settings.items() if key != "speed"}
    chosen["m"] = settings["m"] if "m" in head_class.params else None
    chosen["s"] = settings["s"] if "s" in head_class.params else None
    return chosen


def query(settings, controls=True):
    shown = {key: (" ".join(map(str, value)) if isinstance(value, list) else value) for key, value in settings.items()
             if key in PARSERS and value != PRESET[key] or key in ("head", "m", "s", "dim")}
    return "?" + urlencode({**shown, **({} if controls else {"controls": "off"})})


# ---------------------------------------------------------------- the figures

def target_logit_figure(settings, target_angles=()):
    """s times the head's target logit against theta (degrees), beside Softmax's (NormFace's) s cos theta,
    the region past pi - m where the fallback keeps it decreasing shaded; below, the last batch's target
    angles."""
    head_class, arguments = PRESETS[f"vgg8_{settings['head']}"]
    theta = torch.linspace(0, math.pi, 361, dtype=torch.float64)
    s = settings["s"] if "s" in head_class.params else arguments.get("s", 15.0)
    m1, m2, m3 = margins(settings)
    target = s * margin_target(torch.cos(theta), m1, m2, m3)
    degrees = np.degrees(theta.numpy())
    figure = go.Figure(layout={"height": 330, "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
                               "uirevision": "logit", "legend": {"orientation": "h", "y": 1.15},
                               "xaxis": {"title": "theta, degrees", "range": [0, 180]},
                               "yaxis": {"title": "logit", "domain": [0.35, 1]},
                               "yaxis2": {"title": "batch", "domain": [0, 0.22]},
                               "xaxis2": {"anchor": "y2", "matches": "x", "showticklabels": False}})
    figure.add_scatter(x=degrees.round(2).tolist(), y=(s * torch.cos(theta)).numpy().round(4).tolist(),
                       name="s cos θ (no margin)", line={"color": "gray", "dash": "dash"})
    figure.add_scatter(x=degrees.round(2).tolist(), y=target.numpy().round(4).tolist(),
                       name=f"{head_class.__name__}: the target's logit", line={"color": "crimson"})
    limit = (math.pi - m2) / m1
    if m1 > 1 or m2 > 0:
        figure.add_vrect(x0=math.degrees(limit), x1=180, fillcolor="orange", opacity=0.15, line_width=0,
                         annotation_text="past π − m: fallback", annotation_position="top left")
    figure.add_histogram(x=np.round(target_angles, 2).tolist(), xbins={"start": 0, "end": 180, "size": 3}, xaxis="x2",
                         yaxis="y2", marker_color="steelblue", name="last batch's target angles",
                         showlegend=False)
    return figure


def margins(settings):
    """(m1, m2, m3) of the head's target in CombinedMargin's form; the newer heads drawn as ArcFace at their m."""
    head_class, arguments = PRESETS[f"vgg8_{settings['head']}"]
    if issubclass(head_class, CombinedMargin):
        args = {**arguments, **{key: settings[key] for key in ("m", "s") if key in head_class.params}}
        head = head_class(2, 2, **args)
        return head.m1, head.m2, head.m3
    return 1.0, settings["m"] if "m" in head_class.params else 0.0, 0.0


def sphere_figure(class_names, dim, unseen=()):
    """One trace a class (hollow for one held out), the class weights as stars, and the drawn digit."""
    colors = ["rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.array(c[:3]))) for c in class_colors(len(class_names))]
    scatter = go.Scatter3d if dim == 3 else go.Scatter
    empty = {"x": [], "y": [], **({"z": []} if dim == 3 else {})}
    figure = go.Figure(layout={"height": 560, "margin": {"l": 0, "r": 0, "t": 10, "b": 0}, "uirevision": "sphere",
                               "legend": {"itemsizing": "constant"}})
    for c, name in enumerate(class_names):
        marker = {"size": 2.5 if dim == 3 else 5, "color": colors[c]}
        if c in unseen:
            marker = {**marker, "symbol": "circle-open", "size": marker["size"] + 2}
        figure.add_trace(scatter(**empty, mode="markers", marker=marker, name=f"{name} (unseen)" if c in unseen else name))
    figure.add_trace(scatter(**empty, mode="markers", name="class weights",
                             marker={"symbol": "diamond" if dim == 3 else "star", "size": 7 if dim == 3 else 14,
                                     "color": colors, "line": {"color": "black", "width": 1}}))
    figure.add_trace(scatter(**empty, mode="markers+text", name="your digit", text=[], textposition="top center",
                             marker={"symbol": "x" if dim == 3 else "x-thin", "size": 9 if dim == 3 else 16,
                                     "color": "black", "line": {"width": 3}}))
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    if dim == 3:
        x, y, z = np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v)
        lines = [(x[i], y[i], z[i]) for i in range(len(x))] + [(x[:, j], y[:, j], z[:, j]) for j in range(x.shape[1])]
        xs, ys, zs = ([np.r_[line[k], np.nan] for line in lines] for k in range(3))
        figure.add_trace(go.Scatter3d(x=np.concatenate(xs).round(3), y=np.concatenate(ys).round(3),
                                      z=np.concatenate(zs).round(3), mode="lines", hoverinfo="skip",
                                      line={"color": "lightgray", "width": 1}, showlegend=False))
        axis = {"range": [-1.05, 1.05], "showbackground": False, "zeroline": False}
        figure.update_layout(scene={"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "cube"})
    else:
        angle = np.linspace(0, 2 * np.pi, 181)
        figure.add_scatter(x=np.cos(angle).round(4), y=np.sin(angle).round(4), mode="lines", hoverinfo="skip",
                           line={"color": "lightgray"}, showlegend=False)
        figure.update_layout(xaxis={"range": [-1.15, 1.15]}, yaxis={"range": [-1.15, 1.15], "scaleanchor": "x"})
    return figure


def curves_figure(curves):
    names = list(curves)
    figure = go.Figure(layout={"height": 260, "margin": {"l": 40, "r": 10, "t": 10, "b": 30}, "uirevision": "curves",
                               "legend": {"orientation": "h", "y": -0.2}, "xaxis": {"title": "epoch"}})
    for name in names:
        xs, ys = curves[name]
        figure.add_scatter(x=xs, y=ys, name=name, mode="lines", yaxis="y2" if name in ("spread", "separation") else "y")
    figure.update_layout(yaxis={"title": "accuracy, TAR", "range": [0, 1]},
                         yaxis2={"title": "degrees", "overlaying": "y", "side": "right", "rangemode": "tozero"})
    return figure


EMPTY = {"height": 200, "xaxis": {"visible": False}, "yaxis": {"visible": False}, "plot_bgcolor": "white",
         "margin": {"l": 0, "r": 0, "t": 0, "b": 0}}


def canvas_figure():
    return go.Figure(layout={"height": 220, "width": 220, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                             "dragmode": "drawopenpath", "newshape": {"line": {"color": "black", "width": 14}},
                             "xaxis": {"range": [0, 1], "visible": False, "fixedrange": True},
                             "yaxis": {"range": [0, 1], "visible": False, "fixedrange": True},
                             "plot_bgcolor": "white", "uirevision": "canvas"})


# ---------------------------------------------------------------- the app

def build_app(live, follow=False):
    """The Dash app around one LiveTraining, or around a FollowedRun (follow: the run's epochs on a slider,
    no training controls)."""
    app = Dash(__name__, title="Margin playground", serve_locally=True, update_title=None,
               assets_folder=os.path.join(os.path.dirname(__file__), "playground_assets"))
    control = {"marginBottom": "10px"}
    app.layout = html.Div(style={"fontFamily": "sans-serif", "margin": "8px"}, children=[
        dcc.Location(id="url", refresh=False),
        dcc.Interval(id="tick", interval=TICK_MS),
        dcc.Store(id="shown", data={"version": -1, "run": -1}),
        html.Div(id="note", style={"color": "#a00", "minHeight": "1em"}),
        html.Div(style={"display": "flex", "gap": "12px", "alignItems": "center"}, children=[
            html.Div(style={"display": "none" if follow else "flex", "gap": "12px"}, children=[
                html.Button("pause", id="play", n_clicks=0, style={"fontSize": "18px", "width": "90px"}),
                html.Button("one step", id="step", n_clicks=0),
                html.Button("reset", id="reset", n_clicks=0)]),
            html.Button("reset view", id="reset-view", n_clicks=0),
            html.Span(id="status"),
            html.Span(id="stamp", style={"display": "none"}),  # when the update shown was made (the benchmark)
        ]),
        html.Div(style={"display": "block" if follow else "none", "width": "600px"}, children=[
            html.Label("epoch"), dcc.Slider(0, 1, 1, value=None, id="epoch", marks=None, tooltip=TOOLTIP)]),
        html.Div(style={"display": "flex", "gap": "12px"}, children=[
            html.Div(id="controls", style={"width": "230px", "flexShrink": 0}, children=[
                html.Label("head"), dcc.Dropdown(HEADS, PRESET["head"], id="head", clearable=False, style=control),
                html.Label("m, the margin"), dcc.Slider(0, 4, 0.05, value=PRESET["m"], id="m", marks=None,
                                                       tooltip=TOOLTIP, updatemode="mouseup"),
                html.Label("s, the scale"), dcc.Slider(1, 128, 1, value=PRESET["s"], id="s", marks=None,
                                                      tooltip=TOOLTIP, updatemode="mouseup"),
                html.Label("embedding"), dcc.RadioItems([{"label": "3-D", "value": 3}, {"label": "2-D", "value": 2}],
                                                        PRESET["dim"], id="dim", inline=True, style=control),
                html.Label("batch size"), dcc.Input(id="batch", type="number", value=PRESET["batch"], debounce=True,
                                                    style=control),
                html.Label("learning rate"), dcc.Input(id="lr", type="number", value=PRESET["lr"], debounce=True,
                                                       style=control),
                html.Label("dataset"), dcc.Dropdown(["mnist-sample", "glyphs", "fashion-mnist", "mnist"],
                                                    PRESET["dataset"], id="dataset", clearable=False, style=control),
                html.Label("glyph classes"), dcc.Input(id="classes", type="number", value=PRESET["classes"],
                                                       debounce=True, style=control),
                html.Label("classes held out (6-9)"), dcc.Input(id="unseen", type="text", value="", debounce=True,
                                                                 style=control),
                html.Label("steps per update (slow motion: 1)"),
                dcc.Slider(1, 50, 1, value=PRESET["speed"], id="speed", marks=None, tooltip=TOOLTIP),
            ]),
            html.Div(style={"flex": "1 1 560px"}, children=[dcc.Graph(id="sphere")]),
            html.Div(style={"width": "420px"}, children=[
                dcc.Graph(id="logit"), dcc.Graph(id="curves"),
                html.Div(style={"display": "flex", "gap": "8px"}, children=[
                    html.Div([html.Div("draw a digit:"),
                              dcc.Graph(id="canvas", figure=canvas_figure(), config={"displayModeBar": False},
                                        style={"border": "1px solid #888", "width": "220px"}),
                              html.Button("clear", id="clear", n_clicks=0)]),
                    html.Div(style={"flex": 1}, children=[
                        html.Div(id="digit-text", style={"fontSize": "13px"}),
                        dcc.Graph(id="digit-logits", figure=go.Figure(layout=EMPTY), config={"displayModeBar": False})]),
                ]),
            ]),
        ]),
    ])
    names = list(PARSERS)

    @app.callback([Output("url", "search"), *(Output(name, "value") for name in names), Output("note", "children"),
                   Output("controls", "style")], [Input("url", "search"), *(Input(name, "value") for name in names)])
    def settings_changed(search, *values):
        """The address and the controls, kept the same; a changed setting restarts the run."""
        from_url = ctx.triggered_id in (None, "url")
        raw = ({key: value[-1] for key, value in parse_qs((search or "").lstrip("?")).items()} if from_url
               else dict(zip(names, values)))
        if not from_url:
            raw["unseen"] = raw.get("unseen") or ""
        settings, notes = parse_settings(raw)
        controls = parse_qs((search or "").lstrip("?")).get("controls", ["on"])[-1] != "off" and not follow
        wanted = {**training_settings(settings), "device": live.settings.get("device"),
                  "precision": live.settings.get("precision")}
        if wanted != live.settings and not follow:
            live.reset(wanted)
        live.steps_per_update = settings["speed"]
        shown_values = [" ".join(map(str, settings[name])) if name == "unseen" else settings[name] for name in names]
        return (query(settings, controls), *shown_values, " ".join(notes),
                {"width": "230px", "flexShrink": 0, "display": "block" if controls else "none"})

    @app.callback(Input("play", "n_clicks"), Input("step", "n_clicks"), Input("reset", "n_clicks"),
                  prevent_initial_call=True)
    def buttons(play, step, reset):
        """The training's state changed; every open page shows it at its next tick."""
        if ctx.triggered_id == "play":
            live.play(not live.playing)
        elif ctx.triggered_id == "step":
            live.step_once()
        else:
            live.reset(live.settings, playing=live.playing)

    @app.callback(Output("sphere", "figure"), Output("logit", "figure"), Output("curves", "figure"),
                  Output("status", "children"), Output("stamp", "children"), Output("shown", "data"),
                  Output("play", "children"), Output("epoch", "max"),
                  Output("epoch", "value"), Input("tick", "n_intervals"), Input("reset-view", "n_clicks"),
                  Input("epoch", "value"), State("shown", "data"), State("epoch", "max"))
    def tick(_, reset_view, epoch, shown, last):
        """What changed since the page last drew: a whole figure after a reset, else the points alone; the
        play button's word whenever playing changed, from this page or another. A followed run's slider
        follows its newest epoch while it stands at the last."""
        following = follow and (epoch is None or epoch >= last)
        snapshot = live.latest(None if following else epoch)
        slider = (snapshot.epoch, snapshot.epoch) if follow and following and snapshot else (no_update, no_update)
        playing = live.playing
        if snapshot is None or (snapshot.version, playing) == (shown["version"], shown.get("playing")):
            return no_update, no_update, no_update, no_update, no_update, no_update, no_update, *slider
        settings = snapshot.settings
        seen = {"version": snapshot.version, "run": snapshot.run, "playing": playing}
        button = "pause" if playing else "play"
        if snapshot.note:
            return no_update, no_update, no_update, snapshot.note, no_update, seen, button, *slider
        status = (f"{live.model_name}, epoch {snapshot.epoch} of {live.epochs}" if follow else
                  f"epoch {snapshot.epoch}, step {snapshot.step}/{snapshot.steps_per_epoch}; "
                  f"{snapshot.images_per_second:,.0f} images/s" + ("" if playing else "; paused"))
        if snapshot.version == shown["version"]:  # played or paused alone
            return no_update, no_update, no_update, status, no_update, seen, button, *slider
        dim = snapshot.points.shape[1]
        fresh = shown["run"] != snapshot.run or ctx.triggered_id == "reset-view"
        if fresh:
            sphere = sphere_figure(snapshot.class_names, dim, settings["unseen"]).to_plotly_json()
            sphere["layout"]["uirevision"] = f"sphere{reset_view or ''}"
            logit = target_logit_figure(settings, snapshot.target_angles)
            curves = curves_figure(snapshot.curves)
        else:
            sphere, logit, curves = Patch(), Patch(), Patch()
            logit["data"][2]["x"] = np.round(snapshot.target_angles, 2).tolist()
            for k, (xs, ys) in enumerate(snapshot.curves.values()):
                curves["data"][k]["x"], curves["data"][k]["y"] = xs, ys
        traces = sphere["data"]
        for c in range(len(snapshot.class_names)):
            rows = snapshot.labels == c
            for k, axis in enumerate("xyz"[:dim]):
                traces[c][axis] = snapshot.points[rows, k].tolist()
        if snapshot.weights is not None:
            for k, axis in enumerate("xyz"[:dim]):
                traces[len(snapshot.class_names)][axis] = [None if math.isnan(v) else round(v, 3)
                                                           for v in snapshot.weights[:, k]]
        return sphere, logit, curves, status, f"{snapshot.published:.3f}", seen, button, *slider

    @app.callback(Output("logit", "figure", allow_duplicate=True), Input("m", "drag_value"), Input("s", "drag_value"),
                  State("head", "value"), prevent_initial_call=True)
    def margin_moved(m, s, head):
        """The target logit redrawn as the slider moves, before the run restarts on release."""
        settings, _ = parse_settings({"head": head, "m": m, "s": s})
        snapshot = live.latest()
        return target_logit_figure(settings, snapshot.target_angles if snapshot else ())

    @app.callback(Output("digit-text", "children"), Output("digit-logits", "figure"),
                  Output("sphere", "figure", allow_duplicate=True), Input("canvas", "relayoutData"),
                  prevent_initial_call=True)
    def digit_drawn(relayout):
        """The drawn digit as MNIST's, embedded by the network as it is now."""
        shapes = (relayout or {}).get("shapes")
        if shapes is None:
            return no_update, no_update, no_update
        image = drawn_digit.to_mnist(drawn_digit.strokes_from_paths([shape.get("path", "") for shape in shapes]))
        if image is None:
            return "", go.Figure(layout=EMPTY), no_update
        result = live.embed(torch.from_numpy(image)[None])
        snapshot = live.latest()
        if result is None or snapshot is None or not len(snapshot.class_names):
            return "the network is not ready yet", no_update, no_update
        embedding, plain, margin, nearest = result
        direction = embedding[0] / max(np.linalg.norm(embedding[0]), 1e-12)
        names = snapshot.class_names
        text = f"nearest class: {names[nearest[0]]}"
        if snapshot.weights is not None:
            cosines = np.clip(np.nan_to_num(snapshot.weights) @ direction, -1, 1)
            angles = ", ".join(f"{names[c]} {math.degrees(math.acos(cosines[c])):.0f}°" for c in range(len(names))
                               if not math.isnan(snapshot.weights[c, 0]))
            text += f"; angle to each class weight: {angles}"
        classes = names[:plain.shape[1]]
        bars = {"data": [{"type": "bar", "x": classes, "y": plain[0].round(3).tolist(), "name": "logits"},
                         {"type": "bar", "x": classes, "y": margin[0].round(3).tolist(),
                          "name": "with the margin on the nearest"}],
                "layout": {"height": 200, "margin": {"l": 30, "r": 5, "t": 5, "b": 30}, "barmode": "group",
                           "legend": {"orientation": "h", "y": 1.2}}}
        sphere = Patch()
        index = len(names) + 1
        for k, axis in enumerate("xyz"[:len(direction)]):
            sphere["data"][index][axis] = [round(float(direction[k]), 3)]
        sphere["data"][index]["text"] = [f"your {names[nearest[0]]}"]
        return text, bars, sphere

    @app.callback(Output("canvas", "figure"), Output("canvas", "relayoutData"),
                  Output("digit-text", "children", allow_duplicate=True),
                  Output("digit-logits", "figure", allow_duplicate=True), Input("clear", "n_clicks"),
                  prevent_initial_call=True)
    def clear(_):
        """A clean canvas; its drawing forgotten, so that the same stroke drawn again is embedded again."""
        return canvas_figure(), None, "", go.Figure(layout=EMPTY)

    return app
