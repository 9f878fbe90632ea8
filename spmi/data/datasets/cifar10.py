"""CIFAR-10: torchvision's download (``cifar-10-batches-py/``)."""

from spmi.data.formats import Cifar
from spmi.data.registry import DatasetInfo, Source, register_dataset
from spmi.data.sources import torchvision

register_dataset(DatasetInfo(
    name="cifar10", title="CIFAR-10", num_classes=10, channels=3, size=32,
    mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261), train_size=50000, test_size=10000,
    source=Source(
        format=Cifar(train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",)),
        folders=("cifar-10-batches-py",),
        md5={  # torchvision.datasets.CIFAR10's train_list + test_list
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
        fetch=torchvision("CIFAR10", train=True),
    ),
    model="wrn_28_2", policy="cifar10_spmi", labelled=4000, partial_rate=0.3, warmup=10, unlabelled_ema=0.0,
))
