"""The house's layout: tuning/'s wings import one way (``tuning.WINGS``, top to bottom),
``spmi`` imports nothing of tuning, Ray, Optuna or MLflow, importing a command changes
nothing in the process, and ``python tuning/<command>.py`` is a thin shim."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tuning

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("search", "confirm", "reproduce", "report", "evaluate")
LEGACY = ("runner",)  # layout 1's import paths that old searches' Tune state names (tests/test_old_layout.py)


def imports_of(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (at any depth in the file), absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # ``from tuning.x import module``
    return found


def modules(root: str) -> dict[str, Path]:
    out = {}
    for path in (REPO / root).rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "tuning" and parts[1] in tuning.WINGS else None


def test_every_tuning_module_lives_in_a_wing_with_a_docstring():
    loose = sorted(m for m in modules("tuning") if m != "tuning" and wing(m) is None
                   and m.removeprefix("tuning.") not in (*COMMANDS, *LEGACY, *tuning.WINGS))
    assert loose == [], f"modules outside the wings: {loose}"
    for name in tuning.WINGS:
        init = REPO / "tuning" / name / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"tuning/{name}/__init__.py says nothing"


def test_wings_import_one_way():
    order = {name: i for i, name in enumerate(tuning.WINGS)}
    wrong = []
    for module, path in modules("tuning").items():
        mine = wing(module)
        if mine is None:
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for target in imports_of(path, package):
            theirs = wing(target)
            if theirs is not None and order[theirs] < order[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert wrong == [], "imports against the wing order " + " > ".join(tuning.WINGS) + ":\n" + "\n".join(wrong)


def test_spmi_imports_no_tuning_ray_optuna_or_mlflow():
    banned = ("tuning", "ray", "optuna", "mlflow")
    wrong = [f"{module} imports {target}" for module, path in modules("spmi").items()
             for target in imports_of(path, module if path.name == "__init__.py" else module.rpartition(".")[0])
             if target.split(".")[0] in banned]
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("root", ["spmi", "tuning"])
def test_no_module_imports_itself_back(root):
    """No import cycle among a package's modules (``if TYPE_CHECKING`` imports included):
    each layer can be read, and changed, from the bottom up."""
    mods = modules(root)
    graph = {}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = {t for t in imports_of(path, package) if t in mods and t != module
                         and not module.startswith(t + ".")}  # (a package's own __init__ is no cycle)
    cycles, state = [], dict.fromkeys(graph, 0)

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif state[nxt] == 0:
                visit(nxt, trail + [nxt])
        state[node] = 2
    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert cycles == [], "\n".join(cycles)


def test_importing_the_commands_changes_no_environment():
    """(Ray itself may set variables of its own when imported; ours wait for ``main``.)"""
    code = ("import os, sys; from tuning.cli.environment import DEFAULTS, apply_environment; "
            + "; ".join(f"import tuning.cli.{c}" for c in COMMANDS)
            + "; early = sorted(k for k in DEFAULTS if k in os.environ); print('set on import:', early); "
              "apply_environment(); sys.exit(0 if not early and all(os.environ[k] == v for k, v in DEFAULTS.items()) "
              "else 1)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNE_", "RAY_", "MLFLOW_"))}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_command_mains_apply_the_environment_first(command):
    """Each command's ``main`` calls ``apply_environment`` before it parses its arguments."""
    tree = ast.parse((REPO / "tuning" / "cli" / f"{command}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [n.func.id for stmt in main.body for n in ast.walk(stmt)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "apply_environment" in calls and next(
        c for c in calls if c in ("apply_environment", "build_parser", "ArgumentParser")) == "apply_environment", calls


@pytest.mark.parametrize("command", COMMANDS)
def test_script_is_a_shim_without_path_edits(command):
    text = (REPO / "tuning" / f"{command}.py").read_text()
    assert f"from tuning.cli.{command} import main" in text and "sys.path" not in text
    assert "def " not in text  # nothing of its own


def test_a_shim_without_the_package_says_so_in_one_line(tmp_path):
    """``python -S`` hides site-packages (an installed tuning); no PYTHONPATH names the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-S", str(REPO / "tuning" / "search.py"), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: the tuning package is not importable: install the project (pip install -e .), or run from the "
        "repository folder with PYTHONPATH=."]
