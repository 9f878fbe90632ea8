"""LeNet variant used by the SPMI authors for (Fashion-)MNIST-sized inputs."""

import torch
from torch import Tensor, nn

from spmi.models import register_model


class LeNet(nn.Module):
    """Two conv-BN-ReLU-pool stages and a 500-unit BN-ReLU hidden layer (28x28 input)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5, padding=2)
        self.bn1 = nn.BatchNorm2d(20)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5, padding=2)
        self.bn2 = nn.BatchNorm2d(50)
        self.fc1 = nn.Linear(50 * 7 * 7, 500)
        self.bn3 = nn.BatchNorm1d(500)
        self.fc2 = nn.Linear(500, num_classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits [B, num_classes]."""
        # ReLU after the pool: the same values and gradients (both are monotone), a quarter of the work
        x = self.relu(self.pool(self.bn1(self.conv1(x))))
        x = self.relu(self.pool(self.bn2(self.conv2(x))))
        x = self.relu(self.bn3(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


@register_model("lenet")
def lenet(num_classes: int, in_channels: int = 1) -> LeNet:
    """Build the authors' LeNet."""
    return LeNet(num_classes, in_channels)
