"""Classifier heads that turn embeddings into logits.

Every head is an ``nn.Module`` with a ``.weight`` of shape ``(num_classes, in_features)``
and ``forward(embeddings, labels=None) -> logits``. Labels are only used by margin heads
during training: with ``labels=None`` no margin is added, which is how predictions are made.
Heads compute in the dtype of their inputs; models.VGG8 runs them outside autocast, in
float32, so that cosines close to 1 keep their precision when the backbone runs in bf16.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Softmax(nn.Module):
    """Plain linear classifier with bias: logits = x W^T + b."""

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, embeddings, labels=None):
        return F.linear(embeddings, self.weight, self.bias)


class ArcFace(nn.Module):
    """Additive angular margin (Deng et al., 2019).

    logits[i, j] = s * cos(theta_ij + m) if j == labels[i] else s * cos(theta_ij),
    with theta_ij the angle between embedding i and class weight j.
    """

    def __init__(self, in_features, num_classes, s=15.0, m=0.5):
        super().__init__()
        self.s = s
        self.m = m
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings, labels=None):
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))  # (B, C)
        if labels is None:
            return self.s * cosine
        target_cosine = cosine.gather(1, labels[:, None])  # (B, 1)
        target_logit = arcface_target(target_cosine, self.m)
        logits = cosine.scatter(1, labels[:, None], target_logit)
        return self.s * logits


def arcface_target(cosine, m):
    """cos(theta + m) for theta = acos(cosine), kept monotonic in theta past pi - m.

    The clamp keeps acos away from +/-1, where its gradient is infinite, by one machine
    epsilon of the dtype: near theta = 0 that moves theta by about sqrt(2 eps), which is
    the resolution of theta that cosines of that dtype hold anyway. Past
    theta = pi - m, cos(theta + m) would turn back up and reward moving away from the
    class; there the usual linear fallback cos(theta) - m sin(m) takes over.
    """
    eps = torch.finfo(cosine.dtype).eps
    theta = torch.acos(cosine.clamp(-1 + eps, 1 - eps))
    with_margin = torch.cos(theta + m)
    fallback = cosine - m * math.sin(m)
    return torch.where(theta <= math.pi - m, with_margin, fallback)


HEADS = {
    "arcface": ArcFace,
    "softmax": Softmax,
}
