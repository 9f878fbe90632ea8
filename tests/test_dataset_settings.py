"""The paper's per-dataset settings live in the dataset's registry entry and reach a single
run and a search alike, unless a flag overrides them."""

from pathlib import Path

import pytest

from datagen import write_cifar100, write_idx_fmnist
from spmi.config import TrainConfig, with_dataset_defaults
from spmi.data import DATASETS, get_info
from spmi.methods import get_method
from spmi.train import build_parser, config_from_args
from tuning.record.storage import open_storage


def single_run(*argv: str) -> TrainConfig:
    parser, owners = build_parser()
    return config_from_args(parser.parse_args(list(argv)), owners)


def paper_part(cfg: TrainConfig) -> tuple:
    o = cfg.options  # the method's typed options
    return cfg.labelled, cfg.partial_rate, cfg.model, cfg.augment, getattr(o, "warmup", None), \
        getattr(o, "unlabelled_ema", None)


@pytest.mark.parametrize(("dataset", "expected"), [
    ("fmnist", (4000, 0.3, "lenet", "none", 10, 0.0)),
    ("cifar10", (4000, 0.3, "wrn_28_2", "cifar10_spmi", 10, 0.0)),
    ("svhn", (1000, 0.3, "wrn_28_2", "svhn", 10, 0.0)),
    ("cifar100", (10000, 0.05, "wrn_28_8", "cifar10_spmi", 20, 0.9)),
])
def test_single_run_takes_the_datasets_paper_settings(dataset: str, expected: tuple) -> None:
    assert paper_part(single_run("--dataset", dataset)) == expected


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_registered_dataset_gives_a_single_run_its_settings(dataset: str) -> None:
    info = get_info(dataset)
    assert paper_part(single_run("--dataset", dataset)) == (info.labelled, info.partial_rate, info.model,
                                                            info.policy or "none", info.warmup, info.unlabelled_ema)


def test_flags_override_the_dataset_and_other_methods_get_only_their_options() -> None:
    cfg = single_run("--dataset", "cifar100", "--labelled", "5000", "--partial-rate", "0.1", "--model", "wrn_28_2",
                     "--augment", "cifar10", "--warmup", "5", "--unlabelled-ema", "0")
    assert paper_part(cfg) == (5000, 0.1, "wrn_28_2", "cifar10", 5, 0.0)
    pop = single_run("--dataset", "cifar100", "--method", "pop_fixmatch")
    assert pop.labelled == 10000 and pop.options == get_method("pop_fixmatch").Options()
    assert with_dataset_defaults(cfg) == cfg  # idempotent


def test_search_base_agrees_with_a_single_run(tmp_path: Path) -> None:
    from tuning.cli.search import build_parser as search_parser
    from tuning.cli.search import search_options
    from tuning.plan import search_plan as P
    write_cifar100(tmp_path / "data", n_train=3000, n_test=20)
    flags = ["--dataset", "cifar100", "--labelled", "200", "--val-size", "100", "--data-root", str(tmp_path / "data"),
             "--no-verify-data"]
    args = search_parser().parse_args([*flags, "--storage-path", str(tmp_path / "hpo"), "--gpus-per-trial", "0"])
    plan, space = P.make_plan(search_options(args), open_storage(str(tmp_path / "hpo")), "t",
                              f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = plan.base_config
    run = single_run(*flags)
    assert paper_part(base)[1:] == paper_part(run)[1:] == (0.05, "wrn_28_8", "cifar10_spmi", 20, 0.9)
    assert base.labelled == run.labelled == 200
    assert "warmup" in space.params  # each trial draws T_w; the base holds the dataset's value


def test_hierarchical_partial_labels_are_a_setting_a_search_can_draw(tmp_path: Path) -> None:
    from tuning.plan.spaces import load_space
    assert single_run("--dataset", "cifar100", "--partial-labels", "hierarchical").partial_labels == "hierarchical"
    assert single_run("--dataset", "cifar100").partial_labels == "uniform"
    path = tmp_path / "space.yaml"
    path.write_text("method: spmi\ndataset: cifar100\nparams:\n  partial_labels:\n    paper: uniform\n"
                    "    distribution: categorical\n    choices: [uniform, hierarchical]\n")
    assert load_space(path, "spmi").params["partial_labels"].choices == ("uniform", "hierarchical")


def test_trainer_resolves_settings_and_uses_the_policy(tmp_path: Path) -> None:
    from spmi.data import load_dataset
    from spmi.trainer import Trainer
    write_idx_fmnist(tmp_path, n_train=300, n_test=40)
    data = load_dataset("fmnist", tmp_path, verify=False)
    base = {"dataset": "fmnist", "data_root": str(tmp_path), "labelled": 20, "val_size": 30, "unlabelled_size": 64,
            "batch_size": 16, "epochs": 1, "device": "cpu"}
    plain = Trainer(TrainConfig(**base), data)
    assert plain.augmenter.autoaugment is None
    assert (plain.cfg.partial_rate, plain.cfg.model, plain.cfg.options) == (
        0.3, "lenet", get_method("spmi").Options(warmup=10, unlabelled_ema=0.0))
    assert Trainer(TrainConfig(**base, augment="cifar10_spmi"), data).augmenter.autoaugment.num_sub == 97
