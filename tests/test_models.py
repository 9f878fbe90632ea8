"""Tests for the model registry, LeNet and WideResNet."""

import math

import pytest
import torch
from torch import nn

from spmi.data import DATASETS, get_info
from spmi.models import MODELS, create_model, list_models, register_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_models() -> None:
    assert list_models() == sorted(list_models())
    assert {"lenet", "wrn_28_2", "wrn_28_8"} | {info.model for info in DATASETS.values()} <= set(list_models())


def test_unknown_model_message() -> None:
    with pytest.raises(ValueError) as err:
        create_model("x", 10, 3)
    assert str(err.value) == f"unknown model 'x'; choose one of: {', '.join(list_models())}"


def test_register_custom_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS.items()))  # items() loads the registry first

    @register_model("tiny")
    def tiny(num_classes: int, in_channels: int) -> nn.Module:
        return nn.Linear(in_channels, num_classes)

    assert "tiny" in list_models()
    assert create_model("tiny", 4, 2)(torch.zeros(1, 2)).shape == (1, 4)
    with pytest.raises(ValueError, match="^model 'tiny' is already registered by .*<locals>.tiny; register"):
        register_model("tiny")(lambda num_classes, in_channels: nn.Linear(in_channels, num_classes))
    assert create_model("tiny", 4, 2).out_features == 4  # the first one kept
    with pytest.raises(ValueError, match="^model 'lenet' is already registered by spmi.models.lenet.lenet"):
        register_model("lenet")(tiny)


@pytest.mark.parametrize("name", list_models())
def test_forward_shape(name: str) -> None:
    """Every model takes any class count and channel count, at 28x28 (the smallest images)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=2)
    with torch.no_grad():
        out = model(torch.randn(2, 2, 28, 28))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_each_datasets_network_takes_its_images(dataset: str) -> None:
    info = get_info(dataset)
    torch.manual_seed(0)
    model = create_model(info.model, info.num_classes, info.channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, info.channels, info.size, info.size))
    assert out.shape == (2, info.num_classes) and torch.isfinite(out).all()


def test_lenet_in_channels() -> None:
    model = create_model("lenet", 10, 3)
    assert model.conv1.weight.shape == (20, 3, 5, 5)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_lenet_structure() -> None:
    shapes = [tuple(p.shape) for p in create_model("lenet", 10, 1).parameters()]
    assert shapes == [
        (20, 1, 5, 5),
        (20,),  # conv1
        (20,),
        (20,),  # bn1
        (50, 20, 5, 5),
        (50,),  # conv2
        (50,),
        (50,),  # bn2
        (500, 2450),
        (500,),  # fc1
        (500,),
        (500,),  # bn3
        (10, 500),
        (10,),  # fc2
    ]
    kinds = [type(m) for m in create_model("lenet", 10, 1).children()]
    assert kinds.count(nn.BatchNorm2d) == 2 and kinds.count(nn.BatchNorm1d) == 1


def test_lenet_flops() -> None:
    model = create_model("lenet", 10, 1).eval()
    macs = []

    def hook(m: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            macs.append(out[0].numel() * k)
        else:
            macs.append(m.in_features * m.out_features)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    flops = 2 * sum(macs)
    assert len(macs) == 4
    assert abs(flops - 13e6) / 13e6 < 0.10


@pytest.mark.parametrize(("name", "expected"), [("wrn_28_2", 1.47e6), ("wrn_28_8", 23.4e6)])
def test_wrn_param_count(name: str, expected: float) -> None:
    assert abs(n_params(create_model(name, 10, 3)) - expected) / expected < 0.02


def test_wrn_init() -> None:
    torch.manual_seed(0)
    model = create_model("wrn_28_2", 10, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 12 * 2 + 3  # stem, 12 blocks x 2, 3 projection shortcuts
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(model.fc.bias == 0)


@pytest.mark.parametrize(("name", "classes", "channels", "size", "gflop"), [
    ("lenet", 10, 1, 28, 0.013044), ("wrn_28_2", 10, 3, 32, 0.428706304), ("wrn_28_8", 100, 3, 32, 6.720262144)])
def test_forward_gflops_counted_on_the_meta_device(name, classes, channels, size, gflop) -> None:
    """The conv/linear FLOPs per image that the search's cost estimate uses (the values the
    estimate's former hand-written table held), counted without weights or arithmetic."""
    from spmi.models.flops import forward_flops, model_gflop
    assert model_gflop(name, classes, channels, size) == pytest.approx(gflop)
    torch.manual_seed(0)
    model = create_model(name, classes, channels)
    assert forward_flops(model, torch.randn(2, channels, size, size)) == pytest.approx(gflop * 1e9)

