"""What Optuna is told about each trial, the persistent study and the warm start, driven
the way Tune drives a searcher (no Ray cluster): ``on_trial_result`` for every result
except the one on which the scheduler stops the trial, then ``on_trial_complete``."""

from __future__ import annotations

import dataclasses
import pickle

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuning.driver.searcher import AshaOptunaSearch
from tuning.record import optuna_study

MAX_EPOCHS = 4


def space(trial) -> None:
    trial.suggest_float("lr", 0.01, 0.1, log=True)
    trial.suggest_int("warmup", 0, 3)


DISTS = {"lr": optuna.distributions.FloatDistribution(0.01, 0.1, log=True),
         "warmup": optuna.distributions.IntDistribution(0, 3)}


def searcher(url: str, name: str, cls=AshaOptunaSearch, points: list | None = None):
    sampler = optuna_study.make_sampler(optuna_study.tpe_settings(8, 2, seed=0))
    if cls is OptunaSearch:
        return cls(space=space, metric="val/acc", mode="max", study_name=name, storage=optuna_study.storage(url),
                   sampler=sampler, points_to_evaluate=points)
    if not optuna_study.study_exists(url, name):
        attrs = optuna_study.StudyAttrs("spmi", "fmnist", "val/acc", "max", MAX_EPOCHS)
        optuna_study.create_study(url, name, "max", attrs)   # as the driver does before the searcher starts
    return cls(space=space, metric="val/acc", mode="max", storage_url=url, study_name=name, sampler=sampler,
               max_epochs=MAX_EPOCHS, points_to_evaluate=points)


def drive(s, trial_id: str, accs: list[float], stopped: bool = True, error: bool = False) -> None:
    """Tune's calls for a trial reporting ``accs`` (epochs 1, 2, ...); its last result goes
    only to on_trial_complete (the scheduler's STOP, or max_t)."""
    s.suggest(trial_id)
    results = [{"val/acc": a, "epoch": i + 1, "training_iteration": i + 1} for i, a in enumerate(accs)]
    for r in results[:-1]:
        s.on_trial_result(trial_id, r)
    if error:
        s.on_trial_result(trial_id, results[-1])
        s.on_trial_complete(trial_id, error=True)
    else:
        s.on_trial_complete(trial_id, result=results[-1] if stopped else None)


@pytest.fixture
def url(tmp_path) -> str:
    return optuna_study.default_storage(str(tmp_path))


def by_number(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=optuna_study.storage(url)).trials


def test_stopped_trial_is_pruned_with_its_intermediate_values_finished_one_complete(url):
    s = searcher(url, "honest")
    drive(s, "stopped", [0.30, 0.45])                 # ASHA stopped it after epoch 2 of 4
    drive(s, "finished", [0.40, 0.60, 0.55, 0.58])    # ran to max_epochs
    drive(s, "errored", [0.2, 0.25], error=True)
    stopped, finished, errored = by_number(url, "honest")   # reopened from the SQLite file
    assert stopped.state == TrialState.PRUNED
    assert stopped.intermediate_values == {1: 0.30, 2: 0.45}   # the stopping epoch included
    assert stopped.value == 0.45                                 # Optuna keeps the last one
    assert finished.state == TrialState.COMPLETE
    assert finished.intermediate_values == {1: 0.40, 2: 0.60, 3: 0.55, 4: 0.58}
    assert finished.value == 0.60                                # its best epoch (the kept checkpoint)
    assert errored.state == TrialState.FAIL


def test_ray_optuna_search_alone_calls_a_stopped_trial_complete(url):
    """The defect this module fixes: Ray's searcher tells the partial score as COMPLETE."""
    s = searcher(url, "ray", cls=OptunaSearch)
    drive(s, "stopped", [0.30, 0.45])
    (trial,) = by_number(url, "ray")
    assert trial.state == TrialState.COMPLETE and trial.value == 0.45


def test_it_proposes_what_rays_optuna_search_proposed(url):
    """Same seed, first points and told values: the same configurations, before and after
    TPE's start-up trials (every trial runs all epochs with a rising accuracy, so Ray's
    last value and this searcher's best one agree)."""
    def proposals(cls, name: str) -> list[dict]:
        s = searcher(url, name, cls=cls, points=[{"lr": 0.05, "warmup": 2}])
        out = []
        for i in range(6):
            config = s.suggest(f"t{i}")
            out.append(config)
            accs = [min(0.99, config["lr"] * (k + 1) + 0.01 * config["warmup"]) for k in range(MAX_EPOCHS)]
            drive_results = [{"val/acc": a, "epoch": k + 1, "training_iteration": k + 1} for k, a in enumerate(accs)]
            for r in drive_results[:-1]:
                s.on_trial_result(f"t{i}", r)
            s.on_trial_complete(f"t{i}", result=drive_results[-1])
        return out
    ours, rays = proposals(AshaOptunaSearch, "ours"), proposals(OptunaSearch, "rays")
    assert ours[0] == {"lr": 0.05, "warmup": 2} and ours == rays


def test_state_survives_save_and_restore_and_orphans_fail(url, tmp_path):
    s = searcher(url, "resume")
    tuner_pkl = pickle.dumps(s)                          # Tune pickles the searcher when the Tuner is made
    s.suggest("a")
    s.on_trial_result("a", {"val/acc": 0.3, "epoch": 1})
    s.save(str(tmp_path / "searcher.pkl"))
    saved_sampler = pickle.dumps(s.sampler)             # its settings and RNG state at the snapshot
    s.suggest("orphan")                                # asked after the snapshot; driver then killed
    restored = pickle.loads(tuner_pkl)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert pickle.dumps(restored.sampler) == saved_sampler   # the TPE sampler came back as it was
    restored.on_trial_result("a", {"val/acc": 0.3, "epoch": 1})   # re-reported epoch: not counted twice
    restored.on_trial_complete("a", result={"val/acc": 0.5, "epoch": 2})
    a, orphan = by_number(url, "resume")
    assert a.state == TrialState.PRUNED and a.intermediate_values == {1: 0.3, 2: 0.5}
    assert orphan.state == TrialState.FAIL
    restored.on_trial_complete("a", result={"val/acc": 0.9, "epoch": 4})  # told twice: ignored
    assert by_number(url, "resume")[0].state == TrialState.PRUNED


def test_tpe_settings_are_explicit_and_scaled():
    quick = dataclasses.asdict(optuna_study.tpe_settings(8, 2, seed=3))
    assert quick == {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": 2,
                     "n_ei_candidates": 24, "seed": 3, "seeded": 0}
    assert optuna_study.tpe_settings(64, 1, seed=0).n_startup_trials == 10
    assert optuna_study.tpe_settings(64, 1, seed=0).constant_liar is False
    assert optuna_study.tpe_settings(32, None, seed=0).n_startup_trials == 8


def test_warm_start_copies_evaluated_trials_judged_at_the_new_budget(url):
    s = searcher(url, "old")
    drive(s, "short", [0.30, 0.45])
    drive(s, "long", [0.40, 0.60, 0.55, 0.58])
    drive(s, "bad", [0.1], error=True)
    attrs = optuna_study.StudyAttrs("spmi", "fmnist", "val/acc", "max", max_epochs=2)
    assert optuna_study.check_warm_start(url, "old", attrs).trials == 2
    with pytest.raises(ValueError, match="has dataset 'cifar10'"):
        optuna.load_study(study_name="old", storage=optuna_study.storage(url)).set_user_attr("dataset", "cifar10")
        optuna_study.check_warm_start(url, "old", attrs)
    with pytest.raises(ValueError, match="no study of that name"):
        optuna_study.check_warm_start(url, "nothing", attrs)

    new = optuna_study.create_study(url, "new", "max", attrs)
    copied, skipped = optuna_study.warm_start(new, url, "old", DISTS, max_epochs=2)
    assert (copied, skipped) == (2, 0)
    short, long = new.trials
    # at a 2-epoch budget both reached the end: COMPLETE with their best value up to epoch 2
    assert short.state == long.state == TrialState.COMPLETE
    assert (short.value, long.value) == (0.45, 0.60) and long.intermediate_values == {1: 0.40, 2: 0.60}
    longer = optuna_study.create_study(url, "longer", "max", attrs)
    optuna_study.warm_start(longer, url, "old", DISTS, max_epochs=10)
    assert {t.state for t in longer.trials} == {TrialState.PRUNED}   # neither reached 10 epochs
    with pytest.raises(ValueError, match="already has a study named 'new'"):
        optuna_study.create_study(url, "new", "max", attrs)
    # TPE of the new study samples from them (it is past its start-up trials)
    settings = dataclasses.replace(optuna_study.tpe_settings(8, 1, seed=0), n_startup_trials=1)
    sampler = optuna_study.make_sampler(settings)
    study = optuna.load_study(study_name="new", storage=optuna_study.storage(url), sampler=sampler)
    study.ask(DISTS)
    assert len(study.trials) == 3


def test_cli_warm_start_seeds_the_new_study_before_ray_starts(tmp_path):
    from test_search import common, write_tiny

    from tuning.cli import search
    from tuning.plan.spaces import load_space
    tiny = write_tiny(tmp_path)
    storage = tmp_path / "hpo"
    url = optuna_study.default_storage(str(storage))
    dists = load_space(tiny["space"], "spmi").distributions()
    old = optuna_study.create_study(url, "old", "max", optuna_study.StudyAttrs("spmi", "fmnist", "val/acc", "max", 3))
    earlier = ((0.02, {1: 0.3, 2: 0.5, 3: 0.6}, TrialState.COMPLETE), (0.08, {1: 0.2}, TrialState.PRUNED))
    for lr, values, state in earlier:
        old.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "warmup": 1, "tau": 2.0}, distributions=dists, intermediate_values=values, state=state,
            value=max(values.values()) if state == TrialState.COMPLETE else None))
    args = search.build_parser().parse_args([*common(tiny, storage), "--num-samples", "2", "--max-epochs", "3",
                                             "--name", "new", "--warm-start", "old"])
    plan, resumed = search.prepare(args)
    assert not resumed and plan.warm_start == "old" and plan.optuna_storage == url
    search.start_tracking(plan)
    new = optuna.load_study(study_name="new", storage=url)
    assert [t.state for t in new.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert new.trials[0].value == 0.6 and new.trials[1].intermediate_values == {1: 0.2}
    assert new.user_attrs["max_epochs"] == 3
