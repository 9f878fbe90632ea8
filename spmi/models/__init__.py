"""Model registry: build networks by name. Each module of this package may register
factories; adding a network is adding a file here."""

from collections.abc import Callable

from torch import nn

from spmi.registry import Registry

ModelFactory = Callable[[int, int], nn.Module]

MODELS: Registry[ModelFactory] = Registry("model", __name__, quote=lambda name: f"'{name}'")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory ``(num_classes, in_channels) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()


def create_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """Instantiate the registered model ``name``."""
    return MODELS.get(name)(num_classes, in_channels)


__all__ = ["MODELS", "create_model", "list_models", "register_model"]
