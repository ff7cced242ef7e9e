"""VGG8: a small convolutional backbone with a low-dimensional embedding and a pluggable head."""

import torch
import torch.nn as nn

from losses import PRESETS, build_head

MODEL_NAMES = tuple(PRESETS)  # vgg8_softmax, vgg8_normface, vgg8_sphereface, vgg8_cosface, vgg8_arcface, ...


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
    """Backbone (1x28x28 image -> embedding) followed by a classifier head from losses.py.

    Under autocast only the convolutions run in reduced precision: the embedding layer
    and the head always run in float32, the embedding being what this project draws.
    """

    def __init__(self, make_head, embedding_dim=3):
        """make_head(embedding_dim) -> head; called after the backbone is built, so that the
        backbone's initial weights depend on the seed alone, whichever the head."""
        super().__init__()
        self.features = nn.Sequential(
            conv_block(1, 16),   # (B, 16, 14, 14)
            conv_block(16, 32),  # (B, 32, 7, 7)
            conv_block(32, 64),  # (B, 64, 3, 3)
        )
        self.embedding = nn.Sequential(
            nn.BatchNorm2d(64),
            Dropout(0.5),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, embedding_dim),
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


def build_model(model_name, embedding_dim=3, num_classes=10, **head_options):
    """'vgg8_arcface' -> VGG8 with the ArcFace head, and so on for every preset in losses.PRESETS.

    head_options (scale, margin, m1, m2, m3) override the preset's; see losses.build_head.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return VGG8(lambda in_features: build_head(model_name, in_features, num_classes, **head_options), embedding_dim)
