"""VGG8: a small convolutional backbone with a low-dimensional embedding and a pluggable head;
the model presets that train.py --model names; and load_model, which rebuilds a trained model
from its checkpoint alone."""

import inspect

import torch
import torch.nn as nn

from embedviz import run_files
from losses import AdaCos, AdaFace, CurricularFace, ElasticFace, MagFace, MarginHead, Softmax, SubCenterArcFace

HEADS = {head.kind: head for head in (Softmax, MarginHead, AdaCos, SubCenterArcFace, CurricularFace, ElasticFace,
                                      MagFace, AdaFace)}  # head.config()["kind"] -> its class

# Presets: model name -> head configuration. s and m suit a 3-D embedding of 10 classes: a sphere
# holds 10 caps of about 60 degrees at most, so margins beyond ~0.5 rad (~30 degrees) and scales
# far above 15 leave no room to satisfy the loss, and training stalls. The newer heads' own
# parameters are chosen in their docstrings (losses.py).
PRESETS = {
    "vgg8_softmax": {"kind": "softmax"},
    "vgg8_normface": {"kind": "margin", "s": 15.0},
    "vgg8_sphereface": {"kind": "margin", "s": 15.0, "m1": 1.5},
    "vgg8_cosface": {"kind": "margin", "s": 15.0, "m3": 0.35},
    "vgg8_arcface": {"kind": "margin", "s": 15.0, "m2": 0.5},
    "vgg8_combined": {"kind": "margin", "s": 15.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
    "vgg8_adacos": {"kind": "adacos"},
    "vgg8_subcenter": {"kind": "subcenter", "s": 15.0, "m2": 0.5, "subcenters": 3},
    "vgg8_curricularface": {"kind": "curricular", "s": 15.0, "m": 0.5},
    "vgg8_elasticface": {"kind": "elastic", "s": 15.0, "m": 0.5, "sigma": 0.05},
    "vgg8_magface": {"kind": "magface", "s": 15.0},
    "vgg8_adaface": {"kind": "adaface", "s": 15.0, "m": 0.4},
}
MODEL_NAMES = tuple(PRESETS)
PRESET_MARGIN = {"vgg8_sphereface": "m1", "vgg8_cosface": "m3", "vgg8_arcface": "m2",  # what --margin sets
                 "vgg8_subcenter": "m2", "vgg8_curricularface": "m", "vgg8_elasticface": "m", "vgg8_adaface": "m"}
FLAGS = {"s": "--scale", "m1": "--m1", "m2": "--m2", "m3": "--m3", "subcenters": "--subcenters"}  # parameter -> flag


def head_parameters(kind):
    """The keyword arguments that a head of this kind takes."""
    return [name for name in inspect.signature(HEADS[kind].__init__).parameters
            if name not in ("self", "in_features", "num_classes")]


def head_config(model_name, scale=None, margin=None, m1=None, m2=None, m3=None, subcenters=None):
    """The preset's head configuration with any of s, m1, m2, m3, subcenters overridden (None: the
    preset's); margin is --margin, the one margin that names the preset. Errors name the flags."""
    if model_name not in PRESETS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    config = dict(PRESETS[model_name])
    overrides = {"s": scale, "m1": m1, "m2": m2, "m3": m3, "subcenters": subcenters}
    if margin is not None:
        if model_name not in PRESET_MARGIN:
            raise ValueError(f"--margin has no meaning for {model_name}; "
                             + ("it has no margin" if model_name in ("vgg8_softmax", "vgg8_normface", "vgg8_adacos")
                                else "its margin follows the norm" if model_name == "vgg8_magface"
                                else "set --m1, --m2 or --m3"))
        overrides[PRESET_MARGIN[model_name]] = margin
    given = {key: value for key, value in overrides.items() if value is not None}
    if given and config["kind"] == "softmax":
        raise ValueError(f"{model_name} has neither scale nor margin; {', '.join(given)} cannot be set")
    unknown = [FLAGS.get(key, key) for key in given if key not in head_parameters(config["kind"])]
    if unknown:
        raise ValueError(f"{' and '.join(unknown)} cannot be set for {model_name}"
                         + ("; its scale adapts" if model_name == "vgg8_adacos" else ""))
    return {**config, **given}


def build_head(config, in_features, num_classes):
    """A head from its configuration, as head.config() returns it."""
    params = {key: value for key, value in config.items() if key != "kind"}
    return HEADS[config["kind"]](in_features, num_classes, **params)


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

    def __init__(self, make_head, embedding_dim=3, block=conv_block, dropout=Dropout, in_channels=1, image_size=28):
        """make_head(embedding_dim) -> head; called after the backbone is built, so that the
        backbone's initial weights depend on the seed alone, whichever the head.
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
        self.head = make_head(embedding_dim)

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


def build_model(model_name, embedding_dim=3, num_classes=10, in_channels=1, image_size=28, **head_options):
    """'vgg8_arcface' -> VGG8 with the ArcFace head, and so on for every preset in PRESETS.

    head_options (scale, margin, m1, m2, m3, subcenters) override the preset's; see head_config.
    """
    config = head_config(model_name, **head_options)
    return VGG8(lambda in_features: build_head(config, in_features, num_classes), embedding_dim,
                in_channels=in_channels, image_size=image_size)


def load_model(path, device="cpu"):
    """The trained network of a checkpoint (M_best.pth or M_last.pth), in eval mode on `device`.

    model = load_model("data/vgg8_arcface_best.pth")
    embeddings = model.embed(to_input(images))  # uint8 (B, 28, 28) -> (B, 3)
    """
    checkpoint = run_files.load_checkpoint(path, "train a model first: python train.py")
    try:
        config, num_classes = checkpoint["head"], checkpoint["num_classes"]
        model = VGG8(lambda in_features: build_head(config, in_features, num_classes), checkpoint["embedding_dim"],
                     in_channels=checkpoint.get("in_channels", 1), image_size=checkpoint.get("image_size", 28))
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise run_files.RunFileError(f"{path} does not describe a model this code can rebuild "
                                     f"({type(error).__name__}: {error})") from None
    return model.to(device, memory_format=torch.channels_last).eval()
