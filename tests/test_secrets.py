"""Passwords in URLs stay out of what the project prints, logs and stores (tuning.record.secrets)."""

from __future__ import annotations

import json
from pathlib import Path

from test_search import common, write_tiny

from tuning.cli import search
from tuning.record import secrets

SECRET = "s3cr3t-Pw"


def test_mask_hides_the_password_of_every_url_in_a_text() -> None:
    text = (f"python tuning/search.py --optuna-storage postgresql+psycopg://spmi:{SECRET}@db:5432/optuna "
            f"--tracking-uri http://alice:{SECRET}@mlflow-host:5000 --storage-path s3://bucket/hpo")
    masked = secrets.mask(text)
    assert SECRET not in masked
    assert "postgresql+psycopg://spmi:***@db:5432/optuna" in masked and "http://alice:***@mlflow-host:5000" in masked
    assert "s3://bucket/hpo" in masked
    for plain in ("http://mlflow-host:5000/api", "postgresql://spmi@db/optuna", "sqlite:////tmp/a.db", "a:b@c"):
        assert secrets.mask(plain) == plain and not secrets.has_password(plain)
    assert secrets.has_password(f"mysql://root:{SECRET}@h/db") and not secrets.is_masked(f"mysql://root:{SECRET}@h/db")
    assert secrets.is_masked(secrets.mask(f"mysql://root:{SECRET}@h/db"))
    assert secrets.without_password(f"postgresql://spmi:{SECRET}@db/o") == "postgresql://spmi@db/o"


def make_plan(folder: Path, url: str):
    from spmi.config import resolve
    from tuning.plan import search_plan as P
    return P.SearchPlan(name="s", storage_path=str(folder), storage_endpoint=None, dataset="fmnist", method="spmi",
                        space_path="x.yaml", num_samples=1, max_epochs=1, grace_period=1, reduction_factor=2, seed=0,
                        cpus_per_trial=1, gpus_per_trial=0.0, max_concurrent=1, tracking_uri="http://x",
                        base=resolve({}), optuna_storage=url, command=f"search.py --optuna-storage {url}")


def test_plan_stores_the_optuna_url_and_command_masked(tmp_path: Path) -> None:
    url = f"postgresql://spmi:{SECRET}@db/optuna"
    plan = make_plan(tmp_path, url)
    plan.save()
    text = (tmp_path / "s" / "search.json").read_text()
    assert SECRET not in text and json.loads(text)["optuna_storage"] == "postgresql://spmi:***@db/optuna"
    assert plan.optuna_storage == url  # the real one stays in memory, for this driver's connections


def test_a_tracking_uri_with_a_password_is_refused(tmp_path: Path, capsys) -> None:
    tiny = write_tiny(tmp_path / "tiny")
    argv = [*common(tiny, tmp_path / "hpo"), "--tracking-uri", f"http://alice:{SECRET}@127.0.0.1:1"]
    assert search.main(argv) == 2
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in err and SECRET not in err, err


def test_errors_naming_the_optuna_url_mask_its_password(tmp_path: Path, capsys) -> None:
    tiny = write_tiny(tmp_path / "tiny")
    argv = [*common(tiny, tmp_path / "hpo"), "--optuna-storage", f"postgresql://spmi:{SECRET}@127.0.0.1:1/optuna"]
    assert search.main(argv) == 2
    out = capsys.readouterr()
    assert "error: " in out.err and SECRET not in out.err + out.out, out.err
    assert "postgresql://spmi:***@127.0.0.1:1/optuna" in out.err, out.err


def test_a_resume_connects_without_the_stored_mask_and_says_where_the_password_comes_from(
        monkeypatch, tmp_path: Path) -> None:
    from tuning.record import optuna_study
    seen = []

    def refused(url: str, name: str) -> bool:
        seen.append(url)
        raise RuntimeError("password authentication failed for user spmi")
    monkeypatch.setattr(optuna_study, "study_exists", refused)
    plan = make_plan(tmp_path, "postgresql://spmi:***@db/optuna")  # as search.json keeps it
    try:
        search.resumed_study(plan, None)
        raise AssertionError("a refused database was not reported")
    except ValueError as err:
        assert "$PGPASSWORD" in str(err) and "postgresql://spmi@db/optuna" in str(err), err
    assert seen == ["postgresql://spmi@db/optuna"]  # libpq takes the password from $PGPASSWORD or ~/.pgpass
    monkeypatch.setattr(optuna_study, "study_exists", lambda url, name: seen.append(url) or True)
    asked = f"postgresql://spmi:{SECRET}@db/optuna"
    assert search.resumed_study(plan, asked).optuna_storage == asked  # --optuna-storage again: used as given
