"""DDP training on the CPU: 2 gloo workers (torch.multiprocessing) on tiny generated
Fashion-MNIST files. All distributed scenarios run in one spawn (a module fixture); the
tests check their results against each other and against single-process runs."""

import copy

import pytest
import torch
from torch import nn

from datagen import write_idx_fmnist
from spmi.config import TrainConfig
from spmi.data import load_dataset
from spmi.distributed import DistComm, StateMismatch, _to_global_bn, assert_in_sync, shard_bounds, spawn, state_digest
from spmi.records import read_jsonl
from spmi.trainer import Trainer

WORLD = 2
OPTIONS = {
    "spmi": {"warmup": 1, "tau": 0.5, "tau_u": 0.5},
    "proden_fixmatch": {"fixmatch_threshold": 0.15},
}
TIMING = ("time/label_channel", "time/train", "time/eval", "seconds")
SPMI_STATE = ("lab_soft", "unl_comp", "prior")


def config(method="spmi", **kw):
    base = dict(dataset="fmnist", labelled=20, val_size=40, unlabelled_size=96, batch_size=16, epochs=3,
                eval_batch_size=64, method=method, options=OPTIONS[method])
    return TrainConfig(**{**base, **kw})


def strip(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING}


def clones(method, names):
    return {n: getattr(method, n).clone() for n in names}


class FaultyComm(DistComm):
    """Takes part in every exchange but, on ``bad_rank``, drops what the other ranks sent:
    ``local`` returns its own part only, ``zeros`` puts zeros in the others' rows (a
    sharded pass whose results were never exchanged)."""

    def __init__(self, mode, bad_rank=1):
        super().__init__()
        self.mode, self.bad_rank = mode, bad_rank

    def all_gather_cat(self, t):
        full = super().all_gather_cat(t)
        if self.rank != self.bad_rank:
            return full
        if self.mode == "local":
            return t
        start, stop = shard_bounds(len(full), self.rank, self.world_size)
        out = torch.zeros_like(full)
        out[start:stop] = full[start:stop]
        return out


def plain_predictions(trainer):
    """Make the label-channel pass deterministic (no augmentation)."""
    trainer.augmenter.weak = lambda x, g: trainer.augmenter.plain(x)


def no_augmentation(trainer):
    """No random augmentation anywhere: runs then differ only by how they compute."""
    plain_predictions(trainer)
    trainer.augmenter.strong = trainer.augmenter.weak


# ------------------------------------------------------------------ worker scenarios


def sc_collectives(comm):
    r = comm.rank
    rows = torch.arange((r + 1) * 3, dtype=torch.float32).view(r + 1, 3) + 100 * r
    full = torch.arange(26).view(13, 2)
    bcast = torch.tensor([float(r + 5)])
    comm.broadcast_(bcast)
    return {"rows": comm.all_gather_cat(rows),
            "bools": comm.all_gather_cat(torch.tensor([r == 0] * (r + 1))),
            "empty": comm.all_gather_cat(torch.full((2 * r, 4), r, dtype=torch.int64)),
            "roundtrip": comm.all_gather_cat(comm.shard(full)), "shard": comm.shard(full),
            "sum": comm.all_reduce_sum(torch.tensor([r + 1, 1])), "bcast": bcast}


def bn_case():
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(3, generator=g))
        bn.bias.copy_(torch.randn(3, generator=g))
    return bn, torch.randn(13, 3, 4, 4, generator=g), torch.randn(13, 3, 4, 4, generator=g)


def sc_batchnorm(comm):
    bn, x, w = bn_case()
    gbn = _to_global_bn(bn)
    xs = comm.shard(x).clone().requires_grad_()
    y = gbn(xs)
    (y * comm.shard(w)).sum().backward()
    return {"y": y.detach(), "x_grad": xs.grad, "w_grad": gbn.weight.grad, "b_grad": gbn.bias.grad,
            "mean": gbn.running_mean.clone(), "var": gbn.running_var.clone(), "type": type(gbn).__name__}


def sc_spmi_epochs(comm, data, augment=True):
    t = Trainer(config(), data, comm=comm)
    if not augment:
        no_augmentation(t)
    epochs = []
    for _ in range(3):
        metrics = strip(t.train_epoch())
        assert_in_sync(t)
        epochs.append({"metrics": metrics, **clones(t.method, SPMI_STATE)})
    # the check fails when one rank's state is changed
    t.method.lab_soft[0, 0] += comm.rank
    try:
        assert_in_sync(t)
        caught = None
    except StateMismatch as err:
        caught = str(err)
    return {"epochs": epochs, "perturbed": caught}


def sc_label_channel(comm, data):
    t = Trainer(config(), data, comm=comm)
    t.train_epoch()  # the warm-up epoch
    plain_predictions(t)
    before = {"method": clones(t.method, SPMI_STATE), "model": copy.deepcopy(t.model.state_dict())}
    seen = {}

    def predict(part):
        seen[part] = t.predict(part)
        return seen[part]

    t.step_model.eval()
    t.method.epoch_start(1, predict)
    with torch.inference_mode():
        local = t.model(t.augmenter.plain(t.train_x[comm.shard(t.unl_idx)]))
    return {"before": before, "probs": seen, "local_unl": torch.softmax(local, dim=1),
            "after": clones(t.method, SPMI_STATE)}


def sc_proden_steps(comm, data):
    t = Trainer(config("proden_fixmatch"), data, comm=comm)
    confs = []
    step = t.optimizer.step

    def checked_step(*a, **kw):
        out = step(*a, **kw)
        assert_in_sync(t)
        confs.append(t.method.conf.clone())
        return out

    t.optimizer.step = checked_step
    metrics = strip(t.train_epoch())
    return {"confs": confs, "metrics": metrics, "fm_counts": t.method.fm_counts.clone()}


def sc_skipped_exchange(comm, data, method, mode, epochs):
    t = Trainer(config(method), data, comm=FaultyComm(mode))
    for _ in range(epochs):
        t.train_epoch()
    try:
        assert_in_sync(t, comm=DistComm())
    except StateMismatch as err:
        return str(err)
    return None


def sc_unsynced_bn(comm, data):
    """Per-rank BatchNorm statistics: rank 0's buffers are handed out after each epoch."""
    t = Trainer(config(), data, comm=comm, sync_bn=False)
    for _ in range(2):
        t.train_epoch()
        assert_in_sync(t)
    return {"bn": type(t.model.bn1).__name__, "prior": t.method.prior.clone()}


def sc_resume(comm, data, folder):
    straight = Trainer(config(), data, comm=comm)
    for _ in range(3):
        last = strip(straight.train_epoch())
    first = Trainer(config(out=folder), data, comm=comm)
    for _ in range(2):
        first.train_epoch()
    path = first.save(f"{folder}/checkpoint.pt")
    resumed = Trainer(config(), data, comm=comm)
    resumed.load(path)
    resumed_last = strip(resumed.train_epoch())
    return {"same_metrics": last == resumed_last,
            "same_state": torch.equal(state_digest(straight)[1], state_digest(resumed)[1]),
            "aug_ranks": torch.load(path, weights_only=True)["rng"]["aug_ranks"]}


def sc_kept_weights_test(comm, data):
    """The test accuracy of weights kept from an earlier epoch (a trial's best epoch),
    measured later: a collective pass whose network is left as it was."""
    t = Trainer(config(), data, comm=comm)
    t.train_epoch()
    kept = {k: v.detach().to("cpu", copy=True) for k, v in t.model.state_dict().items()}
    then = t.test_accuracy()
    t.train_epoch()
    before = state_digest(t)[1]
    later = t.test_accuracy(kept)
    return {"then": then, "later": later, "current": t.test_accuracy(), "evaluate": t.evaluate()["test/acc"],
            "unchanged": torch.equal(before, state_digest(t)[1])}


def sc_partial_validation(comm, data):
    """Both validation sets (10 carved, 40 held out with candidate sets) after an epoch."""
    t = Trainer(config(val_from_labelled=10, val_labels="partial"), data, comm=comm)
    metrics = strip(t.train_epoch())
    return {"metrics": metrics, "validate": t.validate(), "model": copy.deepcopy(t.model.state_dict())}


def scenarios(comm, root, folder):
    data = load_dataset("fmnist", root, verify=False)
    return {
        "collectives": sc_collectives(comm),
        "batchnorm": sc_batchnorm(comm),
        "spmi": sc_spmi_epochs(comm, data),
        "spmi_plain": sc_spmi_epochs(comm, data, augment=False),
        "label_channel": sc_label_channel(comm, data),
        "proden": sc_proden_steps(comm, data),
        "skip_spmi": sc_skipped_exchange(comm, data, "spmi", "zeros", 2),
        "skip_proden": sc_skipped_exchange(comm, data, "proden_fixmatch", "local", 1),
        "resume": sc_resume(comm, data, folder),
        "unsynced_bn": sc_unsynced_bn(comm, data),
        "kept_weights_test": sc_kept_weights_test(comm, data),
        "partial_validation": sc_partial_validation(comm, data),
    }


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=400, n_test=60)
    return root


@pytest.fixture(scope="module")
def data(root):
    return load_dataset("fmnist", root, verify=False)


@pytest.fixture(scope="module")
def ranks(root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp_ckpt")
    return spawn(scenarios, WORLD, str(root), str(folder), timeout_s=120)


def each_rank(ranks, key):
    return [r[key] for r in ranks]


# ------------------------------------------------------------------ tests


def test_shard_bounds_tile_rows_in_rank_order():
    for n in (0, 1, 5, 13, 96):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_collectives_handle_unequal_sizes_bool_and_empty(ranks):
    for res in each_rank(ranks, "collectives"):
        assert torch.equal(res["rows"], torch.cat([torch.arange(3.0).view(1, 3), torch.arange(6.0).view(2, 3) + 100]))
        assert res["bools"].dtype == torch.bool and res["bools"].tolist() == [True, False, False]
        assert res["empty"].shape == (2, 4) and (res["empty"] == 1).all()
        assert torch.equal(res["roundtrip"], torch.arange(26).view(13, 2))
        assert res["sum"].tolist() == [3, 2] and res["bcast"].tolist() == [5.0]
    assert [len(r["shard"]) for r in each_rank(ranks, "collectives")] == [6, 7]


def test_global_batchnorm_matches_one_process(ranks):
    bn, x, w = bn_case()
    x.requires_grad_()
    y = bn(x)
    (y * w).sum().backward()
    res = each_rank(ranks, "batchnorm")
    assert res[0]["type"] == "GlobalBatchNorm"
    assert torch.allclose(torch.cat([r["y"] for r in res]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r["x_grad"] for r in res]), x.grad, atol=1e-5)
    assert torch.allclose(sum(r["w_grad"] for r in res), bn.weight.grad, atol=1e-4)
    assert torch.allclose(sum(r["b_grad"] for r in res), bn.bias.grad, atol=1e-4)
    for r in res:
        assert torch.allclose(r["mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(r["var"], bn.running_var, atol=1e-6)


@pytest.mark.parametrize("run", ["spmi", "spmi_plain"])
def test_spmi_ranks_hold_identical_state_every_epoch(ranks, run):
    runs = [r["epochs"] for r in each_rank(ranks, run)]
    assert len(runs[0]) == 3
    for a, b in zip(*runs, strict=True):
        for name in SPMI_STATE:
            assert torch.equal(a[name], b[name]), name
        assert a["metrics"] == b["metrics"]
    assert (runs[0][-1]["unl_comp"] <= 0.1).any()  # the label channel ran past warm-up
    assert not torch.equal(runs[0][1]["prior"], runs[0][2]["prior"])


def test_label_channel_union_equals_single_process(ranks, data):
    res = each_rank(ranks, "label_channel")
    # each rank's shard of outputs, in rank order, is what every rank received
    for r in res:
        assert torch.equal(r["probs"]["unl"], torch.cat([x["local_unl"] for x in res]))
    # one process with the same network computes the same outputs on the whole set ...
    single = Trainer(config(), data)
    single.model.load_state_dict(res[0]["before"]["model"])
    single.method.load_state_dict(res[0]["before"]["method"])
    plain_predictions(single)
    single.model.eval()
    for part in ("lab", "unl"):
        assert torch.allclose(single.predict(part), res[0]["probs"][part], atol=1e-6)
    # ... and from the same outputs reaches the state every rank holds, bitwise
    single.method.epoch_start(1, lambda part: res[0]["probs"][part])
    for r in res:
        for name in SPMI_STATE:
            assert torch.equal(getattr(single.method, name), r["after"][name]), name


def test_candidate_statistics_close_to_single_process(ranks, data):
    """Without random augmentation (whose streams differ per rank) 2 workers and one
    process differ only in float rounding (BN and gradient sums): same candidate sets."""
    single = Trainer(config(), data)
    no_augmentation(single)
    ref = [strip(single.train_epoch()) for _ in range(3)]
    ddp = [e["metrics"] for e in ranks[0]["spmi_plain"]["epochs"]]
    assert ddp[0]["loss/total"] == pytest.approx(ref[0]["loss/total"], rel=1e-5)
    for a, b in zip(ddp, ref, strict=True):  # seen: 1 of 96 unlabelled sets differs after 3 epochs
        for key in ("cand/lab_size", "cand/lab_coverage", "cand/unl_size", "cand/unl_coverage"):
            assert a.get(key, 0.0) == pytest.approx(b.get(key, 0.0), abs=0.05), key
        assert a["loss/total"] == pytest.approx(b["loss/total"], rel=1e-2)
        assert torch.allclose(torch.tensor(a["prior"]), torch.tensor(b["prior"]), atol=5e-3)


def test_identity_check_catches_a_skipped_exchange(ranks):
    for r in ranks:
        assert "method/lab_soft" in r["spmi"]["perturbed"]
        assert "method/unl_comp" in r["skip_spmi"] and "method/prior" in r["skip_spmi"]
        assert "model/" not in r["skip_spmi"]  # DDP still averages the gradients
        assert "method/conf" in r["skip_proden"]


def test_proden_confidences_identical_after_every_step(ranks):
    a, b = each_rank(ranks, "proden")
    assert len(a["confs"]) == 6
    for x, y in zip(a["confs"], b["confs"], strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a["confs"][0], a["confs"][-1])
    assert a["metrics"] == b["metrics"]  # FixMatch counters are all-reduced
    assert int(a["fm_counts"][0] + b["fm_counts"][0]) == 6 * 16


def test_resume_under_ddp_is_bitwise(ranks):
    for r in each_rank(ranks, "resume"):
        assert r["same_metrics"] and r["same_state"]
        assert r["aug_ranks"].shape[0] == WORLD and not torch.equal(r["aug_ranks"][0], r["aug_ranks"][1])


def test_partial_label_criteria_sum_over_ranks(ranks, data):
    """Each rank scores its shard of each validation set; the sums make every rank's
    metrics those of one process that evaluates the same network on the whole sets."""
    a, b = each_rank(ranks, "partial_validation")
    assert a["metrics"] == b["metrics"] and a["validate"] == b["validate"]
    names = {f"{p}/{c}" for p in ("val", "holdout") for c in ("acc", "covering_rate", "approx_acc")}
    assert names <= set(a["metrics"]) and names == set(a["validate"])
    single = Trainer(config(val_from_labelled=10, val_labels="partial"), data)
    single.model.load_state_dict(a["model"])
    alone = single.validate()
    for name in names:
        assert a["validate"][name] == pytest.approx(alone[name], abs=1e-6), name
    assert alone["holdout/covering_rate"] > alone["holdout/acc"] or alone["holdout/acc"] == 1.0


def test_without_sync_bn_ranks_stay_identical(ranks):
    a, b = each_rank(ranks, "unsynced_bn")
    assert a["bn"] == "BatchNorm2d" and torch.equal(a["prior"], b["prior"])


def test_kept_weights_test_accuracy_under_ddp(ranks):
    res = each_rank(ranks, "kept_weights_test")
    assert res[0] == res[1]   # every rank gets the whole test set's accuracy
    for r in res:
        assert r["later"] == r["then"] and r["current"] == r["evaluate"] and r["unchanged"]


def test_cli_runs_workers_with_sync_check(root, tmp_path, capsys):
    from spmi.train import main
    out = tmp_path / "run"
    code = main(["--dataset", "fmnist", "--data-root", str(root), "--no-verify-data", "--labelled", "20",
                 "--val-size", "40", "--unlabelled-size", "96", "--batch-size", "16", "--epochs", "2",
                 "--warmup", "1", "--tau", "0.5", "--tau-u", "0.5", "--workers", "2", "--check-sync",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
