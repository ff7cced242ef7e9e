"""Glyphs: characters rendered from the fonts that matplotlib ships, a dataset of many classes that
every machine builds offline, as the font part of Chars74K was made. Digits and the Latin, Greek and
Cyrillic letters, each glyph that looks like another script's (Greek Alpha, Cyrillic A, Latin A)
counted once; every image one rendering of its character in one of the fonts, jittered by a seeded
transform (rotation, scale, shear, stroke width, position), 28x28 like the digits, with a fixed
split per class. Built once, cached in DATA_DIR/glyphs/."""

import contextlib
import hashlib
import json
import multiprocessing
import os
import string
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

CLASSES = (string.digits + string.ascii_uppercase + string.ascii_lowercase
           + "ΓΔΘΛΞΠΣΦΨΩ" + "αβγδεζηθλμξπρστφχψω"  # Greek: the letters that look like no Latin one
           + "БДЖЗИЙЛЦЧШЩЪЫЬЭЮЯ" + "бвгджзийклмнптфцчшщъыьэюя")  # Cyrillic: nor like a Latin or Greek one
FONTS = [f"DejaVu{family}{style}.ttf" for family in ("Sans", "SansMono", "Serif")
         for style in ("", "-Bold", "-Oblique" if family != "Serif" else "-Italic",
                       "-BoldOblique" if family != "Serif" else "-BoldItalic")]
FONTS += ["STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"]
IMAGES_PER_CLASS, TRAIN_PER_CLASS = 300, 240  # 60 a class to validate
SIDE, RENDER, WORK = 28, 4, 2  # the images' side; drawn 4 times larger, jittered at twice, for smooth edges
STROKES = (0, 2)  # pixels added around each stroke, where it is drawn: regular and heavier
RECIPE = 1  # raised when the images change, so that a cached build is made again


class GlyphError(Exception):
    """The fonts are missing, or the cache cannot be written; the message says which."""


def font_paths():
    """The fonts of FONTS that this matplotlib ships, by name."""
    import matplotlib

    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = {name: os.path.join(folder, name) for name in FONTS if os.path.exists(os.path.join(folder, name))}
    if len(paths) < 2:
        raise GlyphError(f"matplotlib's fonts are not in {folder}: the glyphs need at least 2 of {', '.join(FONTS)}")
    return paths


def base_image(character, font, stroke):
    """`character` (white on black), drawn RENDER times larger than the images and shrunk to WORK times,
    its baseline three quarters down, so that lowercase letters stay smaller than capitals."""
    from PIL import Image, ImageDraw

    big = SIDE * RENDER
    image = Image.new("L", (big, big))
    ImageDraw.Draw(image).text((big / 2, big * 0.74), character, fill=255, font=font, anchor="ms",
                               stroke_width=stroke, stroke_fill=255)
    return image.resize((SIDE * WORK, SIDE * WORK), Image.Resampling.BOX)


def jittered(base, rng):
    """One 28x28 uint8 image of a base image turned, sheared, scaled and moved about its centre."""
    from PIL import Image

    angle, shear = np.radians(rng.uniform(-12, 12)), rng.uniform(-0.2, 0.2)
    scale, shift = rng.uniform(0.85, 1.1), rng.uniform(-2, 2, size=2) * WORK
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inverse = np.linalg.inv(turn @ np.array([[1, shear], [0, 1]]) * scale)  # output pixel -> base pixel
    centre = np.full(2, SIDE * WORK / 2)
    offset = centre - inverse @ (centre + shift)
    image = base.transform(base.size, Image.Transform.AFFINE, (*inverse[0], offset[0], *inverse[1], offset[1]),
                           resample=Image.Resampling.BILINEAR)
    return np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BOX))


def class_images(label, paths, images_per_class=IMAGES_PER_CLASS):
    """(images_per_class, 28, 28) renderings of CLASSES[label], from a generator of its own: the same
    images whichever process draws them. Each font and stroke width is drawn once, then jittered."""
    from PIL import ImageFont

    rng = np.random.default_rng([RECIPE, label])
    fonts = [ImageFont.truetype(path, size=int(SIDE * RENDER * 0.75)) for path in paths]
    bases = [base_image(CLASSES[label], font, stroke) for font in fonts for stroke in STROKES]
    images = np.stack([jittered(bases[k % len(bases)], rng) for k in range(images_per_class)])
    return images[rng.permutation(images_per_class)]  # every font on both sides of the split


def build(paths, workers=None, images_per_class=IMAGES_PER_CLASS, train_per_class=TRAIN_PER_CLASS):
    """(train images, train labels, val images, val labels) of every class, the classes drawn in
    worker processes; the first train_per_class images of a class train, the others validate."""
    workers = min(workers or os.cpu_count() or 1, 4)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(
                "fork" if sys.platform == "linux" else "spawn")))
            drawn = pool.map(class_images, range(len(CLASSES)), [list(paths)] * len(CLASSES),
                             [images_per_class] * len(CLASSES))
        else:
            drawn = (class_images(label, list(paths), images_per_class) for label in range(len(CLASSES)))
        images = np.stack(list(tqdm(drawn, total=len(CLASSES), desc="drawing glyphs", unit="class", leave=False,
                                    file=sys.stderr)))
    labels = np.repeat(np.arange(len(CLASSES)), images_per_class).reshape(len(CLASSES), images_per_class)
    train, val = slice(0, train_per_class), slice(train_per_class, None)
    return (images[:, train].reshape(-1, SIDE, SIDE), labels[:, train].ravel(),
            images[:, val].reshape(-1, SIDE, SIDE), labels[:, val].ravel())


def load_glyphs(data_dir, progress=None):
    """(train images, train labels, val images, val labels, class names, details) from the cache in
    data_dir/glyphs/, built there first when missing or made by other fonts or another recipe."""
    import matplotlib
    import PIL

    paths = font_paths()
    details = {"fonts": sorted(paths), "matplotlib": matplotlib.__version__, "pillow": PIL.__version__,
               "classes": len(CLASSES), "images_per_class": IMAGES_PER_CLASS, "train_per_class": TRAIN_PER_CLASS,
               "recipe": RECIPE}
    key = hashlib.sha256(json.dumps(details, sort_keys=True).encode()).hexdigest()[:16]
    cache = os.path.join(data_dir, "glyphs", f"glyphs-{key}.npz")
    if os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as arrays:
            return (*(arrays[name] for name in ("train_images", "train_labels", "val_images", "val_labels")),
                    list(CLASSES), details)
    if progress:
        progress(f"building the glyphs: {len(CLASSES)} characters x {IMAGES_PER_CLASS} renderings, "
                 f"{len(paths)} fonts; cached in {os.path.dirname(cache)}")
    arrays = build(list(paths.values()), images_per_class=IMAGES_PER_CLASS, train_per_class=TRAIN_PER_CLASS)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        temporary = f"{cache}.tmp{os.getpid()}.npz"
        np.savez(temporary, **dict(zip(("train_images", "train_labels", "val_images", "val_labels"), arrays)))
        os.replace(temporary, cache)
    except OSError as error:  # the dataset is built: it trains, but is built again next time
        if progress:
            progress(f"warning: the glyphs cannot be cached in {os.path.dirname(cache)} ({error.strerror or error})")
    return (*arrays, list(CLASSES), details)
