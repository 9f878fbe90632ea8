"""The settings room: ``spmi.config.resolve`` and the roles declared on each field
(``search=``, ``resume=``, ``starts=``), for TrainConfig and every registered method."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import spmi.config as C
from datagen import write_idx_fmnist
from spmi.config import TrainConfig, resolve
from spmi.methods import get_method, list_methods
from spmi.options import field_types, meta, resumable, searchable, start_knobs
from spmi.trainer import check_compatible

METHODS = list_methods()
NOT_SEARCHED = [f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("search", True)]


def test_resolve_types_the_method_options_and_fills_the_dataset() -> None:
    cfg = resolve({"dataset": "cifar100", "tau": 2.5})
    assert type(cfg.options) is get_method("spmi").Options
    assert (cfg.options.tau, cfg.options.warmup, cfg.options.unlabelled_ema) == (2.5, 20, 0.9)  # dataset's T_w, EMA
    assert (cfg.labelled, cfg.partial_rate, cfg.model) == (10000, 0.05, "wrn_28_8")


@pytest.mark.parametrize("method", METHODS)
def test_to_dict_stays_plain_and_round_trips(method: str) -> None:
    cfg = resolve({"method": method})
    flat = cfg.to_dict()
    assert flat["options"] == dataclasses.asdict(cfg.options)
    assert json.loads(json.dumps(flat)) == flat  # search.json / checkpoints keep plain dicts
    assert resolve(flat) == cfg
    # an older config (options partly given, as a dict) resolves to the same
    assert resolve({"method": method, "options": {}}) == cfg


@pytest.mark.parametrize(("key", "nearest"), [("tua", "tau"), ("batchsize", "batch_size"), ("warmpu", "warmup")])
def test_unknown_key_names_the_nearest_valid_key(key: str, nearest: str) -> None:
    with pytest.raises(ValueError, match=rf"^unknown spmi option\(s\) {key}; valid: .*; did you mean {nearest}\?$"):
        resolve({key: 1})


def test_unknown_key_far_from_any_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"^unknown spmi option\(s\) colour; valid: binarise, .*warmup$"):
        resolve({"colour": "red"})


@pytest.mark.parametrize(("flat", "message"), [
    ({"lr": "fast"}, "lr must be a number, got 'fast' (str)"),
    ({"lr": -1}, "lr=-1 must be > 0.0"),
    ({"tau": -1}, "tau=-1 is too small; it must be >= 0.0"),
    ({"labelled": 7}, "--labelled 7 must be a positive multiple of the 10 classes of fmnist"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"partial_labels": "hierarchical"}, "--partial-labels hierarchical needs a dataset with superclasses"),
])
def test_resolve_checks_the_whole_config(flat: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        resolve(flat)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_trial_config_is_checked_once_and_the_trainer_takes_it_as_it_is(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from spmi.data import load_dataset
    from spmi.trainer import Trainer
    from tuning.trial.run import all_params
    from tuning.trial.spec import Location, Resources, Tracking, TrialSpec
    write_idx_fmnist(tmp_path, n_train=300, n_test=40)
    data = load_dataset("fmnist", tmp_path, verify=False)
    base = {"dataset": "fmnist", "data_root": str(tmp_path), "labelled": 20, "val_size": 30, "unlabelled_size": 64,
            "batch_size": 16, "epochs": 1, "device": "cpu"}
    spec = TrialSpec(Tracking("sqlite:///x.db", "1", "p", "s"), Resources(1, 0), Location(str(tmp_path), "s"),
                     base=resolve(base))  # the search's base, resolved once by the driver
    calls = []
    real = C.check_config
    monkeypatch.setattr(C, "check_config", lambda cfg: calls.append(cfg) or real(cfg))
    cfg = spec.point({"tau": 1.5}).config
    trainer = Trainer(cfg, data)
    params = all_params(trainer.cfg)
    assert len(calls) == 1
    assert trainer.method.opts is cfg.options and params["tau"] == 1.5
    # a config built by hand (options a dict) is resolved by the Trainer: the same typed options
    hand = Trainer(TrainConfig(**base, options={"tau": 1.5}), data)
    assert len(calls) == 2 and hand.cfg == cfg


@pytest.mark.parametrize("name", NOT_SEARCHED)
def test_a_field_the_search_owns_is_refused_by_set_with_its_flag(name: str) -> None:
    from tuning.plan.search_plan import parse_sets
    flag = meta(TrainConfig, name).get("search_flag")
    with pytest.raises(ValueError) as err:
        parse_sets([f"{name}=1"], "spmi", SimpleNamespace(params={}, path=Path("space.yaml")))
    assert str(err.value) == f"--set {name}: set by the search itself" + (f"; use {flag}" if flag else "")


def test_the_search_flags_of_the_fields_the_search_sets() -> None:
    flags = {n: meta(TrainConfig, n).get("search_flag") for n in NOT_SEARCHED}
    assert {n: f for n, f in flags.items() if f} == {"dataset": "--dataset", "method": "--method",
                                                     "epochs": "--max-epochs", "device": "--gpus-per-trial"}


def test_an_unknown_set_name_names_the_nearest() -> None:
    from tuning.plan.search_plan import parse_sets
    with pytest.raises(ValueError, match=r"^--set batchsize: not a TrainConfig field nor an option of method spmi; "
                                         r"did you mean batch_size\?$"):
        parse_sets(["batchsize=3"], "spmi", SimpleNamespace(params={}, path=Path("space.yaml")))


@pytest.mark.parametrize("method", METHODS)
def test_field_specs_hold_exactly_the_searchable_fields(method: str) -> None:
    from tuning.plan.fields import field_specs
    options = get_method(method).Options
    specs = field_specs(method)
    assert set(specs) == set(searchable(TrainConfig)) | set(searchable(options))
    assert not set(specs) & set(NOT_SEARCHED)
    for name, spec in specs.items():
        assert spec.type is field_types(spec.owner)[name].type


@pytest.mark.parametrize("name", sorted(resumable(TrainConfig)))
def test_a_resume_changeable_field_may_differ_on_resume(name: str) -> None:
    saved = resolve({}).to_dict()
    changed = {**saved, name: "other"}
    check_compatible(changed, saved)  # no error


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainConfig)
                                  if not f.metadata.get("resume") and f.name not in ("options", "epochs")])
def test_a_result_determining_field_may_not_differ_on_resume(name: str) -> None:
    saved = resolve({}).to_dict()
    with pytest.raises(ValueError, match=rf"^cannot resume: the checkpoint was made with other settings \({name}: "):
        check_compatible({**saved, name: "other"}, saved)


@pytest.mark.parametrize("method", METHODS)
def test_a_method_option_change_is_refused_on_resume_unless_declared(method: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    options = get_method(method).Options
    name = dataclasses.fields(options)[0].name
    saved = resolve({"method": method}).to_dict()
    current = {**saved, "options": {**saved["options"], name: "other"}}
    with pytest.raises(ValueError, match=f"cannot resume.*{name}"):
        check_compatible(current, saved)
    field = options.__dataclass_fields__[name]
    monkeypatch.setattr(field, "metadata", {**field.metadata, "resume": True})
    check_compatible(current, saved)  # declared resume=True: accepted


@pytest.mark.parametrize("method", METHODS)
def test_start_knobs_come_from_the_options_and_name_what_they_delay(method: str, tmp_path: Path) -> None:
    from tuning.plan.search_plan import check_budget
    from tuning.plan.spaces import Param, SearchSpace
    options = get_method(method).Options
    space = SearchSpace(tmp_path / "space.yaml", method, None,
                        params={"lr": Param("lr", "loguniform", 0.05, low=0.01, high=0.1, start=0.05)})
    knobs = start_knobs(options)
    if not knobs:
        assert space.latest_start() == (None, 0)
        check_budget(space, 1, 5)  # nothing to exercise: any budget will do
        return
    knob, start = space.latest_start()
    assert knob in knobs and start == getattr(options(), knob)
    with pytest.raises(ValueError) as err:
        check_budget(space, start, 5)
    assert f"so {meta(options, knob)['starts']} would never run" in str(err.value)


def test_the_declared_roles() -> None:
    # what the removed lists (RESERVED, RESUMABLE_CHANGES, START_KNOBS) said, now on the fields
    assert set(NOT_SEARCHED) == {"options", "method", "dataset", "out", "progress", "epochs", "device",
                                 "eval_every", "checkpoint_every"}
    assert resumable(TrainConfig) == {"out", "progress", "device", "checkpoint_every", "data_root", "download",
                                      "verify_data", "eval_batch_size", "eval_every", "eval_test", "fold_bn"}
    assert {k for m in METHODS for k in start_knobs(get_method(m).Options)} == {"warmup", "pop_start"}
