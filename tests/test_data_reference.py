"""The data's reference of a search, a files checksum: a cluster driver takes it from the
dataset's spec without reading any data (it may not have the dataset), a local driver
still fails early on missing data, and each trial's node checks its own files (MD5 against
the spec, and the same checksum) with an error naming the node otherwise. No Ray."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import socket
from pathlib import Path

import pytest
from test_search import common, write_tiny

import datagen
import spmi.data.sources
from spmi.config import TrainConfig
from spmi.data import (
    DATASETS,
    DataError,
    file_md5s,
    files_checksum,
    get_info,
    load_dataset,
    spec_checksum,
)
from tuning.cli import search
from tuning.plan import search_plan as P
from tuning.record.storage import open_storage
from tuning.trial.nodedata import node_dataset

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_spec(tiny, monkeypatch) -> str:
    """Fashion-MNIST's spec with the tiny files' MD5 sums (as if they were the real files);
    its files checksum."""
    info = get_info("fmnist")
    source = dataclasses.replace(info.source, md5=datagen.md5_table(tiny["data"]))
    monkeypatch.setitem(DATASETS._entries, "fmnist", dataclasses.replace(info, source=source))
    return spec_checksum("fmnist")


def no_data_read(monkeypatch) -> None:
    """Every way of reading a dataset fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"the driver read data: {args}")
    for module in (spmi.data.sources, P):
        for fn in ("load_dataset", "file_md5s", "dataset_folder", "_locate"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, refuse)


def search_args(tiny, storage: Path, data_root: str | None, *extra: str) -> list[str]:
    """The tiny search's arguments, the data checked against the spec (no --no-verify-data),
    ``--data-root data_root`` (None: none)."""
    argv = common(tiny, storage)
    argv = [a for a in argv if a != "--no-verify-data"]
    i = argv.index("--data-root")
    del argv[i:i + 2]
    return [*argv, *(["--data-root", data_root] if data_root is not None else []), "--max-epochs", "3", *extra]


def cluster_plan(tiny, tmp_path, data_root: str | None, *extra: str) -> P.SearchPlan:
    """A search plan made as a driver with ``--address`` makes it (no Ray, no MLflow server)."""
    args = search.build_parser().parse_args([*search_args(tiny, tmp_path / "hpo", data_root, *extra),
                                             "--address", "10.0.0.1:6379", "--num-samples", "1"])
    plan, _ = P.make_plan(search.search_options(args), open_storage(str(tmp_path / "hpo")), "s",
                          f"sqlite:///{tmp_path}/mlflow.db")
    return plan


def copy_with_a_changed_label(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    labels = dst / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    return dst


# ---------------------------------------------------------------- the checksum


def test_files_checksum_of_verified_files_is_the_specs(tiny, tiny_spec, tmp_path) -> None:
    table = file_md5s("fmnist", tiny["data"], verify=True)
    assert files_checksum(table) == tiny_spec == files_checksum(file_md5s("fmnist", tiny["data"], verify=False))
    plain = tmp_path / "plain"  # the same files stored uncompressed: the same checksum
    plain.mkdir()
    for f in tiny["data"].iterdir():
        (plain / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    assert files_checksum(file_md5s("fmnist", plain, verify=True)) == tiny_spec
    changed = copy_with_a_changed_label(tiny["data"], tmp_path / "changed")
    with pytest.raises(DataError, match="checksum mismatch for .*train-labels-idx1-ubyte.gz"):
        file_md5s("fmnist", changed, verify=True)
    assert files_checksum(file_md5s("fmnist", changed, verify=False)) != tiny_spec
    assert spec_checksum("cifar10") != spec_checksum("svhn")  # from the real specs, no file
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        file_md5s("fmnist", tmp_path / "absent")


# ---------------------------------------------------------------- the driver


def test_cluster_driver_takes_the_reference_from_the_spec(tiny, tiny_spec, tmp_path, monkeypatch) -> None:
    """Without the dataset (a data root that does not exist, every data read failing) a
    cluster driver makes its plan; a node that has the files then passes its check."""
    absent = tmp_path / "data-on-the-nodes"
    no_data_read(monkeypatch)
    plan = cluster_plan(tiny, tmp_path, str(absent))
    assert (plan.data_checksum, plan.data_checksum_of) == (tiny_spec, "files")
    cfg = plan.base_config
    assert cfg.data_root == str(absent) and cfg.verify_data
    default = cluster_plan(tiny, tmp_path / "b", None)  # no --data-root: where the Debian package puts it
    assert default.base_config.data_root == str(get_info("fmnist").source.debian.folder)
    monkeypatch.undo()  # now "a node": it has the files and reads them
    monkeypatch.setitem(DATASETS._entries, "fmnist", dataclasses.replace(
        get_info("fmnist"), source=dataclasses.replace(get_info("fmnist").source,
                                                       md5=datagen.md5_table(tiny["data"]))))
    shutil.copytree(tiny["data"], absent)
    node = node_dataset(cfg, plan.data_checksum, of=plan.data_checksum_of)
    assert node.checksum == plan.data_checksum and len(node.data.train_y) == 300


def test_cluster_driver_checks_the_split_against_the_spec(tiny, tmp_path, monkeypatch, capsys) -> None:
    no_data_read(monkeypatch)
    with pytest.raises(ValueError, match="labelled"):
        cluster_plan(tiny, tmp_path, str(tmp_path / "absent"), "--labelled", "70000")


def test_cluster_driver_with_no_verify_data_reads_its_own_files(tiny, tmp_path) -> None:
    """--no-verify-data: the files are not the spec's, so the driver's are the reference."""
    plan = cluster_plan(tiny, tmp_path, str(tiny["data"]), "--no-verify-data")
    assert plan.data_checksum == files_checksum(datagen.md5_table(tiny["data"])) != spec_checksum("fmnist")
    with pytest.raises(DataError, match=r"^Fashion-MNIST not found in .*; with --no-verify-data the driver's copy "
                                        r"is the reference the nodes' files must equal: start the search where the "
                                        r"files are, or drop --no-verify-data"):
        cluster_plan(tiny, tmp_path / "b", str(tmp_path / "absent"), "--no-verify-data")


def test_local_search_without_its_data_fails_before_ray(tiny, tmp_path, capsys) -> None:
    """A local driver is also the node: missing data is the one-line error at once, with
    or without the MD5 check."""
    import ray
    for verify in ([], ["--no-verify-data"]):
        assert search.main(search_args(tiny, tmp_path / "hpo", str(tmp_path / "absent"), *verify)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: Fashion-MNIST not found in") and "\n" not in err, err
    assert not ray.is_initialized() and not (tmp_path / "hpo").exists()


# ---------------------------------------------------------------- the nodes


def test_each_node_checks_its_files(tiny, tiny_spec, tmp_path) -> None:
    verified = TrainConfig(dataset="fmnist", data_root=str(tiny["data"]))
    node = node_dataset(verified, tiny_spec)
    assert node.checksum == tiny_spec and node.data.checksum == load_dataset("fmnist", tiny["data"]).checksum
    changed = copy_with_a_changed_label(tiny["data"], tmp_path / "changed")
    with pytest.raises(DataError, match=f"^node {HOST}: checksum mismatch for .*train-labels-idx1-ubyte.gz"):
        node_dataset(dataclasses.replace(verified, data_root=str(changed)), tiny_spec)
    with pytest.raises(DataError, match=f"^node {HOST}: the fmnist spec of this node's spmi lists other files or "
                                        f"MD5 sums than the driver's .*install the same spmi on every node"):
        node_dataset(verified, "0" * 16)
    # --no-verify-data: no MD5 check against the spec, but the files must be the driver's
    unverified = dataclasses.replace(verified, data_root=str(changed), verify_data=False)
    with pytest.raises(DataError, match=f"^node {HOST}: fmnist in {changed} is not the data the search was started "
                                        f"with \\(files checksum [0-9a-f]{{16}}, expected {tiny_spec}\\)"):
        node_dataset(unverified, tiny_spec)
    assert node_dataset(unverified, "").checksum != tiny_spec  # no reference (a confirmation's runs): recorded


def test_a_search_started_before_the_files_checksum_resumes(tiny, tmp_path) -> None:
    """Its plan (no ``data_checksum_of``) holds a checksum of the decoded arrays."""
    plan = P.SearchPlan(name="old", storage_path=str(tmp_path), dataset="fmnist", method="spmi", space_path="x",
                        num_samples=1, max_epochs=1, grace_period=1, reduction_factor=2, seed=0, cpus_per_trial=1,
                        gpus_per_trial=0.0, max_concurrent=1, tracking_uri="x", base={},
                        data_checksum=load_dataset("fmnist", tiny["data"], verify=False).checksum)
    assert plan.data_checksum_of == "arrays"
    cfg = TrainConfig(dataset="fmnist", data_root=str(tiny["data"]), verify_data=False)
    node = node_dataset(cfg, plan.data_checksum, of=plan.data_checksum_of)
    assert node.checksum == plan.data_checksum
    with pytest.raises(DataError, match="is not the data the search was started with \\(arrays checksum"):
        node_dataset(cfg, "0" * 16, of="arrays")
