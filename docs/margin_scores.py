"""The score distributions of docs/margin.md: the angles of the genuine and impostor pairs of Softmax and
ArcFace at 3-D and at 128-D, from the sweep's runs of seed 0, side by side on the same axes.

    python docs/margin_scores.py data/sweep/glyphs-seen25 docs/margin_scores.png
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from embedviz.scores import plot_scores  # noqa: E402


def main(folder, path):
    runs = []
    for dim in (3, 128):
        for head in ("vgg8_softmax", "vgg8_arcface"):
            with open(os.path.join(folder, f"{head}-d{dim}-s0", f"all_{head}_meta.json")) as f:
                runs.append((f"{head.removeprefix('vgg8_')}, {dim}-D", json.load(f)))
    plot_scores(runs, path.removesuffix(".png") + ".gif", path, fps=8)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
