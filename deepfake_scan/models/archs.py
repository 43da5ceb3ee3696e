"""Built-in architectures. Each returns a module emitting one logit per image.

The default model's members (``npr_resnet``, ``resnet18_cut``) are built here without
torchvision: its import pulls in ``torch._dynamo`` (~0.9 s of a core), paid by the scan's driver
and by every detector actor as it starts. The others import it when they are built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepfake_scan.models.registry import register


class _Squeeze(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


@register("mobilenet_v2")
def mobilenet_v2(dropout: float = 0.3) -> nn.Module:
    """The background reading's MobileNetV2 real/fake classifier (random init here)."""
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = nn.Sequential(
        nn.Linear(net.last_channel, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(512, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout / 3),
        nn.Linear(128, 1),
    )
    return _Squeeze(net)


@register("resnet18")
def resnet18() -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=1)
    return _Squeeze(net)


@register("efficientnet_b0")
def efficientnet_b0() -> nn.Module:
    import torchvision

    net = torchvision.models.efficientnet_b0(weights=None, num_classes=1)
    return _Squeeze(net)


@register("small_cnn")
def small_cnn(width: int = 32) -> nn.Module:
    """A small, fast CNN for CPU-only clusters and tests."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    w = width
    body = nn.Sequential(
        block(3, w),
        block(w, 2 * w),
        block(2 * w, 4 * w),
        block(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 1),
    )
    return _Squeeze(body)


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision builds it, its parameter names included: two 3x3
    convolutions with BatchNorm, and the input (1x1-projected where the shape changes) added
    before the last ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetCut(nn.Module):
    """A ResNet-18 cut after ``stages`` stages, with global pooling and one logit. Its stem and
    stages are torchvision's ResNet-18 (same layers, names and initialisation; a test holds them
    to torchvision's outputs).

    With ``npr``, it reads the neighbouring-pixel-relation residual (NPR, CVPR 2024)
    ``x - up(down(x))``: only the local pixel correlations that generators and blending leave,
    none of the image content. Without, it reads the pixels themselves: blending seams, colour
    and lighting mismatch at the scale of the face, which survive shrinking an image.
    """

    def __init__(self, stages: int = 2, npr: bool = True):
        super().__init__()
        self.npr = npr
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for i in range(stages):
            cout = 64 * 2**i
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1))
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.npr:
            down = F.interpolate(x, scale_factor=0.5, mode="nearest")
            x = (x - F.interpolate(down, size=x.shape[-2:], mode="nearest")) * 4.0
        return self.head(self.body(self.stem(x))).squeeze(-1)


@register("npr_resnet")
def npr_resnet(stages: int = 2) -> nn.Module:
    """NPR residual into ResNet-18's first two stages: small and fast on CPU (0.7 M weights)."""
    return ResNetCut(stages=stages, npr=True)


@register("resnet18_cut")
def resnet18_cut(stages: int = 3) -> nn.Module:
    """ResNet-18's first three stages on the pixels (2.8 M weights, a quarter of the whole)."""
    return ResNetCut(stages=stages, npr=False)


class Ensemble(nn.Module):
    """Member models scoring one input, each at its own scale: a member with ``scale`` 0.5 sees
    the input shrunk to half (bilinear, antialiased, as the scan's fit shrinks), so a 125 px model
    and a 250 px model share the 250 px input. Logit: the sum of ``weight`` x each member's logit
    (``models ensemble`` sets the weights to 1 / each member's temperature)."""

    def __init__(self, members: list[dict]):
        super().__init__()
        from deepfake_scan.models.registry import create_model

        self.members = nn.ModuleList(
            create_model(m["architecture"], **m.get("arch_kwargs", {})) for m in members
        )
        self.scales = [float(m.get("scale", 1.0)) for m in members]
        self.weights = [float(m.get("weight", 1.0)) for m in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for member, scale, weight in zip(self.members, self.scales, self.weights, strict=True):
            if scale != 1.0:
                x_m = F.interpolate(
                    x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False
                )
            else:
                x_m = x
            logit = member(x_m) * weight
            out = logit if out is None else out + logit
        return out


@register("ensemble")
def ensemble(members: list[dict] | None = None) -> nn.Module:
    """Default members: the bundled model's layout (NPR at the input size, content at half)."""
    default = [{"architecture": "npr_resnet"}, {"architecture": "resnet18_cut", "scale": 0.5}]
    return Ensemble(members or default)
