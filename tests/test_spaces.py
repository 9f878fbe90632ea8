"""Search-space files: every method's file resolves for every dataset and preset to the
space the 20 former per-dataset files held; overrides and ``extends``; each kind of
mistake names file and line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import optuna
import pytest

from spmi.config import resolve
from spmi.data import DATASETS
from spmi.methods import list_methods
from tuning.plan import search_plan as P
from tuning.plan.settings import PRESETS, default_space, spaces_dir
from tuning.plan.spaces import Param, SearchSpace, SpaceError, load_space

METHODS = list_methods()
PRESET_NAMES = (None, *PRESETS)

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


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fields(space: SearchSpace) -> dict:
    """Everything a space holds but the file it was read from."""
    return {k: v for k, v in dataclasses.asdict(space).items() if k != "path"}


# ---------------------------------------------------- the former files (git 7d54ac8), as a table

def num(name: str, dist: str, paper: float, low: float, high: float, code: float | None = None,
        note: str = "") -> Param:
    return Param(name, dist, paper, code, paper if code is None else code, low, high, note=note)


def cat(name: str, paper: str, code: str, choices: tuple[str, ...]) -> Param:
    return Param(name, "categorical", paper, code, code, choices=choices)


FIXMATCH = [num("lr", "loguniform", 0.03, 0.005, 0.2, code=0.05),
            num("weight_decay", "loguniform", 5e-4, 1e-4, 5e-3, code=1e-3),
            num("fixmatch_threshold", "uniform", 0.95, 0.7, 0.99), num("lambda_u", "uniform", 1.0, 0.25, 2.0)]
# search_spaces/<method>_fmnist.yaml at git 7d54ac8: (description, params)
FORMER = {
    "spmi": ("SPMI's label channel: learning rate, weight decay, warm-up T_w, condensation thresholds and the two "
             "readings of the paper.",
             [num("lr", "loguniform", 0.05, 0.005, 0.2), num("weight_decay", "loguniform", 5e-4, 1e-4, 5e-3, code=1e-3),
              num("warmup", "int", 10, 5, 20, note="paper grid {5, 10, 20}"), num("tau", "uniform", 3.0, 1.0, 6.0),
              num("tau_u", "uniform", 2.0, 0.5, 5.0), cat("score", "kl", "official", ("official", "kl")),
              cat("init_rule", "paper", "official", ("official", "paper"))]),
    "proden_fixmatch": ("PRODEN on the partially labelled stream, FixMatch on the unlabelled one.", FIXMATCH),
    "cc_fixmatch": ("The classifier-consistent loss on the partially labelled stream, FixMatch on the unlabelled "
                    "one.", FIXMATCH),
    "pop_fixmatch": ("PRODEN with progressive purification (POP) on the partially labelled stream, FixMatch on the "
                     "unlabelled one.",
                     [*FIXMATCH, num("pop_start", "int", 20, 5, 40), num("pop_every", "int", 5, 1, 10),
                      num("pop_theta_max", "uniform", 0.4, 0.1, 0.6)]),
}


def former(method: str, dataset: str, preset: str | None) -> dict:
    """What ``search_spaces/<method>_<dataset>[_quick].yaml`` held: the fmnist file, and
    the differences ``diff`` shows between it and the others."""
    description, params = FORMER[method]
    p = {x.name: x for x in params}

    def change(name: str, **values: object) -> None:
        p[name] = dataclasses.replace(p[name], **values)

    if dataset == "cifar100" and method == "spmi":  # the paper's T_w on CIFAR-100
        change("warmup", paper=20, start=20)
    elif dataset == "cifar100":  # FixMatch's weight decay on CIFAR-100
        change("weight_decay", paper=1e-3)
    if preset == "quick":
        description += " Quick preset: short runs (a few epochs)."
        change("lr", low=0.01, high=0.1)
        change("weight_decay", low=2e-4, high=3e-3)
        if method == "spmi":
            change("warmup", start=2, low=1, high=3, note="")
            change("tau", high=5.0)
            change("tau_u", high=4.0)
        if method == "pop_fixmatch":
            change("pop_start", start=2, low=1, high=3)
            del p["pop_every"], p["pop_theta_max"]
    return {"method": method, "dataset": dataset, "description": description, "settings": {}, "fixed": {},
            "params": {n: dataclasses.asdict(x) for n, x in p.items()}}


@pytest.mark.parametrize("method", METHODS)
def test_every_registered_method_has_one_space_file(method: str) -> None:
    assert default_space(method) == spaces_dir() / f"{method}.yaml" and default_space(method).is_file()


def test_the_space_files_are_one_per_method() -> None:
    assert spaces_dir() == Path(__file__).resolve().parent.parent / "search_spaces"  # the checkout's folder
    assert sorted(p.stem for p in spaces_dir().glob("*.yaml")) == METHODS


@pytest.mark.parametrize("method", sorted(FORMER))
@pytest.mark.parametrize("dataset", ["fmnist", "cifar10", "svhn", "cifar100"])
def test_a_space_resolves_to_what_its_former_file_held(method: str, dataset: str) -> None:
    assert fields(load_space(default_space(method), method, dataset)) == former(method, dataset, None)
    if dataset == "fmnist":  # the only dataset with a quick file
        assert fields(load_space(default_space(method), method, dataset, "quick")) == former(method, dataset, "quick")


def test_quick_resolves_for_every_dataset_on_top_of_its_override() -> None:
    space = load_space(default_space("spmi"), "spmi", "cifar100", "quick")
    assert (space.params["warmup"].paper, space.params["warmup"].start, space.params["warmup"].high) == (20, 2, 3)
    pop = load_space(default_space("pop_fixmatch"), "pop_fixmatch", "cifar100", "quick")
    assert pop.params["weight_decay"].paper == 1e-3 and pop.params["weight_decay"].high == 3e-3
    assert "pop_every" not in pop.params


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_method_dataset_and_preset_resolves_and_reads_back_from_its_copy(
        method: str, dataset: str, preset: str | None, tmp_path: Path) -> None:
    space = load_space(default_space(method), method, dataset, preset)
    assert (space.method, space.dataset) == (method, dataset)
    assert not space.settings and "unlabelled_ema" not in space.fixed  # the dataset's entry holds them
    assert {"lr", "weight_decay"} <= set(space.params)
    points = space.points_to_evaluate()
    assert all(space.params[n].contains(v) for p in points for n, v in p.items())
    copy = write(tmp_path, space.to_yaml("resolved"))
    assert fields(load_space(copy, method)) == fields(space)
    assert "extends" not in copy.read_text() and "presets" not in copy.read_text()


def test_spmi_space_documents_paper_and_code_values() -> None:
    space = load_space(default_space("spmi"), "spmi", "fmnist")
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
    pop = load_space(default_space("pop_fixmatch"), "pop_fixmatch", "cifar100")
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
    "unknown parameter": (("  lr:\n", "  lrr:\n"), 6, "unknown parameter 'lrr': not a TrainConfig field nor an option "
                                                              "of method spmi; did you mean lr?"),
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


# ------------------------------------------------------------- overrides, extends, the copy

OVER = """\
method: spmi
params:
  lr:
    paper: 0.05
    distribution: loguniform
    low: 0.01
    high: 0.1
  warmup:
    paper: 10
    distribution: int
    low: 5
    high: 20
datasets:
  cifar100:
    params:
      warmup: {paper: 20}
presets:
  quick:
    params:
      warmup:
        start: 2
        high: 3
        low: 1
"""


def test_overrides_apply_for_their_dataset_and_preset_only(tmp_path: Path) -> None:
    path = write(tmp_path, OVER)
    plain = load_space(path, "spmi")
    assert plain.dataset is None and plain.params["warmup"].paper == 10 and plain.params["warmup"].high == 20
    assert load_space(path, "spmi", "fmnist").params == plain.params
    both = load_space(path, "spmi", "cifar100", "quick").params["warmup"]
    assert (both.paper, both.start, both.low, both.high) == (20, 2, 1, 3)
    assert load_space(path, "spmi", "svhn", "quick").params["warmup"].paper == 10


def test_an_extending_file_patches_its_base_and_can_drop_entries(tmp_path: Path) -> None:
    write(tmp_path, OVER, "base.yaml")
    child = write(tmp_path, """\
        # a comment
        extends: base.yaml
        description: the child
        params:
          lr: {high: 0.5}
        presets:
          quick:
            params:
              warmup: null
        """, "child.yaml")
    space = load_space(child, "spmi", "cifar100")
    assert space.description == "the child" and space.params["lr"].high == 0.5
    assert space.params["lr"].low == 0.01 and space.params["warmup"].paper == 20
    assert set(load_space(child, "spmi", "fmnist", "quick").params) == {"lr"}
    assert "warmup" in load_space(tmp_path / "base.yaml", "spmi", "fmnist", "quick").params


# (replacement applied to OVER, dataset, preset, line the error must name, words in the message)
BAD_OVERRIDES = {
    "override value below the option's limit": (("        low: 1\n", "        low: -1\n"), None, "quick", 23,
                                                "warmup"),
    "override reverses the range": (("        high: 3\n", "        high: 0\n"), None, "quick", 23,
                                    "empty or reversed range"),
    "override moves the default outside": (("{paper: 20}", "{paper: 30}"), "cifar100", None, 16, "give 'start'"),
    "unknown dataset name": (("  cifar100:\n", "  cifar1000:\n"), None, None, 14, "unknown name 'cifar1000'"),
    "unknown preset name": (("  quick:\n", "  quik:\n"), None, None, 18, "unknown name 'quik'"),
    "key an override cannot set": (("  cifar100:\n", "  cifar100:\n    method: cc_fixmatch\n"), None, None, 15,
                                   "unknown datasets.cifar100 key 'method'"),
    "unknown parameter in an override": (("      warmup: {", "      warmupp: {"), "cifar100", None, 16,
                                         "unknown parameter 'warmupp'"),
    "override not a mapping": (("    params:\n      warmup: {paper: 20}\n", "    - 1\n"), None, None, 14,
                               "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_an_override_error_names_the_override_line(tmp_path: Path, case: str) -> None:
    (old, new), dataset, preset, line, words = BAD_OVERRIDES[case]
    assert old in OVER, case
    path = write(tmp_path, OVER.replace(old, new, 1))
    with pytest.raises(SpaceError) as info:
        load_space(path, "spmi", dataset, preset)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message, message


def test_extends_errors_name_the_file_that_holds_the_problem(tmp_path: Path) -> None:
    write(tmp_path, OVER.replace("    low: 0.01\n", "    low: 0.0\n"), "bad.yaml")
    child = write(tmp_path, "extends: bad.yaml\nparams:\n  lr: {high: 0.5}\n", "child.yaml")
    with pytest.raises(SpaceError, match=rf"^{tmp_path / 'bad.yaml'}:6: .*must be > 0"):
        load_space(child, "spmi")
    write(tmp_path, OVER, "base.yaml")
    child.write_text("extends: base.yaml\nparams:\n  lr: {high: fast}\n")
    with pytest.raises(SpaceError, match=rf"^{child}:3: .*must be a number"):
        load_space(child, "spmi")
    child.write_text("method: spmi\nextends: nope.yaml\n")
    with pytest.raises(SpaceError, match=rf"^{child}:2: extends: .*nope.yaml not found"):
        load_space(child, "spmi")
    write(tmp_path, "extends: child.yaml\n", "loop.yaml")
    child.write_text("extends: loop.yaml\n")
    with pytest.raises(SpaceError, match=rf"^{tmp_path / 'loop.yaml'}:1: extends: child.yaml .*a cycle"):
        load_space(child, "spmi")


def plan_for(tmp_path: Path, space_path: Path, preset: str | None) -> P.SearchPlan:
    return P.SearchPlan(name="s", storage_path=str(tmp_path / "hpo"), dataset="cifar100", method="spmi",
                        space_path=str(space_path), num_samples=1, max_epochs=1, grace_period=1, reduction_factor=2,
                        seed=0, cpus_per_trial=1, gpus_per_trial=0.0, max_concurrent=1, tracking_uri="x",
                        base=resolve({"dataset": "cifar100"}),
                        preset=preset)


def test_the_experiment_keeps_the_resolved_space_for_resume(tmp_path: Path) -> None:
    source = write(tmp_path, OVER)
    plan = plan_for(tmp_path, source, "quick")
    resolved = load_space(source, "spmi", "cifar100", "quick")
    assert fields(plan.space()) == fields(resolved)  # before the copy: the file, resolved
    P.copy_space(plan)
    copy = tmp_path / "hpo" / "s" / P.SPACE_COPY
    assert "datasets" not in copy.read_text() and "dataset: cifar100" in copy.read_text()
    source.write_text(OVER.replace("high: 0.1", "high: 0.3"))  # the files change after the start
    assert fields(plan.space()) == fields(resolved)
    P.copy_space(plan)  # a resume keeps the first copy
    assert fields(plan.space()) == fields(resolved)


def test_a_copy_in_the_former_format_still_loads(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, tmp_path / "gone.yaml", None)
    (tmp_path / "hpo" / "s").mkdir(parents=True)
    (tmp_path / "hpo" / "s" / P.SPACE_COPY).write_text(GOOD.replace("dataset: fmnist", "dataset: cifar100"))
    space = plan.space()
    assert space.dataset == "cifar100" and space.settings == {"labelled": 4000} and set(space.params) == {
        "lr", "warmup", "score"}


def test_reproduce_takes_a_cell_s_paper_and_code_values_from_the_space_resolved_for_its_dataset(
        tmp_path: Path) -> None:
    from tuning.cli.reproduce import cell_config
    assert cell_config("paper", "cifar100", "spmi", tmp_path)[1]["warmup"] == 20
    assert cell_config("paper", "fmnist", "spmi", tmp_path)[1]["warmup"] == 10
    assert cell_config("paper", "cifar100", "cc_fixmatch", tmp_path)[1]["weight_decay"] == 1e-3
    assert cell_config("code", "cifar100", "cc_fixmatch", tmp_path)[1]["lr"] == 0.05
    assert cell_config("paper", "cifar10", "pop_fixmatch", tmp_path)[1]["weight_decay"] == 5e-4
