"""Validation with candidate sets: --val-labels and --val-from-labelled in the split, the
trainer's per-epoch val/covering_rate and val/approx_acc, the CLI, and today's flags giving
today's run (the split, initial weights and metrics of the code at commit 0105f78)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from golden.gen_default_run import (
    FLAGS,
    SPLITS,
    cfg_values,
    digest,
    first_epoch_samples,
    split_kwargs,
    split_labels,
    split_tensors,
)

from datagen import write_idx_fmnist
from spmi.config import TrainConfig, resolve
from spmi.data import check_split_args, load_dataset, make_split
from spmi.options import coerce
from spmi.records import read_jsonl
from spmi.train import main
from spmi.trainer import Trainer, validation_sets

C = 10
GOLDEN = json.loads((Path(__file__).parent / "golden" / "default_run.json").read_text())
TIMING = ("time/label_channel", "time/train", "time/eval", "seconds")
CRITERIA = ("acc", "covering_rate", "approx_acc")


def _labels(n: int = 3000, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def _split(labels, **kw):
    args = {"num_classes": C, "labelled": 100, "partial_rate": 0.3, "val_size": 500, "seed": 1} | kw
    return make_split(labels, **args)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=400, n_test=60)
    return root


@pytest.fixture(scope="module")
def data(root):
    return load_dataset("fmnist", root, verify=False)


def config(**kw):
    base = dict(dataset="fmnist", labelled=40, val_size=40, unlabelled_size=96, batch_size=16, epochs=2,
                eval_batch_size=16, options={"warmup": 1, "tau": 0.5, "tau_u": 0.5})
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------ today's flags, today's run


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_default_split_equals_0105f78(case):
    split = make_split(split_labels(), C, **split_kwargs(case))
    assert digest(split_tensors(split)) == GOLDEN["splits"][case]


@pytest.fixture
def one_thread():
    """Float sums depend on the thread count: the reference was trained on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def flat(record: dict) -> dict:
    return {f"{k}.{i}" if isinstance(v, list) else k: x
            for k, v in record.items() for i, x in (enumerate(v) if isinstance(v, list) else [(0, v)])}


def test_default_run_equals_0105f78(root, tmp_path, one_thread):
    """Split, candidates, initial weights and sampled batches bitwise; the metrics records
    too on the machine that made them (x86-64, torch 2.14.1, one thread), and up to float
    rounding (rel. 1e-3: other kernels sum in another order) on another CPU."""
    trainer = Trainer(resolve(cfg_values(root)), load_dataset("fmnist", root, verify=False))
    assert digest(split_tensors(trainer.split)) == GOLDEN["run_split"]
    assert digest(trainer.model.state_dict().values()) == GOLDEN["run_init"]
    assert digest(first_epoch_samples(trainer)) == GOLDEN["run_samples"]
    assert main(["--dataset", "fmnist", "--data-root", str(root), "--no-verify-data", "--no-progress", *FLAGS,
                 "--out", str(tmp_path / "run")]) == 0
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == len(GOLDEN["records"])
    for new, old in zip(records, GOLDEN["records"], strict=True):
        assert set(new) - set(old) - set(TIMING) == {"val/covering_rate", "val/approx_acc"}
        assert flat({k: new[k] for k in old}) == pytest.approx(flat(old), rel=1e-3, abs=1e-7)
        for key in ("epoch", "lr", "val/acc", "test/acc", "cand/lab_size", "cand/lab_coverage"):
            assert new[key] == old[key], key
        # true labels: the candidate sets are {y}, both criteria are val/acc
        assert new["val/covering_rate"] == new["val/approx_acc"] == new["val/acc"]


# ------------------------------------------------------------------ the split


def test_carved_set_is_class_balanced_disjoint_and_keeps_candidates():
    labels = _labels()
    base, s = _split(labels), _split(labels, val_from_labelled=30)
    assert len(s.carved_idx) == 30 and len(s.labelled_idx) == 70 and s.candidates.shape == (70, C)
    assert torch.equal(torch.bincount(labels[s.carved_idx], minlength=C), torch.full((C,), 3))
    assert torch.equal(torch.bincount(labels[s.labelled_idx], minlength=C), torch.full((C,), 7))
    carved, lab, unl, val = (set(t.tolist()) for t in (s.carved_idx, s.labelled_idx, s.unlabelled_idx, s.val_idx))
    assert not carved & lab and not carved & unl and not carved & val
    assert carved | lab == set(base.labelled_idx.tolist())
    assert unl == set(base.unlabelled_idx.tolist()) - carved  # never trained on, not even unlabelled
    assert lab <= unl and torch.equal(s.val_idx, base.val_idx)
    # every labelled image keeps the candidate set it has without a carve, trained on or not
    row = {i: r for i, r in zip(base.labelled_idx.tolist(), base.candidates, strict=True)}
    for idx, cand in ((s.carved_idx, s.carved_candidates), (s.labelled_idx, s.candidates)):
        assert torch.equal(cand, torch.stack([row[i] for i in idx.tolist()]))
    assert (s.carved_candidates.sum(dim=1) > 1).any()  # partial sets, not true labels


def test_carve_with_labelled_images_outside_the_unlabelled_set():
    labels = _labels()
    s = _split(labels, val_from_labelled=20, include_labelled_in_unlabelled=False)
    base = _split(labels, include_labelled_in_unlabelled=False)
    assert torch.equal(s.unlabelled_idx, base.unlabelled_idx)


def test_carve_is_seeded_and_independent_of_val_labels():
    labels = _labels()
    a, b = _split(labels, val_from_labelled=20), _split(labels, val_from_labelled=20, val_labels="partial")
    c = _split(labels, seed=2, val_from_labelled=20)
    for name in ("labelled_idx", "candidates", "unlabelled_idx", "val_idx", "carved_idx", "carved_candidates"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(_split(labels, val_from_labelled=20).carved_idx, a.carved_idx)
    assert not torch.equal(a.carved_idx, c.carved_idx)


def test_partial_validation_labels_leave_the_training_data_alone():
    labels = _labels()
    true, partial = _split(labels), _split(labels, val_labels="partial")
    for name in ("labelled_idx", "candidates", "unlabelled_idx", "val_idx"):
        assert torch.equal(getattr(true, name), getattr(partial, name)), name
    assert torch.equal(true.val_candidates, torch.nn.functional.one_hot(labels[true.val_idx], C).bool())
    cand = partial.val_candidates
    assert cand.shape == (500, C) and cand[torch.arange(500), labels[partial.val_idx]].all()
    # each wrong label joins w.p. p = 0.3: 2.7 of 9 on average (4.6 standard errors either side)
    assert abs(float(cand.sum(dim=1).float().mean()) - 1 - 2.7) < 0.1
    # the same draws with or without a carve, and from the run's seed
    assert torch.equal(_split(labels, val_labels="partial", val_from_labelled=40).val_candidates, cand)
    assert torch.equal(_split(labels, val_labels="partial").val_candidates, cand)
    assert not torch.equal(_split(labels, val_labels="partial", seed=2).val_candidates, cand)


def test_partial_validation_labels_follow_the_superclasses():
    labels = _labels()
    group = torch.arange(C) // 5
    s = _split(labels, val_labels="partial", partial_rate=0.6, superclass=group)
    same = group[labels[s.val_idx]].unsqueeze(1) == group.unsqueeze(0)
    assert not (s.val_candidates & ~same).any() and (s.val_candidates.sum(dim=1) > 1).any()


@pytest.mark.parametrize("kw, message", [
    ({"val_from_labelled": 100}, "--val-from-labelled 100 must be smaller than --labelled 100"),
    ({"val_from_labelled": 150}, "--val-from-labelled 150 must be smaller than --labelled 100"),
    ({"val_from_labelled": -10}, "--val-from-labelled -10 must be >= 0"),
    ({"val_from_labelled": 25}, "--val-from-labelled 25 must be a multiple of the 10 classes"),
    ({"val_labels": "noisy"}, "--val-labels 'noisy' is not valid; choose one of: true, partial"),
    ({"val_labels": "partial", "val_size": 0}, "--val-labels partial gives the held-out validation images"),
])
def test_bad_validation_options_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        _split(_labels(), **kw)
    args = {"labelled": 100, "val_size": 500} | kw
    with pytest.raises(ValueError) as err:
        check_split_args(3000, C, args["labelled"], 0.3, args["val_size"], args.get("val_from_labelled", 0),
                         args.get("val_labels", "true"))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    (["--val-from-labelled", "40"], "--val-from-labelled 40 must be smaller than --labelled 40"),
    (["--val-from-labelled", "-10"], "val_from_labelled=-10 is too small; it must be >= 0"),
    (["--val-from-labelled", "15"], "--val-from-labelled 15 must be a multiple of the 10 classes"),
    (["--val-labels", "noisy"], "argument --val-labels: invalid choice: 'noisy' (choose from 'true', 'partial')"),
    (["--val-labels", "partial", "--val-size", "0"], "--val-labels partial gives the held-out validation images"),
])
def test_cli_refuses_bad_validation_options_before_training(root, tmp_path, flags, message, capsys):
    try:
        code = main(["--dataset", "fmnist", "--data-root", str(root), "--no-verify-data", "--labelled", "40",
                     "--out", str(tmp_path / "run"), *flags])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_resolve_refuses_a_carve_as_large_as_the_labelled_set():
    with pytest.raises(ValueError, match="--val-from-labelled 4000 must be smaller than --labelled 4000"):
        resolve({"dataset": "fmnist", "val_from_labelled": 4000})
    assert resolve({"dataset": "fmnist", "val_from_labelled": 100, "val_labels": "partial"}).val_from_labelled == 100


def test_yaml_true_is_the_word_for_val_labels():
    """`--set val_labels=true` and a space file's `val_labels: true` reach the field as YAML booleans."""
    assert coerce(TrainConfig, "val_labels", yaml.safe_load("true")) == "true"
    assert resolve({"dataset": "fmnist", "val_labels": True}).val_labels == "true"
    with pytest.raises(ValueError, match="val_labels='false' is not valid; choose one of: true, partial"):
        resolve({"dataset": "fmnist", "val_labels": False})


# ------------------------------------------------------------------ the trainer


def test_validation_sets_by_prefix(data):
    def sets(**kw):
        return validation_sets(Trainer(config(**kw), data).split)

    held = sets()
    assert list(held) == ["val"] and len(held["val"].idx) == 40
    carved = sets(val_from_labelled=20)
    assert list(carved) == ["val", "holdout"] and len(carved["val"].idx) == 20 and len(carved["holdout"].idx) == 40
    assert list(sets(val_from_labelled=20, val_size=0)) == ["val"]


def test_metrics_every_epoch_from_one_forward_per_batch(data):
    t = Trainer(config(val_from_labelled=20, val_labels="partial"), data)
    records = [t.train_epoch() for _ in range(2)]
    names = [f"{p}/{c}" for p in ("val", "holdout") for c in CRITERIA]
    assert all(set(names) <= set(r) for r in records)
    # the carved set's values come from its images and candidate sets
    model = t.inference_model()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    out = t.validate(model)
    assert calls == [16, 4, 16, 16, 8]  # 20 carved, then 40 held out, in batches of 16: one pass each
    assert out == {k: records[-1][k] for k in names}
    for prefix, images in t.eval_sets.items():
        with torch.inference_mode():
            logits = model(t._layout(t.augmenter.plain(t.train_x[images.idx])))
        pred = logits.argmax(dim=1)
        inside = images.candidates[torch.arange(len(pred)), pred]
        restricted = torch.softmax(logits.masked_fill(~images.candidates, float("-inf")), dim=1)
        assert out[f"{prefix}/acc"] == int((pred == t.train_y[images.idx]).sum()) / len(pred)
        assert out[f"{prefix}/covering_rate"] == pytest.approx(float(inside.float().mean()))
        assert out[f"{prefix}/approx_acc"] == pytest.approx(
            float((restricted[torch.arange(len(pred)), pred] * inside).mean()), abs=1e-6)
        assert out[f"{prefix}/approx_acc"] <= out[f"{prefix}/covering_rate"] >= out[f"{prefix}/acc"]


def test_partial_validation_labels_train_the_same_network(data):
    def run(**kw):
        t = Trainer(config(**kw), data)
        return t, [{k: v for k, v in t.train_epoch().items() if k not in TIMING} for _ in range(2)]

    true, true_records = run()
    partial, partial_records = run(val_labels="partial")
    for a, b in zip(true.model.state_dict().values(), partial.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(true_records, partial_records, strict=True):
        assert a == {**b, "val/covering_rate": a["val/acc"], "val/approx_acc": a["val/acc"]}
        assert b["val/covering_rate"] >= b["val/acc"]
    assert any(r["val/covering_rate"] > r["val/acc"] for r in partial_records)


def test_carved_run_trains_on_l_minus_k(data):
    t = Trainer(config(val_from_labelled=20), data)
    assert len(t.lab_idx) == 20 and t.split.candidates.shape == (20, C) and t.method.lab_soft.shape == (20, C)
    assert not set(t.eval_sets["val"].idx.tolist()) & (set(t.lab_idx.tolist()) | set(t.unl_idx.tolist()))


def test_resume_refuses_other_validation_options_and_accepts_older_checkpoints(data, tmp_path):
    t = Trainer(config(val_from_labelled=10), data)
    t.train_epoch()
    path = t.save(tmp_path / "ck.pt")
    for other in ({"val_from_labelled": 20}, {"val_labels": "partial"}):
        with pytest.raises(ValueError, match=f"cannot resume: .*{next(iter(other))}"):
            Trainer(config(**{"val_from_labelled": 10, **other}), data).load(path)
    # a checkpoint made before these settings existed resumes a run that keeps their defaults
    plain = Trainer(config(), data)
    plain.train_epoch()
    state = plain.state_dict()
    for name in ("val_labels", "val_from_labelled"):
        del state["config"][name]
    for name in ("val_candidates", "carved_idx", "carved_candidates"):
        del state["split"][name]
    torch.save(state, tmp_path / "old.pt")
    resumed = Trainer(config(), data)
    resumed.load(tmp_path / "old.pt")
    assert resumed.epoch == 1
    with pytest.raises(ValueError, match="val_from_labelled: 0 -> 10"):
        Trainer(config(val_from_labelled=10), data).load(tmp_path / "old.pt")


def test_cli_run_records_both_sets(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", "fmnist", "--data-root", str(root), "--no-verify-data", "--no-progress", "--labelled",
                 "40", "--val-size", "40", "--unlabelled-size", "64", "--batch-size", "16", "--epochs", "1",
                 "--val-from-labelled", "10", "--val-labels", "partial", "--out", str(out)]) == 0
    assert "val=10 holdout=40" in capsys.readouterr().out
    (record,) = read_jsonl(out / "metrics.jsonl")
    assert {f"{p}/{c}" for p in ("val", "holdout") for c in CRITERIA} <= set(record)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["config"]["val_from_labelled"] == 10 and saved["config"]["val_labels"] == "partial"
    assert dataclasses.asdict(TrainConfig())["val_labels"] == "true"
