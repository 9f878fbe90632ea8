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
from tuning.plan.selection import Selection
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


def test_a_rerun_of_an_errored_trial_ends_in_optuna_as_its_last_run(url, tmp_path):
    """``resume_errored``: Tune runs a trial again that Optuna was told FAIL. It continues as a
    new Optuna trial (same params, the failed run's values before the epoch it resumed at)
    that ends as the rerun did; a rerun that fails again before a result adds nothing."""
    s = searcher(url, "rerun")
    tuner_pkl = pickle.dumps(s)
    drive(s, "e", [0.3, 0.4], error=True)            # errored after epoch 2 (its checkpoint: epoch 1)
    drive(s, "d", [0.2], error=True)
    s.save(str(tmp_path / "searcher.pkl"))
    restored = pickle.loads(tuner_pkl)               # --resume: Tuner.restore(resume_errored=True)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("d", error=True)      # failed again at once
    for epoch, acc in ((2, 0.45), (3, 0.5)):         # resumed from its epoch-1 checkpoint
        restored.on_trial_result("e", {"val/acc": acc, "epoch": epoch})
    restored.on_trial_complete("e", result={"val/acc": 0.55, "epoch": 4})
    failed, d, rerun = by_number(url, "rerun")
    assert failed.state == d.state == TrialState.FAIL and failed.intermediate_values == {1: 0.3, 2: 0.4}
    assert rerun.state == TrialState.COMPLETE and rerun.params == failed.params
    assert rerun.intermediate_values == {1: 0.3, 2: 0.45, 3: 0.5, 4: 0.55} and rerun.value == 0.55
    assert rerun.user_attrs[optuna_study.RERUN_ATTR] == failed.number


POINTS = [{"lr": 0.05, "warmup": 2}, {"lr": 0.02, "warmup": 0}]


@pytest.mark.parametrize("how", ["a new searcher", "tuner.pkl without a snapshot"])
def test_a_driver_killed_before_the_first_snapshot_neither_repeats_a_point_nor_leaves_an_orphan(url, how):
    """Before Tune's first snapshot the resumed driver has no searcher state: it builds a new
    searcher (killed before ``tuner.pkl``) or Tune restarts the run with the one in
    ``tuner.pkl``. Either way the lost trial is FAIL, and each point runs once more: the one
    whose run was lost, and the one still waiting, not again."""
    s = searcher(url, "early", points=POINTS)
    tuner_pkl = pickle.dumps(s)
    assert s.suggest("a") == POINTS[0]               # then the driver is killed
    again = searcher(url, "early", points=POINTS) if how == "a new searcher" else pickle.loads(tuner_pkl)
    asked = [again.suggest(t) for t in ("b", "c", "d")]
    assert sorted(asked[:2], key=str) == sorted(POINTS, key=str) and asked[2] not in POINTS
    trials = by_number(url, "early")
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.RUNNING] * 3   # b, c, d: owned


def test_a_point_asked_after_the_last_snapshot_runs_again(url, tmp_path):
    s = searcher(url, "late", points=POINTS)
    tuner_pkl = pickle.dumps(s)
    assert s.suggest("a") == POINTS[0]
    s.save(str(tmp_path / "searcher.pkl"))
    assert s.suggest("b") == POINTS[1]               # after the snapshot; then the driver is killed
    restored = pickle.loads(tuner_pkl)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("c") == POINTS[1] and restored.suggest("d") not in POINTS
    assert [t.state for t in by_number(url, "late")] == [TrialState.RUNNING, TrialState.FAIL] + [TrialState.RUNNING] * 2


def test_a_restored_searcher_opens_its_study_where_the_driver_found_it(tmp_path, monkeypatch):
    """The storage path (with its optuna.db) moved: the searcher pickled in tuner.pkl holds
    the old URL; the driver says where the study is now."""
    from tuning.driver import searcher as searcher_module
    monkeypatch.setattr(searcher_module, "_STUDY_URLS", {})
    old = optuna_study.default_storage(str(tmp_path / "old"))
    s = searcher(old, "moved")
    tuner_pkl = pickle.dumps(s)
    drive(s, "a", [0.3, 0.4, 0.5, 0.6])
    (tmp_path / "old").rename(tmp_path / "new")
    searcher_module.use_study_url("moved", optuna_study.default_storage(str(tmp_path / "new")))
    restored = pickle.loads(tuner_pkl)
    assert [t.state for t in restored.study.trials] == [TrialState.COMPLETE]
    assert not (tmp_path / "old").exists()           # nothing made where it was


def test_random_start_up_trials_count_only_the_samplers_own(url):
    """Trials TPE did not propose (enqueued points, warm-started copies) do not use up its
    random start-up: with 3 such trials evaluated and 2 start-up trials, the next 2 asks are
    still random (what a RandomSampler of the same seed proposes), the one after is TPE's."""
    def study_with_seeded(name: str, sampler) -> optuna.Study:
        study = optuna_study.create_study(url, name, "max", optuna_study.StudyAttrs("spmi", "fmnist", "val/acc",
                                                                                     "max", MAX_EPOCHS))
        for lr, acc in ((0.01, 0.3), (0.03, 0.5), (0.09, 0.4)):
            study.add_trial(optuna.trial.create_trial(params={"lr": lr, "warmup": 1}, distributions=DISTS,
                                                      value=acc))
        return optuna.load_study(study_name=name, storage=optuna_study.storage(url), sampler=sampler)

    settings = optuna_study.tpe_settings(8, 1, seed=0, seeded=3)
    assert settings.n_startup_trials == 2
    tpe = study_with_seeded("tpe", optuna_study.make_sampler(settings))
    rnd = study_with_seeded("random", optuna.samplers.RandomSampler(seed=0))
    ours, randoms = [], []
    for _ in range(3):
        ours.append(tpe.ask(DISTS).params)
        randoms.append(rnd.ask(DISTS).params)
        for study in (tpe, rnd):
            study.tell(study.trials[-1].number, 0.1)
    assert ours[:2] == randoms[:2] and ours[2] != randoms[2]


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
    optuna.load_study(study_name="old", storage=optuna_study.storage(url)).set_user_attr("dataset", "fmnist")
    # another data protocol: its trials were trained and judged on other data
    protocol = optuna_study.DataProtocol(labelled=1000, partial_rate=0.3, val_size=500, unlabelled_size=5000,
                                         val_labels="true", val_from_labelled=0, include_labelled=True)
    small = dataclasses.replace(attrs, protocol=protocol)
    optuna_study.create_study(url, "small", "max", small)
    full = dataclasses.replace(small, protocol=dataclasses.replace(protocol, labelled=4000, unlabelled_size=None))
    with pytest.raises(ValueError, match="that search has labelled 1000, this one 4000; its trials were trained"):
        optuna_study.check_warm_start(url, "small", full)
    unchecked = optuna_study.check_warm_start(url, "old", full).unchecked   # made before the protocol was kept
    assert unchecked == optuna_study.PROTOCOL

    new = optuna_study.create_study(url, "new", "max", attrs)
    copied, skipped = optuna_study.warm_start(new, url, "old", DISTS, max_epochs=2)
    assert (copied, skipped) == (2, 0)
    short, long = new.trials
    # at a 2-epoch budget both reached the end: COMPLETE with their best value up to epoch 2
    assert short.state == long.state == TrialState.COMPLETE
    assert (short.value, long.value) == (0.45, 0.60) and long.intermediate_values == {1: 0.40, 2: 0.60}
    # a search that selects on the last epoch copies the last value up to its budget
    last = optuna_study.create_study(url, "last", "max", attrs)
    optuna_study.warm_start(last, url, "old", DISTS, max_epochs=3, score=Selection("last", 3).value)
    assert [(t.state, t.value) for t in last.trials] == [(TrialState.PRUNED, None), (TrialState.COMPLETE, 0.55)]
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
    # the data protocol is recorded, and TPE's random start-up comes after the points and the copies
    assert {k: new.user_attrs[k] for k in ("labelled", "val_size", "unlabelled_size")} == \
        {"labelled": 20, "val_size": 50, "unlabelled_size": 100}
    from tuning.plan.search_plan import load_plan
    saved = load_plan(storage / "new")
    assert saved.tpe.seeded == len(load_space(tiny["space"], "spmi").points_to_evaluate()) + 2
    assert saved.tpe.n_startup_trials == 2

    # a study of the same method and dataset made on other data cannot seed it
    small = optuna_study.create_study(url, "small", "max",
                                      optuna_study.StudyAttrs("spmi", "fmnist", "val/acc", "max", 3))
    small.set_user_attr("labelled", 1000)
    small.add_trial(optuna.trial.create_trial(params={"lr": 0.02, "warmup": 1, "tau": 2.0}, distributions=dists,
                                              value=0.5))
    args = search.build_parser().parse_args([*common(tiny, storage), "--num-samples", "2", "--max-epochs", "3",
                                             "--name", "other", "--warm-start", "small"])
    with pytest.raises(ValueError, match="--warm-start small: that search has labelled 1000, this one 20"):
        search.prepare(args)
