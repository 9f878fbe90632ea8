"""The trainer end to end on tiny generated Fashion-MNIST files: every method steps,
checkpoints and resumes bitwise; seeds fix the run; metrics records are complete."""

import dataclasses

import pytest
import torch

from datagen import write_idx_fmnist
from spmi.config import TrainConfig
from spmi.data import load_dataset
from spmi.methods import list_methods
from spmi.records import JsonlWriter, read_jsonl
from spmi.trainer import Trainer

# options that make each method's per-epoch machinery run within 4 epochs
METHOD_OPTIONS = {
    "spmi": {"warmup": 1, "tau": 0.5, "tau_u": 0.5},
    "pop_fixmatch": {"pop_start": 1, "pop_every": 1, "pop_window": 2, "fixmatch_threshold": 0.15},
    "proden_fixmatch": {"fixmatch_threshold": 0.15},
    "cc_fixmatch": {"fixmatch_threshold": 0.15},
}
TIMING = ("time/label_channel", "time/train", "time/eval", "seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=400, n_test=60)
    return load_dataset("fmnist", root, verify=False)


def config(method="spmi", **kw):
    base = dict(dataset="fmnist", labelled=20, val_size=40, unlabelled_size=96, batch_size=16,
                epochs=4, eval_batch_size=64, method=method, options=METHOD_OPTIONS.get(method, {}))
    return TrainConfig(**{**base, **kw})


def strip(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING}


def run(cfg, data, trainer=None, epochs=None):
    trainer = trainer or Trainer(cfg, data)
    records = []
    for _ in range(epochs or cfg.epochs - trainer.epoch):
        records.append(strip(trainer.train_epoch()))
    return trainer, records


def assert_same_state(a: Trainer, b: Trainer):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    for name, x in a.method.state_dict().items():
        y = b.method.state_dict()[name]
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, name


@pytest.mark.parametrize("method", list_methods())
def test_resume_is_bitwise(method, data, tmp_path):
    full, full_records = run(config(method), data)
    first, first_records = run(config(method), data, epochs=2)
    path = first.save(tmp_path / "ck.pt")
    resumed = Trainer(config(method), data)
    resumed.load(path)
    assert resumed.epoch == 2
    _, rest = run(config(method), data, trainer=resumed)
    assert first_records + rest == full_records
    assert_same_state(full, resumed)


def test_pop_before_its_first_purification_is_exactly_proden(data):
    """POP shares PRODEN's loss, confidences and FixMatch term; until pop_start it must train
    bitwise the same network (so a 20-epoch POP run with pop_start 20 equals PRODEN's)."""
    opts = METHOD_OPTIONS["proden_fixmatch"]
    proden, p_rec = run(config("proden_fixmatch", epochs=4), data, epochs=3)
    pop_cfg = config("pop_fixmatch", epochs=4, options={**opts, "pop_start": 2})
    pop, q_rec = run(pop_cfg, data, epochs=3)
    drop = ("pop/theta", "pop/last_change")
    assert p_rec == [{k: v for k, v in r.items() if k not in drop} for r in q_rec]
    for (name, x), (_, y) in zip(proden.model.state_dict().items(), pop.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert torch.equal(proden.method.conf, pop.method.conf)
    _, (last,) = run(pop_cfg, data, trainer=pop, epochs=1)  # purified after epoch 2, before epoch 3
    assert last["pop/last_change"] > 0 or last["pop/theta"] > 0.001


def test_spmi_label_channel_runs_after_warmup(data):
    _, records = run(config("spmi"), data)
    assert "cand/unl_size" not in records[0] and "loss/unl" not in records[0]
    for r in records[1:]:
        assert 1.0 <= r["cand/unl_size"] <= 10.0 and r["loss/unl"] > 0
        assert len(r["prior"]) == 10 and abs(sum(r["prior"]) - 1) < 1e-4
    assert {"val/acc", "test/acc", "lr", "loss/total", "cand/lab_size", "cand/lab_coverage"} <= set(records[-1])


def test_same_seed_same_run_other_seed_differs(data):
    _, a = run(config(epochs=2), data)
    _, b = run(config(epochs=2), data)
    _, c = run(config(epochs=2, seed=7), data)
    assert a == b
    assert a != c


def test_every_training_step_is_train_step(data, monkeypatch):
    """benchmarks/epoch_time.py times ``Trainer.train_step``: it is the step the epochs take,
    and nothing else moves the network (a no-op step leaves it as initialised)."""
    trainer = Trainer(config(epochs=2), data)
    calls, step = [], Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, b, epoch: calls.append(epoch) or step(self, b, epoch))
    run(config(epochs=2), data, trainer=trainer)
    assert calls == [0] * trainer.steps_per_epoch + [1] * trainer.steps_per_epoch
    trainer = Trainer(config(epochs=2), data)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch, epoch: (torch.zeros(()), {}))
    run(config(epochs=2), data, trainer=trainer)
    assert [k for k, v in start.items() if not torch.equal(v, trainer.model.state_dict()[k])] == []


def test_split_is_held_out_and_subsampled(data):
    t = Trainer(config(), data)
    assert len(t.unl_idx) == 96 and len(t.lab_idx) == 20 and len(t.val_idx) == 40
    assert not set(t.val_idx.tolist()) & (set(t.unl_idx.tolist()) | set(t.lab_idx.tolist()))
    assert t.steps_per_epoch == 6  # ceil(max(20, 96) / 16)


def test_resume_refuses_other_settings(data, tmp_path):
    t, _ = run(config(), data, epochs=1)
    path = t.save(tmp_path / "ck.pt")
    other = Trainer(config(lr=0.01), data)
    with pytest.raises(ValueError, match=r"cannot resume.*lr: 0.05 -> 0.01"):
        other.load(path)
    other_seed = Trainer(config(seed=5), data)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load(path)


def test_checkpoint_written_each_epoch_and_metrics_file(data, tmp_path):
    cfg = config(epochs=2, out=str(tmp_path / "run"))
    t = Trainer(cfg, data, callbacks=[JsonlWriter(tmp_path / "run" / "metrics.jsonl")])
    t.fit()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [0, 1]
    # a resumed writer drops the records of epochs about to be re-run
    JsonlWriter(tmp_path / "run" / "metrics.jsonl", start_epoch=1)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0]


def test_eval_every_carries_last_evaluation(data):
    _, records = run(config(epochs=3, eval_every=2), data)
    assert "val/acc" not in records[0]
    assert records[2]["val/acc"] is not None  # the last epoch always evaluates


def test_bf16_runs(data):
    cfg = dataclasses.replace(config(epochs=1, unlabelled_size=32, labelled=10), precision="bf16")
    with pytest.warns(UserWarning, match="bf16") if not _native_bf16() else _nullcontext():
        _, records = run(cfg, data)
    assert records[0]["loss/total"] > 0


def _native_bf16():
    from spmi.trainer import cpu_has_native_bf16
    return cpu_has_native_bf16()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _close(a, b):
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-4, abs=1e-5)
    return a == b


def test_folded_inference_records_the_same_run(data):
    """fold_bn changes only float rounding of the label-channel pass and evaluation."""
    _, folded = run(config(fold_bn=True), data)
    _, plain = run(config(fold_bn=False), data)
    for f, p in zip(folded, plain, strict=True):
        assert f.keys() == p.keys()
        assert all(_close(p[k], f[k]) for k in p), {k: (p[k], f[k]) for k in p if not _close(p[k], f[k])}


def test_eval_test_end_measures_test_only_at_the_last_epoch(data):
    _, every = run(config(), data)
    _, end = run(config(eval_test="end"), data)
    assert all("test/acc" not in r and r["val/acc"] == e["val/acc"] for r, e in zip(end[:-1], every, strict=False))
    assert end[-1]["test/acc"] == every[-1]["test/acc"] and end[-1]["test/epoch"] == 3
    assert [r["loss/total"] for r in end] == [r["loss/total"] for r in every]  # training is untouched


def test_eval_test_best_measures_test_at_each_new_best_val(data):
    _, every = run(config(epochs=5), data)
    _, best = run(config(epochs=5, eval_test="best"), data)
    vals = [r["val/acc"] for r in every]
    assert [r["val/acc"] for r in best] == vals and [r["loss/total"] for r in best] == [r["loss/total"] for r in every]
    for e, r in enumerate(best):
        first_best = max(range(e + 1), key=lambda i: (vals[i], -i))  # the first epoch reaching the best so far
        assert r["test/epoch"] == (e if e == 4 else first_best)
        assert r["test/acc"] == every[r["test/epoch"]]["test/acc"]


def test_eval_test_best_resumes_with_its_best_val(data, tmp_path):
    full, full_records = run(config(epochs=5, eval_test="best"), data)
    first, _ = run(config(epochs=5, eval_test="best"), data, epochs=2)
    resumed = Trainer(config(epochs=5, eval_test="best"), data)
    resumed.load(first.save(tmp_path / "ck.pt"))
    _, rest = run(config(epochs=5, eval_test="best"), data, trainer=resumed)
    assert rest == full_records[2:]
