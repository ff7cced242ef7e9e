"""Writes the image folder of the README's "Your own images": 150 random square patches of each of 14
photographs that scikit-image and scikit-learn ship (10 in colour, 4 grey), one class per photograph.

    pip install scikit-image
    python docs/photo_patches.py /tmp/photos
    python train.py --dataset imagefolder --data-dir /tmp/photos --image-size 32 --epochs 40
"""

import os
import sys

import numpy as np
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images

PATCHES = 150  # a class
SIDE = 1 / 5   # a patch's side, as a share of the photograph's shorter side

NAMES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket",
         "camera", "coins", "moon", "grass")  # the last four grey
photos = {name: getattr(data, name)() for name in NAMES}
photos["motorcycle"] = data.stereo_motorcycle()[0]
photos.update(zip(("china", "flower"), load_sample_images().images))

root, rng = sys.argv[1], np.random.default_rng(0)
for name, photo in photos.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    side = int(min(photo.shape[:2]) * SIDE)
    for k in range(PATCHES):
        top, left = (rng.integers(0, n - side + 1) for n in photo.shape[:2])
        patch = Image.fromarray(photo[top:top + side, left:left + side])
        patch.save(os.path.join(root, name, f"{k:03d}.jpg"), quality=90)
print(f"wrote {len(photos)} classes of {PATCHES} patches in {root}")
