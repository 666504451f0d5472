"""The Taylor compensation as a function, checked against a quadratic whose delayed answer is exact.

Quadratic f_m(theta) = 1/2 sum_i a_i (theta_i - c_{m,i})^2, inner plain SGD of size eta. A region sends
its fragment at theta_s, runs tau more steps to theta_now, and gets theta_glob back. The synchronous answer
(those tau steps taken from theta_glob instead) is theta_now + (1 - eta a)^tau * D, D = theta_glob - theta_s.
"""
from __future__ import annotations

import torch

from runtime.geo_train.cocodc import taylor_compensate, taylor_compensate_norm_matched, taylor_merge


def _tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]


def _norm(ts: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t * t).sum() for t in ts)))


def _quadratic(tau: int, eta: float, d_scale: float, seed: int = 0):
    """(theta_glob, theta_s, theta_now, exact synchronous answer, curvature a) of one region."""
    g = torch.Generator().manual_seed(seed)
    n = 64
    a = torch.rand(n, generator=g, dtype=torch.float64) * 1.9 + 0.1          # Hessian diagonal in [0.1, 2]
    c = torch.randn(n, generator=g, dtype=torch.float64)                      # this region's optimum
    theta_s = c + torch.randn(n, generator=g, dtype=torch.float64)
    theta_glob = theta_s + d_scale * torch.randn(n, generator=g, dtype=torch.float64)

    def run(x: torch.Tensor) -> torch.Tensor:
        for _ in range(tau):
            x = x - eta * a * (x - c)
        return x

    return [theta_glob], [theta_s], [run(theta_s)], [run(theta_glob)], a


def test_taylor_structure_recovers_the_synchronous_answer_to_first_order() -> None:
    """Sign and terms: theta_glob - g1 - tau*eta*A*D errs O((tau eta a)^2) |D|; dropping the correction
    (lambda = 0) errs O(tau eta a) |D|; torchft's alpha = 0 (theta_glob) also loses g1."""
    for tau, eta in ((2, 0.01), (7, 0.005), (7, 0.02)):
        glob, sent, now, exact, a = _quadratic(tau, eta, d_scale=0.5)
        err = lambda out: _norm([out[0] - exact[0]])
        first = err(taylor_merge(glob, sent, now, [tau * eta * a]))
        zeroth = err(taylor_merge(glob, sent, now, [torch.zeros_like(a)]))
        alpha0 = err(glob)
        wrong_sign = err(taylor_merge(glob, sent, now, [-tau * eta * a]))
        x = tau * eta * 2.0                                                   # largest tau * eta * a
        assert first <= 0.6 * x * zeroth                                      # second order vs first order
        assert zeroth < alpha0 and first < wrong_sign


def test_norm_matched_lambda_does_not_vanish_with_d_but_bounded_form_does() -> None:
    """The spec summary's lambda keeps the correction at lam0 * ||g1|| as D -> 0, where the exact correction
    goes to 0 with D: it is not first-order consistent. The bounded form scales with D."""
    tau, eta = 7, 0.01
    errs_nm, errs_b, corr_nm, corr_b = [], [], [], []
    for d in (1e-1, 1e-2, 1e-3):
        glob, sent, now, exact, _ = _quadratic(tau, eta, d_scale=d)
        g1 = [sent[0] - now[0]]
        nm, _, _ = taylor_compensate_norm_matched(glob, sent, now, lam0=0.2, kappa=4e-4)
        b, coef, _ = taylor_compensate(glob, sent, now, lam0=0.2)
        corr_nm.append(_norm([glob[0] - g1[0] - nm[0]]))
        corr_b.append(_norm([glob[0] - g1[0] - b[0]]))
        errs_nm.append(_norm([nm[0] - exact[0]]))
        errs_b.append(_norm([b[0] - exact[0]]))
        assert 0.0 < coef <= 0.2 + 1e-12
    assert max(abs(c - 0.2 * _norm([sent[0] - now[0]])) for c in corr_nm[-1:]) < 1e-9   # stuck at lam0 ||g1||
    assert errs_nm[-1] > 0.5 * errs_nm[0]                                    # does not shrink with D
    assert corr_b[-1] < 0.02 * corr_b[0] and errs_b[-1] < 0.02 * errs_b[0]    # linear in D


def test_bounded_coefficient_stays_in_the_exact_range() -> None:
    """Per entry the correction takes back at most all of D (coef in [0, 1]), whatever lam0."""
    glob, sent, now = _tensors(0), _tensors(1), _tensors(2)
    for lam0 in (0.1, 1.0, 100.0):
        out, mean_coef, _ = taylor_compensate(glob, sent, now, lam0=lam0)
        for o, gl, s, n in zip(out, glob, sent, now):
            coef = (gl - (s - n) - o) / (gl - s)
            assert float(coef.min()) >= -1e-12 and float(coef.max()) <= 1.0 + 1e-12
        assert 0.0 < mean_coef <= min(lam0, 1.0) + 1e-12
    _, c_small, _ = taylor_compensate(glob, sent, now, lam0=0.1)
    assert abs(c_small - 0.1) < 0.1 * 0.5       # unclamped mostly: mean coefficient near lam0 (auto kappa)


def test_no_local_change_gives_zero_and_the_global_fragment_bitwise() -> None:
    glob, sent = _tensors(0), _tensors(1)
    for merge in (taylor_compensate, taylor_compensate_norm_matched):
        out, lam, g1n = merge(glob, sent, [s.clone() for s in sent], 0.2, 4e-4)
        assert lam == 0.0 and g1n == 0.0
        assert all(torch.equal(o, g) for o, g in zip(out, glob))
    out0, c0, _ = taylor_compensate(glob, sent, _tensors(2), lam0=0.0)
    g1 = [s - n for s, n in zip(sent, _tensors(2))]
    assert c0 == 0.0 and all(torch.allclose(o, gl - g) for o, gl, g in zip(out0, glob, g1))


def test_norm_matched_formula_and_kappa_cancels() -> None:
    glob, sent, now = _tensors(0), _tensors(1), _tensors(2)
    out, lam, _ = taylor_compensate_norm_matched(glob, sent, now, lam0=0.2, kappa=4e-4)
    g1 = [s - n for s, n in zip(sent, now)]
    c = [g * g * (gl - s) / 4e-4 for g, gl, s in zip(g1, glob, sent)]
    assert abs(lam - 0.2 * _norm(g1) / _norm(c)) < 1e-12 * lam
    for o, gl, g, cc in zip(out, glob, g1, c):
        assert torch.allclose(o, gl - (g + lam * cc))
    out2, _, _ = taylor_compensate_norm_matched(glob, sent, now, lam0=0.2, kappa=1.0)
    assert all(torch.allclose(a, b) for a, b in zip(out, out2))
