"""Tests of the seeded SSPLL split and uniform partial-label generation."""

from __future__ import annotations

import math

import pytest
import torch

from spmi.data import check_split_args, make_split, uniform_partial_labels

C = 10


def _labels(n: int = 3000, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def _split(labels: torch.Tensor, seed: int = 1, **kw):
    args = {"num_classes": C, "labelled": 100, "partial_rate": 0.3, "val_size": 500, "seed": seed} | kw
    return make_split(labels, **args)


def test_shapes_and_per_class_counts():
    labels = _labels()
    s = _split(labels)
    assert s.labelled_idx.dtype == s.unlabelled_idx.dtype == s.val_idx.dtype == torch.int64
    assert s.candidates.dtype == torch.bool and s.candidates.shape == (100, C)
    assert s.val_idx.numel() == 500 and s.val_idx.unique().numel() == 500
    assert torch.equal(torch.bincount(labels[s.labelled_idx], minlength=C), torch.full((C,), 10))
    assert s.labelled_idx.unique().numel() == 100


def test_val_is_held_out_and_unlabelled_protocol():
    labels = _labels()
    s = _split(labels)
    val, lab, unl = (set(t.tolist()) for t in (s.val_idx, s.labelled_idx, s.unlabelled_idx))
    assert not val & lab and not val & unl
    assert lab <= unl and len(unl) == len(labels) - 500 == s.unlabelled_idx.numel()
    e = _split(labels, include_labelled_in_unlabelled=False)
    assert torch.equal(e.labelled_idx, s.labelled_idx) and torch.equal(e.val_idx, s.val_idx)
    unl_e = set(e.unlabelled_idx.tolist())
    assert not unl_e & lab and not unl_e & val and len(unl_e) == len(labels) - 600


def test_true_label_always_candidate():
    labels = _labels()
    s = _split(labels, partial_rate=0.05)
    assert s.candidates[torch.arange(100), labels[s.labelled_idx]].all()


def test_seed_determinism():
    labels = _labels()
    a, b, other = _split(labels, seed=7), _split(labels, seed=7), _split(labels, seed=8)
    for f in ("labelled_idx", "candidates", "unlabelled_idx", "val_idx"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.labelled_idx, other.labelled_idx)
    assert not torch.equal(a.val_idx, other.val_idx)


def test_zero_val_size():
    labels = _labels(200)
    s = _split(labels, val_size=0, labelled=50)
    assert s.val_idx.numel() == 0 and s.unlabelled_idx.numel() == 200


def test_partial_label_statistics():
    n, p = 20000, 0.3
    labels = _labels(n, seed=3)
    cand = uniform_partial_labels(labels, C, p, torch.Generator().manual_seed(0))
    assert cand.shape == (n, C) and cand.dtype == torch.bool
    assert cand[torch.arange(n), labels].all()
    # mean size: 1 + Binomial(c-1, p); tolerance of 6 standard errors
    sizes = cand.sum(1).double()
    se = math.sqrt((C - 1) * p * (1 - p) / n)
    assert abs(sizes.mean().item() - (1 + (C - 1) * p)) < 6 * se
    # each wrong label joins with frequency p
    for j in range(C):
        wrong = labels != j
        m = int(wrong.sum())
        assert abs(cand[wrong, j].double().mean().item() - p) < 6 * math.sqrt(p * (1 - p) / m)
    # singletons occur with probability (1-p)^(c-1)
    q = (1 - p) ** (C - 1)
    singles = (sizes == 1).double().mean().item()
    assert singles > 0 and abs(singles - q) < 6 * math.sqrt(q * (1 - q) / n)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1000, 10, 25, 0.3, 0), r"labelled=25 must be a positive multiple of the number of classes \(10\)"),
        ((1000, 10, 0, 0.3, 0), r"labelled=0 must be a positive multiple"),
        ((1000, 10, 40, 0.0, 0), r"partial rate p=0.0 must lie strictly between 0 and 1"),
        ((1000, 10, 40, 1.0, 0), r"partial rate p=1.0 must lie strictly between 0 and 1"),
        ((1000, 10, 40, 0.3, -1), r"val_size=-1 must be >= 0"),
        ((1000, 10, 40, 0.3, 961), r"labelled \+ val_size = 40 \+ 961 = 1001 exceeds the training set size \(1000\)"),
    ],
)
def test_check_split_args_errors(args, message):
    with pytest.raises(ValueError, match=message):
        check_split_args(*args)
    check_split_args(1000, 10, 40, 0.3, 960)


def test_class_too_small_outside_val():
    labels = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(3, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"class 1 has only 3 images outside the validation set, fewer than"):
        make_split(labels, 2, 10, 0.3, 0, seed=0)


def test_hierarchical_partial_labels_stay_in_the_superclass():
    """The authors' --hierarchical (utils_algo.py::generate_hierarchical_cv_candidate_labels):
    wrong labels only from the true label's superclass, each w.p. p; same draws as uniform."""
    from spmi.data import get_info
    group = torch.tensor(get_info("cifar100").superclass)
    labels = torch.randint(0, 100, (6000,), generator=torch.Generator().manual_seed(1))
    uni = make_split(labels, 100, 2000, 0.5, 100, seed=3)
    hie = make_split(labels, 100, 2000, 0.5, 100, seed=3, superclass=group)
    assert torch.equal(uni.labelled_idx, hie.labelled_idx)
    same = group[labels[hie.labelled_idx]].unsqueeze(1) == group.unsqueeze(0)
    assert torch.equal(hie.candidates, uni.candidates & same)
    assert hie.candidates.sum(1).float().mean().item() == pytest.approx(1 + 4 * 0.5, abs=0.1)
    assert torch.bincount(group).tolist() == [5] * 20


def test_superclass_table_is_the_authors_hierarchy():
    """CIFAR-100's superclass table (its registry entry) against the superclass -> fine names
    table of the authors' utils_algo.py, with CIFAR-100's fine labels in their (alphabetical) meta order."""
    from spmi.data import get_info
    table = {
        "aquatic mammals": "beaver dolphin otter seal whale", "fish": "aquarium_fish flatfish ray shark trout",
        "flowers": "orchid poppy rose sunflower tulip", "food containers": "bottle bowl can cup plate",
        "fruit and vegetables": "apple mushroom orange pear sweet_pepper",
        "household electrical devices": "clock keyboard lamp telephone television",
        "household furniture": "bed chair couch table wardrobe",
        "insects": "bee beetle butterfly caterpillar cockroach", "large carnivores": "bear leopard lion tiger wolf",
        "large man-made outdoor things": "bridge castle house road skyscraper",
        "large natural outdoor scenes": "cloud forest mountain plain sea",
        "large omnivores and herbivores": "camel cattle chimpanzee elephant kangaroo",
        "medium-sized mammals": "fox porcupine possum raccoon skunk",
        "non-insect invertebrates": "crab lobster snail spider worm", "people": "baby boy girl man woman",
        "reptiles": "crocodile dinosaur lizard snake turtle", "small mammals": "hamster mouse rabbit shrew squirrel",
        "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
        "vehicles 1": "bicycle bus motorcycle pickup_truck train",
        "vehicles 2": "lawn_mower rocket streetcar tank tractor",
    }
    fine = sorted(name for names in table.values() for name in names.split())
    expected = [0] * 100
    for coarse, names in enumerate(table.values()):
        for name in names.split():
            expected[fine.index(name)] = coarse
    assert list(get_info("cifar100").superclass) == expected
