"""The search's cost estimate (pure functions over ASHA's rung schedule), its driver
callback (estimates logged, the time budget's graceful stop) with a fake clock, and the
search's cheap test-set evaluation default."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from spmi.config import resolve
from spmi.data import DATASETS
from tuning.driver import cost_watch
from tuning.plan import cost


@pytest.mark.parametrize(("max_t", "grace", "rf"), [(8, 1, 2), (8, 2, 2), (500, 15, 3), (9, 1, 3), (20, 20, 3)])
def test_rungs_are_rays(max_t, grace, rf):
    from ray.tune.schedulers import ASHAScheduler
    ray_asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=max_t, grace_period=grace,
                             reduction_factor=rf)
    milestones = sorted(m for m, _ in ray_asha._brackets[0]._rungs)
    assert cost.Asha(max_t, grace, rf).rungs() == milestones


def test_expected_epochs_follow_the_promotion_rate():
    a = cost.Asha(max_t=8, grace=2, rf=2)  # rungs 2, 4, 8: all run 2, half go to 4, a quarter to 8
    assert a.expected_epochs() == pytest.approx(2 + 2 / 2 + 4 / 4)
    assert a.remaining_epochs(2) == pytest.approx(2 + 4 / 2)  # passed rung 2: to 4 surely, then half
    assert a.remaining_epochs(3) == pytest.approx(1 + 4 / 2)
    assert a.remaining_epochs(8) == 0.0
    fmnist = cost.Asha(max_t=500, grace=15, rf=3)  # rungs 15, 45, 135, 405: ~46 epochs a trial, not 500
    assert fmnist.expected_epochs() == pytest.approx(15 + 30 / 3 + 90 / 9 + 270 / 27 + 95 / 81)


def test_remaining_seconds_spreads_work_over_the_slots_but_not_below_the_longest_trial():
    a = cost.Asha(max_t=8, grace=2, rf=2)
    assert cost.remaining_seconds(a, 10.0, [], 4, 2) == pytest.approx(10.0 * 4 * 4.0 / 2)
    # one trial left past its last rung: 4 epochs alone, whatever the concurrency
    assert cost.remaining_seconds(a, 10.0, [4], 0, 8) == pytest.approx(40.0)
    assert cost.remaining_seconds(a, 10.0, [8, 8], 0, 2) == 0.0


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("15min", 900),
                                                ("2h", 7200), ("1.5h", 5400), ("1h30m", 5400), ("1d", 86400)])
def test_parse_duration(text, seconds):
    assert cost.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "2 hours", "-1h", "0", ""])
def test_bad_duration_is_one_clear_error(text):
    with pytest.raises(ValueError, match="--time-budget"):
        cost.parse_duration(text)


def test_format_duration():
    assert [cost.format_duration(s) for s in (42, 17 * 60, 3.4 * 3600, 12 * 86400)] == [
        "42 s", "17 min", "3.4 h", "12 days"]


def plan(**kw):
    base = dict(num_samples=32, max_epochs=500, grace_period=15, reduction_factor=3, cpus_per_trial=1,
                max_concurrent=2, dataset="fmnist", config={})
    base |= kw
    return SimpleNamespace(**base, base_config=resolve({"dataset": "fmnist", **base["config"]}))


def test_cpu_search_beyond_a_day_says_how_to_make_it_fit():
    core = 40e9  # FLOP/s of one core of a recent x86 CPU
    lines = cost.start_message(plan(), core)
    assert "rough estimate" in lines[0] and len(lines) == 2
    assert "--preset quick" in lines[1] and "--max-epochs" in lines[1] and "--time-budget" in lines[1]
    quick = plan(num_samples=8, max_epochs=8, grace_period=4, reduction_factor=2,
                 config={"labelled": 1000, "unlabelled_size": 5000, "val_size": 2000})
    assert len(cost.start_message(quick, core)) == 1


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(tid, status="RUNNING", epoch=0):
    return SimpleNamespace(trial_id=tid, status=status, last_result={"epoch": epoch} if epoch else {})


def test_cost_watch_logs_estimates_and_stops_at_the_budget(monkeypatch, capsys):
    clock, logged, kills = Clock(), [], []
    monkeypatch.setattr(cost_watch.time, "monotonic", clock)
    monkeypatch.setattr(cost_watch.mlflow_log, "log_metrics", lambda uri, run, m, step: logged.append(m))
    monkeypatch.setattr(cost_watch.mlflow_log, "set_tags", lambda uri, run, tags: None)
    monkeypatch.setattr(cost_watch.os, "kill", lambda pid, sig: kills.append(sig))
    asha = cost.Asha(8, 2, 2)
    cost_watch.set_budget(100.0)
    watch = cost_watch.CostWatch("sqlite://", "parent", num_samples=4, concurrency=2, asha=asha)
    watch.setup()
    a, b = trial("a"), trial("b")
    watch.on_trial_result(0, [a, b], a, {"epoch": 1})
    assert logged == []  # no epoch measured yet
    clock.now += 30
    a.last_result = {"epoch": 1}
    watch.on_trial_result(1, [a, b], a, {"epoch": 2})  # 30 s per epoch
    want = cost.remaining_seconds(asha, 30.0, [2, 0], 2, 2)
    assert logged == [{"search/remaining_s": pytest.approx(want)}]
    assert "estimated time left" in capsys.readouterr().out
    watch.on_step_end(2, [a, b])
    assert kills == [] and not cost_watch.budget_reached()
    clock.now += 71  # 101 s after the budget started
    watch.on_step_end(3, [a, b])
    watch.on_step_end(4, [a, b])
    assert kills == [signal.SIGUSR1] and cost_watch.budget_reached()
    cost_watch.set_budget(None)


def test_search_trainer_measures_the_test_set_only_at_the_last_epoch(tmp_path):
    import datagen
    from tuning.cli import search
    datagen.write_idx_fmnist(tmp_path / "data", 300, 60)
    common = ["--dataset", "fmnist", "--preset", "quick", "--data-root", str(tmp_path / "data"), "--no-verify-data",
              "--labelled", "20", "--val-size", "50", "--storage-path", str(tmp_path / "hpo")]
    plan_, _ = search.prepare(search.build_parser().parse_args([*common, "--name", "a"]))
    assert plan_.base.eval_test == "end"   # the trial tests its best weights itself (tuning.trial.best)
    plan_, _ = search.prepare(search.build_parser().parse_args([*common, "--name", "b", "--set", "eval_test=every"]))
    assert plan_.base.eval_test == "every"


@pytest.mark.slow
def test_time_budget_stops_resumably_with_a_report(tmp_path):
    """A budget far below the search's length: the driver stops gracefully (exit 130),
    writes the report of what it has, and --resume finishes the search."""
    from test_search import common, run_cli, write_tiny
    tiny = write_tiny(tmp_path / "tiny")
    storage = tmp_path / "hpo"
    args = [*common(tiny, storage), "--num-samples", "3", "--max-epochs", "3", "--name", "budget"]
    stopped = run_cli([*args, "--time-budget", "1s"], tmp_path, timeout=300)
    assert stopped.returncode == 130, stopped.stdout[-3000:]
    assert "time budget of 1 s reached" in stopped.stdout and "--resume" in stopped.stdout
    assert "rough estimate" in stopped.stdout
    assert (storage / "budget" / "report" / "report.md").is_file()
    resumed = run_cli([*args, "--resume"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "best settings: lr=" in resumed.stdout


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_datasets_network_has_a_cost_estimate(dataset: str) -> None:
    """A network added to the registry needs no table entry for the search's start estimate."""
    plan = SimpleNamespace(num_samples=4, max_epochs=10, grace_period=5, reduction_factor=2, cpus_per_trial=1,
                           max_concurrent=1, dataset=dataset, base_config=resolve({"dataset": dataset}))
    assert "rough estimate" in cost.start_message(plan, 40e9)[0]
