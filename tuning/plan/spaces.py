"""Search-space files: the paper's value, the authors' code value and the searched range
of each hyperparameter of one method (``search_spaces/<method>.yaml``), with overrides
where a dataset or a preset differs (``datasets:``/``presets:``) and an optional base file
(``extends:``); the format is in docs/tuning.md.

Every entry of the resolved space is checked against the TrainConfig field or method
option it names (type and limits from ``spmi.options`` metadata); a problem is a
``SpaceError`` naming the file and the line that holds the value (an override's own line).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spmi.data import DATASETS
from spmi.methods import get_method
from spmi.options import start_knobs
from tuning.plan.fields import FieldSpec, coerce, field_specs, nearest_hint
from tuning.plan.settings import PRESETS
from tuning.plan.yaml_lines import Lines, LocatedError, load_with_lines

SpaceError = LocatedError
DISTRIBUTIONS = {"uniform": float, "loguniform": float, "int": int, "logint": int, "categorical": None}
TOP_KEYS = ("description", "method", "dataset", "settings", "fixed", "params")
# a file's overrides: per dataset (registry names) and per preset (``tuning.plan.settings.PRESETS``)
OVERRIDES = {"datasets": DATASETS, "presets": PRESETS}
OVERRIDE_KEYS = ("description", "settings", "fixed", "params")
PARAM_KEYS = ("distribution", "low", "high", "step", "choices", "paper", "code", "start", "note")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter."""

    name: str
    distribution: str
    paper: Any
    code: Any = None
    start: Any = None
    low: Any = None
    high: Any = None
    step: Any = None
    choices: tuple = ()
    note: str = ""

    def contains(self, value: Any) -> bool:
        if self.distribution == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.low <= value <= self.high:
            return False
        if self.distribution in ("int", "logint"):
            return isinstance(value, int) and (value - self.low) % (self.step or 1) == 0
        return True

    @property
    def largest(self) -> Any:
        return max(self.choices) if self.distribution == "categorical" else self.high

    def suggest(self, trial: Any) -> Any:
        """Draw the value through an Optuna trial (or Ray's define-by-run captor)."""
        d = self.distribution
        if d == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if d in ("int", "logint"):
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=d == "logint")
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=d == "loguniform")

    def optuna_distribution(self) -> Any:
        import optuna.distributions as od
        d = self.distribution
        if d == "categorical":
            return od.CategoricalDistribution(list(self.choices))
        if d in ("int", "logint"):
            return od.IntDistribution(self.low, self.high, log=d == "logint", step=self.step or 1)
        return od.FloatDistribution(self.low, self.high, log=d == "loguniform", step=self.step)


@dataclass
class SearchSpace:
    """A validated space file. ``settings``: config fields overriding the dataset's paper settings (labelled,
    model, ...); ``fixed``: constants of every trial; ``params``: what is searched."""

    path: Path
    method: str
    dataset: str | None
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)

    def to_optuna(self, trial: Any) -> None:
        """Define-by-run space for ``OptunaSearch(space=...)``."""
        for p in self.params.values():
            p.suggest(trial)

    @property
    def defaults(self) -> dict[str, Any]:
        """The first trial: each ``start`` (default: the authors' code value, else the paper's)."""
        return {n: p.start for n, p in self.params.items()}

    @property
    def paper_values(self) -> dict[str, Any]:
        return {n: p.paper for n, p in self.params.items()}

    @property
    def code_values(self) -> dict[str, Any]:
        return {n: p.paper if p.code is None else p.code for n, p in self.params.items()}

    def points_to_evaluate(self) -> list[dict[str, Any]]:
        """The default point, then the paper's when it differs and lies inside the space."""
        points = [self.defaults]
        paper = self.paper_values
        if paper != points[0] and all(self.params[n].contains(v) for n, v in paper.items()):
            points.append(paper)
        return points

    def to_yaml(self, comment: str = "") -> str:
        """This space as one plain space file (no ``extends`` or overrides) that loads back
        to the same space; ``comment`` becomes its header."""
        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        params = {}
        for n, p in self.params.items():
            entry: dict[str, Any] = {"paper": p.paper}
            if p.code is not None:
                entry["code"] = p.code
            if p.start != (p.paper if p.code is None else p.code):
                entry["start"] = p.start
            entry["distribution"] = p.distribution
            if p.distribution == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry |= {"low": p.low, "high": p.high} | ({"step": p.step} if p.step is not None else {})
            if p.note:
                entry["note"] = p.note
            params[n] = entry
        doc: dict[str, Any] = {"method": self.method}
        if self.dataset is not None:
            doc["dataset"] = self.dataset
        if self.description:
            doc["description"] = self.description
        for key in ("settings", "fixed"):
            if getattr(self, key):
                doc[key] = {k: plain(v) for k, v in getattr(self, key).items()}
        doc["params"] = params
        head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
        return head + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)

    def grid(self) -> dict[str, list[Any]]:
        """Every searched setting's explicit values, for a grid search: a categorical one's
        choices, an integer one's every value; a continuous range has none (ValueError)."""
        out: dict[str, list[Any]] = {}
        for n, p in self.params.items():
            if p.distribution == "categorical":
                out[n] = list(p.choices)
            elif p.distribution in ("int", "logint") and (p.high - p.low) // (p.step or 1) < 1000:
                out[n] = list(range(p.low, p.high + 1, p.step or 1))
            else:
                raise ValueError(f"--searcher grid needs explicit values: {n} is {p.distribution} on "
                                 f"[{p.low}, {p.high}]; list the values in the space file "
                                 f"(distribution: categorical, choices: [...])")
        return out

    def distributions(self) -> dict[str, Any]:
        return {n: p.optuna_distribution() for n, p in self.params.items()}

    def largest(self, name: str) -> Any:
        """The largest value ``name`` can take in this space (None when not set here)."""
        if name in self.params:
            return self.params[name].largest
        return self.fixed.get(name, self.settings.get(name))

    def max_start_epoch(self, base: dict[str, Any] | None = None) -> int:
        """The latest epoch at which a label channel / purification may start."""
        return self.latest_start(base)[1]

    def latest_start(self, base: dict[str, Any] | None = None) -> tuple[str | None, int]:
        """(knob, epoch): the start knob (an option declared ``starts=``, e.g. T_w) that can start latest in this space
        (its largest value here; for a knob the space leaves alone, its value in ``base`` (the
        search's method options, e.g. the dataset's T_w), else the method's default) and that
        epoch; (None, 0) when the method has none."""
        cls = get_method(self.method).Options
        opts, base = cls(), base or {}
        found = []
        for k in start_knobs(cls):
            value = self.largest(k)
            if value is None:  # a start knob is a field of the Options: it has a default
                value = base.get(k, getattr(opts, k))
            if value is not None:
                found.append((int(value), k))
        if not found:
            return None, 0
        epoch, knob = max(found)
        return knob, epoch


def load_space(path: str | Path, method: str, dataset: str | None = None,
               preset: str | None = None) -> SearchSpace:
    """Load and validate a space file for ``method``, resolved for ``dataset`` and ``preset``
    (its ``extends`` base, then its ``datasets``/``presets`` overrides for them, where it has
    any); SpaceError (file:line) on any problem."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(path, None, "search-space file not found")
    doc, lines = _compose(path, ())
    data = {k: v for k, v in doc.items() if k not in OVERRIDES}
    for section, name in (("datasets", dataset), ("presets", preset)):
        patch = (doc.get(section) or {}).get(name) if name is not None else None
        if patch:
            _patch(data, patch, (), lines, lines, (section, name))
    return _Parser(path, lines, method, dataset).space(data)


def _compose(path: Path, seen: tuple[Path, ...]) -> tuple[dict, Lines]:
    """The file's document with its ``extends`` chain applied, and where each node came from."""
    data, lines = load_with_lines(path)

    def fail(where: tuple[str, ...], message: str) -> LocatedError:
        return SpaceError(*(lines.key(where) or (path, None)), message)

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(*(lines.value(()) or (path, None)), f"the file must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in (*TOP_KEYS, "extends", *OVERRIDES):
            raise fail((key,), f"unknown top-level key {key!r}; valid: {', '.join((*TOP_KEYS, 'extends', *OVERRIDES))}")
    for section, names in OVERRIDES.items():
        overrides = data.get(section)
        if overrides is None:
            continue
        if not isinstance(overrides, dict):
            raise fail((section,), f"{section} must be a mapping of {section} names to overrides")
        for name, patch in overrides.items():
            if name not in names:
                raise fail((section, str(name)), f"{section}: unknown name {name!r}; choose one of: "
                                                 f"{', '.join(sorted(names))}")
            if patch is not None and not isinstance(patch, dict):
                raise fail((section, name), f"{section}.{name} must be a mapping (description, settings, fixed, "
                                            f"params)")
            for key in patch or {}:
                if key not in OVERRIDE_KEYS:
                    raise fail((section, name, str(key)), f"unknown {section}.{name} key {key!r}; valid: "
                                                         f"{', '.join(OVERRIDE_KEYS)}")
    base = data.pop("extends", None)
    if base is None:
        return data, lines
    if not isinstance(base, str) or not base:
        raise fail(("extends",), "extends: give the base space file, a path relative to this file")
    base_path = (path.parent / base).resolve()
    if not base_path.is_file():
        raise fail(("extends",), f"extends: {base_path} not found")
    if base_path in (*seen, path.resolve()):
        raise fail(("extends",), f"extends: {base} extends this file again (a cycle)")
    doc, doc_lines = _compose(base_path, (*seen, path.resolve()))
    _patch(doc, data, (), doc_lines, lines, ())
    return doc, doc_lines


def _patch(target: dict, patch: dict, at: tuple[str, ...], lines: Lines, src: Lines, src_at: tuple[str, ...]) -> None:
    """Apply ``patch`` to ``target`` (at ``at``) in place, like a JSON merge patch (RFC 7396):
    mappings merge key by key, any other value replaces, ``null`` removes the entry. Inside
    the ``datasets``/``presets`` overrides (being overrides themselves) a ``null`` is kept.
    ``lines`` follows: each node keeps the file and line it came from (``src`` at ``src_at``)."""
    for key, value in patch.items():
        t, s = (*at, key), (*src_at, key)
        if value is None and not (len(t) > 2 and t[0] in OVERRIDES):
            target.pop(key, None)
            lines.drop(t)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
                lines.drop(t)
            lines.take(t, src, s, deep=False)
            _patch(target[key], value, t, lines, src, s)
        else:
            target[key] = copy.deepcopy(value)
            lines.drop(t)
            lines.take(t, src, s)


class _Parser:
    def __init__(self, path: Path, lines: Lines, method: str, dataset: str | None = None):
        self.path, self.lines, self.method, self.dataset = path, lines, method, dataset
        self.specs = field_specs(method)

    def fail(self, where: tuple[str, ...], message: str, key: bool = False) -> LocatedError:
        found = self.lines.key(where) if key else self.lines.value(where)
        return SpaceError(*(found or (self.path, None)), message)

    def mapping(self, value: Any, where: tuple[str, ...], what: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"{what} must be a mapping, got {type(value).__name__}")
        return value

    def known(self, keys: Any, allowed: tuple[str, ...], where: tuple[str, ...], what: str) -> None:
        for key in keys:
            if key not in allowed:
                raise self.fail((*where, str(key)), f"unknown {what} key {key!r}; valid: {', '.join(allowed)}",
                                key=True)

    def spec(self, name: str, where: tuple[str, ...], options_ok: bool = True) -> FieldSpec:
        spec = self.specs.get(name)
        if spec is None or (spec.is_option and not options_ok):
            kind = ("a TrainConfig field" if not options_ok
                    else f"a TrainConfig field nor an option of method {self.method}")
            hint = nearest_hint(self.method, name) if options_ok else ""
            raise self.fail(where, f"unknown parameter {name!r}: not {kind}{hint}", key=True)
        return spec

    def value(self, spec: FieldSpec, value: Any, where: tuple[str, ...]) -> Any:
        try:
            return coerce(spec, value)
        except ValueError as err:
            raise self.fail(where, str(err)) from None

    def space(self, data: Any) -> SearchSpace:
        top = self.mapping(data, (), "the file")
        self.known(top, TOP_KEYS, (), "top-level")
        method = top.get("method", self.method)
        if method != self.method:
            raise self.fail(("method",), f"this space is for method {method!r}, not {self.method!r}")
        dataset = top.get("dataset", self.dataset)
        if dataset is not None and dataset not in DATASETS:
            raise self.fail(("dataset",), f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(DATASETS))}")
        settings = {k: self.value(self.spec(k, ("settings", k), options_ok=False), v, ("settings", k))
                    for k, v in self.mapping(top.get("settings"), ("settings",), "settings").items()}
        fixed = {k: self.value(self.spec(k, ("fixed", k)), v, ("fixed", k))
                 for k, v in self.mapping(top.get("fixed"), ("fixed",), "fixed").items()}
        raw = self.mapping(top.get("params"), ("params",), "params")
        if not raw:
            raise self.fail(("params",) if "params" in top else (), "params: nothing to search (empty or missing)")
        params = {}
        for name, entry in raw.items():
            if name in fixed or name in settings:
                raise self.fail(("params", name), f"{name!r} is both searched and fixed", key=True)
            params[name] = self.param(name, entry)
        return SearchSpace(self.path, self.method, dataset, str(top.get("description", "")).strip(),
                           settings, fixed, params)

    def param(self, name: str, entry: Any) -> Param:
        where = ("params", name)
        spec = self.spec(name, where)
        entry = self.mapping(entry, where, f"params.{name}")
        self.known(entry, PARAM_KEYS, where, f"params.{name}")
        for required in ("distribution", "paper"):
            if required not in entry:
                raise self.fail(where, f"params.{name}: missing {required!r}", key=True)
        dist = entry["distribution"]
        if dist not in DISTRIBUTIONS:
            raise self.fail((*where, "distribution"),
                            f"params.{name}: unknown distribution {dist!r}; valid: {', '.join(DISTRIBUTIONS)}")
        kind = DISTRIBUTIONS[dist]
        if kind is not None and spec.type is not kind:
            use = {int: "int or logint", float: "uniform or loguniform"}.get(spec.type, "categorical")
            raise self.fail((*where, "distribution"),
                            f"params.{name}: {dist} does not fit a {spec.type.__name__} parameter; use {use}")

        def val(key: str) -> Any:
            return self.value(spec, entry[key], (*where, key)) if entry.get(key) is not None else None

        paper, code = val("paper"), val("code")
        if dist == "categorical":
            p = self.categorical(name, spec, entry, where, paper, code)
        else:
            p = self.numeric(name, spec, entry, where, dist, paper, code)
        start = val("start")
        if start is None:
            start = paper if code is None else code
            if not p.contains(start):
                raise self.fail(where, f"params.{name}: the default {start!r} (code/paper value) lies outside the "
                                       f"searched range; give 'start', the first trial's value", key=True)
        elif not p.contains(start):
            raise self.fail((*where, "start"), f"params.{name}: start {start!r} lies outside the searched range")
        return Param(**{**p.__dict__, "start": start})

    def categorical(self, name: str, spec: FieldSpec, entry: dict, where: tuple[str, ...],
                    paper: Any, code: Any) -> Param:
        for key in ("low", "high", "step"):
            if key in entry:
                raise self.fail((*where, key), f"params.{name}: categorical takes 'choices', not {key!r}", key=True)
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail((*where, "choices") if "choices" in entry else where,
                            f"params.{name}: categorical needs a non-empty list 'choices'", key="choices" not in entry)
        values = tuple(self.value(spec, c, (*where, "choices", str(i))) for i, c in enumerate(choices))
        if len(set(values)) != len(values):
            raise self.fail((*where, "choices"), f"params.{name}: repeated choices {list(values)}")
        return Param(name, "categorical", paper, code, choices=values, note=str(entry.get("note", "")))

    def numeric(self, name: str, spec: FieldSpec, entry: dict, where: tuple[str, ...], dist: str,
                paper: Any, code: Any) -> Param:
        if "choices" in entry:
            raise self.fail((*where, "choices"), f"params.{name}: {dist} takes low/high, not 'choices'", key=True)
        for key in ("low", "high"):
            if entry.get(key) is None:
                raise self.fail(where, f"params.{name}: {dist} needs {key!r}", key=True)
            if isinstance(entry[key], float) and not math.isfinite(entry[key]):
                raise self.fail((*where, key), f"params.{name}: {key} {entry[key]} is not a finite number")
        low, high = self.value(spec, entry["low"], (*where, "low")), self.value(spec, entry["high"], (*where, "high"))
        if low >= high:
            raise self.fail((*where, "low"), f"params.{name}: empty or reversed range low={low} >= high={high}")
        if dist in ("loguniform", "logint") and low <= 0:
            raise self.fail((*where, "low"), f"params.{name}: {dist} needs low > 0, got {low}")
        step = entry.get("step")
        if step is not None:
            if dist in ("loguniform", "logint"):
                raise self.fail((*where, "step"), f"params.{name}: {dist} takes no 'step'")
            if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0 or step == math.inf or (
                    dist == "int" and not isinstance(step, int)):
                raise self.fail((*where, "step"), f"params.{name}: step must be a positive "
                                                  f"{'integer' if dist == 'int' else 'number'}, got {step!r}")
        return Param(name, dist, paper, code, low=low, high=high, step=step, note=str(entry.get("note", "")))
