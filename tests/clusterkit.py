"""The parts of a multi-node deployment, started on this machine for tests: moto's S3
server, a throwaway PostgreSQL cluster, an MLflow tracking server on it with artifacts
in S3, and a Ray cluster of a head and worker nodes. Each part is a context manager that
stops exactly the processes it started; ``missing()`` says which part cannot be found."""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

# The commands that docs/cluster.md (its Security section) starts the servers with, as
# templates: the tests start the parts with the same ones (test_docs_hold_the_commands_the_tests_run
# checks that the docs hold each, with DOC_VALUES), plus what one machine needs (loopback, --block).
MLFLOW_SERVER = ("mlflow server --app-name basic-auth --backend-store-uri {backend} "
                 "--artifacts-destination {artifacts} --host {bind} --port {port} --workers {workers} "
                 "--allowed-hosts {allowed}")
RAY_HEAD = "ray start --head --port {port} --dashboard-host 127.0.0.1 --num-cpus 0 --num-gpus 0"
RAY_WORKER = "ray start --address {head}:{port}"
DOC_VALUES = {
    MLFLOW_SERVER: {"backend": "postgresql://mlflow@db-host:5432/mlflowdb", "artifacts": "s3://spmi/mlartifacts",
                    "bind": "127.0.0.1", "port": "5000", "workers": "4", "allowed": "mlflow-host"},
    RAY_HEAD: {"port": "6379"},
    RAY_WORKER: {"head": "HEAD", "port": "6379"},
}
MLFLOW_HOST = DOC_VALUES[MLFLOW_SERVER]["allowed"]  # the name clients call the tracking server by


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (initdb, pg_ctl), newest version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else shutil.which("initdb") and Path(shutil.which("initdb")).parent


def moto_server_bin() -> str | None:
    return shutil.which("moto_server", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def missing() -> str:
    """Why the parts cannot be started here ('' when all can)."""
    import importlib.util
    if moto_server_bin() is None:
        return "moto's S3 server (pip install 'moto[server]') not found"
    if pg_bin() is None:
        return "PostgreSQL (apt-get install postgresql) not found"
    for module, package in (("psycopg", "psycopg[binary]"), ("boto3", "boto3"), ("flask_wtf", "mlflow[auth]")):
        if importlib.util.find_spec(module) is None:
            return f"{module} (pip install '{package}') not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "user postgres (made by Debian's postgresql package) not found; PostgreSQL refuses to run as root"
    return ""


def _wait(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} not up after {timeout:.0f} s:\n{tail}")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# ---------------------------------------------------------------- S3 (moto)


@dataclass
class S3:
    endpoint: str
    bucket: str

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def objects(self, prefix: str) -> dict[str, float]:
        """Key -> last-modified time (epoch seconds) of the objects under ``prefix``."""
        out, token = {}, None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client().list_objects_v2(**kw)
            out |= {o["Key"]: o["LastModified"].timestamp() for o in page.get("Contents", [])}
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def keys(self, prefix: str) -> list[str]:
        return list(self.objects(prefix))


@contextlib.contextmanager
def moto_s3(logs: Path, bucket: str = "spmi") -> Iterator[S3]:
    port = free_port()
    log = logs / "moto.log"
    proc = subprocess.Popen([moto_server_bin(), "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        s3 = S3(f"http://127.0.0.1:{port}", bucket)
        _wait(lambda: urllib.request.urlopen(s3.endpoint, timeout=2), "moto_server", 60, proc, log)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop_group(proc)


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    port: int
    database: str = "mlflowdb"
    user: str = "mlflow"

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def create_database(self, name: str) -> None:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")

    def dump(self) -> str:
        """Every row of every table of the database, as text."""
        tables = [t for (t,) in self.query("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'public'")]
        return "\n".join(f"{t}: {row}" for t in tables for row in self.query(f'SELECT * FROM "{t}"'))

    def query(self, sql: str, *args) -> list[tuple]:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database) as conn:
            return conn.execute(sql, args).fetchall()


@contextlib.contextmanager
def postgres(logs: Path) -> Iterator[Postgres]:
    """A throwaway cluster (initdb, trust auth, 127.0.0.1 only) in a temporary folder;
    as root it runs as user postgres, which the folder then belongs to."""
    binary = pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="spmi-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, pg = folder / "data", Postgres(free_port())
    ctl = [*as_user, str(binary / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run([*as_user, str(binary / "initdb"), "-D", str(data), "-A", "trust", "-U", pg.user],
                       check=True, capture_output=True, timeout=180)
        opts = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {folder} -c fsync=off"
        subprocess.run([*ctl, "-o", opts, "-l", str(folder / "log"), "-w", "-t", "120", "start"], check=True,
                       capture_output=True, timeout=180)
        started = True
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {pg.database}")
        yield pg
    finally:
        if started:
            subprocess.run([*ctl, "stop", "-m", "fast"], capture_output=True, timeout=120)
        with contextlib.suppress(OSError):
            shutil.copyfile(folder / "log", logs / "postgres.log")
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- MLflow server


class MlflowServer:
    """``mlflow server`` on PostgreSQL with artifacts in S3; ``stop()``/``start()`` again
    on the same port (an outage). With ``admin_password``, the documented one (MLFLOW_SERVER):
    the basic-auth app, whose admin has that password, and ``--allowed-hosts`` MLFLOW_HOST
    (and 127.0.0.1:PORT, where the tests' clients call it) unless ``allow_hosts`` is off."""

    def __init__(self, pg: Postgres, s3: S3, logs: Path, admin_password: str | None = None,
                 allow_hosts: bool = True):
        self.port, self.pg, self.s3, self.logs = free_port(), pg, s3, logs
        self.admin_password, self.allow_hosts = admin_password, allow_hosts
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.home = Path(tempfile.mkdtemp(prefix="spmi-mlflow-"))  # the auth app's basic_auth.db

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The client's environment: MLFLOW_TRACKING_USERNAME/PASSWORD (the admin's)."""
        if self.admin_password is None:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.admin_password}

    def status(self, path: str = "/api/2.0/mlflow/experiments/search", host: str | None = None,
               auth: tuple[str, str] | None = None, timeout: float = 60) -> int:
        """The HTTP status of a POST to ``path`` (GET for /health), with the Host header ``host``."""
        headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        data = None if path == "/health" else b'{"max_results": 1}'
        request = urllib.request.Request(self.uri + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                reply.read()
                return reply.status
        except urllib.error.HTTPError as err:
            return err.code

    def healthy(self) -> bool:
        return self.status("/health", timeout=5) == 200

    def command(self) -> list[str]:
        if self.admin_password is None:
            return [str(BIN / "mlflow"), "server", "--backend-store-uri", self.pg.uri,
                    "--artifacts-destination", f"s3://{self.s3.bucket}/mlartifacts",
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd = shlex.split(MLFLOW_SERVER.format(
            backend=self.pg.uri, artifacts=f"s3://{self.s3.bucket}/mlartifacts", bind="127.0.0.1",
            port=self.port, workers=1, allowed=f"{MLFLOW_HOST},127.0.0.1:{self.port}"))
        if not self.allow_hosts:
            cmd = cmd[:cmd.index("--allowed-hosts")]
        return [str(BIN / cmd[0]), *cmd[1:]]

    def start(self, timeout: float = 300) -> None:
        self.starts += 1
        log = self.logs / f"mlflow-server-{self.port}-{self.starts}.log"
        env = {**os.environ, **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint}
        if self.admin_password is not None:
            env |= {"MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        self.proc = subprocess.Popen(self.command(), env=env, cwd=self.home, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self.healthy, "mlflow server", timeout, self.proc, log)
        # the first query of the database is slow (tens of seconds on a busy machine): not a client's
        auth = ("admin", self.admin_password) if self.admin_password is not None else None
        status = self.status(auth=auth, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"mlflow server answered {status} to its admin:\n{log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


@contextlib.contextmanager
def mlflow_server(pg: Postgres, s3: S3, logs: Path, admin_password: str | None = None,
                  allow_hosts: bool = True) -> Iterator[MlflowServer]:
    server = MlflowServer(pg, s3, logs, admin_password, allow_hosts)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


# ---------------------------------------------------------------- Ray


def driver_env(home: Path | None = None) -> dict[str, str]:
    """The environment of a search driver joining ``ray_cluster``: this process's without
    MLflow and AWS settings, plus the object store's credentials; with ``home``, a HOME of
    its own. Where Ray's token authentication is on, the driver reads the cluster's token
    from this process's ~/.ray (RAY_AUTH_TOKEN_PATH), as a real cluster's user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file() and not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(env):
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return {**env, **CREDENTIALS, **({"HOME": str(home)} if home is not None else {})}


@contextlib.contextmanager
def clean_environ(prefixes: tuple[str, ...] = ("MLFLOW_", "AWS_"), provision: dict[str, str] | None = None,
                  ) -> Iterator[None]:
    """Without these variables for a while, but with ``provision``: Ray nodes started meanwhile
    (and so their trials) have the credentials provisioned on them, and get every other
    such setting only through a job's runtime environment."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefixes) or k in (provision or {})}
    for k in saved:
        del os.environ[k]
    os.environ.update(provision or {})
    try:
        yield
    finally:
        for k in provision or {}:
            os.environ.pop(k, None)
        os.environ.update(saved)


@contextlib.contextmanager
def ray_cluster(workers: int = 2, cpus: int = 1) -> Iterator[object]:
    """A head with no CPUs (so every trial runs on a worker node) and ``workers`` nodes of
    ``cpus`` CPUs each, all on this machine (``ray.cluster_utils.Cluster``); the object
    store's credentials are provisioned on the nodes (the driver forwards no secret)."""
    from ray.cluster_utils import Cluster
    common = {"include_dashboard": False, "object_store_memory": 96 * 1024**2}
    with clean_environ(provision=CREDENTIALS):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **common})
        try:
            for _ in range(workers):
                cluster.add_node(num_cpus=cpus, **common)
            cluster.wait_for_nodes()
        except BaseException:
            cluster.shutdown()
            raise
    try:
        yield cluster
    finally:
        cluster.shutdown()


@dataclass
class TokenCluster:
    """A Ray cluster started as docs/cluster.md starts one (RAY_HEAD, RAY_WORKER) with token
    authentication; ``temp_dir`` holds everything its nodes write (sessions, logs)."""
    address: str
    token: str
    temp_dir: Path

    @property
    def client_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def connects(self, env: dict[str, str], timeout: float = 120) -> tuple[bool, str]:
        """Whether a client with ``env`` (and no other Ray token) joins the cluster; its output."""
        code = (f"import ray; ray.init(address={self.address!r}); "
                "print('alive nodes', sum(n['Alive'] for n in ray.nodes()))")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        with tempfile.TemporaryDirectory() as home:  # no ~/.ray/auth_token to fall back on
            done = subprocess.run([sys.executable, "-c", code], env={**clean, "HOME": home, **env},
                                  capture_output=True, text=True, timeout=timeout)
        return done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def token_ray_cluster(logs: Path, workers: int = 1, cpus: int = 2,
                      provision: dict[str, str] | None = None) -> Iterator[TokenCluster]:
    """A head (no CPUs) and ``workers`` nodes of ``cpus`` CPUs, each a ``ray start --block``
    in its own process group with RAY_AUTH_MODE=token and the cluster's token; the nodes
    have ``provision`` (the credentials their trials need) in their environment."""
    port, token = free_port(), secrets.token_hex(32)
    temp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths have a length limit
    cluster = TokenCluster(f"127.0.0.1:{port}", token, temp)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "RAY_AUTH"))}
    env = {**clean, **(provision or {}), **cluster.client_env, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    loopback = ["--node-ip-address", "127.0.0.1", "--block"]
    head = [*shlex.split(RAY_HEAD.format(port=port)), *loopback, "--temp-dir", str(temp),
            "--include-dashboard", "false", "--object-store-memory", str(96 * 1024**2)]
    procs: list[subprocess.Popen] = []
    try:
        log = logs / "ray-head.log"
        procs.append(subprocess.Popen(head, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait(lambda: cluster.connects(cluster.client_env)[0], "ray head", 180, procs[0], log)
        for i in range(workers):
            worker = [*shlex.split(RAY_WORKER.format(head="127.0.0.1", port=port)), *loopback,
                      "--num-cpus", str(cpus), "--object-store-memory", str(96 * 1024**2)]
            log = logs / f"ray-worker-{i}.log"
            procs.append(subprocess.Popen(worker, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))

        def all_up() -> bool:
            ok, out = cluster.connects(cluster.client_env)
            return ok and f"alive nodes {workers + 1}" in out
        _wait(all_up, "ray worker nodes", 180, procs[-1], log)
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)
