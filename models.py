"""VGG8: a small convolutional backbone with a low-dimensional embedding and a pluggable head;
PRESETS, the heads that train.py --model names; and load_model, which rebuilds a trained model
from its checkpoint alone."""

import torch
import torch.nn as nn

from embedviz import run_files
from losses import (AdaCos, AdaFace, ArcFace, CombinedMargin, CosFace, CurricularFace, ElasticFace, MagFace, NormFace,
                    Softmax, SphereFace, SubCenterArcFace)

# --model -> (the head's class, its arguments). s and m suit a 3-D embedding of 10 classes: a sphere
# holds 10 caps of about 60 degrees at most, so margins beyond ~0.5 rad (~30 degrees) and scales
# far above 15 leave no room to satisfy the loss, and training stalls. The newer heads' own
# parameters are chosen in their docstrings (losses.py).
PRESETS = {
    "vgg8_softmax": (Softmax, {}),
    "vgg8_normface": (NormFace, {"s": 15.0}),
    "vgg8_sphereface": (SphereFace, {"s": 15.0, "m": 1.5}),
    "vgg8_cosface": (CosFace, {"s": 15.0, "m": 0.35}),
    "vgg8_arcface": (ArcFace, {"s": 15.0, "m": 0.5}),
    "vgg8_combined": (CombinedMargin, {"s": 15.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
    "vgg8_adacos": (AdaCos, {}),
    "vgg8_subcenter": (SubCenterArcFace, {"s": 15.0, "m": 0.5, "k": 3}),
    "vgg8_curricularface": (CurricularFace, {"s": 15.0, "m": 0.5}),
    "vgg8_elasticface": (ElasticFace, {"s": 15.0, "m": 0.5, "sigma": 0.05}),
    "vgg8_magface": (MagFace, {"s": 15.0}),
    "vgg8_adaface": (AdaFace, {"s": 15.0, "m": 0.4}),
}
MODEL_NAMES = tuple(PRESETS)
HEADS = {head_class.__name__: head_class for head_class, _ in PRESETS.values()}  # a checkpoint's head by name


def conv_block(in_channels, out_channels):
    """Two 3x3 conv + BatchNorm + ReLU, then a 2x2 max-pool that halves the resolution.

    The second ReLU comes after the pool: max and ReLU commute, so the numbers and gradients
    are those of ReLU-then-pool, on a quarter of the elements.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )


class Dropout(nn.Module):
    """Inverted dropout with the mask drawn as uniform >= p: the same distribution as nn.Dropout's,
    whose one-at-a-time Bernoulli sampler takes three times as long on the CPU."""

    def __init__(self, p):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))

    def extra_repr(self):
        return f"p={self.p}"


class VGG8(nn.Module):
    """Backbone (C x S x S image -> embedding) followed by a classifier head from losses.py: 1x28x28 for
    the digits; an image folder's images have 1 or 3 channels and a side S that is 28 or a multiple of 8.

    Under autocast only the convolutions run in reduced precision: the embedding layer
    and the head always run in float32, the embedding being what this project draws.
    """

    def __init__(self, head_class, head_args, num_classes=10, embedding_dim=3, in_channels=1, image_size=28,
                 block=conv_block, dropout=Dropout):
        """The head, head_class(embedding_dim, num_classes, **head_args), is made after the backbone, so
        that the backbone's initial weights depend on the seed alone, whichever the head.
        block(in_channels, out_channels) and dropout(p) build those layers (bench.py: the seed's)."""
        super().__init__()
        self.features = nn.Sequential(
            block(in_channels, 16),  # (B, 16, 14, 14) for 28 x 28 images
            block(16, 32),           # (B, 32, 7, 7)
            block(32, 64),           # (B, 64, 3, 3): each pooling halves the side, rounding down
        )
        side = image_size // 8
        self.embedding = nn.Sequential(
            nn.BatchNorm2d(64),
            dropout(0.5),
            nn.Flatten(),
            nn.Linear(64 * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),  # (B, embedding_dim)
        )
        self.head = head_class(embedding_dim, num_classes, **head_args)

    def embed(self, images):
        features = self.features(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.embedding(features.float())

    def forward(self, images, labels=None):
        """Returns (logits, embeddings); labels only matter to margin heads in training."""
        embeddings = self.embed(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.head(embeddings, labels), embeddings


def to_input(images):
    """uint8 images (B, H, W), or (B, H, W, 3) in colour -> the network's input: float (B, 1 or 3, H, W)
    in [-1, 1], channels-last, on the images' device."""
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


def build_model(model_name, embedding_dim=3, num_classes=10, in_channels=1, image_size=28, **head_args):
    """'vgg8_arcface' -> VGG8 with the ArcFace head, and so on for every preset in PRESETS; head_args
    override the preset's arguments (ArcFace's s and m, say)."""
    head_class, preset_args = PRESETS[model_name]
    return VGG8(head_class, {**preset_args, **head_args}, num_classes, embedding_dim, in_channels, image_size)


def load_model(path, device="cpu"):
    """The trained network of a checkpoint (M_best.pth or M_last.pth), in eval mode on `device`.

    model = load_model("data/vgg8_arcface_best.pth")
    embeddings = model.embed(to_input(images))  # uint8 (B, 28, 28) -> (B, 3)
    """
    from embedviz.old_formats import head_config  # a checkpoint made before the heads were named after their papers

    checkpoint = run_files.load_checkpoint(path, "train a model first: python train.py")
    try:
        preset = PRESETS[checkpoint["model"]][0].__name__ if checkpoint.get("model") in PRESETS else None
        head_args = head_config(checkpoint["head"], preset)
        head_class = HEADS[head_args.pop("class")]
        model = VGG8(head_class, head_args, checkpoint["num_classes"], checkpoint["embedding_dim"],
                     checkpoint.get("in_channels", 1), checkpoint.get("image_size", 28))
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise run_files.RunFileError(f"{path} does not describe a model this code can rebuild "
                                     f"({type(error).__name__}: {error})") from None
    return model.to(device, memory_format=torch.channels_last).eval()
