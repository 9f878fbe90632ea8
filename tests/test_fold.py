"""BatchNorm folded into the layer before it (inference passes): the same outputs within
float tolerance, the original network untouched; LeNet's pool-before-ReLU is exact; a
trainer with and without folding records the same run on a fixed seed."""

import copy

import pytest
import torch
from torch import nn

from spmi.models import create_model
from spmi.models.fold import fold_batchnorm
from spmi.models.lenet import LeNet

INPUT = {"lenet": (1, 28, 28), "wrn_28_2": (3, 32, 32)}


def trained(name: str) -> nn.Module:
    """A network whose BatchNorm statistics and affine parameters are far from their init."""
    torch.manual_seed(0)
    model = create_model(name, 10, INPUT[name][0]).to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 2.0)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        x = (torch.randn(16, *INPUT[name]) * 2 + 0.3).contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("name", "folded_bn"), [("lenet", 3), ("wrn_28_2", 13)])
def test_folded_network_gives_the_same_outputs(name, folded_bn):
    model = trained(name)
    before = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model, channels_last=True)
    assert model.training  # the original keeps its mode and its parameters
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert count_bn(model) - count_bn(folded) == folded_bn  # LeNet: all 3; WRN: each block's conv1 -> bn2
    # and the stem conv -> the first block's bn1 (its only user, the first block projects)
    x = torch.randn(32, *INPUT[name]).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert not any(p.requires_grad for p in folded.parameters())


def _lenet_relu_then_pool(m: LeNet, x: torch.Tensor) -> torch.Tensor:
    x = m.pool(m.relu(m.bn1(m.conv1(x))))
    x = m.pool(m.relu(m.bn2(m.conv2(x))))
    return m.fc2(m.relu(m.bn3(m.fc1(torch.flatten(x, 1)))))


def test_lenet_pool_before_relu_is_exact_in_values_and_gradients():
    model = trained("lenet").train()
    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for forward in (LeNet.forward, _lenet_relu_then_pool):
        m = copy.deepcopy(model)
        out = forward(m, x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
