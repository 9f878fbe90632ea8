"""spmi: semi-supervised partial-label learning (SPMI and baselines) in pure PyTorch."""

__version__ = "0.1.0"
