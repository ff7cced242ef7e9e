"""Classifier heads that turn embeddings into logits: plain softmax and the angular-margin family.

Every head is an ``nn.Module`` with a ``.weight`` of shape ``(num_classes, in_features)``,
``forward(embeddings, labels=None) -> logits`` and ``config()``, the keyword arguments that
rebuild it (with its ``kind``). Labels are only used by margin heads during training: with
``labels=None`` no margin is added, which is how predictions are made. Heads compute in the
dtype of their inputs; models.VGG8 runs them outside autocast, in float32, so that cosines
close to 1 keep their precision when the backbone runs in bf16 or fp16.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Softmax(nn.Module):
    """Plain linear classifier with bias: logits = x W^T + b."""

    kind = "softmax"
    uses_cosine = False  # its predictions are not argmax cosine(x, W)

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, embeddings, labels=None):
        return F.linear(embeddings, self.weight, self.bias)

    def config(self):
        return {"kind": self.kind}


class MarginHead(nn.Module):
    """The angular-margin family in InsightFace's combined form.

    logits[i, j] = s * (cos(m1 * theta_ij + m2) - m3) if j == labels[i] else s * cos(theta_ij),
    with theta_ij the angle between embedding i and class weight j. m1 > 1 is SphereFace's
    multiplicative margin, m2 ArcFace's additive angular margin, m3 CosFace's additive cosine
    margin; m1 = 1, m2 = m3 = 0 is NormFace, a softmax over scaled cosines.
    """

    kind = "margin"
    uses_cosine = True

    def __init__(self, in_features, num_classes, s=15.0, m1=1.0, m2=0.0, m3=0.0):
        super().__init__()
        check_margins(s, m1, m2, m3)
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings, labels=None):
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))  # (B, C)
        if labels is None:
            return self.s * cosine
        target = margin_target(cosine.gather(1, labels[:, None]), self.m1, self.m2, self.m3)  # (B, 1)
        return self.s * cosine.scatter(1, labels[:, None], target)

    def config(self):
        return {"kind": self.kind, "s": self.s, "m1": self.m1, "m2": self.m2, "m3": self.m3}

    def extra_repr(self):
        return ", ".join(f"{key}={value}" for key, value in self.config().items() if key != "kind")


def margin_target(cosine, m1=1.0, m2=0.0, m3=0.0):
    """cos(m1 * theta + m2) - m3 for theta = acos(cosine), kept decreasing in theta everywhere.

    Past m1 * theta + m2 = pi the cosine would turn back up and reward moving away from the
    class. There, with m1 = 1, a linear fallback cos(theta) - c - m3 takes over, c being
    InsightFace's m2 sin(m2) while that keeps the fallback below the margin curve's end,
    -1 - m3 (cos m2 + m2 sin m2 >= 1, that is m2 up to about 2.33), and 1 - cos(m2) beyond,
    which meets the end exactly; with m1 > 1, SphereFace's (-1)^k cos(phi) - 2k, which stays
    continuous. The clamp keeps acos away from +/-1, where its gradient is infinite, by one
    machine epsilon of the dtype: near theta = 0 that moves theta by about sqrt(2 eps), the
    resolution of theta that cosines of that dtype hold anyway.
    """
    eps = torch.finfo(cosine.dtype).eps
    theta = torch.acos(cosine.clamp(-1 + eps, 1 - eps))
    phi = m1 * theta + m2
    with_margin = torch.cos(phi) - m3
    if m1 == 1:
        fallback = cosine - max(m2 * math.sin(m2), 1 - math.cos(m2)) - m3
    else:
        k = torch.floor(phi / math.pi)
        fallback = (1 - 2 * torch.remainder(k, 2)) * torch.cos(phi) - 2 * k - m3
    return torch.where(phi <= math.pi, with_margin, fallback)


def check_margins(s, m1, m2, m3):
    """Margins that make the target harder, never easier; margin_target keeps it decreasing for all of them."""
    if not (0 < s < math.inf and 1 <= m1 < math.inf and 0 <= m2 < math.pi and 0 <= m3 < math.inf):
        raise ValueError(f"margins out of range (s={s}, m1={m1}, m2={m2}, m3={m3}): "
                         "s > 0, m1 >= 1, 0 <= m2 < pi and m3 >= 0 are needed")


class ArcFace(MarginHead):
    """Additive angular margin (Deng et al., 2019): s * cos(theta_y + m) for the true class."""

    def __init__(self, in_features, num_classes, s=15.0, m=0.5):
        super().__init__(in_features, num_classes, s=s, m2=m)
