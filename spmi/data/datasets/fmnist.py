"""Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package, else a torchvision download."""

from pathlib import Path

from spmi.data.formats import Idx
from spmi.data.registry import DatasetInfo, Debian, Source, register_dataset
from spmi.data.sources import torchvision


def missing(root: Path) -> str:
    return (
        f"Fashion-MNIST not found in {root} (nor in {root / 'FashionMNIST' / 'raw'}): "
        "run `make data` or `python -m spmi.data.fetch fmnist` (as root it runs "
        "`apt-get install dataset-fashion-mnist`), or pass --data-root DIR holding the "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] files, or pass --download"
    )


register_dataset(DatasetInfo(
    name="fmnist", title="Fashion-MNIST", num_classes=10, channels=1, size=28,
    mean=(0.1307,), std=(0.3081,), train_size=60000, test_size=10000,
    source=Source(
        format=Idx(),
        folders=("", "FashionMNIST/raw"),  # Debian's folder or a --data-root; torchvision's layout
        # MD5 of the decompressed idx files (identical to upstream; Debian recompresses the .gz)
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        fetch=torchvision("FashionMNIST", train=True),
        debian=Debian("dataset-fashion-mnist", Path("/usr/share/datasets/fashion-mnist")),
        missing=missing,
    ),
    model="lenet", policy=None, labelled=4000, partial_rate=0.3, warmup=10, unlabelled_ema=0.0,
))
