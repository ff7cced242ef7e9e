"""One epoch of a run as the files that TensorBoard's embedding projector reads, in a folder of their
own (open it with: tensorboard --logdir FOLDER, then the Projector tab):

    tensors.tsv               the embeddings, one row per point, tab-separated
    metadata.tsv              a header row (class, split), then one row per point
    sprite.png                the points' images in a grid, when the run saved them
    projector_config.pbtxt    what ties them together, in the protobuf text format
"""

import math
import os

import numpy as np
from PIL import Image

from embedviz import run_files

MAX_SPRITE_PIXELS = 8192  # TensorBoard's limit on either side of the sprite image


def write_projector(folder, embeddings, labels, meta, images=None, tensor_name="embeddings"):
    """Writes the four files (three without images) for embeddings (n, dim) of one epoch; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, name) for name in ("tensors.tsv", "metadata.tsv", "projector_config.pbtxt")}
    tensors = "\n".join("\t".join(f"{value:.6g}" for value in row) for row in embeddings) + "\n"
    run_files.atomic_write(paths["tensors.tsv"], lambda f: f.write(tensors.encode()))
    split_of = np.empty(len(labels), object)
    for split, (start, stop) in meta["splits"].items():
        split_of[start:stop] = split
    names = [clean(name) for name in meta["class_names"]]
    metadata = "class\tsplit\n" + "".join(f"{names[label]}\t{split}\n" for label, split in zip(labels, split_of))
    run_files.atomic_write(paths["metadata.tsv"], lambda f: f.write(metadata.encode()))
    config = (f'embeddings {{\n  tensor_name: "{clean(tensor_name)}"\n  tensor_path: "tensors.tsv"\n'
              '  metadata_path: "metadata.tsv"\n')
    if images is not None:
        sprite, side = sprite_image(images)
        paths["sprite.png"] = os.path.join(folder, "sprite.png")
        run_files.atomic_write(paths["sprite.png"], lambda f: sprite.save(f, format="PNG", optimize=True))
        config += (f'  sprite {{\n    image_path: "sprite.png"\n'
                   f'    single_image_dim: {side}\n    single_image_dim: {side}\n  }}\n')
    config += "}\n"
    run_files.atomic_write(paths["projector_config.pbtxt"], lambda f: f.write(config.encode()))
    return list(paths.values())


def sprite_image(images):
    """(PIL image, side of one thumbnail): the images row by row in a square grid, scaled down where
    the grid would pass MAX_SPRITE_PIXELS."""
    grid = math.ceil(math.sqrt(len(images)))
    side = min(images.shape[1], MAX_SPRITE_PIXELS // grid)
    mode = "L" if images.ndim == 3 else "RGB"
    sprite = Image.new(mode, (grid * side, grid * side))
    for index, image in enumerate(images):
        tile = Image.fromarray(image, mode)
        if side != images.shape[1]:
            tile = tile.resize((side, side), Image.Resampling.BILINEAR)
        sprite.paste(tile, ((index % grid) * side, (index // grid) * side))
    return sprite, side


def clean(text):
    """A name without the tabs, newlines and quotes that the TSV and text formats would misread."""
    return " ".join(str(text).replace('"', "'").split())
