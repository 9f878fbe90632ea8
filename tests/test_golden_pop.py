"""Golden test: POP's purification schedule against a reference of palm-ml/POP.

The reference is this test's own transcription of palm-ml/POP (commit a5d6ca9)
main.py::train_benchmark: after each epoch's training the confidences go to
``f_record[epoch % rollWindow]``; after epochs ``>= warm_up`` with ``epoch % rollWindow == 0``
the label matrix loses the labels whose window-mean ratio to the row maximum is below
theta, the confidences become the window mean on what is left, and theta grows by
(1 + inc) while below 0.4 when fewer than 1e-4 of the entries changed. Training is replaced
by synthetic confidences, fed identically to both sides.
"""

import torch
import torch.nn.functional as F

from spmi.comm import Comm
from spmi.methods import get_method
from spmi.methods.base import MethodContext
from spmi.options import build

ROLL_WINDOW = 5


def trained_confidence(epoch: int, labels: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """What an epoch of PRODEN leaves: normalise(S * f) for drifting outputs f."""
    g = torch.Generator().manual_seed(1000 + epoch)
    f = torch.softmax(base * (1 + epoch / 20) + 0.5 * torch.randn(base.shape, generator=g), dim=1)
    w = labels.float() * f
    return w / w.sum(dim=1, keepdim=True)


def pop_reference(given: torch.Tensor, base: torch.Tensor, epochs: int, warm_up: int, theta: float, inc: float):
    """palm-ml/POP main.py::train_benchmark's purification loop; returns, per purifying
    epoch, (label matrix, confidences, theta) after it."""
    n, c = given.shape
    correction = given.float().clone()
    f_record = torch.zeros(ROLL_WINDOW, n, c)
    log = {}
    for epoch in range(epochs):
        confidence = trained_confidence(epoch, correction, base)
        f_record[epoch % ROLL_WINDOW, :] = confidence
        if epoch >= warm_up and epoch % ROLL_WINDOW == 0:
            temp = f_record.mean(0)
            temp = temp / temp.sum(dim=1, keepdim=True)
            pre = correction.clone()
            correction[temp / torch.max(temp, dim=1, keepdim=True)[0] < theta] = 0
            tmp = temp * correction
            confidence = tmp / tmp.sum(dim=1, keepdim=True)
            if theta < 0.4 and torch.sum(torch.not_equal(pre, correction)) < 0.0001 * n * c:
                theta *= inc + 1
            log[epoch] = (correction.clone(), confidence.clone(), theta)
    return log


def test_pop_schedule_sets_confidences_and_theta_agree_with_palm_ml_pop() -> None:
    g = torch.Generator().manual_seed(0)
    n, c, epochs, warm_up = 40, 10, 61, 20
    targets = torch.randint(0, c, (n,), generator=g)
    given = (torch.rand(n, c, generator=g) < 0.4) | F.one_hot(targets, c).bool()
    base = torch.randn(n, c, generator=g) + 3 * F.one_hot(targets, c)
    theta0, inc = 0.05, 0.5
    ref = pop_reference(given, base, epochs, warm_up, theta0, inc)

    ctx = MethodContext(num_classes=c, device=torch.device("cpu"), candidates=given, lab_targets=targets,
                        unl_targets=torch.zeros(1, dtype=torch.long), unl_to_lab=torch.full((1,), -1),
                        epochs=epochs, comm=Comm())
    cls = get_method("pop_fixmatch")
    opts = {"pop_start": warm_up, "pop_every": ROLL_WINDOW, "pop_window": ROLL_WINDOW, "pop_theta_start": theta0,
            "pop_theta_growth": 1 + inc, "pop_theta_max": 0.4, "pop_change_tol": 1e-4}
    ours = cls(build(cls.Options, opts, "pop_fixmatch"), ctx)
    purified, thetas = [], []
    for epoch in range(epochs + 1):
        sets_before = ours.sets.clone()
        ours.epoch_start(epoch, lambda part: None)  # hooks of the epoch that just ended (epoch - 1)
        if epoch - 1 in ref:
            sets, conf, theta = ref[epoch - 1]
            assert torch.equal(ours.sets, sets.bool()), epoch - 1
            torch.testing.assert_close(ours.conf, conf, rtol=0, atol=1e-6)
            assert ours.theta == theta
            purified.append(epoch - 1)
            thetas.append(ours.theta)
        else:
            assert torch.equal(ours.sets, sets_before)
        if epoch < epochs:
            ours.conf = trained_confidence(epoch, ours.sets, base)
    assert purified == sorted(ref) == [20, 25, 30, 35, 40, 45, 50, 55, 60]
    # the trajectory holds both a purification that removed labels and theta growth
    assert not torch.equal(ours.sets, given) and thetas[-1] > theta0 and len(set(thetas)) > 1
