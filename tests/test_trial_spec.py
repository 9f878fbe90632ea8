"""The trial spec: all a trial receives from the driver, frozen, checked on construction,
pickled (as Tune binds it) and written to JSON without loss; another version is refused."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from spmi.config import config_from_flat, resolve
from tuning.plan.grid_plan import Cell
from tuning.trial.spec import SPEC_VERSION, Location, Resources, Tracking, TrialSpec

BASE = {"dataset": "fmnist", "labelled": 20, "val_size": 50, "batch_size": 16, "epochs": 3, "device": "cpu"}


def spec(**kw) -> TrialSpec:
    fields = {"tracking": Tracking("sqlite:////tmp/m.db", "1", "parent", "s", "abc"), "resources": Resources(2, 0.0),
              "location": Location("/tmp/hpo", "s"), "base": resolve(BASE), "data_checksum": "c0ffee"}
    return TrialSpec(**{**fields, **kw})


def grid() -> TrialSpec:
    cells = (Cell("rank1", resolve(BASE), {"tau": 2.0}, {"confirm_rank": 1}),
             Cell("rank2", resolve({**BASE, "method": "proden_fixmatch"}), {"lr": 0.01}, {"confirm_rank": 2}))
    return spec(base=None, cells=cells, tracking=Tracking("u", "1", "p", "s", role="confirm"),
                resources=Resources(1, 1.0, workers=2, check_sync=True))


def test_a_search_point_is_its_values_over_the_base_checked_once():
    point = spec().point({"tau": 1.5, "lr": 0.02})
    old_way = resolve({"tau": 1.5, "lr": 0.02}, config_from_flat(resolve(BASE).to_dict()))  # the flat base of before
    assert point.config == old_way and point.config.options.tau == 1.5 and point.searched == ("tau", "lr")
    assert point.tags == {}
    with pytest.raises(ValueError, match="tau"):
        spec().point({"tau": -1.0})


def test_a_grid_point_is_a_cell_and_a_seed():
    point = grid().point({"cell": "rank2", "seed": 7})
    assert point.config.method == "proden_fixmatch" and point.config.lr == 0.01 and point.config.seed == 7
    assert point.searched == ("lr", "seed") and point.tags == {"confirm_rank": 2, "cell": "rank2", "seed": 7}


@pytest.mark.parametrize("make", [spec, grid])
def test_it_pickles_and_round_trips_through_json(make):
    s = make()
    assert pickle.loads(pickle.dumps(s)) == s
    back = TrialSpec.from_json(s.to_json())
    assert back == s and back.to_json() == s.to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.data_checksum = "other"  # type: ignore[misc]


def test_another_version_or_an_inconsistent_spec_is_refused():
    data = spec().to_dict()
    with pytest.raises(ValueError, match=f"version 1, written by another layout of tuning/; this code reads "
                                         f"version {SPEC_VERSION}"):
        TrialSpec.from_dict({k: v for k, v in data.items() if k != "version"})
    with pytest.raises(ValueError, match="either a base config .* or cells"):
        spec(base=None)
    with pytest.raises(ValueError, match="not resolved"):
        spec(base=config_from_flat(BASE))
    with pytest.raises(ValueError, match="unknown trial backend 'replay'"):
        spec(backend="replay")
    with pytest.raises(ValueError, match="whole GPUs"):
        Resources(1, 0.5, workers=2)
