"""A search on a multi-node Ray cluster, every part started on this machine: a Ray head
(no CPUs) and two worker nodes, moto's S3 server, PostgreSQL and an MLflow tracking server
on it with artifacts in S3. The search runs with --address, --storage-path s3://... and
--tracking-uri http://...; its driver is SIGKILLed and the search resumed from the object
store; the tracking server is stopped mid-search. The safe cluster of docs/cluster.md's
Security section (the commands of clusterkit's templates, which the docs are checked
against): the MLflow server with basic auth and --allowed-hosts, Ray nodes with token
authentication, and a search whose environment and flags carry made-up secrets that leaves
no trace of them anywhere. Also, without the cluster: storage
through pyarrow (local and S3), the --address refusals, the job's runtime environment,
the dataset check on a trial's node and the choice of Ray Train's placement-group cleaner.

The cluster tests skip only when a part is not installed here, with the reason; CI
installs every part (.ci/run, the [dev] extra) and sets SPMI_CLUSTER_TESTS=required,
which turns a missing part into a failure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import clusterkit as K
import pytest
from test_search import SEARCH, checkpoints_in_snapshot, common, write_tiny

import datagen
from spmi.data import DataError, files_checksum
from tuning.cli import search
from tuning.record.storage import open_storage

MISSING = K.missing()


def need_parts() -> None:
    if MISSING:
        if os.environ.get("SPMI_CLUSTER_TESTS") == "required":
            pytest.fail(f"cluster parts required but {MISSING}")
        pytest.skip(MISSING)


# ---------------------------------------------------------------- the parts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    need_parts()
    with K.moto_s3(tmp_path_factory.mktemp("s3logs")) as store:
        yield store


@pytest.fixture(scope="module")
def parts(s3: K.S3, tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL, the MLflow server on it (artifacts in S3) and the Ray cluster."""
    logs = tmp_path_factory.mktemp("logs")
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(K.postgres(logs))
        server = stack.enter_context(K.mlflow_server(pg, s3, logs))
        cluster = stack.enter_context(K.ray_cluster(workers=2, cpus=1))
        yield SimpleNamespace(s3=s3, pg=pg, server=server, cluster=cluster, logs=logs)


def driver_env(home: Path) -> dict[str, str]:
    """The driver's environment: the object store's credentials, nothing else of MLflow
    than a patient pre-flight check (a busy machine); a HOME of its own (to see what it
    writes)."""
    return {**K.driver_env(home), "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def cluster_args(tiny: dict[str, Path], parts: SimpleNamespace, name: str, trials: int, epochs: int) -> list[str]:
    args = common(tiny, Path("unused"), unlabelled=200)
    args = args[:args.index("--storage-path")]
    return [*args, "--storage-path", f"s3://{parts.s3.bucket}/hpo", "--storage-endpoint", parts.s3.endpoint,
            "--tracking-uri", parts.server.uri, "--address", parts.cluster.address, "--max-concurrent", "2",
            "--num-samples", str(trials), "--max-epochs", str(epochs), "--name", name]


def start_driver(args: list[str], cwd: Path, home: Path, log: Path) -> subprocess.Popen:
    cwd.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=cwd, env=driver_env(home),
                            stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        K.stop_group(proc)
        pytest.fail(f"the search did not end in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for_checkpoint(parts: SimpleNamespace, name: str, proc: subprocess.Popen, log: Path) -> None:
    """Until a trial checkpoint is in S3."""
    deadline = time.monotonic() + 600
    while not any("/checkpoint_" in k for k in parts.s3.keys(f"hpo/{name}/trial_")):
        assert proc.poll() is None, f"the search ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no trial checkpoint in S3:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def snapshot_checkpoints(s3: K.S3, name: str) -> dict[str, tuple[str, int]]:
    """Trial id -> (Tune status, index of its latest checkpoint) of the trials with a
    checkpoint in the newest experiment-state snapshot of search ``name`` in S3."""
    states = sorted(s3.keys(f"hpo/{name}/experiment_state-"))
    if not states:
        return {}
    return checkpoints_in_snapshot(s3.client().get_object(Bucket=s3.bucket, Key=states[-1])["Body"].read())


def wait_for_resumable(parts: SimpleNamespace, name: str, epochs: int, proc: subprocess.Popen,
                       log: Path) -> set[str]:
    """Until the newest snapshot lists a running trial with a checkpoint and at least 2
    epochs to go (so it cannot finish before the kill); returns those trials."""
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"the search ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no resumable trial in a snapshot:\n{log.read_text()[-3000:]}"
        found = {t for t, (status, index) in snapshot_checkpoints(parts.s3, name).items()
                 if status == "RUNNING" and index + 1 <= epochs - 2}
        if found:
            return found
        time.sleep(0.3)


def trial_runs(pg: K.Postgres, name: str) -> list[tuple]:
    """(trial id, status, node tag, epochs logged) of every trial run of search ``name``,
    read from the tracking server's PostgreSQL database."""
    return pg.query(
        "SELECT t.value, r.status, n.value, "
        "  (SELECT array_agg(m.step ORDER BY m.step) FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'epoch') "
        "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'trial_id' "
        "LEFT JOIN tags n ON n.run_uuid = r.run_uuid AND n.key = 'node' "
        "WHERE e.name = %s", name)


def tune_states(s3: K.S3, name: str) -> dict[str, str]:
    from ray.tune import ExperimentAnalysis
    storage = open_storage(f"s3://{s3.bucket}/hpo", s3.endpoint)
    with mock.patch.dict(os.environ, K.CREDENTIALS):
        path, fs = storage.ray_location(name)
        return {t.trial_id: t.status for t in ExperimentAnalysis(path, storage_filesystem=fs).trials}


def assert_complete(parts: SimpleNamespace, name: str, trials: int, epochs: int) -> list[tuple]:
    """Every trial TERMINATED in Tune and exactly one FINISHED MLflow run with each epoch once."""
    runs = trial_runs(parts.pg, name)
    ids = [r[0] for r in runs]
    assert len(ids) == trials and len(set(ids)) == trials, runs
    for trial_id, status, _, steps in runs:
        assert status == "FINISHED", (trial_id, status)
        assert list(steps) == list(range(1, epochs + 1)), (trial_id, steps)
    assert tune_states(parts.s3, name) == dict.fromkeys(ids, "TERMINATED")
    return runs


def local_writes(cwd: Path, home: Path) -> list[str]:
    """Files the driver left in its working folder, and in its HOME outside the tools'
    caches (~/.cache: matplotlib's font list; ~/.config: MLflow's installation id)."""
    found = [str(p) for p in cwd.rglob("*") if p.is_file()]
    found += [str(p) for p in home.rglob("*") if p.is_file() and p.relative_to(home).parts[0] not in
              (".cache", ".config")]
    return found


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_cluster_search_killed_and_resumed_from_object_store(tiny, parts, tmp_path: Path) -> None:
    name, trials, epochs = "c1", 3, 5
    args = cluster_args(tiny, parts, name, trials, epochs)
    cwd, home, log = tmp_path / "driver", tmp_path / "home", tmp_path / "driver.log"
    driver = start_driver(args, cwd, home, log)
    try:
        resumable = wait_for_resumable(parts, name, epochs, driver, log)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        K.stop_group(driver)
    before = {k.split("/")[2] for k in parts.s3.keys(f"hpo/{name}/trial_")}
    assert before, "no trial folder in the object store before the kill"

    out = finish(start_driver([*args, "--resume"], cwd, home, log), log, timeout=900)
    assert f"resuming s3://{parts.s3.bucket}/hpo/{name}" in out
    assert f"report: s3://{parts.s3.bucket}/hpo/{name}/report/report.md" in out

    runs = assert_complete(parts, name, trials, epochs)
    assert before <= {f"trial_{r[0]}" for r in runs}  # the trials started before the kill were kept
    workers = {n.node_id for n in parts.cluster.worker_nodes}
    nodes = {r[2] for r in runs}
    assert nodes <= workers and len(nodes) == 2, (nodes, workers)  # both worker nodes ran trials

    final = parts.pg.query(
        "SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid JOIN experiments e "
        "ON e.experiment_id = r.experiment_id WHERE e.name = %s AND t.key = 'final_checkpoint'", name)
    assert len(final) == trials and all(f.startswith(f"s3://{parts.s3.bucket}/hpo/{name}/trial_") for (f,) in final)
    resumed = parts.pg.query(
        "SELECT t.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid JOIN experiments e "
        "ON e.experiment_id = r.experiment_id JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'trial_id' "
        "WHERE e.name = %s AND m.key = 'resumed_from_epoch' AND m.value >= 1", name)
    # the trials the killed driver's last snapshot held with a checkpoint continued from it
    assert resumable <= {t for (t,) in resumed}, (resumable, resumed)

    keys = set(parts.s3.keys(f"hpo/{name}/"))
    for file in ("search.json", "space.yaml", "report/report.md", "report/trials.parquet", "report/history.parquet",
                 "report/learning_curves.png", "report/best.json"):
        assert f"hpo/{name}/{file}" in keys, file
    assert any(k.startswith(f"hpo/{name}/experiment_state-") for k in keys)
    artifacts = parts.s3.keys("mlartifacts/")  # the parent run's copy, through the tracking server
    assert any(k.endswith("/report/report.md") for k in artifacts), artifacts[:20]
    assert local_writes(cwd, home) == []


@pytest.mark.slow
def test_tracking_server_outage_fails_no_trial(tiny, parts, tmp_path: Path) -> None:
    name, trials, epochs = "c2", 2, 3
    cwd, home, log = tmp_path / "driver", tmp_path / "home", tmp_path / "driver.log"
    driver = start_driver(cluster_args(tiny, parts, name, trials, epochs), cwd, home, log)
    try:
        wait_for_checkpoint(parts, name, driver, log)
        parts.server.stop()  # trials are logging epochs now: connections are refused
        time.sleep(5)
        parts.server.start()  # up again after its start-up (tens of seconds here)
        out = finish(driver, log, timeout=900)
    finally:
        K.stop_group(driver)
        if parts.server.proc is None:
            parts.server.start()
    assert "ERROR" not in out.split("Number of trials")[-1].split("\n\n")[0], out[-3000:]
    assert_complete(parts, name, trials, epochs)


# ---------------------------------------------------------------- without the cluster


def test_address_refuses_what_other_nodes_cannot_reach(tiny, tmp_path: Path, capsys) -> None:
    base = common(tiny, tmp_path / "hpo")
    cases = [
        ([*base, "--address", "10.0.0.1:6379", "--tracking-uri", "http://127.0.0.1:5000"],
         "is a folder on this machine that trials on other nodes cannot reach; use --storage-path s3://"),
        ([*base, "--address", "10.0.0.1:6379"], "--shared-storage"),
        ([*base, "--address", "10.0.0.1:6379", "--shared-storage"],
         "is a file on this machine that trials on other nodes cannot reach"),
        ([*base, "--address", "10.0.0.1:6379", "--shared-storage", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
         "pass --tracking-uri http://HOST:PORT"),
        ([*base, "--storage-endpoint", "http://127.0.0.1:9000"], "--storage-endpoint is for s3:// storage"),
    ]
    for argv, words in cases:
        assert search.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, (argv, err)
    import ray
    assert not ray.is_initialized()
    assert not (tmp_path / "hpo").exists()


def test_storage_on_s3_plan_and_latest_search(s3: K.S3, tiny, tmp_path: Path, monkeypatch, capsys) -> None:
    from spmi.config import resolve
    from tuning.plan import search_plan as P
    for k, v in K.CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # search.main sets it: restored afterwards
    argv = [*common(tiny, tmp_path)[:-2], "--storage-path", f"s3://{s3.bucket}/unit", "--storage-endpoint", s3.endpoint]
    assert search.main(argv) == 2
    assert "there is no default MLflow store; pass --tracking-uri" in capsys.readouterr().err
    storage = open_storage(f"s3://{s3.bucket}/unit/", s3.endpoint)
    storage.check()
    assert storage.root == f"s3://{s3.bucket}/unit" and storage.uri("a", "b") == f"s3://{s3.bucket}/unit/a/b"
    for name, created in (("old", "2020"), ("new", "2030")):
        plan = P.SearchPlan(name=name, storage_path=storage.root, storage_endpoint=s3.endpoint, dataset="fmnist",
                            method="spmi", space_path="x.yaml", num_samples=1, max_epochs=1, grace_period=1,
                            reduction_factor=2, seed=0, cpus_per_trial=1, gpus_per_trial=0.0, max_concurrent=1,
                            tracking_uri="http://x", base=resolve({}), created=created)
        assert plan.save() == f"s3://{s3.bucket}/unit/{name}/search.json"
        time.sleep(1.1)  # object times have a resolution of a second
    assert "unit/new/search.json" in s3.keys("unit/")
    assert P.find_latest(storage, "spmi", "fmnist") == "new"
    assert P.find_latest(storage, "spmi", "cifar10") is None
    loaded = P.load_plan(f"s3://{s3.bucket}/unit/new", s3.endpoint)
    assert (loaded.name, loaded.storage_path, loaded.experiment_path) == (
        "new", storage.root, f"s3://{s3.bucket}/unit/new")
    with pytest.raises(ValueError, match="holds no search"):
        P.load_plan(f"s3://{s3.bucket}/unit/none", s3.endpoint)
    with pytest.raises(ValueError, match="bucket 'nobucket' not found at http"):
        open_storage("s3://nobucket/x", s3.endpoint).check()
    with pytest.raises(ValueError, match=r"--storage-path s3://b/x \(endpoint http://127.0.0.1:1\) is not usable"):
        open_storage("s3://b/x", "http://127.0.0.1:1").check()


SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAMADEUP", "AWS_SECRET_ACCESS_KEY": "made-up-aws-secret-0xA1",
           "AWS_SESSION_TOKEN": "made-up-session-0xB2", "MLFLOW_TRACKING_USERNAME": "alice",
           "MLFLOW_TRACKING_PASSWORD": "made-up-tracking-pw-0xC3", "MLFLOW_TRACKING_TOKEN": "made-up-token-0xD4"}


def test_runtime_env_carries_settings_but_no_secret_unless_asked(monkeypatch) -> None:
    from tuning.driver.cluster import NODE_ENV_NAMES
    from tuning.driver.runner import runtime_env
    from tuning.plan.search_plan import SearchPlan
    for k in NODE_ENV_NAMES:
        monkeypatch.delenv(k, raising=False)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the driver's fail-fast pre-flight setting
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_SOMETHING_NEW", "x")  # not on the allow-list: not forwarded
    monkeypatch.setenv("UNRELATED", "x")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    plan = SimpleNamespace(tracking_uri="http://mlflow:5000", storage_endpoint="http://minio:9000",
                           storage=open_storage("s3://b/hpo", "http://minio:9000"))
    env = runtime_env(plan)  # type: ignore[arg-type]
    assert {"spmi", "tuning"} == {Path(p).name for p in env["py_modules"]}
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                               "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"}
    assert not any(v in json.dumps(env) for v in SECRETS.values())
    forwarded = runtime_env(plan, forward_secrets=True)  # type: ignore[arg-type]
    assert forwarded["env_vars"] == {**env["env_vars"], **SECRETS}
    assert SearchPlan  # (the real plan type has these attributes)
    # inside `ray job submit --runtime-env-json ...`: what the job sets is not set again (Ray refuses that)
    job = {"runtime_env": {"py_modules": ["s3://x/code.zip"], "env_vars": {"AWS_REGION": "eu-west-1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    env = runtime_env(plan)  # type: ignore[arg-type]
    assert "py_modules" not in env and "AWS_REGION" not in env["env_vars"]
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_trial_dataset_checked_and_fetched_on_its_node(tiny, tmp_path: Path) -> None:
    import shutil
    import socket

    from spmi.config import TrainConfig
    from tuning.trial.nodedata import node_dataset
    checksum = files_checksum(datagen.md5_table(tiny["data"]))  # --no-verify-data: the driver's files
    cfg = TrainConfig(dataset="fmnist", data_root=str(tiny["data"]), verify_data=False)
    assert node_dataset(cfg, checksum).checksum == checksum
    with pytest.raises(DataError, match=f"node {socket.gethostname()}: .* is not the data the search was started"):
        node_dataset(cfg, "0" * 16)

    empty = TrainConfig(dataset="fmnist", data_root=str(tmp_path / "absent"), verify_data=False)
    fetched = []

    def fetch(c: TrainConfig) -> str:  # stands in for `python -m spmi.data.fetch`
        fetched.append(c.data_root)
        shutil.copytree(tiny["data"], c.data_root)
        return ""
    assert node_dataset(empty, checksum, fetch=fetch).checksum == checksum and fetched == [empty.data_root]
    other = TrainConfig(dataset="fmnist", data_root=str(tmp_path / "other"), verify_data=False)
    with pytest.raises(DataError, match=f"^node {socket.gethostname()}: Fashion-MNIST not found.*fetching it there "
                                        f"failed: no network"):
        node_dataset(other, checksum, fetch=lambda c: "no network")


def test_ray_default_decides_the_placement_group_cleaner(monkeypatch) -> None:
    import builtins

    from ray.train.torch import TorchTrainer

    from tuning.trial import ddp
    real_import = builtins.__import__

    def without_dashboard_deps(name, *args, **kwargs):
        if name == "ray.dashboard.optional_deps":
            raise ImportError("no aiohttp_cors")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", without_dashboard_deps)
    assert not ddp.has_ray_default() and ddp.trainer_class() is ddp.TorchTrainerWithoutCleaner
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setitem(sys.modules, "ray.dashboard.optional_deps", SimpleNamespace())
    assert ddp.has_ray_default() and ddp.trainer_class() is TorchTrainer


# ---------------------------------------------------------------- a cluster safe on a shared network


def test_docs_hold_the_commands_the_tests_run() -> None:
    """docs/cluster.md starts the tracking server and the Ray nodes with the commands the
    tests run (clusterkit's templates, with the docs' values)."""
    import re
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cluster.md").read_text()
    flat = re.sub(r"\s+", " ", docs.replace("\\\n", " "))
    for template, values in K.DOC_VALUES.items():
        assert template.format(**values) in flat, template.format(**values)
    assert "RAY_AUTH_MODE=token" in flat and "ray get-auth-token --generate" in flat
    assert "MLFLOW_TRACKING_USERNAME" in flat and "MLFLOW_TRACKING_PASSWORD" in flat
    assert "--dashboard-host 0.0.0.0" not in flat and "--host 0.0.0.0" not in flat


@pytest.fixture(scope="module")
def secure(s3: K.S3, tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL, the MLflow server as the docs start it (basic auth, --allowed-hosts) and a
    Ray cluster with token authentication whose nodes have their own credentials."""
    logs = tmp_path_factory.mktemp("secure-logs")
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(K.postgres(logs))
        pg.create_database("optunadb")
        server = stack.enter_context(K.mlflow_server(pg, s3, logs, admin_password=SECRETS["MLFLOW_TRACKING_PASSWORD"]))
        provision = {**K.CREDENTIALS, **server.credentials}  # the nodes' own: not the driver's
        cluster = stack.enter_context(K.token_ray_cluster(logs, workers=1, cpus=2, provision=provision))
        yield SimpleNamespace(s3=s3, pg=pg, server=server, cluster=cluster, logs=logs)


@pytest.mark.slow
def test_tracking_server_refuses_clients_without_credentials_and_unknown_hosts(secure) -> None:
    server = secure.server
    admin = ("admin", SECRETS["MLFLOW_TRACKING_PASSWORD"])
    assert server.status() == 401
    assert server.status(auth=("admin", "wrong")) == 401
    assert server.status(auth=admin) == 200
    assert server.status(host=K.MLFLOW_HOST, auth=admin) == 200  # the name the docs give clients
    assert server.status(host="other-host", auth=admin) == 403
    # the same server without --allowed-hosts refuses the documented name (MLflow's DNS-rebinding guard)
    with K.mlflow_server(secure.pg, secure.s3, secure.logs, admin_password=admin[1], allow_hosts=False) as plain:
        assert plain.status(auth=admin) == 200
        assert plain.status(host=K.MLFLOW_HOST, auth=admin) == 403


@pytest.mark.slow
def test_ray_nodes_refuse_a_client_without_the_token(secure) -> None:
    cluster = secure.cluster
    ok, out = cluster.connects(cluster.client_env)
    assert ok and "alive nodes 2" in out, out[-2000:]
    for env in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}):
        ok, out = cluster.connects(env)
        assert not ok, out[-2000:]


def secret_values(pg_password: str) -> list[str]:
    return [SECRETS["AWS_SECRET_ACCESS_KEY"], SECRETS["MLFLOW_TRACKING_PASSWORD"], pg_password]


def files_holding(root: Path, needles: list[str]) -> list[str]:
    """'file: secret' for each needle found in a regular file under ``root``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                for n in needles:
                    at = data.find(n.encode())
                    if at >= 0:
                        found.append(f"{path}: {data[max(0, at - 300):at + 60].decode(errors='replace')}")
    return found


@pytest.mark.slow
def test_secure_cluster_search_leaves_no_secret_anywhere(tiny, secure, tmp_path: Path) -> None:
    name, trials, epochs = "sec1", 2, 2
    pg_password = "made-up-pg-pw-0xE5"
    optuna_url = f"postgresql://mlflow:{pg_password}@127.0.0.1:{secure.pg.port}/optunadb"  # (trust auth: ignored)
    parts = SimpleNamespace(s3=secure.s3, server=secure.server, cluster=secure.cluster)
    args = [*cluster_args(tiny, parts, name, trials, epochs), "--optuna-storage", optuna_url]
    cwd, home, log = tmp_path / "driver", tmp_path / "home", tmp_path / "driver.log"
    cwd.mkdir()
    home.mkdir()
    env = {k: v for k, v in driver_env(home).items() if not k.startswith("RAY_AUTH")}
    env |= {"AWS_SECRET_ACCESS_KEY": SECRETS["AWS_SECRET_ACCESS_KEY"],  # moto takes any key
            **secure.server.credentials, **secure.cluster.client_env}
    driver = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=cwd, env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    out = finish(driver, log, timeout=900)
    needles = secret_values(pg_password)

    runs = trial_runs(secure.pg, name)  # the trials logged through the authenticated server
    assert len(runs) == trials and all(r[1] == "FINISHED" for r in runs), runs
    assert not [n for n in needles if n in out], out[-3000:]
    client = secure.s3.client()
    for prefix in (f"hpo/{name}/", "mlartifacts/"):
        keys = secure.s3.keys(prefix)
        assert keys, prefix
        for key in keys:
            body = client.get_object(Bucket=secure.s3.bucket, Key=key)["Body"].read()
            assert not [n for n in needles if n.encode() in body], key
    tracking = secure.pg.dump()  # params, tags, the note with the command line, datasets, ...
    assert "postgresql://mlflow:***@127.0.0.1" in tracking  # the Optuna URL is recorded, masked
    assert not [n for n in needles if n in tracking]
    # what Ray was handed and keeps (the job's runtime environment, in its nodes' logs and sessions)
    assert files_holding(secure.cluster.temp_dir, ["MLFLOW_TRACKING_URI"]), "Ray's files show no runtime env"
    assert files_holding(secure.cluster.temp_dir, needles) == []
    assert files_holding(cwd, needles) == [] and files_holding(home, needles) == []
