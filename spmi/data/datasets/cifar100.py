"""CIFAR-100 (fine labels; the coarse ones give the superclasses): torchvision's download
(``cifar-100-python/``)."""

from spmi.data.formats import Cifar
from spmi.data.registry import DatasetInfo, Source, register_dataset
from spmi.data.sources import torchvision

# the coarse label (superclass) of each fine label, in the dataset's fine-label order
# (the coarse_labels of its files; the authors' hierarchical table in utils_algo.py)
SUPERCLASS = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

register_dataset(DatasetInfo(
    name="cifar100", title="CIFAR-100", num_classes=100, channels=3, size=32,
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), train_size=50000, test_size=10000,
    source=Source(
        format=Cifar(train=("train",), test=("test",), label_key="fine_labels"),
        folders=("cifar-100-python",),
        md5={  # torchvision.datasets.CIFAR100's train_list + test_list
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        },
        fetch=torchvision("CIFAR100", train=True),
    ),
    model="wrn_28_8", policy="cifar10_spmi", labelled=10000, partial_rate=0.05, warmup=20, unlabelled_ema=0.9,
    superclass=SUPERCLASS,
))
