"""llama.cpp placement solver: the Pareto DP against brute force and CP-SAT, baselines, invariants."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from solvers.common import InfeasibleError
from solvers.moe_offload.llamacpp import baselines as bl
from solvers.moe_offload.llamacpp.cost import evaluate, switches
from solvers.moe_offload.llamacpp.exact import CpSat, Enumerate
from solvers.moe_offload.llamacpp.pareto import solve
from solvers.moe_offload.llamacpp.validate import validate
from tests.llamacpp_instances import random_problem


def test_pareto_dp_equals_brute_force_on_random_tiny_instances() -> None:
    rng = np.random.default_rng(0)
    ref = Enumerate()
    checked = 0
    for case in range(60):
        p = random_problem(rng, layers=int(rng.integers(1, 4)), dense_first=int(rng.integers(0, 2)) if case % 3 == 0 else 0)
        if ref.unsupported(p):
            continue
        try:
            s = solve(p)
        except InfeasibleError:
            with pytest.raises(ValueError):
                ref.solve(p)
            continue
        e = ref.solve(p)
        assert validate(p, s) == []
        assert s.objective == pytest.approx(e.objective, rel=1e-12), case
        checked += 1
    assert checked >= 40


def test_pareto_dp_equals_cpsat_with_shared_experts() -> None:
    rng = np.random.default_rng(1)
    ref = CpSat()
    for case in range(8):
        p = random_problem(rng, layers=7, shared=True, dense_first=1)
        s = solve(p)
        c = ref.solve(p, time_limit_s=30)
        assert validate(p, s) == [] and validate(p, c) == []
        # CP-SAT rounds times to whole nanoseconds
        assert s.objective == pytest.approx(c.objective, rel=1e-6, abs=1e-8), case
        assert s.objective <= c.objective + 1e-8


def test_plan_never_slower_than_a_feasible_baseline_and_baselines_follow_their_rules() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        p = random_problem(rng, layers=6, shared=bool(rng.integers(0, 2)))
        try:
            s = solve(p)
        except InfeasibleError:
            continue
        for b in bl.BASELINES:
            sol = b.solve(p)
            assert validate(p, sol) == [], b.name
            if sol.feasible:
                assert s.objective <= sol.objective * (1 + 1e-12), b.name
        cm = bl.cpu_moe(p)
        experts = np.array([g.endswith("_exps") for g in p.group_names])
        assert not cm.gpu_groups[:, experts].any() and cm.host_layers == 0 and cm.output_on_gpu
        n = bl.n_cpu_moe(p)
        k = n.params["n_cpu_moe"]
        assert not n.gpu_groups[:k, experts].any() and n.gpu_groups[k:, experts].all()
        lf = bl.layer_fill(p)
        assert lf.params["ngl"] == p.num_layers - lf.host_layers + (1 if lf.output_on_gpu else 0)
        if lf.feasible and lf.params["ngl"] <= p.num_layers:   # one more block (or the head) would not fit
            bigger = bl._placement(p, max(lf.host_layers - 1, 0), np.ones_like(lf.gpu_groups), lf.host_layers == 0,
                                   {}, bl.Stopwatch())
            assert not bigger.feasible


def test_more_vram_is_never_slower_and_plans_are_deterministic() -> None:
    rng = np.random.default_rng(3)
    p = random_problem(rng, layers=8, shared=True)
    times = []
    for share in np.linspace(0.3, 1.1, 9):
        q = dataclasses.replace(p, budget_bytes=int(share * (p.rest_bytes.sum() + p.group_bytes.sum() + p.output_bytes)))
        try:
            times.append(solve(q).objective)
        except InfeasibleError:
            continue
    assert len(times) >= 5 and all(b <= a * (1 + 1e-12) for a, b in zip(times, times[1:]))
    a, b = solve(p), solve(p)
    assert a.host_layers == b.host_layers and np.array_equal(a.gpu_groups, b.gpu_groups) and a.objective == b.objective


def test_everything_fits_puts_everything_on_the_gpu_and_tiny_budget_is_infeasible_with_a_fix() -> None:
    rng = np.random.default_rng(4)
    p = random_problem(rng, layers=5, shared=True, budget_share=2.0)
    s = solve(p)
    assert s.host_layers == 0 and s.output_on_gpu and s.gpu_groups[p.group_present].all()
    # with no VRAM at all, every block lives in host memory (-ngl 0), which needs none
    q = dataclasses.replace(p, budget_bytes=0)
    s0 = solve(q)
    assert s0.host_layers == q.num_layers and s0.metrics.vram_bytes == 0
    with pytest.raises(InfeasibleError, match="GiB"):
        solve(dataclasses.replace(q, allow_host_layers=False))


def test_switch_count_follows_the_op_order() -> None:
    p = random_problem(np.random.default_rng(5), layers=1, shared=True)
    on = np.ones(6, dtype=bool)
    assert switches(p, 0, on) == 0
    assert switches(p, 0, ~on) == 4                       # out and back, for each of the two segments
    assert switches(p, 0, np.array([1, 0, 1, 1, 1, 1], dtype=bool)) == 2   # gate GPU, up host, down GPU
    m = evaluate(p, 0, np.tile(on, (1, 1)), True)
    assert m.host_switches == 0


def test_solver_package_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import numpy as np\n"
        "from solvers.moe_offload.llamacpp import baselines, cost, exact, pareto, problem, validate\n"
        "from tests.llamacpp_instances import random_problem\n"
        "p = random_problem(np.random.default_rng(0), layers=4)\n"
        "s = pareto.solve(p)\n"
        "assert validate.validate(p, s) == []\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
