"""A digit drawn with the mouse or a finger, made into a 28x28 image the way MNIST's were: the strokes
drawn thick on a large canvas, their bounding box scaled so that its longer side is 20 pixels
(anti-aliased, which gives the grey edges), then placed in a 28x28 image with its centre of mass at
the centre (LeCun, Cortes and Burges, "The MNIST database", the database's description)."""

import re

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280          # pixels of the large canvas the strokes are drawn on, per side
STROKE_WIDTH = 22     # pixels on that canvas: MNIST's pen, about 2 pixels of the 28
BOX, SIDE = 20, 28    # the digit's box, and the image's side
MAX_POINTS = 5000     # points of all strokes together that are read; the rest is ignored


def strokes_from_paths(paths):
    """Plotly's drawn shapes' SVG paths ("M0.1,0.2L0.3,0.4...") in a [0, 1] x [0, 1] frame -> a list of
    (n, 2) arrays, y up; anything that is not a number pair is ignored."""
    strokes, total = [], 0
    for path in paths:
        numbers = re.findall(r"(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?),(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)", str(path))
        points = np.array(numbers[:max(MAX_POINTS - total, 0)], float).reshape(-1, 2)
        if len(points):
            strokes.append(np.clip(points, 0.0, 1.0))
            total += len(points)
    return strokes


def to_mnist(strokes):
    """(28, 28) uint8, white on black, of strokes in [0, 1] x [0, 1] (y up); None without ink."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        xy = [(x * (CANVAS - 1), (1 - y) * (CANVAS - 1)) for x, y in stroke]
        if len(xy) == 1:
            xy = xy * 2
        draw.line(xy, fill=255, width=STROKE_WIDTH, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends
            r = STROKE_WIDTH / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    box = canvas.getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    scale = BOX / max(ink.size)
    ink = ink.resize((max(1, round(ink.size[0] * scale)), max(1, round(ink.size[1] * scale))), Image.LANCZOS)
    digit = np.asarray(ink, np.float64)
    rows, cols = np.indices(digit.shape)
    centre = np.array([(rows * digit).sum(), (cols * digit).sum()]) / digit.sum()  # centre of mass (row, col)
    top, left = np.round((SIDE - 1) / 2 - centre).astype(int)
    top, left = np.clip(top, 0, SIDE - digit.shape[0]), np.clip(left, 0, SIDE - digit.shape[1])
    image = np.zeros((SIDE, SIDE), np.float64)
    image[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(image, 0, 255).round().astype(np.uint8)
