"""The Taylor compensation as a function: the guard, the formula, and kappa cancelling."""
from __future__ import annotations

import torch

from runtime.geo_train.cocodc import taylor_compensate


def _tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]


def test_no_local_change_gives_lambda_zero_and_the_global_fragment() -> None:
    glob, sent = _tensors(0), _tensors(1)
    out, lam, g1n = taylor_compensate(glob, sent, [s.clone() for s in sent], lam0=0.2, kappa=4e-4)
    assert lam == 0.0 and g1n == 0.0
    assert all(torch.equal(o, g) for o, g in zip(out, glob))


def test_formula_and_kappa_cancels() -> None:
    glob, sent, now = _tensors(0), _tensors(1), _tensors(2)
    out, lam, _ = taylor_compensate(glob, sent, now, lam0=0.2, kappa=4e-4)
    g1 = [s - n for s, n in zip(sent, now)]
    c = [g * g * (gl - s) / 4e-4 for g, gl, s in zip(g1, glob, sent)]
    norm = lambda ts: float(torch.sqrt(sum((t * t).sum() for t in ts)))
    assert abs(lam - 0.2 * norm(g1) / norm(c)) < 1e-12 * lam
    for o, gl, g, cc in zip(out, glob, g1, c):
        assert torch.allclose(o, gl - (g + lam * cc))
    out2, _, _ = taylor_compensate(glob, sent, now, lam0=0.2, kappa=1.0)
    assert all(torch.allclose(a, b) for a, b in zip(out, out2))
    corr = [gl - g - o for o, gl, g in zip(out, glob, g1)]          # the curvature term alone
    assert abs(norm(corr) - 0.2 * norm(g1)) < 1e-9
    out0, lam0, _ = taylor_compensate(glob, sent, now, lam0=0.0, kappa=4e-4)
    assert lam0 == 0.0 and all(torch.allclose(o, gl - g) for o, gl, g in zip(out0, glob, g1))
