"""SVHN (the train and test splits, not 'extra'): torchvision's download."""

from pathlib import Path

from spmi.data.formats import Svhn
from spmi.data.registry import DatasetInfo, Source, register_dataset
from spmi.data.sources import torchvision_fetch

FORMAT = Svhn()


def fetch(root: Path) -> None:
    """One torchvision download per split whose file is absent."""
    for split, name in zip(("train", "test"), FORMAT.files(), strict=True):
        if not (root / name).is_file():
            torchvision_fetch("SVHN", root, split=split)


register_dataset(DatasetInfo(
    name="svhn", title="SVHN", num_classes=10, channels=3, size=32,
    mean=(0.4380, 0.4440, 0.4730), std=(0.1751, 0.1771, 0.1744), train_size=73257, test_size=26032,
    source=Source(
        format=FORMAT,
        md5={  # torchvision.datasets.SVHN's split_list
            "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        },
        fetch=fetch,
    ),
    model="wrn_28_2", policy="svhn", labelled=1000, partial_rate=0.3, warmup=10, unlabelled_ema=0.0,
))
