"""Classifier heads that turn embeddings into logits: plain softmax, the angular-margin family
(NormFace, SphereFace, CosFace, ArcFace and their combination), and the newer heads of face
recognition (AdaCos, Sub-center ArcFace, CurricularFace, ElasticFace, MagFace, AdaFace). Each class
is named after its paper and takes the paper's parameters; models.PRESETS names one per --model.

Every head is an ``nn.Module`` with ``num_classes``, a ``.weight`` of shape ``(num_classes * k,
in_features)`` (one row per class, or k per class for Sub-center ArcFace, class-major),
``forward(embeddings, labels=None) -> logits``, ``loss(logits, labels, embeddings)``, ``state()``,
what changes in training besides the weights (its registered buffers), and ``config()``, its class
and the arguments that rebuild it. Labels are the head's class numbers, 0 to num_classes - 1, and
are only used by margin heads during training: with ``labels=None`` no margin is added, which is how
predictions are made. Heads receive the embeddings before normalisation (MagFace and AdaFace read
their norms) and compute in their dtype; models.VGG8 runs them outside autocast, in float32, so that
cosines close to 1 keep their precision when the backbone runs in bf16 or fp16.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    """What every head shares: cross-entropy as its loss, its buffers as its state, and its
    configuration, the names in `params`, printed by repr()."""

    params = ()  # the constructor's arguments besides in_features and num_classes
    uses_cosine = True  # predictions are argmax cosine(x, W)
    k = 1  # sub-centres per class

    def loss(self, logits, labels, embeddings, reduction="mean"):
        return F.cross_entropy(logits, labels, reduction=reduction)

    def state(self):
        """Numbers that training changes besides the weights, by the paper's names (recorded per epoch)."""
        return {name: buffer.item() for name, buffer in self.named_buffers()}

    def config(self):
        """{"class": the head's class name, and its arguments}: what models.load_model rebuilds it from."""
        return {"class": type(self).__name__, **{name: getattr(self, name) for name in self.params}}

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.params)


class CosineHead(Head):
    """A head on the cosines between the normalised embeddings and class weights."""

    def __init__(self, in_features, num_classes, k=1):
        super().__init__()
        self.num_classes, self.k = num_classes, k
        self.weight = nn.Parameter(torch.empty(num_classes * k, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings):
        """(B, num_classes) cosines; with sub-centres, the largest of each class's."""
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        if self.k == 1:
            return cosine
        return cosine.view(len(cosine), self.num_classes, self.k).amax(2)


class Softmax(Head):
    """Plain linear classifier with bias: logits = x W^T + b."""

    uses_cosine = False

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, embeddings, labels=None):
        return F.linear(embeddings, self.weight, self.bias)


class CombinedMargin(CosineHead):
    """The angular-margin family in one form, the combined margin of ArcFace's paper (Deng et al.,
    2019, Sec. 3.4) and InsightFace's code:

        logits[i, j] = s * (cos(m1 * theta_ij + m2) - m3) if j == labels[i] else s * cos(theta_ij),

    with theta_ij the angle between embedding i and class weight j. m1 > 1 is SphereFace's
    multiplicative margin, m2 ArcFace's additive angular margin, m3 CosFace's additive cosine
    margin; m1 = 1, m2 = m3 = 0 is NormFace, a softmax over scaled cosines. k > 1: k sub-centres
    a class (Sub-center ArcFace).
    """

    params = ("s", "m1", "m2", "m3", "k")

    def __init__(self, in_features, num_classes, s=15.0, m1=1.0, m2=0.0, m3=0.0, k=1):
        check_margins(s, m1, m2, m3)
        if not (isinstance(k, int) and 1 <= k <= 16):
            raise ValueError(f"k, the sub-centres a class, must be an integer from 1 to 16, got {k}")
        super().__init__(in_features, num_classes, k)
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)  # (B, C)
        if labels is None:
            return self.s * cosine
        target = margin_target(cosine.gather(1, labels[:, None]), self.m1, self.m2, self.m3)  # (B, 1)
        return self.s * cosine.scatter(1, labels[:, None], target)


class NormFace(CombinedMargin):
    """NormFace (Wang et al., 2017, "NormFace: L2 Hypersphere Embedding for Face Verification"):
    a softmax over s times the cosines, no margin."""

    params = ("s",)

    def __init__(self, in_features, num_classes, s=15.0):
        super().__init__(in_features, num_classes, s=s)


class SphereFace(CombinedMargin):
    """SphereFace (Liu et al., 2017, "SphereFace: Deep Hypersphere Embedding for Face Recognition"):
    the multiplicative angular margin, s * cos(m * theta) on the target; here with normalised
    weights and embeddings and a fixed scale s, as in its later form (SphereFace2's baseline)."""

    params = ("s", "m")

    def __init__(self, in_features, num_classes, s=15.0, m=1.5):
        super().__init__(in_features, num_classes, s=s, m1=m)
        self.m = m


class CosFace(CombinedMargin):
    """CosFace (Wang et al., 2018, "CosFace: Large Margin Cosine Loss for Deep Face Recognition"):
    the additive cosine margin, s * (cos(theta) - m) on the target."""

    params = ("s", "m")

    def __init__(self, in_features, num_classes, s=15.0, m=0.35):
        super().__init__(in_features, num_classes, s=s, m3=m)
        self.m = m


class ArcFace(CombinedMargin):
    """ArcFace (Deng et al., 2019, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    Eq. 3): the additive angular margin, s * cos(theta + m) on the target, the angle itself pushed
    m radians further from the class weight; margin_target keeps it decreasing past pi - m."""

    params = ("s", "m")

    def __init__(self, in_features, num_classes, s=15.0, m=0.5):
        super().__init__(in_features, num_classes, s=s, m2=m)
        self.m = m


class SubCenterArcFace(CombinedMargin):
    """Sub-center ArcFace (Deng et al., 2020, "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Internet Faces", Sec. 3): k sub-centres per class (the authors' K = 3), the class
    angle being theta_j = arccos(max_k cos(x, W_jk)), then ArcFace's margin m. A class's dominant
    sub-centre, the one nearest to most of its images, gathers the clean ones; the others collect
    the odd and mislabelled ones (metrics.dominant_subcenters)."""

    params = ("s", "m", "k")

    def __init__(self, in_features, num_classes, s=15.0, m=0.5, k=3):
        super().__init__(in_features, num_classes, s=s, m2=m, k=k)
        self.m = m


def margin_target(cosine, m1=1.0, m2=0.0, m3=0.0):
    """cos(m1 * theta + m2) - m3 for theta = acos(cosine), kept decreasing in theta everywhere.

    m2 and m3 may be tensors that broadcast against cosine: one margin per sample (ElasticFace,
    MagFace, AdaFace). Past m1 * theta + m2 = pi the cosine would turn back up and reward moving
    away from the class. There, with m1 = 1, a linear fallback cos(theta) - c - m3 takes over, c
    being InsightFace's m2 sin(m2) while that keeps the fallback below the margin curve's end,
    -1 - m3 (cos m2 + m2 sin m2 >= 1, that is m2 up to about 2.33), and 1 - cos(m2) beyond,
    which meets the end exactly; with m1 > 1, SphereFace's (-1)^k cos(phi) - 2k, which stays
    continuous. A negative m2 (AdaFace's, for high norms) stops at theta + m2 = 0, as AdaFace
    clips it: the target is flat below theta = -m2, where cos would rise. The clamp keeps acos
    away from +/-1, where its gradient is infinite, by one machine epsilon of the dtype: near
    theta = 0 that moves theta by about sqrt(2 eps), the resolution of theta that cosines of that
    dtype hold anyway.
    """
    eps = torch.finfo(cosine.dtype).eps
    theta = torch.acos(cosine.clamp(-1 + eps, 1 - eps))
    phi = (m1 * theta + m2).clamp(min=0)
    with_margin = torch.cos(phi) - m3
    if m1 == 1:
        fallback = cosine - fallback_offset(m2, cosine.dtype) - m3
    else:
        k = torch.floor(phi / math.pi)
        fallback = (1 - 2 * torch.remainder(k, 2)) * torch.cos(phi) - 2 * k - m3
    return torch.where(phi <= math.pi, with_margin, fallback)


def fallback_offset(m2, dtype):
    """max(m2 sin m2, 1 - cos m2), margin_target's offset past pi, computed in float64: a Python number
    for a fixed margin, which reaches the device as an argument of the subtraction, not as a tensor
    copied there at every step; for per-sample margins, a tensor on their device, in `dtype`."""
    if isinstance(m2, torch.Tensor):
        m2 = m2.double()
        return torch.maximum(m2 * torch.sin(m2), 1 - torch.cos(m2)).to(dtype)
    return max(m2 * math.sin(m2), 1 - math.cos(m2))


def check_margins(s, m1, m2, m3):
    """Margins that make the target harder, never easier; margin_target keeps it decreasing for all of them."""
    if not (0 < s < math.inf and 1 <= m1 < math.inf and 0 <= m2 < math.pi and 0 <= m3 < math.inf):
        raise ValueError(f"margins out of range (s={s}, m1={m1}, m2={m2}, m3={m3}): "
                         "s > 0, m1 >= 1, 0 <= m2 < pi and m3 >= 0 are needed")


# ---------------------------------------------------------------- the newer heads
# Their scales and margins are this project's for a 3-D embedding of 10 classes (s = 15, margins of
# at most 0.5 rad, as models.PRESETS explains); the papers' (s = 64, m up to 0.8) suit 512-D faces.

class AdaCos(CosineHead):
    """AdaCos, dynamic (Zhang et al., 2019, "AdaCos: Adaptively Scaling Cosine Logits for
    Effectively Learning Deep Face Representations", Sec. 4): cosine logits s * cos(theta) with no
    margin, s starting at the fixed scale sqrt(2) ln(C - 1) and re-estimated at every training
    step, without gradient, from the batch and the previous s, then used for that batch's logits:

        s = ln(B_avg) / cos(min(pi/4, theta_med)),
        B_avg = mean over the batch of sum over non-target classes j of exp(s cos theta_j),

    theta_med the median target angle. ln(B_avg) is a log-sum-exp, which cannot overflow.
    Eval mode and calls without labels leave s alone.

    s is kept from MIN_S to MAX_S. The floor is for two classes, whose fixed scale, sqrt(2) ln(1),
    is 0: all logits would be 0 and nothing would train. The cap is for 3-D. The rule assumes what
    holds in 512 dimensions, non-target cosines near 0, so that B_avg stays near C - 1 whatever s.
    On a 3-D sphere the nearest caps are about 60 degrees apart (cosine 0.5), ln(B_avg) grows with
    s, and the rule feeds on itself: uncapped, s went from 3.1 to 1,367 in the first epoch and to
    3.7 million by the third.
    """

    MIN_S, MAX_S = 1.0, 15.0  # MAX_S: the family's scale, the largest that suits 3-D (models.PRESETS)

    def __init__(self, in_features, num_classes):
        super().__init__(in_features, num_classes)
        self.register_buffer("s", torch.tensor(max(math.sqrt(2) * math.log(num_classes - 1), self.MIN_S)))

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)
        if labels is not None and self.training:
            with torch.no_grad():
                target = cosine.gather(1, labels[:, None])[:, 0]
                others = (self.s * cosine).scatter(1, labels[:, None], -math.inf)  # the target left out
                log_b_avg = others.logsumexp(dim=(0, 1)) - math.log(len(cosine))
                theta_med = torch.acos(target.clamp(-1, 1)).median()
                s = log_b_avg / torch.cos(theta_med.clamp(max=math.pi / 4))
                self.s.copy_(s.clamp(self.MIN_S, self.MAX_S))
        return self.s * cosine


class CurricularFace(CosineHead):
    """CurricularFace (Huang et al., 2020, "CurricularFace: Adaptive Curriculum Learning Loss for
    Deep Face Recognition", Sec. 3.2): ArcFace's margin on the target, T = cos(theta_y + m); a
    non-target cosine above T is a hard example and becomes N = cos theta_j (t + cos theta_j),
    t a running average of r, the batch's mean target cosine: t <- 0.01 r + 0.99 t, as the
    authors' code weighs it, from t = 0, updated before it is used, in training only."""

    params = ("s", "m")

    def __init__(self, in_features, num_classes, s=15.0, m=0.5):
        check_margins(s, 1.0, m, 0.0)
        super().__init__(in_features, num_classes)
        self.s, self.m = s, m
        self.register_buffer("t", torch.zeros(()))

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.s * cosine
        target = cosine.gather(1, labels[:, None])
        with_margin = margin_target(target, m2=self.m)
        if self.training:
            with torch.no_grad():
                self.t.mul_(0.99).add_(0.01 * target.mean())
        hard = cosine > with_margin
        cosine = torch.where(hard, cosine * (self.t + cosine), cosine)
        return self.s * cosine.scatter(1, labels[:, None], with_margin)


class ElasticFace(CosineHead):
    """ElasticFace, ElasticArcFace (Boutros et al., 2022, "ElasticFace: Elastic Margin Loss for Deep
    Face Recognition", Eq. 6): s cos(theta_y + E(m, sigma)), each sample's margin drawn from
    N(m, sigma) at every step (the paper's m = 0.5, sigma = 0.05), from torch's generator of the
    device, which the run seeds and its checkpoints keep, so that runs and resumes repeat. Eval
    mode uses m itself. A draw is clipped to [0, pi/2]: a negative margin would make the target
    easier than plain cosine (the authors' code does not clip; at sigma = 0.05 no draw gets near)."""

    params = ("s", "m", "sigma")

    def __init__(self, in_features, num_classes, s=15.0, m=0.5, sigma=0.05):
        check_margins(s, 1.0, m, 0.0)
        if not 0 <= sigma < math.inf:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        super().__init__(in_features, num_classes)
        self.s, self.m, self.sigma = s, m, sigma

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.s * cosine
        target = cosine.gather(1, labels[:, None])
        margin = self.m
        if self.training:
            margin = (self.m + self.sigma * torch.randn_like(target)).clamp(0, math.pi / 2)
        return self.s * cosine.scatter(1, labels[:, None], margin_target(target, m2=margin))


class MagFace(CosineHead):
    """MagFace (Meng et al., 2021, "MagFace: A Universal Representation for Face Recognition and
    Quality Assessment", Sec. 3): ArcFace whose margin grows with the embedding's norm a,

        m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m,  a clamped to [l_a, u_a],

    and a loss that adds lambda_g g(a), g(a) = 1/a + a / u_a^2, which rewards a larger norm up to
    u_a: the network can afford the larger margin only for the images it recognises easily, so
    the norm comes to measure how recognisable an image is. As the authors' code, the margin keeps
    its gradient through a, and both read the clamped norm; unlike its default easy margin (no
    margin where cos theta < 0), the margin applies at every angle, kept decreasing.

    Bounds for this network: its BatchNorm'd 3-D embeddings have norms of about 0.6 to 2.2 (5th to
    95th percentile under ArcFace), so a runs from l_a = 0.5 to u_a = 2.5 (the paper: 10 to 110),
    and the margin from l_m = 0.25 to u_m = 0.5, this project's ArcFace margin (the paper: 0.45
    to 0.8). lambda_g = 1: twice the 0.49 that the paper's condition for a unique optimal norm,
    lambda_g >= s K u_a^2 l_a^2 / (u_a^2 - l_a^2) with K the margin's slope, gives here (the
    authors' code checks it; the paper's 35 is 1.5 times its 22.6).
    """

    params = ("s", "l_a", "u_a", "l_m", "u_m", "lambda_g")

    def __init__(self, in_features, num_classes, s=15.0, l_a=0.5, u_a=2.5, l_m=0.25, u_m=0.5, lambda_g=1.0):
        check_margins(s, 1.0, u_m, 0.0)
        if not (0 < l_a < u_a < math.inf and 0 <= l_m <= u_m and 0 <= lambda_g < math.inf):
            raise ValueError(f"MagFace needs 0 < l_a < u_a, 0 <= l_m <= u_m and lambda_g >= 0 (l_a={l_a}, "
                             f"u_a={u_a}, l_m={l_m}, u_m={u_m}, lambda_g={lambda_g})")
        super().__init__(in_features, num_classes)
        self.s, self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = s, l_a, u_a, l_m, u_m, lambda_g

    def norm(self, embeddings):
        return embeddings.norm(dim=1, keepdim=True).clamp(self.l_a, self.u_a)

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.s * cosine
        margin = (self.u_m - self.l_m) / (self.u_a - self.l_a) * (self.norm(embeddings) - self.l_a) + self.l_m
        target = margin_target(cosine.gather(1, labels[:, None]), m2=margin)
        return self.s * cosine.scatter(1, labels[:, None], target)

    def loss(self, logits, labels, embeddings, reduction="mean"):
        a = self.norm(embeddings)[:, 0]
        regulariser = self.lambda_g * (1 / a + a / self.u_a ** 2)
        per_sample = F.cross_entropy(logits, labels, reduction="none") + regulariser
        return per_sample if reduction == "none" else per_sample.mean()


class AdaFace(CosineHead):
    """AdaFace (Kim et al., 2022, "AdaFace: Quality Adaptive Margin for Face Recognition", Sec. 3):
    the margin adapts to the embedding's norm relative to the batches' norms,

        z = clip(h (||x|| - mu) / (sigma + eps), -1, 1),
        target = cos(theta + g_angle) - g_add,  g_angle = -m z,  g_add = m z + m,

    so a high-norm (easy) image gets a CosFace-like margin and a low-norm (hard) one an ArcFace-
    like margin. mu and sigma are running averages of the batches' mean and standard deviation
    of the norms (momentum 0.01, updated before use, in training only); the norms carry no
    gradient into the margin. h = 0.333 and m = 0.4 as the paper. Where the authors' code clips
    theta + g_angle to [0, pi], margin_target keeps the target decreasing past pi. The paper's starting values
    (mu = 20, sigma = 100) are for 512-D norms; here they start at the mean and standard deviation
    of the norm of three independent unit normals, 1.60 and 0.67, what the final BatchNorm gives
    an untrained network's embeddings, up to its scale.
    """

    params = ("s", "m", "h")

    def __init__(self, in_features, num_classes, s=15.0, m=0.4, h=0.333):
        check_margins(s, 1.0, m, 0.0)
        if not 0 < h < math.inf:
            raise ValueError(f"h must be > 0, got {h}")
        super().__init__(in_features, num_classes)
        self.s, self.m, self.h, self.eps = s, m, h, 1e-3
        self.register_buffer("batch_mean", torch.tensor(math.sqrt(8 / math.pi)))
        self.register_buffer("batch_std", torch.tensor(math.sqrt(3 - 8 / math.pi)))

    def forward(self, embeddings, labels=None):
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.s * cosine
        norms = embeddings.detach().norm(dim=1, keepdim=True).clamp(0.001, 100)
        if self.training:
            with torch.no_grad():
                self.batch_mean.mul_(0.99).add_(0.01 * norms.mean())
                self.batch_std.mul_(0.99).add_(0.01 * norms.std())
        z = (self.h * (norms - self.batch_mean) / (self.batch_std + self.eps)).clamp(-1, 1)
        target = margin_target(cosine.gather(1, labels[:, None]), m2=-self.m * z, m3=self.m * z + self.m)
        return self.s * cosine.scatter(1, labels[:, None], target)


