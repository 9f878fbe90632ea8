"""Model registry: build networks by name."""

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[[int, int], nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory ``(num_classes, in_channels) -> nn.Module`` under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """Instantiate the registered model ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes, in_channels)


# Imported last so that the modules can register themselves.
from spmi.models import lenet, wide_resnet  # noqa: E402,F401

__all__ = ["create_model", "list_models", "register_model"]
