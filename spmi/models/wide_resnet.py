"""Pre-activation WideResNet-28-k (Zagoruyko & Komodakis 2016) for 32x32 inputs."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spmi.models import register_model


def _conv3x3(c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out, 1)
        self.drop_rate = drop_rate
        self.same_shape = c_in == c_out and stride == 1
        self.shortcut = None if self.same_shape else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # Identity shortcut keeps the raw input; the projection sees the pre-activation.
        return out + (x if self.shortcut is None else self.shortcut(pre))


def _stage(n: int, c_in: int, c_out: int, stride: int, drop_rate: float) -> nn.Sequential:
    blocks = [BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, drop_rate) for i in range(n)]
    return nn.Sequential(*blocks)


class WideResNet(nn.Module):
    """WideResNet-depth-widen with global average pooling and a linear classifier."""

    def __init__(
        self, num_classes: int, depth: int = 28, widen: int = 2, drop_rate: float = 0.0, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = _conv3x3(in_channels, widths[0], 1)
        self.block1 = _stage(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _stage(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _stage(n, widths[2], widths[3], 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits [B, num_classes]."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("wrn_28_2")
def wrn_28_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WideResNet-28-2 (about 1.47M parameters)."""
    return WideResNet(num_classes, 28, 2, 0.0, in_channels)


@register_model("wrn_28_8")
def wrn_28_8(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WideResNet-28-8 (about 23.4M parameters)."""
    return WideResNet(num_classes, 28, 8, 0.0, in_channels)
