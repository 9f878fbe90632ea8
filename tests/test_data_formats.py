"""Tests of the dataset registry, on-disk format parsers, integrity checks and sources."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import re
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from spmi.augment import POLICIES
from spmi.data import DATASETS, DataError, default_root, get_info, load_dataset, register_dataset, sources, verify_files
from spmi.data.registry import Debian
from spmi.data.sources import spec_checksum
from spmi.methods import get_method
from spmi.models import list_models
from tests import datagen

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")
CHOICES = "choose one of: " + ", ".join(sorted(DATASETS))


def _assert_equal(data, expected) -> None:
    for got, want in zip((data.train_x, data.train_y, data.test_x, data.test_y), expected, strict=True):
        assert got.is_contiguous() and got.device.type == "cpu"
        assert np.array_equal(got.numpy(), want)
    assert data.train_x.dtype == data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == data.test_y.dtype == torch.int64


def _assert_marker(x: torch.Tensor) -> None:
    h, w = datagen.MARKER_HW
    assert x[0, :, h, w].tolist() == list(datagen.MARKER_RGB)


# ---------------------------------------------------------------- registry


def test_registry_facts():
    assert {"cifar10", "cifar100", "fmnist", "svhn"} <= set(DATASETS)
    f, c10, c100, s = (get_info(n) for n in ("fmnist", "cifar10", "cifar100", "svhn"))
    assert (f.channels, f.size, f.num_classes, f.policy, f.model) == (1, 28, 10, None, "lenet")
    assert (c10.channels, c10.size, c10.policy, c10.model) == (3, 32, "cifar10_spmi", "wrn_28_2")
    assert (c100.num_classes, c100.policy, c100.model) == (100, "cifar10_spmi", "wrn_28_8")
    assert (s.policy, s.model) == ("svhn", "wrn_28_2")
    assert f.mean == (0.1307,) and s.std == (0.1751, 0.1771, 0.1744)
    assert c100.mean == (0.5071, 0.4865, 0.4409) and c10.std == (0.247, 0.243, 0.261)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match=f"^unknown dataset 'x'; {CHOICES}$"):
        get_info("x")
    with pytest.raises(DataError, match=CHOICES):
        load_dataset("mnist", root="/nonexistent")


def debian_at(monkeypatch, folder: Path) -> None:
    """Fashion-MNIST's registry entry with its Debian package installing into ``folder``."""
    info = get_info("fmnist")
    source = dataclasses.replace(info.source, debian=Debian(info.source.debian.package, folder))
    monkeypatch.setitem(DATASETS._entries, "fmnist", dataclasses.replace(info, source=source))


def test_default_root(monkeypatch, tmp_path):
    assert default_root("cifar10") == Path("data")
    debian_at(monkeypatch, tmp_path)
    assert default_root("fmnist") == tmp_path
    debian_at(monkeypatch, tmp_path / "absent")
    assert default_root("fmnist") == Path("data")


def test_a_second_dataset_of_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS.items()))  # items() loads the registry first
    other = dataclasses.replace(get_info("cifar10"), title="another CIFAR-10")
    with pytest.raises(ValueError, match="^dataset 'cifar10' is already registered; register the new one under"):
        register_dataset(other)
    assert get_info("cifar10").title == "CIFAR-10"
    register_dataset(dataclasses.replace(other, name="cifar10_copy"))
    assert "cifar10_copy" in DATASETS and get_info("cifar10_copy").title == "another CIFAR-10"


# ---------------------------------------------------------------- every registered dataset


@pytest.mark.parametrize("name", list(DATASETS))
def test_spec_is_complete_and_consistent(name):
    info = get_info(name)
    src = info.source
    assert info.name == name and info.title and info.num_classes >= 2 and info.channels >= 1
    assert len(info.mean) == len(info.std) == info.channels and all(0 < s < 1 for s in info.std)
    assert list(src.md5) == list(src.format.files())  # every file checked, in the format's order
    assert all(re.fullmatch("[0-9a-f]{32}", md5) for md5 in src.md5.values())
    assert src.folders and callable(src.fetch)
    assert info.train_size > info.labelled and info.labelled % info.num_classes == 0 and info.test_size > 0
    assert info.model in list_models() and (info.policy is None or info.policy in POLICIES)
    assert 0 < info.partial_rate <= 1 and info.warmup >= 0 and 0 <= info.unlabelled_ema < 1
    assert info.paper_options().keys() <= get_method("spmi").Options.__dataclass_fields__.keys()
    if info.superclass is not None:
        assert len(info.superclass) == info.num_classes


@pytest.mark.parametrize("name", list(DATASETS))
def test_round_trip_of_each_dataset(tmp_path, name):
    """Tiny files in the dataset's on-disk format decode to the written images, and its
    own MD5 table (the real files') rejects them."""
    folder, expected = datagen.write_dataset(name, tmp_path, 3, 2)
    data = load_dataset(name, root=tmp_path, checksums=datagen.md5_table(folder))
    info = get_info(name)
    _assert_equal(data, expected)
    assert data.info is info and data.train_x.shape[1:] == (info.channels, info.size, info.size)
    with pytest.raises(DataError, match="^checksum mismatch for .*; delete it and re-download"):
        load_dataset(name, root=tmp_path)


@pytest.mark.parametrize("name", list(DATASETS))
def test_fetch_cli_verifies_each_dataset(monkeypatch, tmp_path, capsys, name):
    from spmi.data import fetch
    folder, expected = datagen.write_dataset(name, tmp_path, 3, 2)
    assert fetch.main([name, "--data-root", str(tmp_path)]) == 2  # the real files' MD5s reject these
    assert capsys.readouterr().err.startswith("error: checksum mismatch for ")
    info = get_info(name)
    monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(
        info, source=dataclasses.replace(info.source, md5=datagen.md5_table(folder))))
    assert fetch.main([name, "--data-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"{name}: {len(expected[1])} training and 2 test images verified in "
                                              f"{tmp_path} (files checksum {spec_checksum(name)}")


@pytest.mark.parametrize("name", list(DATASETS))
def test_missing_dataset_says_how_to_fix_in_one_line(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset(name, root=root)
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg
    for fix in (f"python -m spmi.data.fetch {name}", "--data-root DIR", "--download"):
        assert fix in msg


@pytest.mark.parametrize("name", list(DATASETS))
def test_download_failure_of_each_dataset_is_a_data_error(monkeypatch, tmp_path, name):
    def offline(*_, **__):
        raise RuntimeError("network unreachable")

    info = get_info(name)
    monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(
        info, source=dataclasses.replace(info.source, fetch=offline)))
    with pytest.raises(DataError, match=f"^download of {re.escape(info.title)} into .* failed \\(network unreachable"):
        load_dataset(name, root=tmp_path, download=True)


# ---------------------------------------------------------------- Fashion-MNIST idx


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["", "FashionMNIST/raw"])
def test_fmnist_round_trip(tmp_path, gz, sub):
    expected = datagen.write_idx_fmnist(tmp_path / sub, 7, 5, gz=gz)
    table = datagen.md5_table(tmp_path / sub)
    data = load_dataset("fmnist", root=tmp_path, checksums=table)
    _assert_equal(data, expected)
    assert data.train_x.shape == (7, 1, 28, 28) and data.info.name == "fmnist"
    # row-major: byte 16 + h*28 + w of the image file is pixel (h, w) of image 0
    raw_name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    raw = (tmp_path / sub / raw_name).read_bytes()
    raw = gzip.decompress(raw) if gz else raw
    assert data.train_x[0, 0, 3, 5] == raw[16 + 3 * 28 + 5]


def test_fmnist_real_table_rejects_other_files(tmp_path):
    datagen.write_idx_fmnist(tmp_path, 3, 2)
    with pytest.raises(DataError, match=r"checksum mismatch for .*train-images-idx3-ubyte\.gz.*re-download"):
        load_dataset("fmnist", root=tmp_path)
    assert load_dataset("fmnist", root=tmp_path, verify=False).train_x.shape[0] == 3


def test_wrong_md5_names_file(tmp_path):
    datagen.write_idx_fmnist(tmp_path, 3, 2)
    table = datagen.md5_table(tmp_path)
    table["t10k-labels-idx1-ubyte"] = "0" * 32
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*delete it and re-download"):
        load_dataset("fmnist", root=tmp_path, checksums=table)


def test_corrupted_file_detected(tmp_path):
    datagen.write_svhn(tmp_path, 3, 2)
    table = datagen.md5_table(tmp_path)
    path = tmp_path / "test_32x32.mat"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="test_32x32.mat"):
        verify_files(tmp_path, table)


def test_verify_files_missing_entry(tmp_path):
    datagen.write_idx_fmnist(tmp_path, 2, 2)
    with pytest.raises(DataError, match="missing file .*extra_file"):
        verify_files(tmp_path, {"extra_file": "0" * 32})


def test_fmnist_missing_folder_says_how_to_fix(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset("fmnist", root=root)
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg
    for fix in ("apt-get install dataset-fashion-mnist", "--data-root", "--download"):
        assert fix in msg


def test_bad_idx_magic(tmp_path):
    datagen.write_idx_fmnist(tmp_path, 2, 2, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float data type code
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("fmnist", root=tmp_path, verify=False)


def test_truncated_gz(tmp_path):
    datagen.write_idx_fmnist(tmp_path, 2, 2)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("fmnist", root=tmp_path, verify=False)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path):
    expected = datagen.write_cifar10(tmp_path, 4, 3)
    table = datagen.md5_table(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", root=tmp_path, checksums=table)
    _assert_equal(data, expected)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    _assert_marker(data.train_x)


def test_cifar100_round_trip(tmp_path):
    expected = datagen.write_cifar100(tmp_path, 6, 4)
    table = datagen.md5_table(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100", root=tmp_path, checksums=table)
    _assert_equal(data, expected)
    assert data.info.num_classes == 100
    _assert_marker(data.train_x)


def test_cifar_real_table_is_torchvisions(tmp_path):
    datagen.write_cifar10(tmp_path, 2, 2)
    with pytest.raises(DataError, match="checksum mismatch for .*data_batch_1"):
        load_dataset("cifar10", root=tmp_path)


def test_tables_of_torchvision_downloads_are_torchvisions():
    """The MD5s in the specs of the datasets torchvision downloads are the ones it checks."""
    import torchvision.datasets as tvd
    assert get_info("cifar10").source.md5 == dict(tvd.CIFAR10.train_list + tvd.CIFAR10.test_list)
    assert get_info("cifar100").source.md5 == dict(tvd.CIFAR100.train_list + tvd.CIFAR100.test_list)
    assert get_info("svhn").source.md5 == {tvd.SVHN.split_list[s][1]: tvd.SVHN.split_list[s][2]
                                           for s in ("train", "test")}


def test_cifar_missing_says_how_to_fix(tmp_path):
    datagen.write_cifar10(tmp_path, 2, 2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"CIFAR-10 not found: .* lacks data_batch_3; "
                                         r"run `python -m spmi.data.fetch cifar10` or pass --download"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match=r"cifar-100-python.* lacks train, test; run `python -m spmi.data.fetch"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_pickle_with_foreign_global_is_refused(tmp_path):
    datagen.write_cifar100(tmp_path, 2, 2)
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({"data": OrderedDict()}))
    with pytest.raises(DataError, match="forbidden global collections.OrderedDict"):
        load_dataset("cifar100", root=tmp_path, verify=False)


# ---------------------------------------------------------------- SVHN


def test_svhn_round_trip(tmp_path):
    expected = datagen.write_svhn(tmp_path, 9, 4)
    data = load_dataset("svhn", root=tmp_path, checksums=datagen.md5_table(tmp_path))
    _assert_equal(data, expected)
    _assert_marker(data.train_x)
    assert data.train_y[0] == 0 and int(data.train_y.max()) <= 9


def test_svhn_real_table_and_missing(tmp_path):
    with pytest.raises(DataError, match="SVHN not found: .* lacks train_32x32.mat, test_32x32.mat"):
        load_dataset("svhn", root=tmp_path)
    datagen.write_svhn(tmp_path, 2, 2)
    with pytest.raises(DataError, match="checksum mismatch for .*train_32x32.mat"):
        load_dataset("svhn", root=tmp_path)


def test_checksum_identifies_data(tmp_path):
    datagen.write_svhn(tmp_path / "a", 3, 2, seed=1)
    datagen.write_svhn(tmp_path / "b", 3, 2, seed=2)
    a1, a2, b = (load_dataset("svhn", root=tmp_path / d, verify=False) for d in ("a", "a", "b"))
    assert a1.checksum == a2.checksum != b.checksum
    assert all(ch in "0123456789abcdef" for ch in a1.checksum)


# ---------------------------------------------------------------- obtaining


def test_fetch_installs_with_apt_when_root_absent(monkeypatch, tmp_path, capsys):
    deb = tmp_path / "deb"
    calls = []

    def fake_run(cmd, **_):
        calls.append(cmd)
        datagen.write_idx_fmnist(deb, 4, 2)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.chdir(tmp_path)
    debian_at(monkeypatch, deb)
    monkeypatch.setattr(sources.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sources.shutil, "which", lambda _: "/usr/bin/apt-get")
    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    with pytest.raises(DataError, match="python -m spmi.data.fetch fmnist"):  # a training run never installs
        load_dataset("fmnist", verify=False)
    assert calls == []
    data = load_dataset("fmnist", verify=False, install=True)  # spmi.data.fetch (make data) may
    assert calls == [["apt-get", "install", "-y", "dataset-fashion-mnist"]]
    assert data.train_x.shape == (4, 1, 28, 28)
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().out


def test_no_apt_when_root_given(monkeypatch, tmp_path):
    monkeypatch.setattr(sources.os, "geteuid", lambda: 0)
    debian_at(monkeypatch, tmp_path / "deb")
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: pytest.fail("apt-get must not run"))
    with pytest.raises(DataError, match="not found"):
        load_dataset("fmnist", root=tmp_path / "given")


def test_download_uses_torchvision(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    made = {}

    class FakeFashion:
        def __init__(self, root, train=True, download=False):
            made["args"] = (root, train, download)
            datagen.write_idx_fmnist(Path(root) / "FashionMNIST" / "raw", 3, 2, gz=False)

    class FakeSVHN:
        def __init__(self, root, split="train", download=False):
            made.setdefault("svhn", []).append(split)
            if split == "test":
                datagen.write_svhn(root, 2, 2)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashion)
    monkeypatch.setattr(tvd, "SVHN", FakeSVHN)
    data = load_dataset("fmnist", root=tmp_path / "f", download=True, verify=False)
    assert made["args"] == (str(tmp_path / "f"), True, True) and data.test_x.shape[0] == 2
    assert load_dataset("svhn", root=tmp_path / "s", download=True, verify=False).train_x.shape[0] == 2
    assert made["svhn"] == ["train", "test"]


def test_download_failure_is_data_error(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    def offline(*_, **__):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DataError, match="download of CIFAR-10 .* failed \\(network unreachable\\)"):
        load_dataset("cifar10", root=tmp_path, download=True)


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_verifies():
    data = load_dataset("fmnist", root=REAL_FMNIST, verify=True)
    info = get_info("fmnist")
    assert (info.train_size, info.test_size) == (60000, 10000)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert torch.equal(torch.bincount(data.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(data.test_y), torch.full((10,), 1000))
