"""Classifier heads that turn embeddings into logits: plain softmax and the angular-margin family.

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

    uses_cosine = False  # its predictions are not argmax cosine(x, W)

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, embeddings, labels=None):
        return F.linear(embeddings, self.weight, self.bias)


class MarginHead(nn.Module):
    """The angular-margin family in InsightFace's combined form.

    logits[i, j] = s * (cos(m1 * theta_ij + m2) - m3) if j == labels[i] else s * cos(theta_ij),
    with theta_ij the angle between embedding i and class weight j. m1 > 1 is SphereFace's
    multiplicative margin, m2 ArcFace's additive angular margin, m3 CosFace's additive cosine
    margin; m1 = 1, m2 = m3 = 0 is NormFace, a softmax over scaled cosines.
    """

    uses_cosine = True

    def __init__(self, in_features, num_classes, s=15.0, m1=1.0, m2=0.0, m3=0.0):
        super().__init__()
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings, labels=None):
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))  # (B, C)
        if labels is None:
            return self.s * cosine
        target = margin_target(cosine.gather(1, labels[:, None]), self.m1, self.m2, self.m3)  # (B, 1)
        return self.s * cosine.scatter(1, labels[:, None], target)

    def extra_repr(self):
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"


def margin_target(cosine, m1=1.0, m2=0.0, m3=0.0):
    """cos(m1 * theta + m2) - m3 for theta = acos(cosine), kept decreasing in theta everywhere.

    Past m1 * theta + m2 = pi the cosine would turn back up and reward moving away from the
    class. There, with m1 = 1, the usual linear fallback cos(theta) - m2 sin(m2) - m3 takes
    over (ArcFace, InsightFace); with m1 > 1, SphereFace's (-1)^k cos(phi) - 2k, which stays
    continuous. The clamp keeps acos away from +/-1, where its gradient is infinite, by one
    machine epsilon of the dtype: near theta = 0 that moves theta by about sqrt(2 eps), the
    resolution of theta that cosines of that dtype hold anyway.
    """
    eps = torch.finfo(cosine.dtype).eps
    theta = torch.acos(cosine.clamp(-1 + eps, 1 - eps))
    phi = m1 * theta + m2
    with_margin = torch.cos(phi) - m3
    if m1 == 1:
        fallback = cosine - m2 * math.sin(m2) - m3
    else:
        k = torch.floor(phi / math.pi)
        fallback = (1 - 2 * torch.remainder(k, 2)) * torch.cos(phi) - 2 * k - m3
    return torch.where(phi <= math.pi, with_margin, fallback)


class ArcFace(MarginHead):
    """Additive angular margin (Deng et al., 2019): s * cos(theta_y + m) for the true class."""

    def __init__(self, in_features, num_classes, s=15.0, m=0.5):
        super().__init__(in_features, num_classes, s=s, m2=m)


# Presets: model name -> (head, its parameters). s and m suit a 3-D embedding of 10 classes:
# a sphere holds 10 caps of about 60 degrees at most, so margins beyond ~0.5 rad (~30 degrees)
# and scales far above 15 leave no room to satisfy the loss, and training stalls.
PRESETS = {
    "vgg8_softmax": (Softmax, {}),
    "vgg8_normface": (MarginHead, {"s": 15.0}),
    "vgg8_sphereface": (MarginHead, {"s": 15.0, "m1": 1.5}),
    "vgg8_cosface": (MarginHead, {"s": 15.0, "m3": 0.35}),
    "vgg8_arcface": (MarginHead, {"s": 15.0, "m2": 0.5}),
    "vgg8_combined": (MarginHead, {"s": 15.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
}
# --margin sets the one margin that names the preset
PRESET_MARGIN = {"vgg8_sphereface": "m1", "vgg8_cosface": "m3", "vgg8_arcface": "m2"}


def build_head(model_name, in_features, num_classes, scale=None, margin=None, m1=None, m2=None, m3=None):
    """The preset's head, with any of s, m1, m2, m3 overridden; --margin maps onto the preset's margin."""
    head_class, params = PRESETS[model_name]
    params = dict(params)
    overrides = {"s": scale, "m1": m1, "m2": m2, "m3": m3}
    if margin is not None:
        if model_name not in PRESET_MARGIN:
            raise ValueError(f"--margin has no meaning for {model_name}; "
                             + ("it has no margin" if model_name in ("vgg8_softmax", "vgg8_normface")
                                else "set --m1, --m2 or --m3"))
        overrides[PRESET_MARGIN[model_name]] = margin
    given = {key: value for key, value in overrides.items() if value is not None}
    if given and head_class is Softmax:
        raise ValueError(f"{model_name} has neither scale nor margin; {', '.join(given)} cannot be set")
    params.update(given)
    if head_class is MarginHead:
        check_margins(params.get("s", 15.0), params.get("m1", 1.0), params.get("m2", 0.0), params.get("m3", 0.0))
    return head_class(in_features, num_classes, **params)


def check_margins(s, m1, m2, m3):
    """Margins that make the target harder, never easier, and keep it decreasing in theta."""
    if not (s > 0 and m1 >= 1 and 0 <= m2 < math.pi and m3 >= 0):
        raise ValueError(f"margins out of range (s={s}, m1={m1}, m2={m2}, m3={m3}): "
                         "s > 0, m1 >= 1, 0 <= m2 < pi and m3 >= 0 are needed")
