"""A trial run's system metrics: the monitor built for the run samples into it (one sample
forced here, not waited for), continues after the run's last step when resumed, and the run
records the interval it samples at. No test waits for the monitor's background thread."""

from __future__ import annotations

import pytest

from tuning.record import mlflow_log

CPU = "system/cpu_utilization_percentage"


def sample(monitor) -> None:
    """One step of the monitor's loop, here and now: collect, aggregate, log."""
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()


@pytest.fixture
def run(tmp_path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    uri = mlflow_log.default_uri(tmp_path)
    c = mlflow_log.client(uri)
    return uri, c.create_run(c.create_experiment("x")).info.run_id


def test_the_monitor_samples_into_the_run_and_a_resumed_one_continues(run) -> None:
    uri, run_id = run
    monitor = mlflow_log.system_metrics_monitor(uri, run_id, resume=False)
    assert monitor is not None and monitor.sampling_interval == mlflow_log.SYSTEM_METRICS_INTERVAL_S == 10
    sample(monitor)
    sample(monitor)
    history = mlflow_log.client(uri).get_metric_history(run_id, CPU)
    assert sorted(m.step for m in history) == [0, 1]
    resumed = mlflow_log.system_metrics_monitor(uri, run_id, resume=True)  # a restored trial
    sample(resumed)
    history = mlflow_log.client(uri).get_metric_history(run_id, CPU)
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert all(0 <= m.value <= 100 for m in history)


def test_a_started_monitor_tags_the_run_with_its_interval(run, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, run_id = run
    monitor = mlflow_log.start_system_metrics(uri, run_id, resume=False)
    try:
        tags = mlflow_log.client(uri).get_run(run_id).data.tags
        assert tags[mlflow_log.SYSTEM_METRICS_TAG] == "10"
    finally:
        monitor.finish()
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2.5")  # MLflow's own override
    monitor = mlflow_log.start_system_metrics(uri, run_id, resume=True)
    try:
        assert mlflow_log.client(uri).get_run(run_id).data.tags[mlflow_log.SYSTEM_METRICS_TAG] == "2.5"
    finally:
        monitor.finish()
