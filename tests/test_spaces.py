"""Search-space files: every shipped file loads; each kind of mistake names file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from tuning.settings import SPACES_DIR, default_space
from tuning.spaces import SpaceError, load_space

SHIPPED = sorted(SPACES_DIR.glob("*.yaml"))
METHODS = ("spmi", "proden_fixmatch", "pop_fixmatch", "cc_fixmatch")
DATASETS = ("fmnist", "cifar10", "svhn", "cifar100")

GOOD = """\
method: spmi
dataset: fmnist
settings:
  labelled: 4000
params:
  lr:
    paper: 0.05
    distribution: loguniform
    low: 0.01
    high: 0.1
  warmup:
    paper: 10
    start: 2
    distribution: int
    low: 1
    high: 3
  score:
    paper: kl
    code: official
    distribution: categorical
    choices: [official, kl]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def method_of(path: Path) -> str:
    return next(m for m in METHODS if path.stem.startswith(m + "_"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_space_loads_for_its_method(path: Path) -> None:
    space = load_space(path, method_of(path))
    dataset = path.stem[len(space.method) + 1:].removesuffix("_quick")
    assert space.dataset == dataset
    assert not space.settings and "unlabelled_ema" not in space.fixed  # the dataset's entry holds them
    assert {"lr", "weight_decay"} <= set(space.params)
    points = space.points_to_evaluate()
    assert all(space.params[n].contains(v) for p in points for n, v in p.items())


def test_every_method_and_dataset_has_a_space() -> None:
    for method in METHODS:
        for dataset in DATASETS:
            assert default_space(method, dataset).is_file()
        assert default_space(method, "fmnist", "quick").is_file()


def test_spmi_space_documents_paper_and_code_values() -> None:
    space = load_space(default_space("spmi", "fmnist"), "spmi")
    p = space.params
    assert {"lr", "warmup", "tau", "tau_u", "weight_decay", "score", "init_rule"} <= set(p)
    assert (p["weight_decay"].paper, p["weight_decay"].code) == (5e-4, 1e-3)
    assert (p["score"].paper, p["score"].code) == ("kl", "official")
    assert (p["init_rule"].paper, p["init_rule"].code) == ("paper", "official")
    assert p["lr"].distribution == "loguniform" and p["lr"].low < 0.01 and p["lr"].high > 0.05
    assert space.defaults["weight_decay"] == 1e-3 and space.paper_values["weight_decay"] == 5e-4
    assert space.points_to_evaluate() == [space.defaults, space.paper_values]
    assert space.max_start_epoch() == 20
    assert space.max_start_epoch({"warmup": 30}) == 20  # searched: the space's largest value
    pop = load_space(default_space("pop_fixmatch", "cifar100"), "pop_fixmatch")
    assert pop.max_start_epoch() == 40


def test_quick_space_starts_inside_its_range(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD), "spmi")
    assert space.defaults == {"lr": 0.05, "warmup": 2, "score": "official"}
    assert space.points_to_evaluate() == [space.defaults]  # paper warm-up 10 is outside [1, 3]
    assert space.max_start_epoch() == 3


def test_to_optuna_samples_inside_the_ranges_and_enqueues_defaults(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD), "spmi")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(space.defaults)
    first = study.ask()
    space.to_optuna(first)
    assert first.params == space.defaults
    for _ in range(5):
        trial = study.ask()
        space.to_optuna(trial)
        assert all(space.params[n].contains(v) for n, v in trial.params.items())
    assert set(space.distributions()) == {"lr", "warmup", "score"}


# (replacement applied to GOOD, line the error must name, words in the message)
BAD = {
    "unknown parameter": (("  lr:\n", "  lrr:\n"), 6, "unknown parameter 'lrr'"),
    "option of another method": (("  lr:\n", "  fixmatch_threshold:\n"), 6, "nor an option of method spmi"),
    "empty range": (("    low: 0.01\n", "    low: 0.1\n"), 9, "empty or reversed range"),
    "reversed range": (("    low: 1\n    high: 3\n", "    low: 3\n    high: 1\n"), 15, "empty or reversed"),
    "wrong type": (("    low: 1\n", "    low: 1.5\n"), 15, "must be an integer"),
    "string for a number": (("    high: 0.1\n", "    high: fast\n"), 10, "must be a number"),
    "below the option's limit": (("    low: 0.01\n", "    low: -0.01\n"), 9, "must be > 0"),
    "choice outside the option's choices": (("[official, kl]", "[official, bogus]"), 21, "bogus"),
    "unknown distribution": (("distribution: loguniform", "distribution: lognormal"), 8, "unknown distribution"),
    "distribution of the wrong kind": (("distribution: int", "distribution: uniform"), 14, "use int or logint"),
    "start outside the range": (("    start: 2\n", "    start: 7\n"), 13, "outside the searched range"),
    "default outside without start": (("    start: 2\n", ""), 11, "give 'start'"),
    "unknown key of an entry": (("    paper: 0.05\n", "    papr: 0.05\n"), 7, "unknown params.lr key 'papr'"),
    "unknown top-level key": (("method: spmi\n", "method: spmi\nsearch: x\n"), 2, "unknown top-level key"),
    "unknown settings field": (("  labelled: 4000\n", "  tau: 2.0\n"), 4, "not a TrainConfig field"),
    "duplicate key": (("  warmup:\n", "  lr:\n"), 11, "duplicate key 'lr'"),
    "method of another file": (("method: spmi", "method: cc_fixmatch"), 1, "for method 'cc_fixmatch'"),
    "unknown dataset": (("dataset: fmnist", "dataset: mnist"), 2, "unknown dataset 'mnist'"),
    "log of zero": (("    low: 0.01\n", "    low: 0.0\n"), 9, "must be > 0"),
    "invalid YAML": (("    choices: [official, kl]", "    choices: [official, kl"), 22, "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_space_error_names_file_and_line(tmp_path: Path, case: str) -> None:
    (old, new), line, words = BAD[case]
    assert old in GOOD, case
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(SpaceError) as info:
        load_space(path, "spmi")
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message, message
    assert "\n" not in message


def test_missing_file_and_empty_params_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="search-space file not found"):
        load_space(tmp_path / "nope.yaml", "spmi")
    with pytest.raises(SpaceError, match=r"space.yaml:2: params: nothing to search"):
        load_space(write(tmp_path, "method: spmi\nparams: {}\n"), "spmi")
